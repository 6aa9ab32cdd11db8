/**
 * The proxy never loses its log nor turns on itself (issue 9 §3), against the real CLI as a
 * subprocess: a second proxy on a live socket leaves the first one's log untouched, an existing
 * log is appended to with session numbers that go on, a back-end that is the proxy's own socket
 * is refused, SIGHUP reopens the log instead of stopping the guest's device.
 */

import assert from "node:assert/strict";
import type { LogRecord, SessionEndRecord, SessionStartRecord } from "../../log/record.ts";
import { ScriptedPeer } from "../support/scripted_peer.ts";
import { LAUNCHER, ProxyProcess } from "./_rig.ts";

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false } as const;

/** Runs the CLI to its end: exit code and stderr. */
async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  // Bounded: a proxy that wrongly starts serving would otherwise never return.
  const out = await new Deno.Command(LAUNCHER, {
    args,
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(15_000),
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

function records(path: string): LogRecord[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.length > 0).map((l) =>
    JSON.parse(l)
  );
}

const starts = (rs: LogRecord[]) =>
  rs.filter((r): r is SessionStartRecord => r.type === "session-start");

Deno.test({
  name: "a second run on a live --listen is refused before it touches the running proxy's log",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    try {
      proxy.proveServing();
      proxy.sessionEnd(1);
      const before = Deno.readFileSync(proxy.log.path);
      const r = await cli([
        "run",
        "--listen",
        proxy.listenPath,
        "--backend",
        proxy.backendPath,
        "--log",
        proxy.log.path,
        "--quiet",
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /another process is accepting on it/);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 300));
      const after = Deno.readFileSync(proxy.log.path);
      assert.deepEqual(after, before, "the running proxy's log is byte-for-byte untouched");
      assert.ok(!after.includes(0), "no NUL bytes");
      // The probe did not connect: the running proxy logged no phantom session.
      assert.equal(starts(records(proxy.log.path)).length, 1);
      proxy.proveServing(); // and it serves on
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "--log appends to an existing log, and the new run's sessions are numbered after it",
  ...NO_SANITIZERS,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "vup-append-" });
    const log = `${dir}/kept.jsonl`;
    try {
      const first = await ProxyProcess.start({ logPath: log });
      first.proveServing();
      first.proveServing();
      first.sessionEnd(2);
      await first.stop();
      const earlier = Deno.readTextFileSync(log);
      const lines = earlier.split("\n").length;
      assert.ok(lines > 5);

      const second = await ProxyProcess.start({ logPath: log });
      try {
        second.proveServing();
        const end = second.sessionEnd(3);
        assert.ok(end, "the new run's first session is session 3");
      } finally {
        await second.stop();
      }
      const now = Deno.readTextFileSync(log);
      assert.ok(now.startsWith(earlier), "the earlier run's lines are kept, unchanged");
      assert.deepEqual(starts(records(log)).map((s) => s.session), [1, 2, 3]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a --log another proxy is writing is refused, with one line naming it",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    const dir = Deno.makeTempDirSync({ prefix: "vup-lock-" });
    try {
      const before = Deno.readFileSync(proxy.log.path);
      const r = await cli([
        "run",
        "--listen",
        `${dir}/other.sock`,
        "--backend",
        proxy.backendPath,
        "--log",
        proxy.log.path,
        "--quiet",
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /another vhost-user-proxy process is writing it/);
      assert.ok(r.stderr.includes(proxy.log.path));
      assert.deepEqual(Deno.readFileSync(proxy.log.path), before);
    } finally {
      await proxy.stop();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "--listen X --backend X is refused at start: a loop",
  ...NO_SANITIZERS,
  fn: async () => {
    const dir = Deno.makeTempDirSync({ prefix: "vup-loop-" });
    try {
      const r = await cli([
        "run",
        "--listen",
        `${dir}/x.sock`,
        "--backend",
        `${dir}/./x.sock`,
        "--quiet",
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /the back-end is the proxy's own listening socket \(a loop\)/);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a --backend that links back to the proxy's own socket ends that session, and only it",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start({
      backendPath: (dir) => {
        Deno.symlinkSync(`${dir}/front.sock`, `${dir}/loop.sock`);
        return `${dir}/loop.sock`;
      },
    });
    try {
      const baseline = proxy.fdCount();
      const { front, id } = proxy.connectFront();
      const end = proxy.sessionEnd(id);
      assert.ok(end, "the session ends");
      assert.match(end.reason, /own listening socket \(a loop\)/);
      front.close();
      await new Promise((res) => setTimeout(res, 1000));
      // Today's main grew this to ~10,000 sessions in 1.5 s, until EMFILE.
      assert.equal(starts(proxy.log.records).length, 1, "no session spawned another");
      assert.ok(proxy.fdCount() <= baseline + 1, "fds back to the baseline");
      assert.ok(proxy.alive);
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "SIGHUP reopens the log (logrotate) and the proxy serves on; SIGTERM ends sessions",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    try {
      proxy.proveServing();
      proxy.sessionEnd(1);
      const rotated = `${proxy.log.path}.1`;
      Deno.renameSync(proxy.log.path, rotated);
      Deno.kill(proxy.pid, "SIGHUP");
      const deadline = performance.now() + 5000;
      while (performance.now() < deadline) {
        try {
          Deno.statSync(proxy.log.path);
          break;
        } catch {
          await new Promise((res) => setTimeout(res, 20));
        }
      }
      assert.ok(proxy.alive, "SIGHUP did not stop the proxy");
      const fresh = records(proxy.log.path);
      assert.ok(fresh.some((r) => r.type === "proxy" && r.event === "log-reopened"));
      // The test's LogReader follows the old file; the new one is read from its path.
      const front = ScriptedPeer.connect(proxy.listenPath);
      const back = proxy.backend!.accept(5000);
      const until = performance.now() + 3000;
      while (!starts(records(proxy.log.path)).some((r) => r.session === 2)) {
        assert.ok(performance.now() < until, "session 2 starts in the new file");
        await new Promise((res) => setTimeout(res, 20));
      }
      const old = records(rotated);
      assert.ok(old.some((r) => r.type === "session-end" && r.session === 1));
      assert.ok(!old.some((r) => r.type === "session-start" && r.session === 2));
      // SIGTERM with session 2 open: its end is written, by the proxy, and the socket goes.
      Deno.kill(proxy.pid, "SIGTERM");
      await proxy.child.status;
      const ends = records(proxy.log.path).filter((r): r is SessionEndRecord =>
        r.type === "session-end"
      );
      assert.ok(ends.some((e) => e.session === 2 && e.closedBy === "proxy"), JSON.stringify(ends));
      assert.throws(() => Deno.lstatSync(proxy.listenPath), "the socket is removed");
      front.close();
      back.close();
    } finally {
      await proxy.stop();
    }
  },
});

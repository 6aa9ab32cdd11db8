/**
 * Sessions over time against the proxy subprocess: a reply that never comes (--stuck-after),
 * sessions isolated from each other's half-read messages and violations, the socket's mode,
 * the front-end's SO_PEERCRED in session-start, a back-end that is not there, SIGTERM.
 */

import assert from "node:assert/strict";
import type { ProblemRecord, SessionStartRecord } from "../../log/record.ts";
import type { ScriptedPeer } from "../support/scripted_peer.ts";
import { socketExists, waitFor } from "../harness/wait.ts";
import { drain, LAUNCHER, ProxyProcess, tryRecv } from "./_rig.ts";
import {
  frame,
  NEED_REPLY,
  PF,
  readU64,
  REPLY,
  REQ,
  sleepSync,
  uuid,
  vringState,
} from "./_wire.ts";

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };
const STUCK_MS = 300;

function warningFor(proxy: ProxyProcess, session: number, request: string, ms = 3000) {
  return proxy.log.waitFor(
    (r): r is ProblemRecord =>
      r.type === "warning" && r.session === session && r.request === request,
    ms,
  );
}

Deno.test({
  name: `a reply that never comes is flagged by name after --stuck-after ${STUCK_MS}`,
  ...NO_SANITIZERS,
  fn: async (t) => {
    const proxy = await ProxyProcess.start({ stuckAfterMs: STUCK_MS });
    try {
      const s = proxy.open().withChannel();
      // Answered quickly: no warning may follow.
      s.roundTrip();

      await t.step("GET_VRING_BASE unanswered on the main channel", () => {
        const t0 = performance.now();
        s.relay(s.front, s.back, { request: 11, flags: REQ, payload: vringState(1, 0) });
        const w = warningFor(proxy, s.id, "GET_VRING_BASE");
        assert.ok(w, "stuck warning logged");
        const after = performance.now() - t0;
        assert.ok(after >= STUCK_MS - 20 && after < STUCK_MS + 2000, `after ${after} ms`);
        assert.equal(w.side, "back-end");
        assert.equal(w.channel, "main");
        assert.match(w.message, new RegExp(`GET_VRING_BASE has waited ${STUCK_MS} ms`));
      });

      await t.step("BACKEND_SHARED_OBJECT_LOOKUP unanswered on the back-end channel", () => {
        s.relay(s.backCh!, s.qemuCh!, { request: 8, flags: REQ, payload: uuid(8) });
        const w = warningFor(proxy, s.id, "BACKEND_SHARED_OBJECT_LOOKUP");
        assert.ok(w, "stuck warning logged");
        assert.equal(w.side, "front-end");
        assert.equal(w.channel, "backend");
      });

      await t.step("a late reply is still relayed: the warning does not end the session", () => {
        const rep = s.relay(s.back, s.front, {
          request: 11,
          flags: REPLY,
          payload: vringState(1, 42),
        });
        assert.equal(readU64(rep.payload) >> 32n, 42n);
      });

      await t.step("each stuck request is flagged once, answered ones never", () => {
        proxy.log.waitFor(() => false, 3 * STUCK_MS); // let any repeat come
        const warnings = proxy.log.of(s.id).filter((r) => r.type === "warning");
        assert.deepEqual(
          warnings.map((w) => (w as ProblemRecord).request).sort(),
          ["BACKEND_SHARED_OBJECT_LOOKUP", "GET_VRING_BASE"],
        );
      });

      await t.step("the back-end vanishing names what was still in flight", () => {
        s.back.close();
        assert.ok(drain(s.front).eof, "QEMU's side closed");
        const end = proxy.sessionEnd(s.id);
        assert.ok(end);
        assert.equal(end.closedBy, "back-end");
        assert.deepEqual(end.inFlight.map((f) => f.name), ["BACKEND_SHARED_OBJECT_LOOKUP"]);
        assert.match(end.reason, /BACKEND_SHARED_OBJECT_LOOKUP awaited a reply/);
        s.close();
      });
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "sessions are isolated: a half-read message and a violation elsewhere change nothing",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    try {
      proxy.proveServing();
      const baseline = proxy.settleFds(0, 300);
      // A: stops in the middle of a SET_VRING_NUM header.
      const a = proxy.open();
      const bytes = frame(8, REQ, vringState(0, 256));
      a.front.sendRaw(bytes.subarray(0, 5));
      // B: hostile (bad version): closed alone.
      const b = proxy.open();
      b.front.send({ request: 1, flags: 0x2 });
      assert.ok(drain(b.front).eof && drain(b.back).eof, "the hostile session was closed");
      // C: well-formed, served while A is half-way and B is gone.
      const c = proxy.open();
      c.roundTrip();
      // A completes its message: the proxy kept A's partial header for A alone.
      assert.equal(tryRecv(a.back, 100), undefined, "nothing relayed from half a header");
      a.front.sendRaw(bytes.subarray(5));
      assert.deepEqual(a.back.expect(3000).payload, vringState(0, 256));
      a.roundTrip();
      c.roundTrip();
      for (const s of [a, b, c]) s.close();
      assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
      const errors = proxy.log.records.filter((r) => r.type === "error");
      assert.deepEqual(errors.map((e) => "session" in e && e.session), [b.id], "only B failed");
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "the socket is 0600 and session-start carries the front-end's SO_PEERCRED",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    try {
      assert.equal(Deno.statSync(proxy.listenPath).mode! & 0o777, 0o600);
      const s = proxy.open();
      const start = proxy.log.records.find((r): r is SessionStartRecord =>
        r.type === "session-start" && r.session === s.id
      );
      assert.deepEqual(start?.frontEnd, { pid: Deno.pid, uid: Deno.uid(), gid: Deno.gid() });
      s.close();
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "--socket-mode 0660 opens the socket to the group; a missing back-end closes QEMU's side",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start({
      socketMode: "0660",
      noBackend: true,
      connectTimeoutMs: 300,
    });
    try {
      assert.equal(Deno.statSync(proxy.listenPath).mode! & 0o777, 0o660);
      const baseline = proxy.fdCount();
      const { front, id } = proxy.connectFront();
      const t0 = performance.now();
      assert.ok(drain(front, 3000).eof, "QEMU's side closed after --connect-timeout");
      assert.ok(performance.now() - t0 < 2300, "promptly after the timeout");
      front.close();
      const err = proxy.errorOf(id);
      assert.match(err?.message ?? "", /cannot connect to the back-end/);
      assert.equal(proxy.sessionEnd(id)?.closedBy, "proxy");
      assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
    } finally {
      await proxy.stop();
    }
  },
});

Deno.test({
  name: "SIGTERM with sessions open: both sides closed, session-end logged, exit 0",
  ...NO_SANITIZERS,
  fn: async () => {
    const proxy = await ProxyProcess.start();
    let stopped = false;
    try {
      const s = proxy.open();
      s.relay(s.front, s.back, { request: 11, flags: REQ, payload: vringState(0, 0) });
      proxy.child.kill("SIGTERM");
      assert.ok(drain(s.front).eof && drain(s.back).eof, "both sides closed");
      const end = proxy.sessionEnd(s.id);
      assert.equal(end?.closedBy, "proxy");
      assert.deepEqual(end?.inFlight.map((f) => f.name), ["GET_VRING_BASE"]);
      s.close();
      assert.equal(await proxy.stop(), 0);
      stopped = true;
    } finally {
      if (!stopped) await proxy.stop();
    }
  },
});

Deno.test({
  name: "SIGTERM the moment the socket appears (before start-up has finished): exit 0",
  ...NO_SANITIZERS,
  fn: async () => {
    // The engine binds on its own thread; the CLI must already be listening for signals then.
    // Before that was so, about one start in four died of the signal (exit 143).
    for (let round = 0; round < 8; round++) {
      const dir = Deno.makeTempDirSync({ prefix: "vup-sigterm-" });
      try {
        const listen = `${dir}/listen.sock`;
        const child = new Deno.Command(LAUNCHER, {
          args: ["run", "--listen", listen, "--backend", `${dir}/none.sock`, "--quiet"],
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        await waitFor(async () => (await socketExists(listen)) || undefined, {
          what: `the proxy's socket "${listen}"`,
          timeoutMs: 30_000,
          intervalMs: 1,
        });
        child.kill("SIGTERM");
        const status = await child.status;
        assert.equal(
          status.code,
          0,
          `round ${round}: exit ${status.code} (signal ${status.signal})`,
        );
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    }
  },
});

/**
 * Writes `make(i)` on `peer` until its socket has taken nothing for 200 ms: then the proxy
 * holds output for a reader that does not read, and has stopped reading `peer`
 * (backpressure), rather than being merely slower than a burst. Bounded.
 */
function fillUntilBlocked(peer: ScriptedPeer, make: (i: number) => Uint8Array): number {
  let i = 0;
  let stuckSince = performance.now();
  const deadline = stuckSince + 10_000;
  while (performance.now() - stuckSince < 200 && performance.now() < deadline) {
    const before = peer.channel.pendingOutput;
    peer.channel.flush();
    if (peer.channel.pendingOutput === 0) peer.channel.send(make(i++));
    if (peer.channel.pendingOutput !== before) stuckSince = performance.now();
    else sleepSync(2);
  }
  return i;
}

/** The largest payload in the spec (GET_SHMEM_CONFIG's reply; QEMU's payload union): 2056. */
const BIG = new Uint8Array(2056);
const BIG_REPLY = BIG;

Deno.test({
  name: "a peer vanishing while the other side is not reading still ends the session promptly",
  ...NO_SANITIZERS,
  fn: async (t) => {
    const proxy = await ProxyProcess.start();
    try {
      proxy.proveServing();
      const baseline = proxy.settleFds(0, 300);

      await t.step("QEMU vanishes while the back-end is not reading (main channel)", () => {
        const s = proxy.open();
        try {
          const n = fillUntilBlocked(s.front, () => frame(99, REQ, BIG));
          s.front.close();
          // The back-end reads nothing: the proxy must notice QEMU's hang-up on its own, and
          // say that QEMU closed first.
          const end = proxy.sessionEnd(s.id, 2000);
          assert.ok(end, `session-end within 2 s (${n} messages were queued)`);
          assert.equal(end.closedBy, "front-end");
        } finally {
          s.close();
        }
      });

      await t.step("the back-end vanishes while QEMU is not reading its replies", () => {
        const s = proxy.open();
        try {
          s.negotiate(PF.REPLY_ACK);
          // QEMU asks 1000 unknown NEED_REPLY questions; the back-end answers with 2056 bytes each.
          for (let i = 0; i < 1000; i++) {
            s.front.send({ request: 99, flags: NEED_REPLY });
            s.back.expect(3000);
          }
          const n = fillUntilBlocked(s.back, () => frame(99, REPLY, BIG_REPLY));
          assert.ok(n < 1000, `the proxy stopped reading before all ${n} replies were owed`);
          s.back.close();
          const end = proxy.sessionEnd(s.id, 2000);
          assert.ok(end, `session-end within 2 s (${n} replies were queued)`);
          assert.equal(end.closedBy, "back-end");
        } finally {
          s.close();
        }
      });

      await t.step("the back-end vanishes from its channel while QEMU is not reading it", () => {
        const s = proxy.open().withChannel();
        try {
          const n = fillUntilBlocked(s.backCh!, () => frame(50, REQ, BIG));
          s.backCh!.close();
          const w = proxy.log.waitFor(
            (r): r is ProblemRecord =>
              r.type === "warning" && r.session === s.id && r.channel === "backend",
            2000,
          );
          assert.ok(w, `the channel's loss is logged within 2 s (${n} messages were queued)`);
        } finally {
          s.close();
        }
      });

      assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
    } finally {
      await proxy.stop();
    }
  },
});

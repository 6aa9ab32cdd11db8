/**
 * Restarting virtiofsd under a running guest (issue 13), the hard cases, with real peers (QEMU 10,
 * virtiofsd 1.13, the C virtiofsd): a restart while the guest's `dd` loop writes and reads back
 * files; restarts onto a back-end that is not there or that refuses LOAD, which roll back to the
 * old virtiofsd; live migration after restarts (one after a migration that failed), then a
 * restart on the destination; and a back-end without F_DEVICE_STATE, which `ctl restart-backend`
 * refuses. Needs `scripts/setup_peers.sh`; fails without.
 *
 * Run: `deno test -A tests/e2e/restart_backend_failures_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { startCVirtiofsd, startVirtiofsd, type Virtiofsd, waitFor } from "../harness/mod.ts";
import {
  assertFailedCleanly,
  describeMigration,
  holderRoundTrip,
  lineCount,
  MigrationRig,
  runProxyCli,
  sequenceGaps,
  type Side,
  START_HOLDER,
  START_SEQUENCE_WRITER,
  STOP_SEQUENCE_WRITER,
  transferEnds,
  waitCheck,
  waitTransferEnd,
} from "./_migration_rig.ts";
import type {
  LogRecord,
  ProblemRecord,
  RestartRecord,
  RestartStepRecord,
  TransferEndRecord,
} from "../../log/record.ts";

/**
 * Guest script: a background loop writes a 512 KiB random file (made once, in tmpfs) to one of
 * four files on /mnt with `dd conv=fsync`, drops the page cache, reads it back with `dd` and
 * compares. The first failure (a dd error or different bytes) is written to /run/io.failed and
 * ends the loop; /run/io.count holds the rounds that passed; touching /run/io.stop ends it,
 * leaving the last round in /run/io.last.
 */
const START_IO_LOOP = `
rm -f /run/io.stop /run/io.last /run/io.failed /run/io.count
mkdir -p /mnt/io
dd if=/dev/urandom of=/run/io.src bs=64k count=8 2>/dev/null
cp /run/io.src /mnt/io/src.bin
( i=0
  while [ ! -e /run/io.stop ]; do
    i=$((i + 1))
    f=/mnt/io/f$((i % 4))
    dd if=/run/io.src of=$f bs=64k conv=fsync 2>/run/io.err ||
      { echo "round $i: write failed: $(cat /run/io.err)" >/run/io.failed; break; }
    echo 3 >/proc/sys/vm/drop_caches
    dd if=$f of=/run/io.back bs=64k 2>/run/io.err ||
      { echo "round $i: read failed: $(cat /run/io.err)" >/run/io.failed; break; }
    cmp -s /run/io.src /run/io.back ||
      { echo "round $i: read back other bytes" >/run/io.failed; break; }
    echo "$i" >/run/io.count
  done
  echo "$i" >/run/io.last ) </dev/null >/dev/null 2>&1 &
`;

/** Guest script: stop the dd loop; prints its last round and any failure. */
const STOP_IO_LOOP = `
touch /run/io.stop
n=0
while [ ! -e /run/io.last ] && [ "$n" -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
cat /run/io.last
if [ -e /run/io.failed ]; then cat /run/io.failed; fi
`;

/** Rounds of the dd loop that passed so far. */
async function ioRounds(side: Side): Promise<number> {
  const text = (await side.vm.agent.check("cat /run/io.count 2>/dev/null || echo 0")).trim();
  return Number(text);
}

/** Guest kernel lines about virtio-fs / FUSE trouble (empty when there is none). */
async function fuseTrouble(side: Side): Promise<string[]> {
  const log = await side.vm.agent.check("dmesg");
  return log.split("\n").filter((l) => /virtio|fuse/i.test(l) && /error|fail|warn|bug/i.test(l));
}

/** Each ring's base as `ctl status --json` shows it (the last saved one), by index. */
async function ringBases(control: string): Promise<number[]> {
  const r = await runProxyCli(["ctl", control, "status", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const [session] = JSON.parse(r.stdout).sessions as {
    rings: { index: number; base?: number }[];
  }[];
  return session.rings.map((ring) => ring.base ?? -1);
}

interface CtlRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The pause the guest saw, as `ctl` printed it (also on a failure, from the log). */
  pauseMs?: number;
  ms: number;
}

/** `vhost-user-proxy ctl <control> restart-backend --backend <socket>`, timed. */
async function restart(control: string, backend: string, label: string): Promise<CtlRun> {
  const t0 = performance.now();
  const r = await runProxyCli(["ctl", control, "restart-backend", "--backend", backend]);
  const ms = Math.round(performance.now() - t0);
  const pause = /paused ([\d.]+) ms/.exec(r.stdout)?.[1];
  console.log(`${label}: exit ${r.code} in ${ms} ms: ${r.stdout.trim()} ${r.stderr.trim()}`);
  return { ...r, ms, ...(pause === undefined ? {} : { pauseMs: Number(pause) }) };
}

/** A transfer's fingerprint: `fingerprint.value` (newer logs) or `sha256`. */
function digest(t: TransferEndRecord): string | undefined {
  return (t as { fingerprint?: { value?: string } }).fingerprint?.value ?? t.sha256;
}

/** The proxy's restart `done` records. */
function restartsDone(records: LogRecord[]): RestartRecord[] {
  return records.filter((r): r is RestartRecord => r.type === "restart" && r.event === "done");
}

/** Resolves true when `v` exits within `ms`. */
async function exitsWithin(v: Virtiofsd, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const exited = await Promise.race([
    v.exited.then(() => true),
    new Promise<boolean>((res) => timer = setTimeout(() => res(false), ms)),
  ]);
  clearTimeout(timer);
  return exited;
}

/** A source side with a held file, the 50 ms writer running; `--control` on its proxy. */
async function sourceWithWriter(
  rig: MigrationRig,
  proxyArgs: string[] = [],
  backend: "rust" | "c" = "rust",
): Promise<{ side: Side; control: string; seqPath: string }> {
  const control = rig.dir.join("control.sock");
  const side = await rig.startSide({
    name: "src",
    backend,
    proxies: [["--control", control, ...proxyArgs]],
  });
  await side.vm.agent.check(START_HOLDER);
  assert.equal(await side.vm.agent.check(holderRoundTrip("before")), "before\n");
  await side.vm.agent.check(START_SEQUENCE_WRITER);
  const seqPath = `${rig.share}/seq.txt`;
  await waitFor(async () => (await lineCount(seqPath)) >= 10 || undefined, {
    what: "the writer's first 10 lines",
    timeoutMs: 20_000,
  });
  return { side, control, seqPath };
}

/** Waits for `more` lines from the writer beyond `since`. */
async function writerGoesOn(seqPath: string, since: number, more: number, what: string) {
  await waitFor(async () => (await lineCount(seqPath)) >= since + more || undefined, {
    what: `${more} more lines from the writer ${what}`,
    timeoutMs: 30_000,
  });
}

/** Stops the writer and checks its stream: 1..n, no gap, no duplicate, no failed write. */
async function writerStreamIsWhole(side: Side, seqPath: string): Promise<number> {
  const stopped = (await side.vm.agent.check(STOP_SEQUENCE_WRITER)).trim();
  assert.match(stopped, /^\d+$/, `the writer reported a failed write: ${stopped}`);
  assert.deepEqual(sequenceGaps(await Deno.readTextFile(seqPath)), [], "no gap, no duplicate");
  assert.equal(await lineCount(seqPath), Number(stopped), "every number written is in the file");
  return Number(stopped);
}

Deno.test("restart-backend under I/O load: a dd loop writes and reads back files on /mnt while virtiofsd is swapped three times", async () => {
  await using rig = await MigrationRig.create("restart-load");
  const { side, control, seqPath } = await sourceWithWriter(rig);
  const agent = side.vm.agent;
  await agent.check(START_IO_LOOP);
  await waitFor(async () => (await ioRounds(side)) >= 3 || undefined, {
    what: "3 rounds of the dd loop",
    timeoutMs: 30_000,
  });

  const next: Virtiofsd[] = [];
  try {
    let previous = side.virtiofsd;
    const pauses: number[] = [];
    const bases: number[][] = [];
    for (let round = 1; round <= 3; round++) {
      const vfs = await startVirtiofsd({
        name: `vfs-load-${round}`,
        socketPath: rig.dir.join(`vfs-load-${round}.sock`),
        sharedDir: rig.share,
        logDir: rig.dir.path,
        // The second serves requests from a thread pool: restart 3 stops it with requests
        // possibly in flight on its threads.
        ...(round === 2 ? { extraArgs: ["--thread-pool-size=4"] } : {}),
      });
      next.push(vfs);
      const rounds = await ioRounds(side);
      const lines = await lineCount(seqPath);
      const r = await restart(control, vfs.socketPath, `restart ${round} under load`);
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /with its state \(\d+ bytes\): the guest paused [\d.]+ ms/);
      pauses.push(r.pauseMs!);
      assert.ok(await exitsWithin(previous, 10_000), `the old virtiofsd ${previous.name} is gone`);
      previous = vfs;
      // Both streams go on through the new virtiofsd: more dd rounds pass, the writer appends.
      await waitFor(async () => (await ioRounds(side)) >= rounds + 2 || undefined, {
        what: `2 more dd rounds after restart ${round} (had ${rounds})`,
        timeoutMs: 30_000,
        detail: async () => (await agent.check("cat /run/io.failed 2>/dev/null; true")),
      });
      await writerGoesOn(seqPath, lines, 5, `after restart ${round}`);
      // The saved bases: the request ring moved between restarts (the I/O went through it).
      bases.push(await ringBases(control));
      if (round > 1) {
        assert.ok(
          bases[round - 1][1] > bases[round - 2][1],
          `request ring base grew: ${JSON.stringify(bases)}`,
        );
      }
    }

    const io = (await agent.check(STOP_IO_LOOP)).trim();
    assert.match(io, /^\d+$/, `the dd loop failed: ${io}`);
    // What the guest wrote last is on the host, byte for byte.
    const src = await Deno.readFile(`${rig.share}/io/src.bin`);
    assert.equal(src.length, 512 << 10);
    for (let i = 0; i < 4; i++) {
      assert.deepEqual(await Deno.readFile(`${rig.share}/io/f${i}`), src, `io/f${i} is intact`);
    }
    const lines = await writerStreamIsWhole(side, seqPath);
    assert.equal(await agent.check(holderRoundTrip("after")), "after\n");
    assert.equal(await Deno.readTextFile(`${rig.share}/held.txt`), "before\nafter\n");
    assert.deepEqual(await fuseTrouble(side), [], "the guest kernel logged no virtio-fs trouble");
    const done = restartsDone(await side.frontProxy.records());
    assert.equal(done.length, 3);
    assert.ok(done.every((d) => d.ok && d.withState && (d.stateBytes ?? 0) > 0));
    console.log(
      `pauses under load: ${pauses.join(", ")} ms; dd rounds ${io} (512 KiB each, read back); ` +
        `writer ${lines} lines; ring bases saved at each restart ${JSON.stringify(bases)}`,
    );
  } finally {
    for (const v of next) await v.stop().catch(() => {});
  }
});

Deno.test("restart-backend onto a back-end that is not there, or that refuses LOAD, rolls back: the guest carries on with the old virtiofsd, and a later restart works", async () => {
  await using rig = await MigrationRig.create("restart-fail");
  const { side, control, seqPath } = await sourceWithWriter(rig);
  const agent = side.vm.agent;
  const old = side.virtiofsd;
  const extra: Virtiofsd[] = [];
  try {
    // 1. Nothing listens at --backend: the connect step fails, nothing else was touched.
    let lines = await lineCount(seqPath);
    const nobody = await restart(control, rig.dir.join("nobody.sock"), "restart to nothing");
    assert.equal(nobody.code, 1, nobody.stdout + nobody.stderr);
    assert.match(
      nobody.stdout,
      /^restart-backend failed at step "connect": connect: cannot connect to ".*nobody\.sock": .*; rolled back: the old back-end serves on \(its rings were never stopped\)$/m,
    );
    assert.equal(old.child.status, undefined, "the old virtiofsd runs on");
    await writerGoesOn(seqPath, lines, 5, "after the failed connect");
    assert.equal(await agent.check(holderRoundTrip("after-connect")), "after-connect\n");

    // 2. A virtiofsd exporting another (empty) directory: the paths of the guest's open files
    // are not there, so with --migration-on-error=abort its LOAD fails. The old one had its
    // rings stopped and its state saved: it must be started again from the saved bases.
    const elsewhere = await rig.dir.mkdir("elsewhere");
    const refusing = await startVirtiofsd({
      name: "vfs-refusing",
      socketPath: rig.dir.join("vfs-refusing.sock"),
      sharedDir: elsewhere,
      logDir: rig.dir.path,
      migration: { mode: "find-paths", onError: "abort" },
    });
    extra.push(refusing);
    lines = await lineCount(seqPath);
    const refused = await restart(control, refusing.socketPath, "restart to a refusing virtiofsd");
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(
      refused.stdout,
      /^restart-backend failed at step "load": .+; rolled back: the old back-end serves on: its rings were started again from the saved bases; the guest paused [\d.]+ ms$/m,
    );
    assert.ok(
      await exitsWithin(refusing, 10_000),
      "the refusing virtiofsd is let go (its connection closed)",
    );
    assert.equal(old.child.status, undefined, "the old virtiofsd runs on");
    await writerGoesOn(seqPath, lines, 5, "after the refused LOAD");
    assert.equal(await agent.check(holderRoundTrip("after-load")), "after-load\n");
    assert.equal(
      (await agent.check("echo fresh >/mnt/fresh.txt && cat /mnt/fresh.txt")).trim(),
      "fresh",
      "new files work on the old virtiofsd",
    );

    // The log has each failure, its step, and the rollback.
    const records = await side.frontProxy.records();
    const done = restartsDone(records);
    assert.deepEqual(
      done.map((d) => [d.ok, d.failedStep]),
      [[false, "connect"], [false, "load"]],
    );
    assert.equal(done[0].pauseMs, 0, "a failed connect pauses nothing");
    const refusedPause = done[1].pauseMs;
    // Each step with its time; the refused restart's steps up to the one that failed.
    const stepRecords = records.filter((r): r is RestartStepRecord =>
      r.type === "restart" && r.event === "step"
    );
    assert.deepEqual(stepRecords.map((r) => `${r.step}${r.ok ? "" : " FAILED"}`), [
      "connect FAILED",
      "connect",
      "negotiate",
      "memory table",
      "stop old rings",
      "save",
      "load FAILED",
    ]);
    assert.ok(stepRecords.every((r) => typeof r.ms === "number" && r.ms >= 0));
    console.log(
      `refused restart's steps: ${
        stepRecords.slice(1).map((r) => `${r.step} ${r.ms} ms`).join(", ")
      }`,
    );
    console.log(
      `the refusing virtiofsd said: ${
        (await refusing.stderrLog()).split("\n").filter((l) => / ERROR /.test(l)).join(" | ")
      }`,
    );
    const errors = records.filter((r): r is ProblemRecord =>
      r.type === "error" && r.message.startsWith("restart-backend failed")
    );
    assert.equal(errors.length, 2, errors.map((e) => e.message).join("\n"));
    const status = await runProxyCli(["ctl", control, "status"]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /failed at connect/);
    assert.match(status.stdout, /failed at load/);
    assert.match(status.stdout, /restart: possible/);
    assert.ok(status.stdout.includes(`back-end ${old.socketPath}`), status.stdout);

    // 3. A good restart after the two failed ones.
    const good = await startVirtiofsd({
      name: "vfs-good",
      socketPath: rig.dir.join("vfs-good.sock"),
      sharedDir: rig.share,
      logDir: rig.dir.path,
    });
    extra.push(good);
    lines = await lineCount(seqPath);
    const ok = await restart(control, good.socketPath, "restart after the failures");
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /with its state \(\d+ bytes\): the guest paused [\d.]+ ms/);
    assert.ok(await exitsWithin(old, 10_000), "the old virtiofsd is gone after the good restart");
    await writerGoesOn(seqPath, lines, 5, "after the good restart");
    assert.equal(await agent.check(holderRoundTrip("after-good")), "after-good\n");
    const total = await writerStreamIsWhole(side, seqPath);
    assert.equal(
      await Deno.readTextFile(`${rig.share}/held.txt`),
      "before\nafter-connect\nafter-load\nafter-good\n",
    );
    assert.deepEqual(await fuseTrouble(side), [], "the guest kernel logged no virtio-fs trouble");
    console.log(
      `pauses: refused LOAD ${refusedPause} ms (rolled back), good ${ok.pauseMs} ms; ` +
        `writer ${total} lines`,
    );
  } finally {
    for (const v of extra) await v.stop().catch(() => {});
  }
});

Deno.test("live migration after restarts: restart, a failed migration, restart again, migrate through relay proxies, restart on the destination; fds and writer carry on", async () => {
  await using rig = await MigrationRig.create("restart-mig");
  const { side: src, control, seqPath } = await sourceWithWriter(rig, ["--device-state", "relay"]);
  const extra: Virtiofsd[] = [];
  const virtiofsd = async (name: string) => {
    const v = await startVirtiofsd({
      name,
      socketPath: rig.dir.join(`${name}.sock`),
      sharedDir: rig.share,
      logDir: rig.dir.path,
    });
    extra.push(v);
    return v;
  };
  try {
    // 1. A restart on the source.
    const first = await virtiofsd("vfs-r1");
    const r1 = await restart(control, first.socketPath, "restart 1 on the source");
    assert.equal(r1.code, 0, r1.stdout + r1.stderr);
    assert.ok(await exitsWithin(src.virtiofsd, 10_000), "the first virtiofsd is gone");
    assert.equal(await src.vm.agent.check(holderRoundTrip("restarted")), "restarted\n");

    // 2. A migration that fails (the destination's proxy fails CHECK after LOAD): the source
    // resumes, and its dirty-page logging is over.
    const bad = await rig.startSide({
      name: "dst-bad",
      backend: "rust",
      proxies: [["--device-state", "relay", "--fault", "check-fail"]],
      incoming: true,
    });
    const failed = await rig.migrate(src, bad);
    await assertFailedCleanly(failed, src, bad);
    assert.equal(await src.vm.agent.check(holderRoundTrip("resumed")), "resumed\n");

    // 3. A restart on the source after the failed migration.
    const second = await virtiofsd("vfs-r2");
    const r2 = await restart(control, second.socketPath, "restart 2, after the failed migration");
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.ok(await exitsWithin(first, 10_000), "the second virtiofsd is gone");

    // 4. The migration, from the twice-restarted virtiofsd.
    const dstControl = rig.dir.join("dst-control.sock");
    const dst = await rig.startSide({
      name: "dst",
      backend: "rust",
      proxies: [["--device-state", "relay", "--control", dstControl]],
      incoming: true,
    });
    const result = await rig.migrate(src, dst);
    const atSwitchOver = await lineCount(seqPath);
    assert.equal(
      result.status,
      "completed",
      `${describeMigration(result)}\n${await src.diagnostics()}\n${await dst.diagnostics()}\n` +
        `--- restarted virtiofsd:\n${await second.stderrLog()}`,
    );
    assert.equal(result.destinationState, "running");
    assert.equal(result.sourceState, "postmigrate");

    // The source proxy saved from the restarted virtiofsd, the destination loaded the same.
    // Each migration's SAVE (the failed one's and this one's) is logged once it has ended.
    const saves = await src.frontProxy.waitForRecords("two SAVE transfer-ends", (records) => {
      const ends = transferEnds(records, "SAVE");
      return ends.length >= 2 ? ends : undefined;
    });
    const save = saves.at(-1)!;
    const load = await waitTransferEnd(dst.frontProxy, "LOAD");
    assert.equal(
      saves.length,
      2,
      `one SAVE per migration (the restarts' are not QEMU's): ${JSON.stringify(saves)}`,
    );
    assert.equal(save.ok, true, JSON.stringify(save));
    assert.equal(load.ok, true, JSON.stringify(load));
    assert.ok(save.bytes > 0);
    assert.ok(digest(save), `the SAVE has a fingerprint: ${JSON.stringify(save)}`);
    assert.equal(digest(load), digest(save), "the destination loaded what the source saved");
    assert.equal((await waitCheck(dst.frontProxy)).result, 0);
    const summary = save.state as { paths?: string[] } | undefined;
    assert.ok(summary?.paths?.some((p) => p.endsWith("seq.txt")), JSON.stringify(summary));

    await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
    await writerGoesOn(seqPath, atSwitchOver, 10, `on the destination (had ${atSwitchOver})`);
    assert.equal(await dst.vm.agent.check(holderRoundTrip("migrated")), "migrated\n");

    // 5. A restart on the destination, of the virtiofsd that loaded the migrated state.
    const third = await virtiofsd("vfs-d1");
    const lines = await lineCount(seqPath);
    const r3 = await restart(dstControl, third.socketPath, "restart 3, on the destination");
    assert.equal(r3.code, 0, r3.stdout + r3.stderr);
    assert.ok(await exitsWithin(dst.virtiofsd, 10_000), "the destination's virtiofsd is gone");
    await writerGoesOn(seqPath, lines, 5, "after the restart on the destination");
    assert.equal(await dst.vm.agent.check(holderRoundTrip("last")), "last\n");
    const total = await writerStreamIsWhole(dst, seqPath);
    assert.equal(
      await Deno.readTextFile(`${rig.share}/held.txt`),
      "before\nrestarted\nresumed\nmigrated\nlast\n",
    );
    console.log(
      `pauses: ${r1.pauseMs}, ${r2.pauseMs} ms on the source, ${r3.pauseMs} ms on the ` +
        `destination; ${describeMigration(result)}; SAVE ${save.bytes} B ${digest(save)}; ` +
        `writer ${total} lines, ${atSwitchOver} at switch-over`,
    );
  } finally {
    for (const v of extra) await v.stop().catch(() => {});
  }
});

Deno.test("restart-backend refuses a back-end without F_DEVICE_STATE (the C virtiofsd) and says why; nothing changes, the guest carries on", async () => {
  await using rig = await MigrationRig.create("restart-c");
  const { side, control, seqPath } = await sourceWithWriter(rig, [], "c");
  // A socket that would take the new back-end's connection: the refusal must come first.
  const spare = rig.dir.join("spare.sock");
  const listener = Deno.listen({ transport: "unix", path: spare });
  let connections = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      conn.close();
    }
  })().catch(() => {});
  try {
    const status = await runProxyCli(["ctl", control, "status"]);
    assert.equal(status.code, 0, status.stderr);
    assert.doesNotMatch(status.stdout, /protocol features:.*\bDEVICE_STATE\b/);
    assert.match(status.stdout, /restart: not now: the back-end did not negotiate F_DEVICE_STATE/);

    const lines = await lineCount(seqPath);
    const r = await restart(control, spare, "restart of the C virtiofsd");
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /^restart-backend failed at step "check": the back-end did not negotiate F_DEVICE_STATE, so its state cannot be carried over .*; rolled back: nothing was changed$/m,
    );
    assert.equal(connections, 0, "the proxy did not connect to the new back-end");
    assert.equal(side.virtiofsd.child.status, undefined, "the C virtiofsd runs on");
    await writerGoesOn(seqPath, lines, 5, "after the refusal");
    assert.equal(await side.vm.agent.check(holderRoundTrip("after")), "after\n");
    await writerStreamIsWhole(side, seqPath);
    const done = restartsDone(await side.frontProxy.records());
    assert.deepEqual(done.map((d) => [d.ok, d.failedStep, d.pauseMs]), [[false, "check", 0]]);
    const after = await runProxyCli(["ctl", control, "status"]);
    assert.ok(after.stdout.includes(`back-end ${side.virtiofsd.socketPath}`), after.stdout);
    assert.match(
      after.stdout,
      /restart [^\n]*: failed at check → /,
      "the refused restart is listed",
    );
  } finally {
    listener.close();
    await accepting;
  }
});

Deno.test("restart-backend with --device-state emulate restarts the C virtiofsd without its state, says what the guest sees, and after a remount the share works", async () => {
  await using rig = await MigrationRig.create("restart-c-emulate");
  const { side, control } = await sourceWithWriter(rig, ["--device-state", "emulate"], "c");
  await side.vm.agent.check(STOP_SEQUENCE_WRITER);
  const status = await runProxyCli(["ctl", control, "status"]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /restart: possible/);
  const next = await startCVirtiofsd({
    name: "vfs-c-next",
    socketPath: rig.dir.join("vfs-c-next.sock"),
    sharedDir: rig.share,
    logDir: rig.dir.path,
  });
  try {
    const r = await restart(control, next.socketPath, "stateless restart of the C virtiofsd");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /WITHOUT its state .*EIO until it remounts/);
    assert.ok(await exitsWithin(side.virtiofsd, 10_000), "the old C virtiofsd is gone");
    const done = restartsDone(await side.frontProxy.records());
    assert.deepEqual(done.map((d) => [d.ok, d.withState]), [[true, false]]);
    // The new back-end knows neither the mount's FUSE session nor its inodes: the guest closes
    // what it held (the holder's fds keep the old superblock, and with it the old session, alive)
    // and remounts.
    const remount = await side.vm.agent.run(
      `for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q ' /mnt/' && kill -9 \${p#/proc/}; done
sleep 0.2; umount /mnt || umount -l /mnt
mount -t virtiofs myfs /mnt && echo fresh >/mnt/fresh.txt && cat /mnt/fresh.txt`,
      { timeoutMs: 30_000 },
    );
    assert.equal(remount.code, 0, JSON.stringify(remount));
    assert.equal(remount.stdout.trim(), "fresh");
    assert.equal(await Deno.readTextFile(`${rig.share}/fresh.txt`), "fresh\n");
  } finally {
    await next.stop().catch(() => {});
  }
});

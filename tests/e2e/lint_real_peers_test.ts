/**
 * The conformance lint against real peers: QEMU 10 + virtiofsd 1.13 (a guest doing file I/O,
 * then a live migration through two proxies), QEMU 10 + the C virtiofsd (file I/O, then a
 * migration with the proxies emulating F_DEVICE_STATE), and DPDK's testpmd pair. Each log is
 * linted by the shipped command (`log lint --json`) and must hold exactly the findings listed
 * here, each a real departure from the spec text (README "Conformance lint"); the lint records
 * the proxy wrote live must be the same findings, with a verdict per peer for every session.
 * The logs are kept in `out/lint/` (the README shows `log lint` on them).
 *
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/lint_real_peers_test.ts`
 */

import assert from "node:assert/strict";
import { startTestpmd, TestDir } from "../harness/mod.ts";
import type { LintFindingRecord, LintVerdictRecord } from "../../log/lint_record.ts";
import type { LintReport } from "../../log/lint.ts";
import { describeMigration, MigrationRig, runProxyCli, START_HOLDER } from "./_migration_rig.ts";
import { isSessionEnd, startProxyProcess } from "./_proxy.ts";

const KEEP = new URL("../../out/lint/", import.meta.url).pathname;

/** A finding as the assertions compare it: rule, peer and request. */
type Key = string;

function keyOf(f: LintFindingRecord): Key {
  const request = f.values.request ?? f.values.reply ?? "";
  return `${f.rule} ${f.peer} ${request}`.trim();
}

/** Lints `log` with the CLI, checks it against the live records, returns the finding keys. */
async function lintAndCompare(log: string, name: string): Promise<Key[]> {
  await Deno.mkdir(KEEP, { recursive: true });
  await Deno.copyFile(log, `${KEEP}${name}.jsonl`);
  const out = await runProxyCli(["log", "lint", log, "--json"]);
  assert.ok(out.code === 0 || out.code === 1, `log lint exited ${out.code}: ${out.stderr}`);
  const report = JSON.parse(out.stdout) as LintReport;
  const human = await runProxyCli(["log", "lint", log]);
  console.log(`--- log lint ${name}.jsonl (exit ${human.code})\n${human.stdout}`);
  assert.equal(out.code, report.findings > 0 ? 1 : 0);
  assert.deepEqual(report.unjudged, []);

  // The live lint wrote the same findings into the log, and a verdict per peer per session.
  const records = (await Deno.readTextFile(log)).split("\n").filter((l) => l !== "")
    .map((l) => JSON.parse(l));
  const live = records.filter((r) => r.type === "lint");
  const liveFindings = live.filter((r) => r.event === "finding") as LintFindingRecord[];
  const liveVerdicts = live.filter((r) => r.event === "verdict") as LintVerdictRecord[];
  const offline = report.sessions.flatMap((s) => s.findings);
  assert.deepEqual(
    liveFindings.map((f) => [f.session, f.rule, f.peer, f.message, f.ts]),
    offline.map((f) => [f.session, f.rule, f.peer, f.message, f.ts]),
    "the live lint and log lint disagree",
  );
  const sessions = report.sessions.map((s) => s.session);
  assert.ok(sessions.length > 0, "no session was linted");
  for (const s of sessions) {
    for (const peer of ["front-end", "back-end"]) {
      const v = liveVerdicts.filter((x) => x.session === s && x.peer === peer);
      assert.equal(v.length, 1, `live verdicts for s${s} ${peer}: ${JSON.stringify(v)}`);
      const off = report.sessions.find((x) => x.session === s)!.verdicts.find((x) =>
        x.peer === peer
      )!;
      assert.equal(v[0].findings, off.findings);
      assert.ok(v[0].messages > 0, `s${s} ${peer} sent no message`);
    }
  }
  return [...new Set(offline.map(keyOf))].sort();
}

Deno.test("lint: QEMU 10 + virtiofsd 1.13, file I/O and a live migration through two proxies", async () => {
  await using rig = await MigrationRig.create("lint-vfsd");
  const src = await rig.startSide({ name: "src", backend: "rust", proxies: [[]] });
  await src.vm.agent.check("echo 'written by the guest' >/mnt/a.txt && cat /mnt/a.txt");
  await src.vm.agent.check("mkdir /mnt/d && for i in $(seq 1 10); do echo $i >/mnt/d/f$i; done");
  await src.vm.agent.check(START_HOLDER);
  const dst = await rig.startSide({ name: "dst", backend: "rust", proxies: [[]], incoming: true });
  const result = await rig.migrate(src, dst);
  assert.equal(result.status, "completed", describeMigration(result));
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  assert.equal(await dst.vm.agent.check("cat /mnt/a.txt"), "written by the guest\n");
  await src.stop();
  await dst.stop();

  assert.deepEqual(await lintAndCompare(src.frontProxy.logPath, "virtiofsd-src"), []);
  assert.deepEqual(await lintAndCompare(dst.frontProxy.logPath, "virtiofsd-dst"), []);
});

Deno.test("lint: QEMU 10 + the C virtiofsd, file I/O and a migration the proxies emulate", async () => {
  await using rig = await MigrationRig.create("lint-cvfsd");
  const emulate = [["--device-state", "emulate"]];
  const src = await rig.startSide({ name: "src", backend: "c", proxies: emulate });
  await src.vm.agent.check("echo 'written by the guest' >/mnt/a.txt && cat /mnt/a.txt");
  await src.vm.agent.check("mkdir /mnt/d && for i in $(seq 1 10); do echo $i >/mnt/d/f$i; done");
  const dst = await rig.startSide({ name: "dst", backend: "c", proxies: emulate, incoming: true });
  const result = await rig.migrate(src, dst);
  assert.equal(result.status, "completed", describeMigration(result));
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  await src.stop();
  await dst.stop();

  assert.deepEqual(await lintAndCompare(src.frontProxy.logPath, "virtiofsd-c-src"), []);
  assert.deepEqual(await lintAndCompare(dst.frontProxy.logPath, "virtiofsd-c-dst"), []);
});

Deno.test("lint: DPDK testpmd virtio-user → proxy → testpmd vhost", async () => {
  await using dir = await TestDir.create("lint-net");
  await using backend = await startTestpmd({
    role: "backend",
    socketPath: dir.join("net.sock"),
    logDir: dir.path,
  });
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath: backend.socketPath,
  });
  await using frontend = await startTestpmd({
    role: "frontend",
    socketPath: proxy.listenPath,
    logDir: dir.path,
  });
  await backend.waitForRx(1, { timeoutMs: 30_000 });
  await frontend.waitForRx(1, { timeoutMs: 30_000 });
  await frontend.stop();
  await proxy.waitForRecord(isSessionEnd(1), { what: "session 1 to end" });
  // The verdicts follow the session end in the same batch; give the writer a moment.
  await proxy.waitForRecord(
    (r): r is LintVerdictRecord => r.type === "lint" && r.event === "verdict",
    { what: "the lint verdicts" },
  );

  // DPDK 22.11's virtio-user stops the rings with one uninitialised `struct vhost_vring_state`
  // (virtio_user_stop_device sets only .index), so every GET_VRING_BASE after the first carries
  // the previous reply's avail index in the reserved num: "The request payload's num field is
  // currently reserved and must be set to 0." The vhost side and QEMU are clean.
  assert.deepEqual(await lintAndCompare(proxy.logPath, "testpmd"), [
    "num-reserved front-end GET_VRING_BASE",
  ]);
});

/**
 * Live migration through the proxy in its default relay mode: two QEMU 10, each with its own
 * rust virtiofsd (`--migration-mode=find-paths`) behind its own proxy, one shared directory.
 * The guest keeps files open and appends to one of them every 50 ms while it migrates; the test
 * proves the open fds keep working on the destination with nothing lost, and that the proxies
 * saw, hashed, dumped and decoded the state virtiofsd moved. Needs `scripts/setup_peers.sh`;
 * fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/migration_virtiofsd_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { fingerprintOf, fingerprintsReady } from "../../device_state/fingerprint.ts";
import { readVhostUserTrace, waitFor } from "../harness/mod.ts";
import {
  checkRecords,
  describeMigration,
  holderRoundTrip,
  lineCount,
  MigrationRig,
  runProxyCli,
  sequenceGaps,
  START_HOLDER,
  START_SEQUENCE_WRITER,
  STOP_SEQUENCE_WRITER,
  transferStarts,
  waitCheck,
  waitTransferEnd,
} from "./_migration_rig.ts";

await fingerprintsReady;

Deno.test("relay: live migration with rust virtiofsd while the guest appends through open fds", async () => {
  await using rig = await MigrationRig.create("mig-vfsd");
  const seqPath = `${rig.share}/seq.txt`;
  const relay = [["--device-state", "relay"]];
  const src = await rig.startSide({
    name: "src",
    backend: "rust",
    proxies: relay,
    stateDump: true,
    traceVhostUser: true,
  });
  console.log(`source booted through the proxy in ${src.vm.bootMs} ms`);

  await src.vm.agent.check(START_HOLDER);
  assert.equal(await src.vm.agent.check(holderRoundTrip("before")), "before\n");
  await src.vm.agent.check(START_SEQUENCE_WRITER);
  // Let the writer get going, so the migration lands in the middle of a stream of appends.
  await waitFor(async () => (await lineCount(seqPath)) >= 10 || undefined, {
    what: "the guest writer's first 10 lines",
    timeoutMs: 20_000,
  });

  const dst = await rig.startSide({
    name: "dst",
    backend: "rust",
    proxies: relay,
    stateDump: true,
    incoming: true,
    traceVhostUser: true,
  });
  const result = await rig.migrate(src, dst);
  const linesAtSwitchOver = await lineCount(seqPath);
  assert.equal(
    result.status,
    "completed",
    `${describeMigration(result)}\n${await src.diagnostics()}\n${await dst.diagnostics()}`,
  );
  assert.equal(result.destinationState, "running");
  assert.equal(result.sourceState, "postmigrate");

  // Both QEMUs really moved back-end state (the proxy did not make the device look stateless).
  for (const side of [src, dst]) {
    const names = (await readVhostUserTrace(side.vm.paths.trace!)).map((request) => request.name);
    assert.ok(names.includes("SET_DEVICE_STATE_FD"), `${side.name} sent: ${names.join(" ")}`);
    assert.ok(names.includes("CHECK_DEVICE_STATE"), `${side.name} sent: ${names.join(" ")}`);
  }

  // The writer keeps appending on the destination through the fd it opened on the source.
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  await waitFor(async () => (await lineCount(seqPath)) >= linesAtSwitchOver + 10 || undefined, {
    what: `10 more lines from the writer on the destination (had ${linesAtSwitchOver})`,
    timeoutMs: 30_000,
    detail: async () => await dst.diagnostics(),
  });
  const stopped = (await dst.vm.agent.check(STOP_SEQUENCE_WRITER)).trim();
  assert.match(stopped, /^\d+$/, `the writer reported a failed write: ${stopped}`);
  const written = await Deno.readTextFile(seqPath);
  assert.deepEqual(sequenceGaps(written), [], "sequence numbers must be continuous");
  assert.equal(await lineCount(seqPath), Number(stopped), "every number written reached the file");
  console.log(`writer: ${stopped} lines, ${linesAtSwitchOver} at switch-over, none lost`);

  // The reading fd held across the migration sees new data too.
  assert.equal(await dst.vm.agent.check(holderRoundTrip("after")), "after\n");
  assert.equal(await Deno.readTextFile(`${rig.share}/held.txt`), "before\nafter\n");

  // The proxies moved the same bytes: SAVE on the source, LOAD on the destination.
  const srcProxy = src.frontProxy;
  const dstProxy = dst.frontProxy;
  const save = await waitTransferEnd(srcProxy, "SAVE");
  const load = await waitTransferEnd(dstProxy, "LOAD");
  const saveCheck = await waitCheck(srcProxy);
  const loadCheck = await waitCheck(dstProxy);
  console.log(
    `SAVE ${save.bytes} B in ${save.durationMs} ms ${JSON.stringify(save.fingerprint)}; ` +
      `LOAD ${load.bytes} B in ${load.durationMs} ms ${JSON.stringify(load.fingerprint)}`,
  );
  assert.equal(save.ok, true, JSON.stringify(save));
  assert.equal(load.ok, true, JSON.stringify(load));
  assert.ok(save.bytes > 0, "virtiofsd's state is never empty");
  assert.equal(save.bytes, save.bytesIn, "relay mode delivers every byte it takes");
  assert.equal(load.bytes, save.bytes);
  // The default fingerprint: xxh3-128, named in the record; `sha256` only for --state-hash sha256.
  assert.equal(save.fingerprint?.algorithm, "xxh3-128", JSON.stringify(save));
  assert.match(save.fingerprint?.value ?? "", /^[0-9a-f]{32}$/);
  assert.equal(save.sha256, undefined);
  assert.deepEqual(load.fingerprint, save.fingerprint, "the destination must load what was saved");
  assert.equal(saveCheck.result, 0, JSON.stringify(saveCheck));
  assert.equal(loadCheck.result, 0, JSON.stringify(loadCheck));
  assert.equal(checkRecords(await srcProxy.records()).length, 1);
  assert.equal(checkRecords(await dstProxy.records()).length, 1);

  // Relay mode interposes the proxy's own pipe: the back-end never gets QEMU's fd.
  for (const [proxy, direction] of [[srcProxy, "SAVE"], [dstProxy, "LOAD"]] as const) {
    const [start] = transferStarts(await proxy.records(), direction);
    assert.ok(start, `${proxy.name} logged no ${direction} transfer-start`);
    assert.equal(start.via, "proxy-pipe", JSON.stringify(start));
  }

  // The decoded summary shows the files the guest holds open.
  const summary = save.state as { format?: string; paths?: string[] } | undefined;
  assert.equal(summary?.format, "virtiofsd", JSON.stringify(save.state));
  assert.ok(summary?.paths?.some((path) => path.endsWith("seq.txt")), JSON.stringify(summary));

  // The dumped blob is the hashed one, and `state show` decodes it.
  assert.ok(save.dump, `no dump path in ${JSON.stringify(save)}`);
  const blob = await Deno.readFile(save.dump);
  assert.equal(blob.length, save.bytes);
  assert.deepEqual(fingerprintOf("xxh3-128", blob), save.fingerprint);
  const shown = await runProxyCli(["state", "show", save.dump]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.ok(
    shown.stdout.includes(`fingerprint: xxh3-128 ${save.fingerprint?.value}\n`),
    shown.stdout,
  );
  assert.ok(shown.stdout.includes(`sha256: ${await sha256Hex(blob)}\n`), shown.stdout);
  assert.match(shown.stdout, /held\.txt/, shown.stdout);
  assert.match(shown.stdout, /seq\.txt/, shown.stdout);
});

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

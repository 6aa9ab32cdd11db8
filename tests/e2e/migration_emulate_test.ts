/**
 * The proxy's device-state modes that change what QEMU sees:
 * - `--device-state emulate` makes the C virtiofsd (QEMU 7.2, no device state) migratable:
 *   QEMU 10 refuses it directly (proven in harness_direct_test.ts, "C virtiofsd mounts, and
 *   QEMU 10 refuses to migrate it"); through two emulating proxies it migrates. The destination
 *   back-end never saw the guest's FUSE_INIT, so the guest must remount the share afterwards
 *   (environment.md, "Migration facts"): expected and documented.
 * - `--device-state off` hides F_DEVICE_STATE: with the rust virtiofsd, migration then fails
 *   the way it does with an old back-end, and the source guest carries on.
 *
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/migration_emulate_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import type { MessageRecord } from "../../log/record.ts";
import {
  assertFailedCleanly,
  assertGuestUsable,
  describeMigration,
  MigrationRig,
  TAG,
  transferEnds,
  transferStarts,
  waitCheck,
  waitTransferEnd,
} from "./_migration_rig.ts";

Deno.test("emulate: the C virtiofsd migrates through emulating proxies; the guest remounts", async () => {
  await using rig = await MigrationRig.create("mig-emu");
  const emulate = [["--device-state", "emulate"]];
  const src = await rig.startSide({ name: "src", backend: "c", proxies: emulate });
  await src.vm.agent.check("echo 'from the source' >/mnt/before.txt");
  await Deno.writeTextFile(`${rig.share}/from-host.txt`, "host data\n");

  const dst = await rig.startSide({ name: "dst", backend: "c", proxies: emulate, incoming: true });
  const result = await rig.migrate(src, dst);
  assert.equal(
    result.status,
    "completed",
    `${describeMigration(result)}\n${await src.diagnostics()}\n${await dst.diagnostics()}`,
  );
  assert.equal(result.destinationState, "running");

  // The destination C virtiofsd starts with no FUSE session: the old mount is dead (EIO), a
  // fresh mount works. Nothing in the guest holds an fd on /mnt, so umount succeeds.
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  const stale = await dst.vm.agent.run("cat /mnt/before.txt", { timeoutMs: 15_000 });
  console.log(`old mount after migration: code=${stale.code} stderr=${stale.stderr.trim()}`);
  await dst.vm.agent.check(`umount /mnt && mount -t virtiofs ${TAG} /mnt`, { timeoutMs: 20_000 });
  assert.equal(await dst.vm.agent.check("cat /mnt/before.txt"), "from the source\n");
  assert.equal(await dst.vm.agent.check("cat /mnt/from-host.txt"), "host data\n");
  await dst.vm.agent.check("echo 'from the destination' >/mnt/after.txt");
  assert.equal(await Deno.readTextFile(`${rig.share}/after.txt`), "from the destination\n");

  // The proxies produced and consumed their own state: same bytes on both sides.
  const save = await waitTransferEnd(src.frontProxy, "SAVE");
  const load = await waitTransferEnd(dst.frontProxy, "LOAD");
  console.log(
    `emulated SAVE ${save.bytes} B ${JSON.stringify(save.fingerprint)} state=${
      JSON.stringify(save.state)
    }`,
  );
  assert.equal(save.ok, true, JSON.stringify(save));
  assert.equal(load.ok, true, JSON.stringify(load));
  assert.ok(save.bytes > 0);
  // The emulated state records what the source negotiated: QEMU's last SET_FEATURES request.
  const setFeatures = (await src.frontProxy.records()).filter((r) =>
    r.type === "message" && r.name === "SET_FEATURES" && r.kind === "request"
  ).at(-1) as MessageRecord | undefined;
  const negotiated = (setFeatures?.payload.features as { mask?: string } | undefined)?.mask;
  assert.ok(negotiated, "QEMU sent SET_FEATURES");
  const saved = save.state as { format?: string; virtioFeatures?: string } | undefined;
  assert.equal(saved?.format, "vhost-user-proxy", JSON.stringify(saved));
  // LOG_ALL (bit 26) only says a migration is running; whether the state keeps it is a choice.
  const withoutLogAll = (mask: bigint) => mask & ~(1n << 26n);
  assert.equal(
    `0x${withoutLogAll(BigInt(saved?.virtioFeatures ?? -1)).toString(16)}`,
    `0x${withoutLogAll(BigInt(negotiated)).toString(16)}`,
    "the emulated state must carry the virtio features QEMU set",
  );
  assert.ok(save.fingerprint, JSON.stringify(save));
  assert.deepEqual(load.fingerprint, save.fingerprint);
  for (const [proxy, direction] of [[src.frontProxy, "SAVE"], [dst.frontProxy, "LOAD"]] as const) {
    const [start] = transferStarts(await proxy.records(), direction);
    assert.equal(start?.via, "emulated", JSON.stringify(start));
  }
  assert.equal((await waitCheck(src.frontProxy)).result, 0);
  assert.equal((await waitCheck(dst.frontProxy)).result, 0);

  // The C virtiofsd itself never heard of device state (the proxy answered for it).
  for (const side of [src, dst]) {
    const forwarded = (await side.frontProxy.records()).filter((r) =>
      r.type === "message" && r.from === "front-end" && r.name === "SET_DEVICE_STATE_FD" &&
      !r.action
    );
    assert.deepEqual(forwarded, [], `${side.name}: SET_DEVICE_STATE_FD must not be relayed`);
  }
});

Deno.test("off: hiding F_DEVICE_STATE makes QEMU refuse to migrate, the source carries on", async () => {
  await using rig = await MigrationRig.create("mig-off");
  const off = [["--device-state", "off"]];
  const src = await rig.startSide({ name: "src", backend: "rust", proxies: off });
  await assertGuestUsable(src, rig.share, "before");

  const dst = await rig.startSide({ name: "dst", backend: "rust", proxies: off, incoming: true });
  const result = await rig.migrate(src, dst);
  await assertFailedCleanly(result, src, dst);
  // QEMU's own reason for an old back-end: it never saw bit 19.
  assert.match(await src.vm.stderrLog(), /does not support migration/);
  assert.deepEqual(transferEnds(await src.frontProxy.records(), "SAVE"), []);
  await assertGuestUsable(src, rig.share, "after");
});

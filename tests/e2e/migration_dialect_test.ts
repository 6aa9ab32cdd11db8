/**
 * Dialect translation under a real migration: on both sides QEMU talks to proxy A, which speaks
 * the 2023 RFC numbering towards proxy B (`--back-dialect rfc2023`), which translates back for
 * virtiofsd (`--front-dialect rfc2023`):
 *
 *   QEMU ─upstream─ A ─rfc2023─ B ─upstream─ virtiofsd
 *
 * On the middle link SET_DEVICE_STATE_FD travels as 41, CHECK_DEVICE_STATE as 42 and the
 * feature as bit 17 (MIGRATORY_STATE) instead of 42/43/bit 19 (protocol.md §2.6). Migration must
 * work through both chains, and both ends of the middle link must log the RFC numbers.
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/migration_dialect_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import type { LogRecord, MessageRecord } from "../../log/record.ts";
import { readVhostUserTrace } from "../harness/mod.ts";
import {
  describeMigration,
  holderRoundTrip,
  MigrationRig,
  type ProxyProcess,
  START_HOLDER,
  waitTransferEnd,
} from "./_migration_rig.ts";

const RFC_SET_DEVICE_STATE_FD = 41;
const RFC_CHECK_DEVICE_STATE = 42;
const UPSTREAM_SET_DEVICE_STATE_FD = 42;
const UPSTREAM_CHECK_DEVICE_STATE = 43;
const MIGRATORY_STATE = 1n << 17n;
const DEVICE_STATE = 1n << 19n;

/** QEMU → A (RFC towards its back-end) → B (RFC towards its front-end) → virtiofsd. */
const RFC_CHAIN = [["--back-dialect", "rfc2023"], ["--front-dialect", "rfc2023"]];

function messages(records: LogRecord[], name: string, from: MessageRecord["from"]) {
  return records.filter((r): r is MessageRecord =>
    r.type === "message" && r.name === name && r.from === from
  );
}

/** The feature mask of a features message as the proxy decoded it. */
function featureMask(record: MessageRecord | undefined): bigint {
  const features = record?.payload.features as { mask?: string } | undefined;
  assert.ok(features?.mask, `no feature mask in ${JSON.stringify(record)}`);
  return BigInt(features.mask);
}

/** Asserts both ends of the middle link logged the RFC numbering. */
async function assertRfcOnMiddleLink(a: ProxyProcess, b: ProxyProcess): Promise<void> {
  const aRecords = await a.records();
  const bRecords = await b.records();

  // B receives the RFC codes from A and names them by the RFC meaning. A proxy may hold CHECK
  // until its state copy ends: it logs the request when held and again when released (with
  // the translated code), so the last record is the one that went on.
  const bSet = messages(bRecords, "SET_DEVICE_STATE_FD", "front-end").at(-1);
  const bCheck = messages(bRecords, "CHECK_DEVICE_STATE", "front-end").at(-1);
  assert.equal(bSet?.code, RFC_SET_DEVICE_STATE_FD, JSON.stringify(bSet));
  assert.equal(bCheck?.code, RFC_CHECK_DEVICE_STATE, JSON.stringify(bCheck));
  assert.equal(bSet.forwardedCode, UPSTREAM_SET_DEVICE_STATE_FD, JSON.stringify(bSet));
  assert.equal(bCheck.forwardedCode, UPSTREAM_CHECK_DEVICE_STATE, JSON.stringify(bCheck));

  // A receives QEMU's upstream codes and sends the RFC ones on.
  const aSet = messages(aRecords, "SET_DEVICE_STATE_FD", "front-end").at(-1);
  const aCheck = messages(aRecords, "CHECK_DEVICE_STATE", "front-end").at(-1);
  assert.equal(aSet?.code, UPSTREAM_SET_DEVICE_STATE_FD, JSON.stringify(aSet));
  assert.equal(aSet.forwardedCode, RFC_SET_DEVICE_STATE_FD, JSON.stringify(aSet));
  assert.equal(aCheck?.code, UPSTREAM_CHECK_DEVICE_STATE, JSON.stringify(aCheck));
  assert.equal(aCheck.forwardedCode, RFC_CHECK_DEVICE_STATE, JSON.stringify(aCheck));

  // The feature is bit 17 in the middle: what B offered to A and what A acked to B.
  const offeredRecord = messages(aRecords, "GET_PROTOCOL_FEATURES", "back-end")[0];
  const offered = featureMask(offeredRecord);
  assert.ok(JSON.stringify(offeredRecord.payload).includes("MIGRATORY_STATE"));
  const acked = featureMask(messages(bRecords, "SET_PROTOCOL_FEATURES", "front-end")[0]);
  for (const [what, mask] of [["offered to A", offered], ["acked to B", acked]] as const) {
    assert.equal(mask & MIGRATORY_STATE, MIGRATORY_STATE, `${what}: 0x${mask.toString(16)}`);
    assert.equal(mask & DEVICE_STATE, 0n, `${what}: 0x${mask.toString(16)}`);
  }
  // ...and bit 19 at the outer links.
  const qemuAcked = featureMask(messages(aRecords, "SET_PROTOCOL_FEATURES", "front-end")[0]);
  assert.equal(qemuAcked & DEVICE_STATE, DEVICE_STATE, `QEMU acked 0x${qemuAcked.toString(16)}`);
  assert.equal(qemuAcked & MIGRATORY_STATE, 0n, `QEMU acked 0x${qemuAcked.toString(16)}`);
}

Deno.test("dialect: migration through QEMU → A → (rfc2023) → B → virtiofsd on both sides", async () => {
  await using rig = await MigrationRig.create("mig-dialect");
  const src = await rig.startSide({
    name: "src",
    backend: "rust",
    proxies: RFC_CHAIN,
    traceVhostUser: true,
  });
  await src.vm.agent.check(START_HOLDER);
  assert.equal(await src.vm.agent.check(holderRoundTrip("before")), "before\n");

  const dst = await rig.startSide({
    name: "dst",
    backend: "rust",
    proxies: RFC_CHAIN,
    incoming: true,
    traceVhostUser: true,
  });
  const result = await rig.migrate(src, dst);
  assert.equal(
    result.status,
    "completed",
    `${describeMigration(result)}\n${await src.diagnostics()}\n${await dst.diagnostics()}`,
  );
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  assert.equal(await dst.vm.agent.check(holderRoundTrip("after")), "after\n");
  assert.equal(await Deno.readTextFile(`${rig.share}/held.txt`), "before\nafter\n");

  // QEMU itself only ever spoke upstream numbers.
  for (const side of [src, dst]) {
    const codes = (await readVhostUserTrace(side.vm.paths.trace!)).map((request) => request.code);
    assert.ok(codes.includes(UPSTREAM_SET_DEVICE_STATE_FD), `${side.name}: ${codes.join(" ")}`);
    assert.ok(codes.includes(UPSTREAM_CHECK_DEVICE_STATE), `${side.name}: ${codes.join(" ")}`);
  }

  const [srcA, srcB] = src.proxies;
  const [dstA, dstB] = dst.proxies;
  await assertRfcOnMiddleLink(srcA, srcB);
  await assertRfcOnMiddleLink(dstA, dstB);

  // The same state crossed all four proxies.
  const hashes = await Promise.all([
    waitTransferEnd(srcA, "SAVE"),
    waitTransferEnd(srcB, "SAVE"),
    waitTransferEnd(dstA, "LOAD"),
    waitTransferEnd(dstB, "LOAD"),
  ]);
  for (const end of hashes) assert.equal(end.ok, true, JSON.stringify(end));
  assert.ok(hashes.every((end) => end.fingerprint), JSON.stringify(hashes));
  assert.equal(
    new Set(hashes.map((end) => JSON.stringify(end.fingerprint))).size,
    1,
    JSON.stringify(hashes),
  );
});

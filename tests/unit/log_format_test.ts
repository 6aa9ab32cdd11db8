// The human line of a transfer-end record names its fingerprint's algorithm, and reads the
// `sha256` of a record written before the `fingerprint` field existed.

import assert from "node:assert/strict";
import { formatRecord } from "../../log/format.ts";
import type { TransferEndRecord } from "../../log/record.ts";

const end = (extra: Partial<TransferEndRecord>): TransferEndRecord => ({
  type: "device-state",
  event: "transfer-end",
  ts: "2026-12-03T14:00:00.000Z",
  session: 1,
  direction: "SAVE",
  ok: true,
  bytes: 60,
  bytesIn: 60,
  durationMs: 0.2,
  throughputMiBps: 1,
  ...extra,
});

Deno.test("log line: a transfer-end names its fingerprint (xxh3-128), an old record its sha256", () => {
  const xxh = formatRecord(end({ fingerprint: { algorithm: "xxh3-128", value: "12".repeat(16) } }));
  assert.match(xxh, / xxh3-128=(12){16}$/);
  const both = formatRecord(
    end({ fingerprint: { algorithm: "sha256", value: "ab".repeat(32) }, sha256: "ab".repeat(32) }),
  );
  assert.match(both, / sha256=(ab){32}$/);
  const old = formatRecord(end({ sha256: "cd".repeat(32) }));
  assert.match(old, / sha256=(cd){32}$/);
  const off = formatRecord(end({}));
  assert.match(off, / fingerprint=\(off\)$/);
  assert.doesNotMatch(off, /sha256/);
});

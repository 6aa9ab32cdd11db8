// The start-up rehearsal of a migration's switch-over (relay/warm_up_session.ts) must run the
// real paths (both transfers relayed and checked), stay silent, and leave nothing open.

import assert from "node:assert/strict";
import { countOpenFds } from "../../ffi/fdinfo.ts";
import { deviceStateHooks } from "../../device_state/handler.ts";
import { fingerprintsReady } from "../../device_state/fingerprint.ts";
import type { LogRecord } from "../../log/record.ts";
import { warmUpSession } from "../../relay/warm_up_session.ts";

// The device-state code hashes with xxh3-128 (WebAssembly) by default.
await fingerprintsReady;

Deno.test("warm-up: each round relays a LOAD and a SAVE, both checked, with no error, and closes every fd", () => {
  const before = countOpenFds();
  const records: LogRecord[] = [];
  const result = warmUpSession({ mode: "relay" }, deviceStateHooks, 3, (r) => records.push(r));
  assert.deepEqual(result.problems, []);
  const ends = records.filter((r) => r.type === "device-state" && r.event === "transfer-end");
  const summary = ends.map((r) =>
    r.type === "device-state" && r.event === "transfer-end"
      ? `${r.direction} ${r.ok} ${r.bytes}`
      : ""
  ).sort();
  assert.deepEqual(summary, [
    ...Array(3).fill("LOAD true 4096"),
    ...Array(3).fill("SAVE true 4096"),
  ]);
  const checks = records.filter((r) => r.type === "device-state" && r.event === "check");
  assert.equal(checks.length, 6);
  const end = records.at(-1);
  assert.ok(end?.type === "session-end", "the rehearsal session is ended");
  assert.equal(countOpenFds(), before);
});

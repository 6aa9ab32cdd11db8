/**
 * `state show <file>`: what a dumped device-state blob holds, in the formats the proxy knows.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { summarizeBlob } from "./blob_summary.ts";
import { DEFAULT_FINGERPRINT, fingerprintOf, fingerprintsReady } from "./fingerprint.ts";
import { ioCause } from "../log/tools.ts";

// Loaded by the CLI on the main thread only (a top-level await is safe there, not in a Worker).
await fingerprintsReady;

/** Prints a summary of the blob at `path`; returns the exit code. */
export function stateShow(path: string, options: { json?: boolean } = {}): number {
  let blob: Uint8Array;
  try {
    blob = Deno.readFileSync(path);
  } catch (e) {
    console.error(`vhost-user-proxy: state show: cannot read "${path}": ${ioCause(e)}`);
    return 1;
  }
  const summary = summarizeBlob(blob) ?? { format: "unknown" };
  const out = {
    file: path,
    bytes: blob.length,
    // The default fingerprint, as a transfer-end record carries it, and the SHA-256 as before.
    fingerprint: fingerprintOf(DEFAULT_FINGERPRINT, blob),
    sha256: createHash("sha256").update(blob).digest("hex"),
    ...summary,
  };
  if (options.json) {
    console.log(JSON.stringify(out, null, 2));
  } else {
    for (const [k, v] of Object.entries(out)) {
      if (Array.isArray(v)) {
        console.log(`${k}:`);
        for (const item of v) {
          console.log(`  ${typeof item === "object" ? JSON.stringify(item) : item}`);
        }
      } else if (k === "fingerprint") {
        console.log(`fingerprint: ${out.fingerprint.algorithm} ${out.fingerprint.value}`);
      } else {
        console.log(`${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
      }
    }
  }
  return summary.format === "unknown" ? 3 : "error" in summary ? 4 : 0;
}

/**
 * Emulated device state (`--device-state emulate`): the proxy itself is the back-end's end of the
 * state stream, for a back-end without F_DEVICE_STATE. SAVE writes the proxy's own blob (what it
 * knows of the device, plus `--state-save-cmd`'s output) to QEMU's fd; LOAD reads QEMU's blob
 * and checks it against what this back-end offers (and hands the user part to
 * `--state-load-cmd`). Its outcome is its own: no copy happened, so it is not a copy's result.
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import type { Reactor } from "../ffi/reactor.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import { translateProtocolFeatures } from "../protocol/dialect.ts";
import {
  describeProtocolFeatures,
  describeVirtioFeatures,
  protocolFeatureMask,
} from "../protocol/features.ts";
import { BlobReader, BlobWriter } from "./blob_io.ts";
import { decodeEmulatedState, type EmulatedMeta, encodeEmulatedState } from "./emulated_state.ts";
import type { Faults } from "./faults.ts";

/** Most an emulated LOAD may bring. */
export const EMULATED_LIMIT = 64 << 20;
/** Virtio bit 30, always offered by a back-end with protocol features. */
const PROTOCOL_FEATURES_BIT = 1n << 30n;

/** What an emulated SAVE or LOAD did. */
export interface EmulationResult {
  ok: boolean;
  /** The blob written (SAVE) or read (LOAD). */
  blob: Uint8Array;
  /** Bytes that crossed QEMU's fd. */
  bytes: number;
  durationMs: number;
  error?: string;
}

/** What this back-end offers, as the destination checks a LOAD against it. */
export interface OfferedFeatures {
  virtio: bigint;
  protocol: bigint;
  dialect: Dialect;
}

/**
 * SAVE: the proxy's blob for `meta` (and `--state-save-cmd`'s output) to QEMU's `fd`, with the
 * faults applied. `onDone` is called once; the returned writer can be cancelled.
 */
export function emulateSave(
  reactor: Reactor,
  fd: OwnedFd,
  meta: EmulatedMeta,
  options: { saveCmd?: string; faults: Faults },
  onDone: (r: EmulationResult) => void,
): BlobWriter | undefined {
  const started = performance.now();
  const result = (ok: boolean, blob: Uint8Array, bytes: number, error?: string) => ({
    ok,
    blob,
    bytes,
    durationMs: performance.now() - started,
    ...(error === undefined ? {} : { error }),
  });
  let blob: Uint8Array;
  try {
    blob = encodeEmulatedState(meta, runSaveCommand(options.saveCmd));
  } catch (e) {
    fd.close();
    onDone(result(false, new Uint8Array(0), 0, e instanceof Error ? e.message : String(e)));
    return undefined;
  }
  const f = options.faults;
  if (f.corrupt) blob[Math.min(1, blob.length - 1)] ^= 0xff;
  if (f.truncateAt !== undefined) blob = blob.subarray(0, f.truncateAt);
  return new BlobWriter(reactor, fd, blob, (o) => {
    if (!o.ok) onDone(result(false, blob, o.bytes, o.error));
    else if (f.truncateAt !== undefined) {
      onDone(result(false, blob, blob.length, "cut short (fault state-truncate)"));
    } else onDone(result(true, blob, blob.length));
  });
}

/** LOAD: reads QEMU's blob from `fd` and checks it (`verifyEmulatedLoad`). */
export function emulateLoad(
  reactor: Reactor,
  fd: OwnedFd,
  offered: OfferedFeatures,
  options: { loadCmd?: string },
  onDone: (r: EmulationResult) => void,
): BlobReader {
  const started = performance.now();
  return new BlobReader(reactor, fd, EMULATED_LIMIT, (o) => {
    const durationMs = performance.now() - started;
    if (!o.ok) {
      onDone({ ok: false, blob: new Uint8Array(0), bytes: o.bytes, durationMs, error: o.error });
      return;
    }
    const problem = verifyEmulatedLoad(o.blob, offered, options.loadCmd);
    onDone({
      ok: problem === undefined,
      blob: o.blob,
      bytes: o.blob.length,
      durationMs,
      ...(problem === undefined ? {} : { error: problem }),
    });
  });
}

/** Checks an emulated LOAD: integrity, then that this back-end offers what the source used. */
export function verifyEmulatedLoad(
  blob: Uint8Array,
  offered: OfferedFeatures,
  loadCmd?: string,
): string | undefined {
  const decoded = decodeEmulatedState(blob);
  if (!decoded.ok) return `the proxy state cannot be loaded: ${decoded.error}`;
  const meta = decoded.state.meta;
  const ds = protocolFeatureMask("DEVICE_STATE");
  const offeredProtocol = offered.dialect === "upstream"
    ? offered.protocol
    : translateProtocolFeatures(offered.protocol, offered.dialect, "upstream").bits;
  const missingVirtio = BigInt(meta.virtioFeatures) & ~(offered.virtio | PROTOCOL_FEATURES_BIT);
  const missingProtocol = BigInt(meta.protocolFeatures) & ~(offeredProtocol | ds);
  const problems: string[] = [];
  if (missingVirtio !== 0n) {
    problems.push(`virtio features ${describeVirtioFeatures(missingVirtio).join(", ")}`);
  }
  if (missingProtocol !== 0n) {
    problems.push(`protocol features ${describeProtocolFeatures(missingProtocol).join(", ")}`);
  }
  if (problems.length > 0) {
    return `the destination back-end does not offer what the source negotiated: ${
      problems.join("; ")
    }`;
  }
  if (loadCmd) {
    const r = runWithInput(loadCmd, decoded.state.user);
    if (!r.ok) return `--state-load-cmd failed: ${r.error}`;
  }
  return undefined;
}

/** `--state-save-cmd`'s stdout (empty without one); throws with its exit and stderr. */
export function runSaveCommand(cmd: string | undefined): Uint8Array {
  if (!cmd) return new Uint8Array(0);
  // Synchronous on purpose: the VM is stopped during SAVE and the command is the user's state.
  const out = new Deno.Command("/bin/sh", { args: ["-c", cmd], stderr: "piped" }).outputSync();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`--state-save-cmd exited with ${out.code}${err ? `: ${err}` : ""}`);
  }
  return out.stdout;
}

function runWithInput(cmd: string, input: Uint8Array): { ok: true } | { ok: false; error: string } {
  const file = Deno.makeTempFileSync({ prefix: "vup-state-" });
  try {
    Deno.writeFileSync(file, input);
    const out = new Deno.Command("/bin/sh", {
      args: ["-c", `exec <"$VUP_STATE_FILE"; ${cmd}`],
      env: { VUP_STATE_FILE: file },
      stderr: "piped",
      stdout: "null",
    }).outputSync();
    if (out.success) return { ok: true };
    const err = new TextDecoder().decode(out.stderr).trim();
    return { ok: false, error: `exit ${out.code}${err ? `: ${err}` : ""}` };
  } finally {
    Deno.removeSync(file);
  }
}

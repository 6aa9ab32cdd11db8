/**
 * The proxy's own device state, for back-ends that cannot migrate theirs (`--device-state
 * emulate`): what the proxy learned of the device on the source, so that the destination can
 * check its back-end offers the same, plus an optional opaque part from a user command.
 *
 * Wire format (little-endian): magic "VUPSTATE" (8) | u32 version | u32 meta length | meta
 * (UTF-8 JSON) | u32 user length | user bytes | SHA-256 of everything before (32).
 *
 * @module
 */

import { createHash } from "node:crypto";

const MAGIC = new TextEncoder().encode("VUPSTATE");
/** Current format version. */
export const EMULATED_STATE_VERSION = 1;

/** What the proxy knows about the device on the source. */
export interface EmulatedMeta {
  producer: string;
  createdAt: string;
  /** Virtio features the front-end set (hex). */
  virtioFeatures: string;
  /** Protocol features the front-end set, upstream numbering (hex), including DEVICE_STATE. */
  protocolFeatures: string;
  /** What the source back-end offered (hex). */
  backendVirtioFeatures: string;
  backendProtocolFeatures: string;
  /** GET_QUEUE_NUM answer, when asked. */
  queueNum?: number;
  /** Per vring: size (SET_VRING_NUM) and last base (SET/GET_VRING_BASE). */
  vrings: { index: number; num?: number; base?: number }[];
  /** Last device config the back-end returned (hex), when F_CONFIG is used. */
  config?: string;
}

/** A decoded emulated state. */
export interface EmulatedState {
  version: number;
  meta: EmulatedMeta;
  user: Uint8Array;
}

/** Encodes a state with its checksum. */
export function encodeEmulatedState(meta: EmulatedMeta, user: Uint8Array): Uint8Array {
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta));
  const len = 8 + 4 + 4 + metaBytes.length + 4 + user.length;
  const out = new Uint8Array(new ArrayBuffer(len + 32));
  const v = new DataView(out.buffer);
  out.set(MAGIC, 0);
  v.setUint32(8, EMULATED_STATE_VERSION, true);
  v.setUint32(12, metaBytes.length, true);
  out.set(metaBytes, 16);
  v.setUint32(16 + metaBytes.length, user.length, true);
  out.set(user, 20 + metaBytes.length);
  out.set(createHash("sha256").update(out.subarray(0, len)).digest(), len);
  return out;
}

/** True when the blob starts with the emulated-state magic. */
export function isEmulatedState(blob: Uint8Array): boolean {
  return blob.length >= 8 && MAGIC.every((b, i) => blob[i] === b);
}

/** Decodes and verifies a blob: a value, never an exception. */
export function decodeEmulatedState(
  blob: Uint8Array,
): { ok: true; state: EmulatedState } | { ok: false; error: string } {
  if (!isEmulatedState(blob)) return { ok: false, error: "not a proxy state (magic missing)" };
  if (blob.length < 16 + 4 + 32) return { ok: false, error: `state is only ${blob.length} bytes` };
  const v = new DataView(blob.buffer, blob.byteOffset, blob.length);
  const version = v.getUint32(8, true);
  if (version !== EMULATED_STATE_VERSION) {
    return {
      ok: false,
      error: `state version ${version} is not supported (expected ${EMULATED_STATE_VERSION})`,
    };
  }
  const metaLen = v.getUint32(12, true);
  if (16 + metaLen + 4 + 32 > blob.length) {
    return { ok: false, error: `meta length ${metaLen} exceeds the ${blob.length}-byte state` };
  }
  const userLen = v.getUint32(16 + metaLen, true);
  const len = 20 + metaLen + userLen;
  if (len + 32 !== blob.length) {
    return { ok: false, error: `state is ${blob.length} bytes, its lengths say ${len + 32}` };
  }
  const sum = createHash("sha256").update(blob.subarray(0, len)).digest();
  if (!sum.every((b: number, i: number) => b === blob[len + i])) {
    return { ok: false, error: "checksum mismatch: the state was corrupted in transit" };
  }
  let meta: EmulatedMeta;
  try {
    meta = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(blob.subarray(16, 16 + metaLen)),
    );
  } catch (e) {
    return { ok: false, error: `meta is not valid JSON: ${e instanceof Error ? e.message : e}` };
  }
  return { ok: true, state: { version, meta, user: blob.slice(20 + metaLen, len) } };
}

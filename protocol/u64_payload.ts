/**
 * The u64 payload most vhost-user messages carry (features, acks, results), read from and
 * rewritten in raw message bytes, for the places that change a value on its way through.
 *
 * @module
 */

import { HEADER_SIZE } from "./codec.ts";

/** The first u64 of a payload; 0 for a payload shorter than 8 bytes. */
export function payloadU64(payload: Uint8Array): bigint {
  if (payload.length < 8) return 0n;
  return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
}

/** A copy of a whole message (header + payload) with its u64 payload replaced by `value`. */
export function withPayloadU64(message: Uint8Array, value: bigint): Uint8Array {
  const out = message.slice();
  new DataView(out.buffer).setBigUint64(HEADER_SIZE, value, true);
  return out;
}

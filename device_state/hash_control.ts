/**
 * The control block one trailing hash shares between the relay thread and the hash worker,
 * and the commands the relay sends it.
 *
 * Layout of the SharedArrayBuffer (64 bytes):
 * - i32 [0] state: 0 hashing, 1 digest published;
 * - i32 [1] the relay waits for the backlog to shrink (set by the relay, cleared by the worker);
 * - i64 at byte 8: bytes hashed so far;
 * - 32 bytes at byte 16: the digest, valid once state is 1;
 * - i32 at byte 48: the digest's length in bytes (16 for xxh3-128, 32 for SHA-256 and BLAKE3).
 *
 * The relay sets "waiting" and then re-reads "hashed"; the worker adds to "hashed" and then
 * clears "waiting". Both are sequentially consistent atomics, so either the relay sees the
 * progress or the worker sees the flag and wakes it: a wake-up cannot be lost.
 *
 * @module
 */

/** Commands to the hash worker. */
export type HashCommand =
  /** `arena`: the mapping the chunks live in (ffi/memory.ts), by address. */
  | { type: "init"; wakeFd: number; nice: number; arena: { address: number; bytes: number } }
  | { type: "open"; id: number; algorithm: FingerprintAlgorithm; control: SharedArrayBuffer }
  /** `bytes` bytes at `offset` of the arena; the relay reuses them once they are hashed. */
  | { type: "data"; id: number; offset: number; bytes: number }
  | { type: "end"; id: number }
  | { type: "drop"; id: number };

import type { FingerprintAlgorithm } from "./fingerprint.ts";

const STATE = 0;
const WAITING = 1;
const DIGEST_AT = 16;
const DIGEST_BYTES = 32;
const LENGTH_AT = 48;

/** Typed views of one control block. */
export class HashControl {
  readonly buffer: SharedArrayBuffer;
  readonly #i32: Int32Array;
  readonly #hashed: BigInt64Array;

  constructor(buffer = new SharedArrayBuffer(64)) {
    this.buffer = buffer;
    this.#i32 = new Int32Array(buffer, 0, 2);
    this.#hashed = new BigInt64Array(buffer, 8, 1);
  }

  /** Bytes the worker has hashed. */
  get hashedBytes(): number {
    return Number(Atomics.load(this.#hashed, 0));
  }

  /** Worker: counts `n` more bytes hashed; true if the relay was waiting (it must be woken). */
  hashed(n: number): boolean {
    Atomics.add(this.#hashed, 0, BigInt(n));
    return Atomics.exchange(this.#i32, WAITING, 0) === 1;
  }

  /** Relay: asks to be woken at the worker's next progress. */
  setWaiting(): void {
    Atomics.store(this.#i32, WAITING, 1);
  }

  /** Worker: stores the digest, then marks it published. */
  publish(digest: Uint8Array): void {
    new Uint8Array(this.buffer, DIGEST_AT, DIGEST_BYTES).set(digest.subarray(0, DIGEST_BYTES));
    new DataView(this.buffer).setInt32(LENGTH_AT, Math.min(digest.length, DIGEST_BYTES), true);
    Atomics.store(this.#i32, STATE, 1);
    Atomics.notify(this.#i32, STATE);
  }

  /** The hex digest once published. */
  digest(): string | undefined {
    if (Atomics.load(this.#i32, STATE) !== 1) return undefined;
    const length = new DataView(this.buffer).getInt32(LENGTH_AT, true);
    const bytes = new Uint8Array(this.buffer, DIGEST_AT, length);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Blocks the calling thread until the digest is published or `ms` pass. */
  waitForDigest(ms: number): string | undefined {
    Atomics.wait(this.#i32, STATE, 0, ms);
    return this.digest();
  }
}

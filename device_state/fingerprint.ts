/**
 * The fingerprints a device-state transfer can carry: which algorithms, how each is computed
 * incrementally, and whether it keeps up with the stream on the relay's own thread.
 *
 * - `xxh3-128` (default): XXH3's 128-bit variant, from `hash-wasm` (WebAssembly). Not
 *   cryptographic: it tells corrupted or different bytes apart (a collision by chance is
 *   2^-128), not bytes forged to collide. ~2.6–2.9 GB/s on one core here, fast enough to run
 *   inline beside a ~1.7 GB/s stream.
 * - `blake3`: cryptographic, `hash-wasm` too; ~0.45 GB/s here (no SIMD in its WebAssembly), so it
 *   trails the stream on the hash thread like SHA-256.
 * - `sha256`: node:crypto, as before (~0.9–1.4 GB/s here); trails the stream. Records keep their
 *   `sha256` field for it, so old tools and logs stay readable.
 *
 * The WebAssembly instances are created once per thread, when it first awaits
 * {@linkcode fingerprintsReady}; every call is synchronous after that, as the poll loop needs (a
 * thread's entry point awaits it; not a top-level await, which would make a Worker importing
 * this module lose the messages posted to it meanwhile). One instance per algorithm serves
 * every stream of the thread: a stream that finds another one's state in the
 * instance saves it and loads its own (a few hundred bytes), so transfers may interleave.
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { createBLAKE3, createXXHash128, type IHasher } from "hash-wasm";

/** The algorithms `--state-hash` selects (besides `off`). */
export const FINGERPRINT_ALGORITHMS = ["xxh3-128", "blake3", "sha256"] as const;
/** A device-state fingerprint algorithm, as `--state-hash` names it. */
export type FingerprintAlgorithm = typeof FINGERPRINT_ALGORITHMS[number];

/** The default: the fastest 128-bit hash measured here (README "Measured here"). */
export const DEFAULT_FINGERPRINT: FingerprintAlgorithm = "xxh3-128";

/** A digest and the algorithm that made it, as transfer-end records carry it. */
export interface Fingerprint {
  algorithm: FingerprintAlgorithm;
  /** Lower-case hex. */
  value: string;
}

/** True for a name `--state-hash` accepts as an algorithm. */
export function isFingerprintAlgorithm(name: string): name is FingerprintAlgorithm {
  return (FINGERPRINT_ALGORITHMS as readonly string[]).includes(name);
}

/**
 * Whether the algorithm keeps up with a state stream on the relay's thread. Those that do are
 * hashed inline (no thread, no backlog); the others trail the stream on the hash thread.
 */
export function hashesInline(algorithm: FingerprintAlgorithm): boolean {
  return algorithm === "xxh3-128";
}

/** Digest length in bytes. */
export function digestBytes(algorithm: FingerprintAlgorithm): number {
  return algorithm === "xxh3-128" ? 16 : 32;
}

/** An incremental digest. */
export interface Digester {
  update(bytes: Uint8Array): void;
  /** The digest; the digester is spent afterwards. */
  digest(): Uint8Array;
}

/** One WebAssembly instance shared by the streams of this thread (see the module doc). */
class SharedInstance {
  owner: WasmDigester | undefined;
  constructor(readonly hasher: IHasher) {}
}

let instances: Record<"xxh3-128" | "blake3", SharedInstance> | undefined;

let loading: Promise<void> | undefined;

/**
 * Resolves once this thread's WebAssembly hashes are instantiated: await it before hashing. The
 * instances are made on the first await, not when the module loads: a thread that only names
 * the algorithms (the CLI's main thread, which parses `--state-hash` and writes the log) then
 * never compiles WebAssembly, which measured +18–25 MiB of RSS per thread.
 */
export const fingerprintsReady: PromiseLike<void> = {
  then(onReady, onFailed) {
    loading ??= Promise.all([createXXHash128(), createBLAKE3()]).then(([xxh, blake3]) => {
      instances = { "xxh3-128": new SharedInstance(xxh), blake3: new SharedInstance(blake3) };
    });
    return loading.then(onReady, onFailed);
  },
};

class WasmDigester implements Digester {
  readonly #shared: SharedInstance;
  /** The state while another stream holds the instance; undefined: fresh (or holding it). */
  #parked: Uint8Array | undefined;
  #done = false;

  constructor(shared: SharedInstance) {
    this.#shared = shared;
  }

  #claim(): IHasher {
    const s = this.#shared;
    if (s.owner === this) return s.hasher;
    if (s.owner) s.owner.#parked = s.hasher.save();
    if (this.#parked) s.hasher.load(this.#parked);
    else s.hasher.init();
    this.#parked = undefined;
    s.owner = this;
    return s.hasher;
  }

  update(bytes: Uint8Array): void {
    if (this.#done) throw new Error("Cannot update a finished digest");
    this.#claim().update(bytes);
  }

  digest(): Uint8Array {
    if (this.#done) throw new Error("Cannot digest a finished digest twice");
    const out = this.#claim().digest("binary");
    this.#done = true;
    this.#shared.owner = undefined;
    return out;
  }
}

class NodeDigester implements Digester {
  readonly #hash: Hash;
  constructor(algorithm: string) {
    this.#hash = createHash(algorithm);
  }
  update(bytes: Uint8Array): void {
    this.#hash.update(bytes);
  }
  digest(): Uint8Array {
    return new Uint8Array(this.#hash.digest());
  }
}

/** A new incremental digest of `algorithm`. */
export function createDigester(algorithm: FingerprintAlgorithm): Digester {
  if (algorithm === "sha256") return new NodeDigester("sha256");
  if (!instances) {
    throw new Error(`The ${algorithm} hash is not ready yet (await fingerprintsReady first)`);
  }
  return new WasmDigester(instances[algorithm]);
}

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** The fingerprint of a whole blob. */
export function fingerprintOf(algorithm: FingerprintAlgorithm, bytes: Uint8Array): Fingerprint {
  const d = createDigester(algorithm);
  d.update(bytes);
  return { algorithm, value: toHex(d.digest()) };
}

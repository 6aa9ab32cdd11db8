/**
 * How a state transfer fingerprints the bytes it moves (device_state/fingerprint.ts): inline on the
 * relay thread (`InlineHash`: xxh3-128, the default, keeps up with the stream), or trailing on a
 * low-priority worker thread (`TrailingHasher`, for SHA-256 and BLAKE3), so that the transfer,
 * and with it the migration's downtime, does not wait for a slower hash.
 *
 * Trailing, the transfer ends (the reader sees EOF, CHECK_DEVICE_STATE can be answered) while
 * the digest is still being computed; the bytes not yet hashed wait in memory (1 MiB chunks of
 * a mapping the worker reads in place), up to a limit beyond which the transfer waits for the
 * hash. The pages are reused across transfers and given back a while after the last one. The digest then arrives through the
 * poll loop (an eventfd the worker signals), and the transfer-end record is written with it.
 *
 * @module
 */

import {
  createDigester,
  DEFAULT_FINGERPRINT,
  type Digester,
  type FingerprintAlgorithm,
  toHex,
} from "./fingerprint.ts";
import type { OwnedFd } from "../ffi/fd.ts";
import { MappedMemory } from "../ffi/memory.ts";
import { createEventFd, drainEventFd, POLLIN } from "../ffi/poll.ts";
import type { Reactor, Timer, Watch } from "../ffi/reactor.ts";
import { type HashCommand, HashControl } from "./hash_control.ts";

const CHUNK = 1 << 20;

/** A digest that may not be known yet. */
export interface PendingDigest {
  /** The algorithm of `value`. */
  readonly algorithm: FingerprintAlgorithm;
  /** The hex digest, once known. */
  readonly value: string | undefined;
  /** Milliseconds from the end of the stream to the digest, once known (0 inline). */
  readonly trailMs: number | undefined;
  /** Calls `then` once the digest is known: at once if it is, else from the poll loop. */
  whenReady(then: () => void): void;
  /** Blocks until the digest is known or `ms` pass; returns it if known. */
  waitSync(ms: number): string | undefined;
}

/** The hash of one stream, fed as the bytes pass. */
export interface StreamHash {
  /** Adds bytes; `chunk` may be reused by the caller as soon as this returns. */
  update(chunk: Uint8Array): void;
  /**
   * Where the next bytes may be read to directly, for a hash that holds on to them (saves a
   * copy); `commit` says how many were. Nothing else may be called between the two.
   */
  scratch?(): Uint8Array;
  /** Adds the first `n` bytes of the last `scratch()`. */
  commit?(n: number): void;
  /** May more bytes be taken now? When false, the poll loop is woken once there is room. */
  hasRoom(): boolean;
  /** The stream has ended. */
  end(): PendingDigest;
  /**
   * Keeps the bytes while they total at most `max`, for {@linkcode StreamHash.kept} (a hash
   * that holds the bytes anyway spares the caller a copy); absent when the hash cannot.
   */
  retain?(max: number): void;
  /** After `end`: the whole stream, if `retain` was asked and it fitted. */
  kept?(): Uint8Array | undefined;
}

/** A digest on the calling thread: known when the stream ends. */
export class InlineHash implements StreamHash, PendingDigest {
  readonly algorithm: FingerprintAlgorithm;
  readonly #hash: Digester;
  #value: string | undefined;

  constructor(algorithm: FingerprintAlgorithm = DEFAULT_FINGERPRINT) {
    this.algorithm = algorithm;
    this.#hash = createDigester(algorithm);
  }

  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
  }

  hasRoom(): boolean {
    return true;
  }

  end(): PendingDigest {
    this.#value ??= toHex(this.#hash.digest());
    return this;
  }

  get value(): string | undefined {
    return this.#value;
  }

  get trailMs(): number | undefined {
    return this.#value === undefined ? undefined : 0;
  }

  whenReady(then: () => void): void {
    then();
  }

  waitSync(): string | undefined {
    return this.#value;
  }
}

/** Options of a {@linkcode TrailingHasher}. */
export interface TrailingHasherOptions {
  /** Most bytes one stream may have handed over and not yet hashed. */
  maxBacklogBytes: number;
  /** Nice value of the hash thread (default 19: only the CPU the transfer leaves idle). */
  nice?: number;
}

/** Chunks beyond the backlog: the one being filled, and a blob kept for the log's summary. */
const SPARE_CHUNKS = 2 + (16 << 20) / CHUNK;
/** The chunks' pages go back to the kernel once transfers have been quiet this long. */
const RELEASE_AFTER_MS = 10_000;

/**
 * One hash worker thread for all the transfers of an engine, the memory the bytes wait in
 * (1 MiB chunks of one mapping both threads see), and the poll-loop watch that learns of the
 * worker's progress.
 */
export class TrailingHasher implements Watch {
  readonly maxBacklogBytes: number;
  readonly #reactor: Reactor;
  readonly #worker: Worker;
  readonly #wake: OwnedFd;
  readonly #arena: MappedMemory;
  readonly #view: Uint8Array;
  readonly #free: number[] = [];
  readonly #waiting = new Set<TrailingHash>();
  #active = 0;
  #release: Timer | undefined;
  #nextId = 1;
  #closed = false;

  constructor(reactor: Reactor, options: TrailingHasherOptions) {
    this.maxBacklogBytes = options.maxBacklogBytes;
    this.#reactor = reactor;
    const chunks = Math.ceil(options.maxBacklogBytes / CHUNK) + SPARE_CHUNKS;
    this.#arena = new MappedMemory(chunks * CHUNK);
    this.#view = this.#arena.view();
    for (let i = chunks - 1; i >= 0; i--) this.#free.push(i * CHUNK);
    this.#wake = createEventFd();
    this.#worker = new Worker(new URL("./hash_worker.ts", import.meta.url).href, {
      type: "module",
    });
    // The eventfd's number and the mapping's address are valid in the worker too: threads
    // share the fd table and the address space.
    this.send({
      type: "init",
      wakeFd: this.#wake.fd,
      nice: options.nice ?? 19,
      arena: { address: this.#arena.address, bytes: this.#arena.bytes },
    });
    reactor.add(this);
  }

  /** A new stream to hash with `algorithm` (default SHA-256). */
  start(algorithm: FingerprintAlgorithm = "sha256"): StreamHash & PendingDigest {
    this.#release?.cancel();
    this.#release = undefined;
    this.#active++;
    return new TrailingHash(this, this.#nextId++, algorithm);
  }

  get fd(): number {
    return this.#wake.fd;
  }

  interest(): number {
    return POLLIN;
  }

  onReady(): void {
    drainEventFd(this.#wake);
    for (const job of [...this.#waiting]) job.poll();
  }

  /** Stops the worker; digests not yet published stay unknown. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release?.cancel();
    this.#reactor.remove(this);
    this.#worker.terminate();
    this.#wake.close();
  }

  /** @internal Nothing is sent once closed. */
  send(command: HashCommand): void {
    if (!this.#closed) this.#worker.postMessage(command);
  }

  /** @internal Free chunks. */
  get freeChunks(): number {
    return this.#free.length;
  }

  /** @internal The offset of a free chunk in the mapping; check `freeChunks` first. */
  takeChunk(): number {
    const at = this.#free.pop();
    if (at === undefined) throw new Error("trailing hash: no free chunk (hasRoom not asked)");
    return at;
  }

  /** @internal Chunks whose bytes are hashed, for reuse. */
  giveChunks(offsets: number[]): void {
    this.#free.push(...offsets);
  }

  /** @internal A view of `bytes` of the mapping at `offset`. */
  view(offset: number, bytes: number): Uint8Array {
    return this.#view.subarray(offset, offset + bytes);
  }

  /** @internal A stream's digest is known and its chunks given back. */
  settled(): void {
    this.#active--;
    if (this.#active > 0) return;
    this.#release?.cancel();
    this.#release = this.#reactor.setTimer(RELEASE_AFTER_MS, () => {
      this.#release = undefined;
      if (this.#active === 0 && !this.#closed) this.#arena.release();
    });
  }

  /** @internal Polls `job` at each wake-up while it waits for room or for its digest. */
  watch(job: TrailingHash, on: boolean): void {
    if (on) this.#waiting.add(job);
    else this.#waiting.delete(job);
  }
}

/** One stream hashed by the {@linkcode TrailingHasher}'s worker. */
class TrailingHash implements StreamHash, PendingDigest {
  readonly algorithm: FingerprintAlgorithm;
  readonly #hasher: TrailingHasher;
  readonly #id: number;
  readonly #control = new HashControl();
  #posted = 0;
  #endedAt: number | undefined;
  #value: string | undefined;
  #trailMs: number | undefined;
  #then: (() => void)[] = [];
  /** The chunk being filled (its offset in the mapping), and how far. */
  #chunk: number | undefined;
  #fill = 0;
  /** Filled chunks handed to the worker, and the stream offset each one ends at. */
  readonly #inFlight: { chunk: number; end: number }[] = [];
  /** Chunks are not reused while the stream fits in this (see `retain`). */
  #retainMax = -1;

  constructor(hasher: TrailingHasher, id: number, algorithm: FingerprintAlgorithm) {
    this.algorithm = algorithm;
    this.#hasher = hasher;
    this.#id = id;
    hasher.send({ type: "open", id, algorithm, control: this.#control.buffer });
  }

  update(bytes: Uint8Array): void {
    for (let off = 0; off < bytes.length;) {
      const into = this.scratch();
      const n = Math.min(into.length, bytes.length - off);
      into.set(bytes.subarray(off, off + n));
      this.commit(n);
      off += n;
    }
  }

  scratch(): Uint8Array {
    if (this.#chunk === undefined) {
      this.#reclaim();
      this.#chunk = this.#hasher.takeChunk();
      this.#fill = 0;
    }
    return this.#hasher.view(this.#chunk + this.#fill, CHUNK - this.#fill);
  }

  commit(n: number): void {
    if (n <= 0) return;
    this.#hasher.send({ type: "data", id: this.#id, offset: this.#chunk! + this.#fill, bytes: n });
    this.#fill += n;
    this.#posted += n;
    if (this.#fill === CHUNK) this.#retire();
  }

  /** The chunk being filled goes to the in-flight list, to be reused once hashed. */
  #retire(): void {
    if (this.#chunk === undefined) return;
    this.#inFlight.push({ chunk: this.#chunk, end: this.#posted });
    this.#chunk = undefined;
  }

  retain(max: number): void {
    this.#retainMax = max;
  }

  #retaining(): boolean {
    return this.#posted <= this.#retainMax;
  }

  kept(): Uint8Array | undefined {
    if (this.#endedAt === undefined || !this.#retaining()) return undefined;
    const blob = new Uint8Array(new ArrayBuffer(this.#posted));
    let start = 0;
    for (const { chunk, end } of this.#inFlight) {
      blob.set(this.#hasher.view(chunk, end - start), start);
      start = end;
    }
    this.#retainMax = -1;
    return blob;
  }

  /** Returns the chunks the worker is done with. */
  #reclaim(): void {
    if (this.#retaining()) return;
    const hashed = this.#control.hashedBytes;
    let n = 0;
    while (n < this.#inFlight.length && this.#inFlight[n].end <= hashed) n++;
    if (n > 0) this.#hasher.giveChunks(this.#inFlight.splice(0, n).map((f) => f.chunk));
  }

  /** Within the backlog, with a chunk to read into and one spare (an update may span two). */
  #room(): boolean {
    if (this.#posted - this.#control.hashedBytes >= this.#hasher.maxBacklogBytes) return false;
    this.#reclaim();
    const need = this.#chunk === undefined ? 2 : 1;
    if (this.#hasher.freeChunks >= need || !this.#retaining()) {
      return this.#hasher.freeChunks >= need;
    }
    // Concurrent transfers have used the spare chunks: the blob kept for the log's summary
    // gives way to the stream (the summary is then left out).
    this.#retainMax = -1;
    this.#reclaim();
    return this.#hasher.freeChunks >= need;
  }

  hasRoom(): boolean {
    if (this.#room()) return true;
    // Ask for a wake-up first, then look again: the worker may have moved on in between.
    this.#control.setWaiting();
    this.#hasher.watch(this, true);
    return this.#room();
  }

  end(): PendingDigest {
    if (this.#endedAt === undefined) {
      this.#endedAt = performance.now();
      this.#retire();
      this.#hasher.send({ type: "end", id: this.#id });
      this.#hasher.watch(this, true);
    }
    return this;
  }

  get value(): string | undefined {
    if (this.#value === undefined && this.#endedAt !== undefined) {
      this.#value = this.#control.digest();
      if (this.#value !== undefined) this.#trailMs = performance.now() - this.#endedAt;
    }
    return this.#value;
  }

  get trailMs(): number | undefined {
    return this.value === undefined ? undefined : this.#trailMs;
  }

  whenReady(then: () => void): void {
    if (this.value !== undefined) then();
    else this.#then.push(then);
  }

  waitSync(ms: number): string | undefined {
    if (this.value === undefined && this.#endedAt !== undefined) {
      this.#control.waitForDigest(ms);
    }
    return this.value;
  }

  /** @internal From the hasher's wake-up: settles the digest, lets a waiting copy go on. */
  poll(): void {
    if (this.#endedAt === undefined) {
      // A copy waiting for room: the reactor asks it again this turn; it re-registers if it
      // still has to wait.
      this.#hasher.watch(this, false);
      return;
    }
    if (this.value === undefined) return;
    this.#hasher.watch(this, false);
    this.#retainMax = -1;
    this.#reclaim();
    this.#hasher.settled();
    const then = this.#then;
    this.#then = [];
    for (const f of then) f();
  }
}

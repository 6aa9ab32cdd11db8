/**
 * Writing a whole blob into an fd, or reading one to EOF, inside the poll loop: the proxy's
 * side of an emulated device-state transfer (it is the back-end then).
 *
 * @module
 */

import { SystemError } from "../ffi/errors.ts";
import type { OwnedFd } from "../ffi/fd.ts";
import { readFd, writeFd } from "../ffi/pipe.ts";
import { POLLIN, POLLOUT } from "../ffi/poll.ts";
import type { Reactor, Watch } from "../ffi/reactor.ts";

/** How a blob transfer ended. */
export type BlobOutcome = { ok: true; blob: Uint8Array } | {
  ok: false;
  error: string;
  bytes: number;
};

abstract class BlobIo implements Watch {
  readonly fd: number;
  protected readonly owned: OwnedFd;
  readonly #reactor: Reactor;
  readonly #onDone: (o: BlobOutcome) => void;
  #done = false;

  constructor(reactor: Reactor, fd: OwnedFd, onDone: (o: BlobOutcome) => void) {
    fd.setNonBlocking(true);
    this.owned = fd;
    this.fd = fd.fd;
    this.#reactor = reactor;
    this.#onDone = onDone;
    reactor.add(this);
  }

  get done(): boolean {
    return this.#done;
  }

  abstract interest(): number;
  protected abstract step(): BlobOutcome | undefined;
  protected abstract get bytes(): number;

  onReady(): void {
    if (this.#done) return;
    let outcome: BlobOutcome | undefined;
    try {
      outcome = this.step();
    } catch (e) {
      const msg = e instanceof SystemError && e.isDisconnect
        ? `the other end closed after ${this.bytes} bytes`
        : e instanceof Error
        ? e.message
        : String(e);
      outcome = { ok: false, error: msg, bytes: this.bytes };
    }
    if (outcome) this.finish(outcome);
  }

  /** Ends the transfer early (session ending). */
  cancel(reason: string): void {
    this.finish({ ok: false, error: reason, bytes: this.bytes });
  }

  protected finish(outcome: BlobOutcome): void {
    if (this.#done) return;
    this.#done = true;
    this.#reactor.remove(this);
    // Closing is the end-of-stream signal the reader waits for.
    this.owned.close();
    this.#onDone(outcome);
  }
}

/** Writes `blob` into `fd`, then closes it. */
export class BlobWriter extends BlobIo {
  readonly #blob: Uint8Array;
  #off = 0;

  constructor(reactor: Reactor, fd: OwnedFd, blob: Uint8Array, onDone: (o: BlobOutcome) => void) {
    super(reactor, fd, onDone);
    this.#blob = blob;
    if (blob.length === 0) this.finish({ ok: true, blob });
  }

  interest(): number {
    return POLLOUT;
  }

  protected get bytes(): number {
    return this.#off;
  }

  protected step(): BlobOutcome | undefined {
    while (this.#off < this.#blob.length) {
      const n = writeFd(this.owned, this.#blob, this.#off);
      if (n < 0) return undefined;
      this.#off += n;
    }
    return { ok: true, blob: this.#blob };
  }
}

/** Reads `fd` until EOF (at most `limit` bytes), then closes it. */
export class BlobReader extends BlobIo {
  readonly #chunks: Uint8Array[] = [];
  readonly #buf = new Uint8Array(new ArrayBuffer(1 << 16));
  readonly #limit: number;
  #total = 0;

  constructor(reactor: Reactor, fd: OwnedFd, limit: number, onDone: (o: BlobOutcome) => void) {
    super(reactor, fd, onDone);
    this.#limit = limit;
  }

  interest(): number {
    return POLLIN;
  }

  protected get bytes(): number {
    return this.#total;
  }

  protected step(): BlobOutcome | undefined {
    for (;;) {
      const n = readFd(this.owned, this.#buf);
      if (n < 0) return undefined;
      if (n === 0) {
        const blob = new Uint8Array(new ArrayBuffer(this.#total));
        let off = 0;
        for (const c of this.#chunks) {
          blob.set(c, off);
          off += c.length;
        }
        return { ok: true, blob };
      }
      this.#total += n;
      if (this.#total > this.#limit) {
        return { ok: false, error: `state exceeds ${this.#limit} bytes`, bytes: this.#total };
      }
      this.#chunks.push(this.#buf.slice(0, n));
    }
  }
}

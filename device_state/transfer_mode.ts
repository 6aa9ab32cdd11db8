/**
 * What the device-state modes that take part in a transfer share (relay_mode.ts, emulate_mode.ts):
 * the transfer in progress, the guard that answers QEMU when handling a message fails inside the
 * proxy, the replies the proxy makes, the transfer records (held back until the switch-over is
 * over), the faults, the dump path and the watch on a held CHECK_DEVICE_STATE.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import type { Timer } from "../ffi/reactor.ts";
import { createMessage, encodeMessage, type Message, withPayload } from "../protocol/codec.ts";
import type { Payload } from "../protocol/layouts.ts";
import type {
  DeviceStateRecord,
  StateDirection,
  TransferEndRecord,
  TransferStartRecord,
} from "../log/record.ts";
import { timestamp } from "../log/record.ts";
import type { DeviceStateConfig } from "./config.ts";
import { type Faults, parseFaults } from "./faults.ts";
import { DEFAULT_FINGERPRINT, type FingerprintAlgorithm, hashesInline } from "./fingerprint.ts";
import type {
  DeviceStateHooks,
  StateEndpoint,
  StateFrame,
  StateSession,
  Verdict,
} from "./hooks.ts";
import type { PendingDigest, TrailingHasher } from "./stream_hash.ts";
import { summarizeBlob } from "./blob_summary.ts";

export const FORWARD: Verdict = { action: "forward" };

/** Bit 8 of the SET_DEVICE_STATE_FD reply: no fd follows. */
export const NO_FD = 0x100n;
/**
 * How long a transfer-end record waits after the transfer: longer than the rest of a
 * switch-over (CHECK, then the destination's ring start: ~5 ms measured under TCG), short for a
 * reader.
 */
const RECORD_DELAY_MS = 100;
/**
 * A hashed transfer at least this large starts the trailing hash thread for the ones after it.
 * virtiofsd's states are far smaller and hash in well under a millisecond inline, and the
 * thread costs ~120 ms of CPU to start (at nice 19, but on the two cores a migration needs).
 */
const TRAILING_FROM_BYTES = 8 << 20;
/** At session end, how long a record waits for a trailing digest before it is written without. */
const DIGEST_WAIT_MS = 5_000;

/** What the handlers of one engine share. */
export interface DeviceStateShared {
  /** Hashes transfers off the relay thread; until it exists they are hashed inline. */
  hasher?: TrailingHasher;
  /**
   * Creates `hasher`; called once a large hashed transfer has ended, outside the switch-over.
   * Until then transfers are hashed inline: a Worker takes tens of ms to start, and the
   * trailing hash's buffers are fresh pages then (~14 µs per 4 KiB fault measured on these
   * VMs), which made a first 256 MiB transfer slower trailing (300–480 MiB/s) than inline.
   */
  startHasher?: () => void;
}

/** One SET_DEVICE_STATE_FD transfer, as every mode tracks it. */
export interface Transfer {
  /** 1 for the session's first transfer. */
  n: number;
  direction: StateDirection;
  phase: number;
  /** QEMU's end: the reader (SAVE) or writer (LOAD) the proxy serves. */
  qemuFd?: OwnedFd;
  /** Set when the transfer has ended. */
  outcome?: { ok: boolean; error?: string };
}

/** How a transfer ended, whoever moved the bytes: the proxy's copy, or its emulation. */
export interface TransferResult {
  ok: boolean;
  /** Bytes delivered to the reader. */
  bytes: number;
  /** Bytes read from the writer. */
  bytesIn: number;
  durationMs: number;
  digest?: PendingDigest;
  /** The state itself, when it was kept for the record's decoded summary. */
  blob?: Uint8Array;
  error?: string;
}

/** A transfer-end record held back; `digest` is the trailing fingerprint it waits for. */
interface DeferredRecord {
  digest?: PendingDigest;
  write: () => void;
}

/** The part of device-state handling common to the modes that take part in transfers. */
export abstract class TransferMode<T extends Transfer> implements DeviceStateHooks {
  protected readonly session: StateSession;
  protected readonly config: DeviceStateConfig;
  protected readonly faults: Faults;
  protected readonly shared: DeviceStateShared;
  /** The transfer in progress, or the last one until its CHECK is answered. */
  protected transfer: T | undefined;
  #count = 0;
  /** Transfer-end records waiting for the switch-over to be over (see `transferEnded`). */
  #deferred: DeferredRecord[] = [];
  #deferredTimer: Timer | undefined;
  /** A flush is waiting for the digest of the first deferred record. */
  #awaitingDigest = false;
  /** Answers the proxy injected (to tell whether a failing handler had answered already). */
  #answers = 0;

  constructor(session: StateSession, config: DeviceStateConfig, shared: DeviceStateShared) {
    this.session = session;
    this.config = config;
    this.shared = shared;
    const parsed = parseFaults(config.faults ?? []);
    // The CLI validates faults; a library caller with a bad spec gets no faults and a note.
    this.faults = parsed.ok
      ? parsed.faults
      : { corrupt: false, checkFail: false, refuse: false, specs: [] };
    if (!parsed.ok) this.note(parsed.error);
  }

  /**
   * Every failure inside the proxy on the state path (dump, fingerprint, decode, emulation, a
   * user command, a bug) fails that transfer and answers what QEMU waits for at once, with an
   * error: the proxy must never be the reason QEMU waits forever with the VM stopped.
   */
  intercept(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    if (from.kind !== "main") return FORWARD;
    const answersBefore = this.#answers;
    try {
      return this.handle(from, message, frame);
    } catch (e) {
      return this.#failedInside(from, message, frame, e, this.#answers !== answersBefore);
    }
  }

  /** The mode's handling of a main-channel message (guarded by {@linkcode intercept}). */
  protected abstract handle(from: StateEndpoint, message: Message, frame: StateFrame): Verdict;
  /** Stops what moves `t`'s bytes and closes what the mode holds for it. */
  protected abstract stop(t: T, reason: string): void;
  /** Answers or releases the CHECK_DEVICE_STATE held for `t`, if any. */
  protected abstract releaseHeld(t: T): void;

  /** What to relay when handling `message` threw. */
  #failedInside(
    from: StateEndpoint,
    message: Message,
    frame: StateFrame,
    e: unknown,
    answered: boolean,
  ): Verdict {
    const isReply = message.kind === "reply";
    const step = `${message.name}${isReply ? " reply" : ""}`;
    const cause = describeError(e);
    this.fail(this.transfer, `handling ${step}`, cause);
    const noFds = () => {
      closeAll(frame.fds);
      frame.fds.length = 0;
    };
    if (answered) {
      noFds();
      return { action: "answered", note: `failed inside the proxy: ${cause}` };
    }
    switch (message.name) {
      case "SET_DEVICE_STATE_FD":
        noFds();
        if (!isReply) {
          this.answer(from, message, 1n | NO_FD, "refused: the proxy failed inside");
          return { action: "answered", note: `refused with error 1: ${cause}` };
        }
        return {
          action: "forward",
          bytes: rewritten(message, deviceStateResult(1n | NO_FD)),
          fds: [],
          note: `error 1 sent to QEMU: ${cause}`,
        };
      case "CHECK_DEVICE_STATE":
        this.transfer = undefined;
        if (!isReply) {
          this.answer(from, message, 1n, "failed: the proxy failed inside");
          return { action: "answered", note: `answered 1 at once: ${cause}` };
        }
        return {
          action: "forward",
          bytes: rewritten(message, { layout: "result", value: 1n }),
          note: `result 1 sent to QEMU: ${cause}`,
        };
      default:
        // Only observed: relay it unchanged.
        return FORWARD;
    }
  }

  /**
   * Fails `t` because a step inside the proxy failed: logs an error naming the step, stops the
   * transfer, and answers a CHECK the proxy holds (with an error) at once.
   */
  protected fail(t: T | undefined, step: string, cause: string): void {
    const message = `device state: ${step} failed inside the proxy: ${cause}`;
    this.session.emit({ type: "error", ts: timestamp(), session: this.session.id, message });
    if (!t) return;
    if (!t.outcome) this.end(t, `${step} failed: ${cause}`);
    this.releaseHeld(t);
  }

  /** Runs a callback of the state path (copy done, emulation I/O), containing its failure. */
  protected guarded(t: T, step: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.fail(t, step, describeError(e));
    }
  }

  /**
   * The start of every SET_DEVICE_STATE_FD request: a phase the proxy takes no part in, the
   * transfer it replaces, fault state-refuse. Returns the new transfer holding QEMU's fd, or
   * the verdict when the request is not one the mode handles.
   */
  protected beginTransfer(
    from: StateEndpoint,
    message: Message,
    frame: StateFrame,
    make: (base: Transfer) => T,
  ): T | Verdict {
    const p = message.payload;
    if (p.layout !== "device_state_params") return FORWARD; // the codec decodes no other
    const direction: StateDirection = p.direction === 0 ? "SAVE" : "LOAD";
    // Phases other than 0 (STOPPED) "might be added" (protocol.md §1.10): the codec warns, and
    // the proxy relays the request and its reply untouched, taking no part in the transfer.
    if (p.phase !== 0) return { action: "forward", note: `phase ${p.phase} relayed untouched` };
    if (this.transfer && !this.transfer.outcome) {
      this.end(this.transfer, "a new SET_DEVICE_STATE_FD replaced it");
    }
    const t = make({ n: ++this.#count, direction, phase: p.phase });
    this.transfer = t;
    if (this.faults.refuse) {
      closeAll(frame.fds);
      frame.fds.length = 0;
      t.outcome = { ok: false, error: "refused by fault state-refuse" };
      this.answer(from, message, 1n | NO_FD, "refused (fault state-refuse)");
      this.note(`refused SET_DEVICE_STATE_FD(${direction}) with error 1 (fault state-refuse)`);
      return { action: "answered", note: "refused by the proxy (fault state-refuse)" };
    }
    if (frame.fds.length !== 1) return FORWARD; // the codec rejects this; be safe regardless
    t.qemuFd = frame.fds[0];
    frame.fds.length = 0;
    return t;
  }

  protected transferStarted(t: T, via: TransferStartRecord["via"], mode: string): void {
    this.emit({
      type: "device-state",
      event: "transfer-start",
      ts: timestamp(),
      session: this.session.id,
      direction: t.direction,
      phase: t.phase,
      via,
      mode,
    });
  }

  /** The fingerprint's algorithm (`--state-hash`). */
  protected get algorithm(): FingerprintAlgorithm {
    return this.config.hashAlgorithm ?? DEFAULT_FINGERPRINT;
  }

  /** Records how `t` ended and releases the CHECK held for it. */
  protected transferEnded(t: T, result: TransferResult, dump: string | undefined): void {
    t.outcome = { ok: result.ok, error: result.error };
    const record: TransferEndRecord = {
      type: "device-state",
      event: "transfer-end",
      ts: timestamp(),
      session: this.session.id,
      direction: t.direction,
      ok: result.ok,
      bytes: result.bytes,
      bytesIn: result.bytesIn,
      durationMs: round(result.durationMs),
      throughputMiBps: round(result.bytes / (1 << 20) / Math.max(result.durationMs / 1000, 1e-6)),
    };
    if (result.error) record.error = result.error;
    if (dump) record.dump = dump;
    if (this.faults.specs.length > 0) record.faults = this.faults.specs;
    this.releaseHeld(t);
    // The VM is stopped until QEMU has had CHECK_DEVICE_STATE answered and, on the destination,
    // has started the rings again: decoding the blob and writing the record on this thread would
    // sit in front of those messages (measured: 1–2 ms on the first transfer of a process). So
    // the record, stamped now, is written once the switch-over is over, or when the session ends.
    const digest = result.digest;
    this.#deferred.push({
      digest,
      write: () => {
        const value = digest?.value;
        if (value !== undefined) {
          record.fingerprint = { algorithm: digest!.algorithm, value };
          // Old tools and logs read `sha256`: it stays, for that algorithm.
          if (digest!.algorithm === "sha256") record.sha256 = value;
          if (digest!.trailMs! > 0) record.hashTrailMs = round(digest!.trailMs!);
        } else if (digest) {
          record.hashError =
            `the ${digest.algorithm} fingerprint was not ready ${DIGEST_WAIT_MS} ms after the session ended`;
        }
        if (result.blob) {
          try {
            const summary = summarizeBlob(result.blob);
            if (summary) record.state = summary;
          } catch (e) {
            // The transfer is over and answered; a decoder bug must not lose its record.
            record.stateError = `decoding the state failed: ${describeError(e)}`;
          }
        }
        this.emit(record);
      },
    });
    const reactor = this.session.reactor;
    this.#deferredTimer ??= reactor.setTimer(RECORD_DELAY_MS, () => this.#flushDeferred());
    const startHasher = this.shared.startHasher;
    if (
      digest && startHasher && !this.shared.hasher && !hashesInline(digest.algorithm) &&
      result.bytes >= TRAILING_FROM_BYTES
    ) {
      reactor.setTimer(RECORD_DELAY_MS, startHasher);
    }
  }

  /**
   * Writes the records held back by `transferEnded`, in order. A record whose trailing digest
   * is still being computed holds the rest back until it arrives; at session end (`final`) it
   * is waited for, within a bound.
   */
  #flushDeferred(final = false): void {
    this.#deferredTimer?.cancel();
    this.#deferredTimer = undefined;
    while (this.#deferred.length > 0) {
      const next = this.#deferred[0];
      if (next.digest && next.digest.value === undefined) {
        if (final) {
          next.digest.waitSync(DIGEST_WAIT_MS);
        } else {
          if (!this.#awaitingDigest) {
            this.#awaitingDigest = true;
            next.digest.whenReady(() => {
              this.#awaitingDigest = false;
              this.#flushDeferred();
            });
          }
          return;
        }
      }
      this.#deferred.shift();
      next.write();
    }
  }

  /**
   * A CHECK the proxy holds is a wait QEMU cannot see: after `--stuck-after` it is flagged, by
   * name and with what it waits for, like a reply that does not come.
   */
  protected watchHeld(
    stillHeld: () => boolean,
    waitsFor: () => string,
    bytesSoFar: () => number | undefined,
  ): void {
    const limit = this.session.options.stuckAfterMs;
    if (limit <= 0) return;
    const since = performance.now();
    this.session.reactor.setTimer(limit, () => {
      if (!stillHeld()) return;
      const bytes = bytesSoFar();
      this.session.emit({
        type: "warning",
        ts: timestamp(),
        session: this.session.id,
        channel: "main",
        side: "back-end",
        request: "CHECK_DEVICE_STATE",
        message: `CHECK_DEVICE_STATE has been held by the proxy for ${
          Math.round(performance.now() - since)
        } ms, waiting for ${waitsFor()}${bytes === undefined ? "" : ` (${bytes} bytes so far)`}`,
      });
    });
  }

  /** Sends the front-end a reply the proxy made: a SET_DEVICE_STATE_FD result or a u64. */
  protected answer(to: StateEndpoint, request: Message, value: bigint, note: string): void {
    const reply = createMessage({
      channel: "main",
      sender: "back-end",
      dialect: this.session.options.frontDialect,
      request: request.code,
      payload: request.name === "SET_DEVICE_STATE_FD"
        ? deviceStateResult(value)
        : { layout: "result", value },
    });
    this.#answers++;
    this.session.inject(to, reply, encodeMessage(reply), [], note);
  }

  /** Where `--state-dump` puts `t`'s bytes; throws when the directory cannot be made. */
  protected dumpPath(t: T): string | undefined {
    const dir = this.config.dumpDir;
    if (!dir) return undefined;
    try {
      Deno.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new Error(`cannot create the --state-dump directory "${dir}": ${describeError(e)}`);
    }
    return `${dir}/session-${this.session.id}-${t.direction.toLowerCase()}-${t.n}.bin`;
  }

  /** Ends `t` before its time. */
  protected end(t: T, reason: string): void {
    this.stop(t, reason);
    t.qemuFd?.close();
    t.qemuFd = undefined;
    if (!t.outcome) t.outcome = { ok: false, error: reason };
    this.note(`${t.direction} transfer ended: ${reason}`);
  }

  protected note(message: string): void {
    this.emit({
      type: "device-state",
      event: "note",
      ts: timestamp(),
      session: this.session.id,
      message,
    });
  }

  protected emit(r: DeviceStateRecord): void {
    this.session.emit(r);
  }

  close(): void {
    this.#flushDeferred(true);
    const t = this.transfer;
    if (t && !t.outcome) this.end(t, "the session ended");
    else if (t) {
      this.stop(t, "the session ended");
      t.qemuFd?.close();
    }
    this.transfer = undefined;
  }
}

/** A SET_DEVICE_STATE_FD reply payload from its u64. */
export function deviceStateResult(value: bigint): Payload {
  return {
    layout: "device_state_result",
    error: Number(value & 0xffn),
    noFd: (value & NO_FD) !== 0n,
    reserved: value >> 9n,
  };
}

/** `message`'s bytes with `payload` instead of its own. */
export function rewritten(message: Message, payload: Payload): Uint8Array {
  return encodeMessage(withPayload(message, payload));
}

/** One line for a log record: the error's message (its name when it has none), never a stack. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

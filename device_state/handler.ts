/**
 * Device-state transfer (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE) per session.
 *
 * - `relay` (default): the back-end gets the proxy's pipe instead of QEMU's fd; the proxy copies
 *   between the two (SAVE: back-end → QEMU, LOAD: QEMU → back-end), counting, hashing and
 *   optionally dumping the bytes, and uses the back-end's own fd when it replies with one. QEMU
 *   always hears "no fd" (bit 8), because the proxy is the other end. CHECK_DEVICE_STATE is held
 *   until the copy has finished, and fails when the copy did.
 * - `emulate`: the proxy offers F_DEVICE_STATE to QEMU, strips it towards the back-end and is the
 *   back-end of the transfer itself, carrying what it knows of the device (emulated_state.ts).
 * - `off`: F_DEVICE_STATE is hidden from QEMU, as with a back-end that predates it.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import type { Timer } from "../ffi/reactor.ts";
import { createPipe } from "../ffi/pipe.ts";
import { createMessage, encodeMessage, type Message } from "../protocol/codec.ts";
import { hex } from "../protocol/layouts.ts";
import type {
  DeviceStateFactory,
  DeviceStateHooks,
  StateEndpoint,
  StateFrame,
  StateSession,
  Verdict,
} from "./hooks.ts";
import type { EmulatedMeta } from "./emulated_state.ts";
import type { BlobReader, BlobWriter } from "./blob_io.ts";
import { emulateLoad, emulateSave, type EmulationResult } from "./emulation.ts";
import type { DeviceStateConfig } from "./config.ts";
import { protocolFeatureMask } from "../protocol/features.ts";
import { type Faults, parseFaults } from "./faults.ts";
import type {
  DeviceStateRecord,
  StateDirection,
  TransferEndRecord,
  TransferStartRecord,
} from "../log/record.ts";
import { timestamp } from "../log/record.ts";
import { payloadU64, withPayloadU64 } from "../protocol/u64_payload.ts";
import { type CopyResult, StateCopy } from "./copy.ts";
import { DEFAULT_FINGERPRINT, type FingerprintAlgorithm, hashesInline } from "./fingerprint.ts";
import { InlineHash, type PendingDigest, type TrailingHasher } from "./stream_hash.ts";
import { summarizeBlob, validateBlob } from "./blob_summary.ts";
import { translateProtocolFeatures } from "../protocol/dialect.ts";

export { summarizeBlob, validateBlob };

const FORWARD: Verdict = { action: "forward" };

/** How a transfer ended, whoever moved the bytes: the proxy's copy, or its emulation. */
type TransferResult = Pick<CopyResult, "ok" | "bytes" | "bytesIn" | "durationMs"> & {
  digest?: PendingDigest;
  blob?: Uint8Array;
  error?: string;
};
/** Bit 8 of the SET_DEVICE_STATE_FD reply: no fd follows. */
const NO_FD = 0x100n;
/** Blobs up to this size are kept for the decoded summary in the log. */
const KEEP_FOR_SUMMARY = 16 << 20;
/**
 * How long a transfer-end record waits after the copy: longer than the rest of a switch-over
 * (CHECK, then the destination's ring start: ~5 ms measured under TCG), short for a reader.
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

/** Builds the per-session handler, with what the engine's handlers share. */
export function deviceStateHooksWith(shared: DeviceStateShared): DeviceStateFactory {
  return (session, config) => new DeviceStateHandler(session, config, shared);
}

/** Builds the per-session handler; transfers are hashed inline. */
export const deviceStateHooks: DeviceStateFactory = deviceStateHooksWith({});

/** A transfer-end record held back; `digest` is the trailing fingerprint it waits for. */
interface DeferredRecord {
  digest?: PendingDigest;
  write: () => void;
}

interface HeldCheck {
  from: StateEndpoint;
  message: Message;
  bytes: Uint8Array;
}

interface Transfer {
  n: number;
  direction: StateDirection;
  phase: number;
  /** QEMU's end: the reader (SAVE) or writer (LOAD) the proxy serves. */
  qemuFd?: OwnedFd;
  /** Relay: the proxy pipe's end the back-end did not get. */
  proxyEnd?: OwnedFd;
  copy?: StateCopy;
  io?: BlobReader | BlobWriter;
  /** Set when the transfer has ended. */
  outcome?: { ok: boolean; error?: string };
  held?: HeldCheck;
  /** Emulation: the CHECK request waiting for the transfer to end. */
  heldEmulatedCheck?: Message;
}

class DeviceStateHandler implements DeviceStateHooks {
  readonly #s: StateSession;
  readonly #config: DeviceStateConfig;
  readonly #faults: Faults;
  #offeredVirtio = 0n;
  #offeredProtocol = 0n;
  #queueNum: number | undefined;
  readonly #vrings = new Map<number, { num?: number; base?: number }>();
  #configHex: string | undefined;
  #transfer: Transfer | undefined;
  #count = 0;
  /** Transfer-end records waiting for the switch-over to be over (see `#copyDone`). */
  #deferred: DeferredRecord[] = [];
  #deferredTimer: Timer | undefined;
  /** A flush is waiting for the digest of the first deferred record. */
  #awaitingDigest = false;
  readonly #shared: DeviceStateShared;
  /** Answers the proxy injected (to tell whether a failing handler had answered already). */
  #answers = 0;

  constructor(session: StateSession, config: DeviceStateConfig, shared: DeviceStateShared = {}) {
    this.#s = session;
    this.#config = config;
    this.#shared = shared;
    const parsed = parseFaults(config.faults ?? []);
    // The CLI validates faults; a library caller with a bad spec gets no faults and a note.
    this.#faults = parsed.ok
      ? parsed.faults
      : { corrupt: false, checkFail: false, refuse: false, specs: [] };
    if (!parsed.ok) this.#note(parsed.error);
  }

  get #mode() {
    return this.#config.mode;
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
      return this.#intercept(from, message, frame);
    } catch (e) {
      return this.#failedInside(from, message, frame, e, this.#answers !== answersBefore);
    }
  }

  /** The guard of {@linkcode intercept}: what to relay when handling `message` threw. */
  #failedInside(
    from: StateEndpoint,
    message: Message,
    frame: StateFrame,
    e: unknown,
    answered: boolean,
  ): Verdict {
    const isReply = message.kind === "reply";
    const step = `${message.name}${isReply ? " reply" : ""}`;
    const t = this.#transfer;
    const cause = describeError(e);
    this.#fail(t, `handling ${step}`, cause);
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
          this.#answer(from, message, 1n | NO_FD, "refused: the proxy failed inside");
          return { action: "answered", note: `refused with error 1: ${cause}` };
        }
        return {
          action: "forward",
          bytes: withPayloadU64(frame.bytes, 1n | NO_FD),
          fds: [],
          note: `error 1 sent to QEMU: ${cause}`,
        };
      case "CHECK_DEVICE_STATE":
        if (!isReply) {
          this.#answer(from, message, 1n, "failed: the proxy failed inside");
          this.#transfer = undefined;
          return { action: "answered", note: `answered 1 at once: ${cause}` };
        }
        this.#transfer = undefined;
        return {
          action: "forward",
          bytes: withPayloadU64(frame.bytes, 1n),
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
  #fail(t: Transfer | undefined, step: string, cause: string): void {
    const message = `device state: ${step} failed inside the proxy: ${cause}`;
    this.#s.emit({ type: "error", ts: timestamp(), session: this.#s.id, message });
    if (!t) return;
    if (!t.outcome) this.#end(t, `${step} failed: ${cause}`);
    if (t.held || t.heldEmulatedCheck) this.#releaseHeld(t);
  }

  /** Runs a callback of the state path (copy done, emulation I/O), containing its failure. */
  #guarded(t: Transfer, step: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#fail(t, step, describeError(e));
    }
  }

  #intercept(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const isReply = message.kind === "reply";
    const p = frame.payload;
    switch (message.name) {
      case "GET_FEATURES":
        if (isReply) this.#offeredVirtio = payloadU64(p);
        return FORWARD;
      case "GET_PROTOCOL_FEATURES":
        return isReply ? this.#onProtocolFeaturesOffered(frame) : FORWARD;
      case "SET_PROTOCOL_FEATURES":
        return isReply ? FORWARD : this.#onProtocolFeaturesSet(frame);
      case "GET_QUEUE_NUM":
        if (isReply) this.#queueNum = Number(payloadU64(p));
        return FORWARD;
      case "SET_VRING_NUM":
      case "SET_VRING_BASE":
      case "GET_VRING_BASE":
        // Ring state is in SET requests and in GET_VRING_BASE's reply; acks are plain u64s.
        if (isReply !== (message.name === "GET_VRING_BASE")) return FORWARD;
        if (p.length >= 8) {
          const v = new DataView(p.buffer, p.byteOffset, 8);
          const index = v.getUint32(0, true);
          const entry = this.#vrings.get(index) ?? {};
          if (message.name === "SET_VRING_NUM") entry.num = v.getUint32(4, true);
          else entry.base = v.getUint32(4, true);
          this.#vrings.set(index, entry);
        }
        return FORWARD;
      case "GET_CONFIG":
        if (isReply) this.#configHex = [...p].map((b) => b.toString(16).padStart(2, "0")).join("");
        return FORWARD;
      case "SET_DEVICE_STATE_FD":
        return isReply ? this.#onSetFdReply(frame) : this.#onSetFd(from, message, frame);
      case "CHECK_DEVICE_STATE":
        return isReply ? this.#onCheckReply(frame) : this.#onCheck(from, message, frame);
      default:
        return FORWARD;
    }
  }

  // ---- feature negotiation ------------------------------------------------------------------

  #onProtocolFeaturesOffered(frame: StateFrame): Verdict {
    const offered = payloadU64(frame.payload);
    this.#offeredProtocol = offered;
    const bit = protocolFeatureMask("DEVICE_STATE", this.#s.options.backDialect);
    if (this.#mode === "emulate" && (offered & bit) === 0n) {
      this.#note("offering F_DEVICE_STATE to the front-end: the proxy holds the device state");
      return {
        action: "forward",
        bytes: withPayloadU64(frame.bytes, offered | bit),
        note: "added F_DEVICE_STATE (emulated by the proxy)",
      };
    }
    if (this.#mode === "off" && (offered & bit) !== 0n) {
      this.#note("hiding the back-end's F_DEVICE_STATE from the front-end (--device-state off)");
      return {
        action: "forward",
        bytes: withPayloadU64(frame.bytes, offered & ~bit),
        note: "removed F_DEVICE_STATE (--device-state off)",
      };
    }
    return FORWARD;
  }

  #onProtocolFeaturesSet(frame: StateFrame): Verdict {
    if (this.#mode !== "emulate") return FORWARD;
    const bit = protocolFeatureMask("DEVICE_STATE", this.#s.options.frontDialect);
    const value = payloadU64(frame.payload);
    if ((value & bit) === 0n) return FORWARD;
    const backBit = protocolFeatureMask("DEVICE_STATE", this.#s.options.backDialect);
    // Keep the bit only for a back-end that offered it itself (the proxy still answers).
    const keep = (this.#offeredProtocol & backBit) !== 0n;
    if (keep) return FORWARD;
    return {
      action: "forward",
      bytes: withPayloadU64(frame.bytes, value & ~bit),
      note: "removed F_DEVICE_STATE (the proxy emulates it)",
    };
  }

  // ---- SET_DEVICE_STATE_FD ------------------------------------------------------------------

  #onSetFd(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const v = new DataView(frame.payload.buffer, frame.payload.byteOffset, 8);
    const direction: StateDirection = v.getUint32(0, true) === 0 ? "SAVE" : "LOAD";
    const phase = v.getUint32(4, true);
    // Phases other than 0 (STOPPED) "might be added" (docs/protocol.md §1.10): the codec warns, and the
    // proxy relays the request and its reply untouched, taking no part in the transfer.
    if (phase !== 0) return { action: "forward", note: `phase ${phase} relayed untouched` };
    if (this.#transfer && !this.#transfer.outcome) {
      this.#end(this.#transfer, "a new SET_DEVICE_STATE_FD replaced it");
    }
    const t: Transfer = { n: ++this.#count, direction, phase };
    this.#transfer = t;

    if (this.#faults.refuse) {
      closeAll(frame.fds);
      t.outcome = { ok: false, error: "refused by fault state-refuse" };
      this.#answer(from, message, 1n | NO_FD, "refused (fault state-refuse)");
      this.#note(`refused SET_DEVICE_STATE_FD(${direction}) with error 1 (fault state-refuse)`);
      return { action: "answered", note: "refused by the proxy (fault state-refuse)" };
    }
    if (frame.fds.length !== 1) return FORWARD; // the codec rejects this; be safe regardless
    t.qemuFd = frame.fds[0];
    frame.fds.length = 0;

    if (this.#mode === "emulate") {
      this.#answer(from, message, NO_FD, "accepted by the proxy (emulated device state)");
      this.#startEmulated(t);
      return { action: "answered", note: "answered by the proxy (emulated device state)" };
    }

    const [r, w] = createPipe();
    const [backendEnd, proxyEnd] = direction === "SAVE" ? [w, r] : [r, w];
    t.proxyEnd = proxyEnd;
    return {
      action: "forward",
      fds: [backendEnd],
      note: `interposed a proxy pipe for ${direction}`,
    };
  }

  #onSetFdReply(frame: StateFrame): Verdict {
    const t = this.#transfer;
    if (!t || t.outcome || !t.qemuFd) return FORWARD;
    const value = payloadU64(frame.payload);
    const error = value & 0xffn;
    if (error !== 0n) {
      closeAll(frame.fds);
      frame.fds.length = 0;
      this.#end(t, `the back-end refused the transfer (error ${error})`);
      return FORWARD;
    }
    let via: "proxy-pipe" | "back-end-fd" = "proxy-pipe";
    let backSide = t.proxyEnd!;
    if ((value & NO_FD) === 0n && frame.fds.length === 1) {
      // The back-end chose its own channel: the proxy's pipe is discarded (spec "Migrating
      // back-end state": the front-end must use the back-end's fd instead).
      via = "back-end-fd";
      backSide = frame.fds[0];
      frame.fds.length = 0;
      t.proxyEnd!.close();
      t.proxyEnd = undefined;
    } else {
      t.proxyEnd = undefined;
    }
    const [src, dst] = t.direction === "SAVE" ? [backSide, t.qemuFd] : [t.qemuFd, backSide];
    t.qemuFd = undefined;
    const faults = this.#faults;
    const dump = this.#dumpPath(t);
    t.copy = new StateCopy(this.#s.reactor, src, dst, {
      dumpPath: dump,
      buffer: this.#config.buffer,
      validate: this.#config.buffer ? validateBlob : undefined,
      faults: { corrupt: faults.corrupt, truncateAt: faults.truncateAt, delayMs: faults.delayMs },
      keepUpTo: this.#config.hash === false ? 0 : KEEP_FOR_SUMMARY,
      hash: this.#config.hash !== false,
      algorithm: this.#algorithm,
      hasher: this.#shared.hasher,
      onDone: (result) =>
        this.#guarded(t, "ending the copy", () => this.#copyDone(t, result, dump)),
    });
    this.#transferStarted(t, via, t.copy.mode);
    return {
      action: "forward",
      bytes: value & NO_FD ? frame.bytes : withPayloadU64(frame.bytes, value | NO_FD),
      fds: [],
      note: via === "back-end-fd"
        ? "the back-end's own fd is used; QEMU is told no fd (the proxy copies)"
        : `streaming ${t.direction} through the proxy pipe`,
    };
  }

  #transferStarted(t: Transfer, via: TransferStartRecord["via"], mode: string): void {
    this.#emit({
      type: "device-state",
      event: "transfer-start",
      ts: timestamp(),
      session: this.#s.id,
      direction: t.direction,
      phase: t.phase,
      via,
      mode,
    });
  }

  /** The fingerprint's algorithm (`--state-hash`). */
  get #algorithm(): FingerprintAlgorithm {
    return this.#config.hashAlgorithm ?? DEFAULT_FINGERPRINT;
  }

  #copyDone(t: Transfer, result: TransferResult, dump: string | undefined): void {
    t.outcome = { ok: result.ok, error: result.error };
    const record: TransferEndRecord = {
      type: "device-state",
      event: "transfer-end",
      ts: timestamp(),
      session: this.#s.id,
      direction: t.direction,
      ok: result.ok,
      bytes: result.bytes,
      bytesIn: result.bytesIn,
      durationMs: round(result.durationMs),
      throughputMiBps: round(result.bytes / (1 << 20) / Math.max(result.durationMs / 1000, 1e-6)),
    };
    if (result.error) record.error = result.error;
    if (dump) record.dump = dump;
    if (this.#faults.specs.length > 0) record.faults = this.#faults.specs;
    if (t.held || t.heldEmulatedCheck) this.#releaseHeld(t);
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
        this.#emit(record);
      },
    });
    this.#deferredTimer ??= this.#s.reactor.setTimer(RECORD_DELAY_MS, () => this.#flushDeferred());
    const startHasher = this.#shared.startHasher;
    if (
      digest && startHasher && !this.#shared.hasher && !hashesInline(digest.algorithm) &&
      result.bytes >= TRAILING_FROM_BYTES
    ) {
      this.#s.reactor.setTimer(RECORD_DELAY_MS, startHasher);
    }
  }

  /**
   * Writes the records held back by `#copyDone`, in order. A record whose trailing digest is
   * still being computed holds the rest back until it arrives; at session end (`final`) it is
   * waited for, within a bound.
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

  // ---- CHECK_DEVICE_STATE -------------------------------------------------------------------

  #onCheck(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const t = this.#transfer;
    if (this.#mode === "emulate") {
      // Never forwarded: a back-end without the feature may not even know the request.
      if (!t) {
        const none: Transfer = {
          n: 0,
          direction: "LOAD",
          phase: 0,
          outcome: { ok: false, error: "no SET_DEVICE_STATE_FD preceded it" },
        };
        this.#answerCheck(from, message, none);
        return { action: "answered", note: "answered by the proxy (emulated device state)" };
      }
      if (t.outcome) {
        this.#answerCheck(from, message, t);
        return { action: "answered", note: "answered by the proxy (emulated device state)" };
      }
      t.heldEmulatedCheck = message;
      this.#watchHeld(t, message, () => `the emulated ${t.direction} to end`);
      return { action: "answered", note: `held: waiting for the emulated ${t.direction} to end` };
    }
    if (t && t.copy && !t.outcome) {
      t.held = { from, message, bytes: frame.bytes.slice() };
      this.#watchHeld(t, t.held, () => `the ${t.direction} copy to end`);
      return {
        action: "answered",
        note:
          `held: waiting for the ${t.direction} copy to end (${t.copy.bytesDelivered} bytes so far)`,
      };
    }
    return FORWARD;
  }

  /**
   * A CHECK the proxy holds is a wait QEMU cannot see: after `--stuck-after` it is flagged, by
   * name and with what it waits for, like a reply that does not come.
   */
  #watchHeld(t: Transfer, held: object, waitsFor: () => string): void {
    const limit = this.#s.options.stuckAfterMs;
    if (limit <= 0) return;
    const since = performance.now();
    this.#s.reactor.setTimer(limit, () => {
      if (t.held !== held && t.heldEmulatedCheck !== held) return;
      const bytes = t.copy?.bytesDelivered;
      this.#s.emit({
        type: "warning",
        ts: timestamp(),
        session: this.#s.id,
        channel: "main",
        side: "back-end",
        request: "CHECK_DEVICE_STATE",
        message: `CHECK_DEVICE_STATE has been held by the proxy for ${
          Math.round(performance.now() - since)
        } ms, waiting for ${waitsFor()}${bytes === undefined ? "" : ` (${bytes} bytes so far)`}`,
      });
    });
  }

  #releaseHeld(t: Transfer): void {
    if (t.held) {
      const h = t.held;
      t.held = undefined;
      this.#s.forward(h.from, h.message, h.bytes, [], {
        message: h.message,
        size: h.bytes.length,
        warnings: [],
        action: "released after the state copy finished",
      });
    }
    if (t.heldEmulatedCheck) {
      const m = t.heldEmulatedCheck;
      t.heldEmulatedCheck = undefined;
      this.#answerCheck(this.#s.front, m, t);
    }
  }

  #onCheckReply(frame: StateFrame): Verdict {
    const t = this.#transfer;
    const backendResult = payloadU64(frame.payload);
    let result = backendResult;
    const reasons: string[] = [];
    if (t?.outcome && !t.outcome.ok) {
      reasons.push(`the state transfer failed: ${t.outcome.error ?? "unknown error"}`);
      if (result === 0n) result = 1n;
    }
    if (this.#faults.checkFail) {
      reasons.push("fault check-fail");
      if (result === 0n) result = 1n;
    }
    this.#emit({
      type: "device-state",
      event: "check",
      ts: timestamp(),
      session: this.#s.id,
      direction: t?.direction,
      backendResult: Number(backendResult),
      result: Number(result),
      reason: reasons.length > 0 ? reasons.join("; ") : undefined,
    });
    this.#transfer = undefined;
    if (result === backendResult) return FORWARD;
    return {
      action: "forward",
      bytes: withPayloadU64(frame.bytes, result),
      note: `result changed from ${backendResult} to ${result} by the proxy`,
    };
  }

  #answerCheck(to: StateEndpoint, request: Message, t: Transfer): void {
    const reasons: string[] = [];
    if (!t.outcome?.ok) reasons.push(t.outcome?.error ?? "no transfer happened");
    if (this.#faults.checkFail) reasons.push("fault check-fail");
    const result = reasons.length > 0 ? 1n : 0n;
    this.#answer(to, request, result, "emulated CHECK_DEVICE_STATE");
    this.#emit({
      type: "device-state",
      event: "check",
      ts: timestamp(),
      session: this.#s.id,
      direction: t.direction,
      result: Number(result),
      reason: reasons.length > 0 ? reasons.join("; ") : "emulated by the proxy",
    });
    this.#transfer = undefined;
  }

  // ---- emulation ----------------------------------------------------------------------------

  #startEmulated(t: Transfer): void {
    const fd = t.qemuFd!;
    t.qemuFd = undefined;
    this.#transferStarted(t, "emulated", "memory");
    const done = (r: EmulationResult) => {
      const result: TransferResult = {
        ok: r.ok,
        bytes: r.bytes,
        bytesIn: r.bytes,
        durationMs: r.durationMs,
        // `--state-hash off` still fingerprints an emulated state with SHA-256, as before.
        digest: digestOf(this.#config.hash === false ? "sha256" : this.#algorithm, r.blob),
        blob: r.blob,
        ...(r.error === undefined ? {} : { error: r.error }),
      };
      let dump: string | undefined;
      try {
        dump = this.#dumpPath(t);
        if (dump) Deno.writeFileSync(dump, r.blob);
      } catch (e) {
        const cause = `writing the dump failed: ${describeError(e)}`;
        this.#s.emit({
          type: "error",
          ts: timestamp(),
          session: this.#s.id,
          message: `device state: ${t.direction} ${cause}`,
        });
        result.ok = false;
        result.error = result.error ? `${result.error}; ${cause}` : cause;
        dump = undefined;
      }
      this.#guarded(t, "ending the emulated transfer", () => this.#copyDone(t, result, dump));
    };
    t.io = t.direction === "SAVE"
      ? emulateSave(this.#s.reactor, fd, this.#meta(), {
        saveCmd: this.#config.saveCmd,
        faults: this.#faults,
      }, done)
      : emulateLoad(
        this.#s.reactor,
        fd,
        {
          virtio: this.#offeredVirtio,
          protocol: this.#offeredProtocol,
          dialect: this.#s.options.backDialect,
        },
        { loadCmd: this.#config.loadCmd },
        done,
      );
  }

  #meta(): EmulatedMeta {
    const front = this.#s.frontView;
    const toUpstream = (bits: bigint, dialect: "upstream" | "rfc2023") =>
      dialect === "upstream" ? bits : translateProtocolFeatures(bits, dialect, "upstream").bits;
    const meta: EmulatedMeta = {
      producer: "vhost-user-proxy",
      createdAt: timestamp(),
      virtioFeatures: hex(front.virtio),
      protocolFeatures: hex(toUpstream(front.protocol, this.#s.options.frontDialect)),
      backendVirtioFeatures: hex(this.#offeredVirtio),
      backendProtocolFeatures: hex(toUpstream(this.#offeredProtocol, this.#s.options.backDialect)),
      vrings: [...this.#vrings.entries()].sort((a, b) => a[0] - b[0]).map(([index, v]) => ({
        index,
        ...v,
      })),
    };
    if (this.#queueNum !== undefined) meta.queueNum = this.#queueNum;
    if (this.#configHex !== undefined) meta.config = this.#configHex;
    return meta;
  }

  // ---- helpers ------------------------------------------------------------------------------

  /** Sends the front-end a reply the proxy made, with a u64 payload. */
  #answer(to: StateEndpoint, request: Message, value: bigint, note: string): void {
    const payload = request.name === "SET_DEVICE_STATE_FD"
      ? {
        layout: "device_state_result" as const,
        error: Number(value & 0xffn),
        noFd: (value & NO_FD) !== 0n,
        reserved: value >> 9n,
      }
      : { layout: "result" as const, value };
    const reply = createMessage({
      channel: "main",
      sender: "back-end",
      dialect: this.#s.options.frontDialect,
      request: request.code,
      payload,
    });
    this.#answers++;
    this.#s.inject(to, reply, encodeMessage(reply), [], note);
  }

  #dumpPath(t: Transfer): string | undefined {
    const dir = this.#config.dumpDir;
    if (!dir) return undefined;
    try {
      Deno.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new Error(`cannot create the --state-dump directory "${dir}": ${describeError(e)}`);
    }
    return `${dir}/session-${this.#s.id}-${t.direction.toLowerCase()}-${t.n}.bin`;
  }

  #end(t: Transfer, reason: string): void {
    t.copy?.cancel(reason);
    t.io?.cancel(reason);
    t.qemuFd?.close();
    t.proxyEnd?.close();
    if (!t.outcome) t.outcome = { ok: false, error: reason };
    this.#note(`${t.direction} transfer ended: ${reason}`);
  }

  #note(message: string): void {
    this.#emit({
      type: "device-state",
      event: "note",
      ts: timestamp(),
      session: this.#s.id,
      message,
    });
  }

  #emit(r: DeviceStateRecord): void {
    this.#s.emit(r);
  }

  close(): void {
    this.#flushDeferred(true);
    const t = this.#transfer;
    if (t && !t.outcome) this.#end(t, "the session ended");
    else if (t) {
      t.qemuFd?.close();
      t.proxyEnd?.close();
    }
    this.#transfer = undefined;
  }
}

/** One line for a log record: the error's message (its name when it has none), never a stack. */
function describeError(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

function digestOf(algorithm: FingerprintAlgorithm, bytes: Uint8Array): PendingDigest {
  const hash = new InlineHash(algorithm);
  hash.update(bytes);
  return hash.end();
}

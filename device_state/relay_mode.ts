/**
 * `--device-state relay` (the default): the back-end gets the proxy's pipe instead of QEMU's fd,
 * and the proxy copies between the two (SAVE: back-end → QEMU, LOAD: QEMU → back-end), counting,
 * hashing and optionally dumping the bytes; it uses the back-end's own fd when it replies with
 * one. QEMU always hears "no fd" (bit 8), because the proxy is the other end.
 * CHECK_DEVICE_STATE is held until the copy has finished, and fails when the copy did.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { createPipe } from "../ffi/pipe.ts";
import type { Message } from "../protocol/codec.ts";
import { timestamp } from "../log/record.ts";
import type { StateEndpoint, StateFrame, Verdict } from "./hooks.ts";
import { StateCopy } from "./copy.ts";
import { validateBlob } from "./blob_summary.ts";
import { FORWARD, rewritten, type Transfer, TransferMode } from "./transfer_mode.ts";

/** Blobs up to this size are kept for the decoded summary in the log. */
const KEEP_FOR_SUMMARY = 16 << 20;

/** A relayed transfer: the proxy's pipe, its copy, the CHECK it holds. */
interface RelayedTransfer extends Transfer {
  /** The proxy pipe's end the back-end did not get, until the back-end's reply. */
  proxyEnd?: OwnedFd;
  copy?: StateCopy;
  /** The CHECK_DEVICE_STATE request held until the copy ends. */
  held?: { from: StateEndpoint; message: Message; bytes: Uint8Array };
}

/** The relay mode of one session. */
export class RelayMode extends TransferMode<RelayedTransfer> {
  protected handle(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const isReply = message.kind === "reply";
    switch (message.name) {
      case "SET_DEVICE_STATE_FD":
        return isReply ? this.#onSetFdReply(message, frame) : this.#onSetFd(from, message, frame);
      case "CHECK_DEVICE_STATE":
        return isReply ? this.#onCheckReply(message) : this.#onCheck(from, message, frame);
      default:
        return FORWARD;
    }
  }

  #onSetFd(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const t = this.beginTransfer(from, message, frame, (base) => base);
    if ("action" in t) return t;
    const [r, w] = createPipe();
    const [backendEnd, proxyEnd] = t.direction === "SAVE" ? [w, r] : [r, w];
    t.proxyEnd = proxyEnd;
    return {
      action: "forward",
      fds: [backendEnd],
      note: `interposed a proxy pipe for ${t.direction}`,
    };
  }

  #onSetFdReply(message: Message, frame: StateFrame): Verdict {
    const t = this.transfer;
    const p = message.payload;
    if (!t || t.outcome || !t.qemuFd || p.layout !== "device_state_result") return FORWARD;
    if (p.error !== 0) {
      closeAll(frame.fds);
      frame.fds.length = 0;
      this.end(t, `the back-end refused the transfer (error ${p.error})`);
      return FORWARD;
    }
    let via: "proxy-pipe" | "back-end-fd" = "proxy-pipe";
    let backSide = t.proxyEnd!;
    t.proxyEnd = undefined;
    if (!p.noFd && frame.fds.length === 1) {
      // The back-end chose its own channel: the proxy's pipe is discarded (spec "Migrating
      // back-end state": the front-end must use the back-end's fd instead).
      via = "back-end-fd";
      backSide.close();
      backSide = frame.fds[0];
      frame.fds.length = 0;
    }
    const [src, dst] = t.direction === "SAVE" ? [backSide, t.qemuFd] : [t.qemuFd, backSide];
    t.qemuFd = undefined;
    const faults = this.faults;
    const dump = this.dumpPath(t);
    const hash = this.config.hash !== false;
    t.copy = new StateCopy(this.session.reactor, src, dst, {
      dumpPath: dump,
      buffer: this.config.buffer,
      validate: this.config.buffer ? validateBlob : undefined,
      faults: { corrupt: faults.corrupt, truncateAt: faults.truncateAt, delayMs: faults.delayMs },
      keepUpTo: hash ? KEEP_FOR_SUMMARY : 0,
      hash,
      algorithm: this.algorithm,
      hasher: this.shared.hasher,
      onDone: (result) =>
        this.guarded(t, "ending the copy", () => this.transferEnded(t, result, dump)),
    });
    this.transferStarted(t, via, t.copy.mode);
    return {
      action: "forward",
      bytes: p.noFd ? frame.bytes : rewritten(message, { ...p, noFd: true }),
      fds: [],
      note: via === "back-end-fd"
        ? "the back-end's own fd is used; QEMU is told no fd (the proxy copies)"
        : `streaming ${t.direction} through the proxy pipe`,
    };
  }

  #onCheck(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const t = this.transfer;
    if (!t?.copy || t.outcome) return FORWARD;
    const held = { from, message, bytes: frame.bytes.slice() };
    t.held = held;
    this.watchHeld(
      () => t.held === held,
      () => `the ${t.direction} copy to end`,
      () => t.copy?.bytesDelivered,
    );
    return {
      action: "answered",
      note:
        `held: waiting for the ${t.direction} copy to end (${t.copy.bytesDelivered} bytes so far)`,
    };
  }

  protected releaseHeld(t: RelayedTransfer): void {
    const h = t.held;
    if (!h) return;
    t.held = undefined;
    this.session.forward(h.from, h.message, h.bytes, [], {
      message: h.message,
      size: h.bytes.length,
      warnings: [],
      action: "released after the state copy finished",
    });
  }

  #onCheckReply(message: Message): Verdict {
    const t = this.transfer;
    const p = message.payload;
    if (p.layout !== "result") return FORWARD;
    const backendResult = p.value;
    let result = backendResult;
    const reasons: string[] = [];
    if (t?.outcome && !t.outcome.ok) {
      reasons.push(`the state transfer failed: ${t.outcome.error ?? "unknown error"}`);
      if (result === 0n) result = 1n;
    }
    if (this.faults.checkFail) {
      reasons.push("fault check-fail");
      if (result === 0n) result = 1n;
    }
    this.emit({
      type: "device-state",
      event: "check",
      ts: timestamp(),
      session: this.session.id,
      direction: t?.direction,
      backendResult: Number(backendResult),
      result: Number(result),
      reason: reasons.length > 0 ? reasons.join("; ") : undefined,
    });
    this.transfer = undefined;
    if (result === backendResult) return FORWARD;
    return {
      action: "forward",
      bytes: rewritten(message, { ...p, value: result }),
      note: `result changed from ${backendResult} to ${result} by the proxy`,
    };
  }

  protected stop(t: RelayedTransfer, reason: string): void {
    t.copy?.cancel(reason);
    t.proxyEnd?.close();
    t.proxyEnd = undefined;
  }
}

/**
 * `--device-state emulate`: the proxy offers F_DEVICE_STATE to QEMU, strips it towards the
 * back-end and is the back-end of the transfer itself, carrying what it knows of the device
 * (emulated_state.ts, moved by emulation.ts). CHECK_DEVICE_STATE is never forwarded: a back-end
 * without the feature may not even know the request.
 *
 * @module
 */

import type { Message } from "../protocol/codec.ts";
import { hex, hexBytes, readPayload } from "../protocol/layouts.ts";
import { protocolFeatureMask } from "../protocol/features.ts";
import { translateProtocolFeatures } from "../protocol/dialect.ts";
import { timestamp } from "../log/record.ts";
import type { StateEndpoint, StateFrame, Verdict } from "./hooks.ts";
import type { BlobReader, BlobWriter } from "./blob_io.ts";
import type { EmulatedMeta } from "./emulated_state.ts";
import { emulateLoad, emulateSave, type EmulationResult } from "./emulation.ts";
import type { FingerprintAlgorithm } from "./fingerprint.ts";
import { InlineHash, type PendingDigest } from "./stream_hash.ts";
import {
  describeError,
  FORWARD,
  NO_FD,
  rewritten,
  type Transfer,
  TransferMode,
  type TransferResult,
} from "./transfer_mode.ts";

/** An emulated transfer: the proxy's own reader or writer on QEMU's fd. */
interface EmulatedTransfer extends Transfer {
  io?: BlobReader | BlobWriter;
  /** The CHECK request waiting for the transfer to end. */
  heldCheck?: Message;
}

const ANSWERED: Verdict = {
  action: "answered",
  note: "answered by the proxy (emulated device state)",
};

/** The emulate mode of one session. */
export class EmulateMode extends TransferMode<EmulatedTransfer> {
  #offeredVirtio = 0n;
  #offeredProtocol = 0n;
  #queueNum: number | undefined;
  readonly #vrings = new Map<number, { num?: number; base?: number }>();
  #configHex: string | undefined;

  protected handle(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const p = message.payload;
    const isReply = message.kind === "reply";
    switch (message.name) {
      case "GET_FEATURES":
        if (isReply && p.layout === "virtio_features") this.#offeredVirtio = p.features;
        return FORWARD;
      case "GET_PROTOCOL_FEATURES":
        return isReply ? this.#onProtocolFeaturesOffered(message) : FORWARD;
      case "SET_PROTOCOL_FEATURES":
        return isReply ? FORWARD : this.#onProtocolFeaturesSet(message);
      case "GET_QUEUE_NUM":
        if (isReply && p.layout === "u64") this.#queueNum = Number(p.value);
        return FORWARD;
      case "SET_VRING_NUM":
      case "SET_VRING_BASE":
      case "GET_VRING_BASE": {
        // Ring state is in SET requests and in GET_VRING_BASE's reply; acks are plain u64s.
        if (isReply !== (message.name === "GET_VRING_BASE")) return FORWARD;
        if (p.layout !== "vring_state" && p.layout !== "vring_base_packed") return FORWARD;
        const entry = this.#vrings.get(p.index) ?? {};
        // The blob keeps the wire's u32, split or packed ring alike: read as the plain layout.
        const num = readPayload("vring_state", frame.payload).num;
        if (message.name === "SET_VRING_NUM") entry.num = num;
        else entry.base = num;
        this.#vrings.set(p.index, entry);
        return FORWARD;
      }
      case "GET_CONFIG":
        // Kept as the back-end's bytes: the destination's QEMU compares config space raw.
        if (isReply) this.#configHex = hexBytes(frame.payload);
        return FORWARD;
      case "SET_DEVICE_STATE_FD":
        return isReply ? FORWARD : this.#onSetFd(from, message, frame);
      case "CHECK_DEVICE_STATE":
        return isReply ? FORWARD : this.#onCheck(from, message);
      default:
        return FORWARD;
    }
  }

  #onProtocolFeaturesOffered(message: Message): Verdict {
    const p = message.payload;
    if (p.layout !== "protocol_features") return FORWARD;
    this.#offeredProtocol = p.features;
    const bit = protocolFeatureMask("DEVICE_STATE", this.session.options.backDialect);
    if ((p.features & bit) !== 0n) return FORWARD;
    this.note("offering F_DEVICE_STATE to the front-end: the proxy holds the device state");
    return {
      action: "forward",
      bytes: rewritten(message, { ...p, features: p.features | bit }),
      note: "added F_DEVICE_STATE (emulated by the proxy)",
    };
  }

  #onProtocolFeaturesSet(message: Message): Verdict {
    const p = message.payload;
    if (p.layout !== "protocol_features") return FORWARD;
    const bit = protocolFeatureMask("DEVICE_STATE", this.session.options.frontDialect);
    if ((p.features & bit) === 0n) return FORWARD;
    const backBit = protocolFeatureMask("DEVICE_STATE", this.session.options.backDialect);
    // Keep the bit only for a back-end that offered it itself (the proxy still answers).
    if ((this.#offeredProtocol & backBit) !== 0n) return FORWARD;
    return {
      action: "forward",
      bytes: rewritten(message, { ...p, features: p.features & ~bit }),
      note: "removed F_DEVICE_STATE (the proxy emulates it)",
    };
  }

  #onSetFd(from: StateEndpoint, message: Message, frame: StateFrame): Verdict {
    const t = this.beginTransfer(from, message, frame, (base) => base);
    if ("action" in t) return t;
    this.answer(from, message, NO_FD, "accepted by the proxy (emulated device state)");
    this.#start(t);
    return ANSWERED;
  }

  #start(t: EmulatedTransfer): void {
    const fd = t.qemuFd!;
    t.qemuFd = undefined;
    this.transferStarted(t, "emulated", "memory");
    const done = (r: EmulationResult) => {
      const result: TransferResult = {
        ok: r.ok,
        bytes: r.bytes,
        bytesIn: r.bytes,
        durationMs: r.durationMs,
        // `--state-hash off` still fingerprints an emulated state with SHA-256, as before.
        digest: digestOf(this.config.hash === false ? "sha256" : this.algorithm, r.blob),
        blob: r.blob,
        ...(r.error === undefined ? {} : { error: r.error }),
      };
      let dump: string | undefined;
      try {
        dump = this.dumpPath(t);
        if (dump) Deno.writeFileSync(dump, r.blob);
      } catch (e) {
        const cause = `writing the dump failed: ${describeError(e)}`;
        this.session.emit({
          type: "error",
          ts: timestamp(),
          session: this.session.id,
          message: `device state: ${t.direction} ${cause}`,
        });
        result.ok = false;
        result.error = result.error ? `${result.error}; ${cause}` : cause;
        dump = undefined;
      }
      this.guarded(t, "ending the emulated transfer", () => this.transferEnded(t, result, dump));
    };
    const reactor = this.session.reactor;
    t.io = t.direction === "SAVE"
      ? emulateSave(reactor, fd, this.#meta(), {
        saveCmd: this.config.saveCmd,
        faults: this.faults,
      }, done)
      : emulateLoad(
        reactor,
        fd,
        {
          virtio: this.#offeredVirtio,
          protocol: this.#offeredProtocol,
          dialect: this.session.options.backDialect,
        },
        { loadCmd: this.config.loadCmd },
        done,
      );
  }

  #onCheck(from: StateEndpoint, message: Message): Verdict {
    const t = this.transfer;
    if (!t) {
      this.#answerCheck(from, message, undefined, "no SET_DEVICE_STATE_FD preceded it");
      return ANSWERED;
    }
    if (t.outcome) {
      this.#answerCheck(from, message, t);
      return ANSWERED;
    }
    t.heldCheck = message;
    this.watchHeld(
      () => t.heldCheck === message,
      () => `the emulated ${t.direction} to end`,
      () => undefined,
    );
    return { action: "answered", note: `held: waiting for the emulated ${t.direction} to end` };
  }

  protected releaseHeld(t: EmulatedTransfer): void {
    const m = t.heldCheck;
    if (!m) return;
    t.heldCheck = undefined;
    this.#answerCheck(this.session.front, m, t);
  }

  #answerCheck(
    to: StateEndpoint,
    request: Message,
    t: EmulatedTransfer | undefined,
    missing = "no transfer happened",
  ): void {
    const reasons: string[] = [];
    if (!t?.outcome?.ok) reasons.push(t?.outcome?.error ?? missing);
    if (this.faults.checkFail) reasons.push("fault check-fail");
    const result = reasons.length > 0 ? 1n : 0n;
    this.answer(to, request, result, "emulated CHECK_DEVICE_STATE");
    this.emit({
      type: "device-state",
      event: "check",
      ts: timestamp(),
      session: this.session.id,
      direction: t?.direction ?? "LOAD",
      result: Number(result),
      reason: reasons.length > 0 ? reasons.join("; ") : "emulated by the proxy",
    });
    this.transfer = undefined;
  }

  /** What the proxy knows of the device: the blob an emulated SAVE writes. */
  #meta(): EmulatedMeta {
    const front = this.session.frontView;
    const { frontDialect, backDialect } = this.session.options;
    const toUpstream = (bits: bigint, dialect: "upstream" | "rfc2023") =>
      dialect === "upstream" ? bits : translateProtocolFeatures(bits, dialect, "upstream").bits;
    const meta: EmulatedMeta = {
      producer: "vhost-user-proxy",
      createdAt: timestamp(),
      virtioFeatures: hex(front.virtio),
      protocolFeatures: hex(toUpstream(front.protocol, frontDialect)),
      backendVirtioFeatures: hex(this.#offeredVirtio),
      backendProtocolFeatures: hex(toUpstream(this.#offeredProtocol, backDialect)),
      vrings: [...this.#vrings.entries()].sort((a, b) => a[0] - b[0]).map(([index, v]) => ({
        index,
        ...v,
      })),
    };
    if (this.#queueNum !== undefined) meta.queueNum = this.#queueNum;
    if (this.#configHex !== undefined) meta.config = this.#configHex;
    return meta;
  }

  protected stop(t: EmulatedTransfer, reason: string): void {
    t.io?.cancel(reason);
  }
}

function digestOf(algorithm: FingerprintAlgorithm, bytes: Uint8Array): PendingDigest {
  const hash = new InlineHash(algorithm);
  hash.update(bytes);
  return hash.end();
}

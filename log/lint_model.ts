/**
 * The session model the conformance lint judges against: what each peer offered and set, which
 * requests await a reply, which rings run, the memory table, the device-state transfer. Built
 * from the proxy's log records only (no I/O), so that the same model serves a live proxy and a
 * recorded log.
 *
 * The records show every message as its sender sent it (before the proxy rewrote anything), so
 * where the proxy changes what a peer sees (`--device-state emulate` adds F_DEVICE_STATE to the
 * front-end's offer and strips it from what the back-end is told; `off` hides it) the model
 * keeps one view per peer, read from the record's `action`.
 *
 * @module
 */

import { type Channel, findRequestByName } from "../protocol/catalogue.ts";
import type { ChannelName, MessageRecord, SenderSide } from "./record.ts";

/** A peer the lint judges. */
export type LintPeer = SenderSide;

/** What a request obliges its receiver to: a reply with a body, a REPLY_ACK ack, nothing. */
export type Expectation = "reply" | "ack" | "none" | "unknown";

/** A request that may still be answered. */
export interface PendingRequest {
  /** The request as logged. */
  record: MessageRecord;
  /** What answer it is owed. */
  expect: Expectation;
}

/** One guest memory region of the table the front-end set. */
export interface Region {
  /** Guest physical address of the region's start. */
  gpa: bigint;
  /** Size of the region in bytes. */
  size: bigint;
  /** Front-end virtual address of the region's start (what ring addresses are given in). */
  uaddr: bigint;
  /** Which message added it (for the finding's values). */
  from: string;
}

/** The device-state transfer SET_DEVICE_STATE_FD opened. */
export interface Transfer {
  /** SAVE on the source, LOAD on the destination. */
  direction: "SAVE" | "LOAD";
  /** Migration phase the request named. */
  phase: number;
  /** The SET_DEVICE_STATE_FD that opened the transfer. */
  request: MessageRecord;
  /** The reply's outcome: accepted (error 0), refused, or not answered yet. */
  state: "requested" | "accepted" | "refused";
  /** The proxy streams it (a `transfer-start` record came). */
  streamed: boolean;
  /** When the proxy's copy ended (`transfer-end` is stamped then and written later). */
  endTs?: string;
}

/** A CHECK_DEVICE_STATE whose verdict waits for the `transfer-end` record (written late). */
export interface WaitingCheck {
  /** The CHECK_DEVICE_STATE request. */
  record: MessageRecord;
  /** The transfer it checks. */
  transfer: Transfer;
}

/** Everything the lint knows about one session. */
export interface LintSession {
  /** The session number of the records judged. */
  session: number;
  /** Virtio features of the last GET_FEATURES reply (names, `bit N` for unnamed bits). */
  virtioOffered?: Set<string>;
  /** Virtio features of the last SET_FEATURES. */
  virtioAcked?: Set<string>;
  /** Protocol features the back-end offered (its GET_PROTOCOL_FEATURES reply). */
  protocolOfferedByBack?: Set<string>;
  /** …and as the front-end received them (the proxy may add or hide F_DEVICE_STATE). */
  protocolOfferedToFront?: Set<string>;
  /** Protocol features the front-end set (its SET_PROTOCOL_FEATURES). */
  protocolSetByFront?: Set<string>;
  /** …and as the back-end received them. */
  protocolSetToBack?: Set<string>;
  /** POSTCOPY_LISTEN seen (until POSTCOPY_END is answered). */
  postcopy: boolean;
  /** Rings with a kick fd (or in-band kick) since their last GET_VRING_BASE: started. */
  started: Set<number>;
  /** The guest memory table, as SET_MEM_TABLE and ADD/REM_MEM_REG left it. */
  regions: Region[];
  /** The device-state transfer in progress, if any. */
  transfer?: Transfer;
  /** CHECK_DEVICE_STATE requests waiting for their transfer's end record. */
  waitingChecks: WaitingCheck[];
  /** Requests still owed an answer, per channel, oldest first. */
  pending: Record<ChannelName, PendingRequest[]>;
  /** The SET_PROTOCOL_FEATURES that set INBAND_NOTIFICATIONS without BACKEND_REQ and
   * REPLY_ACK, and whether the back-end has been flagged for going on since. */
  badInband?: { record: MessageRecord; flagged: boolean };
  /** Messages each peer sent (for the verdict). */
  sent: Record<LintPeer, number>;
}

/** The requests a session keeps waiting for at most (older ones that expect nothing go). */
const MAX_PENDING = 256;

/** A fresh session: nothing negotiated, every ring stopped. */
export function newSession(session: number): LintSession {
  return {
    session,
    postcopy: false,
    started: new Set(),
    regions: [],
    waitingChecks: [],
    pending: { main: [], backend: [] },
    sent: { "front-end": 0, "back-end": 0 },
  };
}

/** The side that sends requests on a channel. */
export function requesterOf(channel: ChannelName): LintPeer {
  return channel === "main" ? "front-end" : "back-end";
}

/** The other peer. */
export function otherPeer(peer: LintPeer): LintPeer {
  return peer === "front-end" ? "back-end" : "front-end";
}

/** The same feature under both dialects' names. */
const CANONICAL: Record<string, string> = { MIGRATORY_STATE: "DEVICE_STATE" };

/** The feature names of a decoded mask (`payload.features.names`), dialect names unified. */
export function featureSet(r: MessageRecord): Set<string> | undefined {
  const f = r.payload?.features as { names?: unknown } | undefined;
  if (!f || !Array.isArray(f.names)) return undefined;
  return new Set(f.names.map((n) => CANONICAL[String(n)] ?? String(n)));
}

/** The protocol features a peer negotiated as it sees them (what the front-end set, or what
 * the back-end was told). Empty before SET_PROTOCOL_FEATURES. */
export function negotiatedBy(s: LintSession, peer: LintPeer): Set<string> {
  return (peer === "front-end" ? s.protocolSetByFront : s.protocolSetToBack) ?? new Set();
}

/** Whether the record's NEED_REPLY flag is set. */
export function needsReply(r: MessageRecord): boolean {
  if (Array.isArray(r.flagNames)) return r.flagNames.includes("NEED_REPLY");
  return (parseInt(r.flags, 16) & 0x8) !== 0;
}

/** A hex or decimal payload number as a bigint (the log writes 64-bit values as hex). */
export function big(v: unknown): bigint | undefined {
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  if (typeof v === "string" && /^(0x[0-9a-f]+|\d+)$/i.test(v)) return BigInt(v);
  return undefined;
}

/** A number field of the payload. */
export function num(r: MessageRecord, field: string): number | undefined {
  const v = r.payload?.[field];
  return typeof v === "number" ? v : undefined;
}

/**
 * What the request obliges its receiver to, under what was negotiated (the catalogue's reply
 * rule, as `replyExpected` in the codec): a reply body (`always` rows, SET_LOG_BASE with
 * LOG_SHMFD, postcopy region replies, POSTCOPY_END with NEED_REPLY), an ack (NEED_REPLY with
 * REPLY_ACK on the main channel; any NEED_REPLY on the back-end channel, as QEMU answers), or
 * nothing. Unknown requests: `unknown` (a newer spec may answer them).
 */
export function expectationOf(r: MessageRecord, s: LintSession): Expectation {
  if (r.layout === "postcopy_ack") return "none";
  const spec = findRequestByName(r.channel as Channel, r.name);
  const nr = needsReply(r);
  const receiver = otherPeer(requesterOf(r.channel));
  const acked = negotiatedBy(s, receiver);
  if (spec === undefined) {
    return nr && (r.channel === "backend" || acked.has("REPLY_ACK")) ? "ack" : "unknown";
  }
  if (spec.replies === "always") return "reply";
  if (spec.replies === "asked" && nr) return "reply";
  if (spec.postcopy?.reply !== undefined && s.postcopy) return "reply";
  if (spec.alwaysWith !== undefined && acked.has(spec.alwaysWith)) return "reply";
  if (nr && (r.channel === "backend" || acked.has("REPLY_ACK"))) return "ack";
  return "none";
}

/** The proxy answered the request itself: the back-end never saw it. */
export function answeredByProxy(r: MessageRecord): boolean {
  return /^(answered|refused) by the proxy|^held: waiting for the emulated/.test(r.action ?? "");
}

/** The proxy relays a request it held earlier (already counted when it arrived). */
export function isHeldRelease(r: MessageRecord): boolean {
  return /^released after/.test(r.action ?? "");
}

/** The request is held by the proxy until its state copy ends (relayed later). */
export function isHeld(r: MessageRecord): boolean {
  return /^held:/.test(r.action ?? "");
}

/**
 * Where a reply belongs: the oldest waiting request with its code on its channel (replies come
 * in request order). Requests before it that owed a reply never got one (`missed`); those that
 * owed nothing are dropped.
 */
export function matchReply(
  s: LintSession,
  r: MessageRecord,
): { request?: PendingRequest; missed: PendingRequest[] } {
  const queue = s.pending[r.channel];
  const at = queue.findIndex((p) => p.record.code === r.code);
  if (at < 0) return { missed: [] };
  const before = queue.splice(0, at + 1);
  const request = before.pop()!;
  return { request, missed: before.filter((p) => p.expect === "reply" || p.expect === "ack") };
}

/** Remembers a request that may be answered. */
export function awaitReply(s: LintSession, r: MessageRecord): void {
  const queue = s.pending[r.channel];
  queue.push({ record: r, expect: expectationOf(r, s) });
  if (queue.length > MAX_PENDING) {
    const drop = queue.findIndex((p) => p.expect === "none" || p.expect === "unknown");
    queue.splice(drop < 0 ? 0 : drop, 1);
  }
}

function regionOf(p: Record<string, unknown>, from: string): Region | undefined {
  const gpa = big(p.guestPhysAddr);
  const size = big(p.memorySize);
  const uaddr = big(p.userspaceAddr);
  if (gpa === undefined || size === undefined || uaddr === undefined) return undefined;
  return { gpa, size, uaddr, from };
}

/** The regions of a SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG request's payload. */
export function regionsOf(r: MessageRecord): Region[] {
  const p = r.payload ?? {};
  if (Array.isArray(p.regions)) {
    return p.regions.flatMap((x, i) => {
      const region = regionOf(x as Record<string, unknown>, `${r.name} region ${i}`);
      return region ? [region] : [];
    });
  }
  const one = regionOf(p, r.name);
  return one ? [one] : [];
}

/**
 * Updates the model with a message (after the rules have judged it against the state its
 * sender acted on).
 */
export function applyMessage(s: LintSession, r: MessageRecord): void {
  const request = r.kind === "request";
  // What the proxy made or relayed again (a held request released) is not the peer's.
  if (!r.injected && !isHeldRelease(r)) s.sent[r.from]++;
  switch (r.name) {
    case "GET_FEATURES":
      if (!request) s.virtioOffered = featureSet(r);
      break;
    case "SET_FEATURES":
      if (request) s.virtioAcked = featureSet(r);
      break;
    case "GET_PROTOCOL_FEATURES":
      if (!request) {
        const offer = featureSet(r) ?? new Set<string>();
        s.protocolOfferedByBack = offer;
        const front = new Set(offer);
        if (/added F_DEVICE_STATE/.test(r.action ?? "")) front.add("DEVICE_STATE");
        if (/removed F_DEVICE_STATE/.test(r.action ?? "")) front.delete("DEVICE_STATE");
        s.protocolOfferedToFront = front;
      }
      break;
    case "SET_PROTOCOL_FEATURES":
      if (request) {
        const set = featureSet(r) ?? new Set<string>();
        s.protocolSetByFront = set;
        const back = new Set(set);
        if (/removed F_DEVICE_STATE/.test(r.action ?? "")) back.delete("DEVICE_STATE");
        s.protocolSetToBack = back;
      }
      break;
    case "POSTCOPY_LISTEN":
      if (request) s.postcopy = true;
      break;
    case "POSTCOPY_END":
      if (!request) s.postcopy = false;
      break;
    case "SET_VRING_KICK":
    case "VRING_KICK":
      if (request) {
        const index = num(r, "index");
        if (index !== undefined) s.started.add(index);
      }
      break;
    case "GET_VRING_BASE":
    case "GET_VRING_BASE_SKIP_DRAIN":
      if (request) {
        const index = num(r, "index");
        if (index !== undefined) s.started.delete(index);
      }
      break;
    case "RESET_DEVICE":
    case "RESET_OWNER":
      if (request) s.started.clear();
      break;
    case "SET_MEM_TABLE":
      if (request && r.layout !== "postcopy_ack") s.regions = regionsOf(r);
      break;
    case "ADD_MEM_REG":
      if (request && r.layout !== "postcopy_ack") s.regions.push(...regionsOf(r));
      break;
    case "REM_MEM_REG":
      if (request && r.layout !== "postcopy_ack") {
        for (const gone of regionsOf(r)) {
          s.regions = s.regions.filter((x) =>
            !(x.gpa === gone.gpa && x.uaddr === gone.uaddr && x.size === gone.size)
          );
        }
      }
      break;
    case "SET_DEVICE_STATE_FD":
      if (request && !isHeldRelease(r)) {
        s.transfer = {
          direction: num(r, "direction") === 1 ? "LOAD" : "SAVE",
          phase: num(r, "phase") ?? 0,
          request: r,
          state: "requested",
          streamed: false,
        };
      } else if (!request && s.transfer && s.transfer.state === "requested") {
        s.transfer.state = (num(r, "error") ?? 0) === 0 ? "accepted" : "refused";
      }
      break;
  }
}

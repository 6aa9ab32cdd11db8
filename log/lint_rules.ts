/**
 * The conformance lint's rule table: one row per rule, with the spec sentence it checks, the
 * peer it applies to, a severity and the check itself over the session model
 * (`lint_model.ts`) and the message stream. Like the catalogue, the table drives everything:
 * the engine (`lint.ts`) runs the checks, the README's rule table is generated from it.
 *
 * Quotes are from QEMU's `docs/interop/vhost-user.rst` (master, 2026), except where the section
 * names the newest text (docs/protocol.md §1.10, not yet in a QEMU release) or the
 * VIRTIO specification.
 *
 * @module
 */

import { hex } from "../protocol/layouts.ts";
import { type Channel, findRequestByName } from "../protocol/catalogue.ts";
import type { MessageRecord, ProblemRecord, SessionEndRecord } from "./record.ts";
import {
  answeredByProxy,
  type LintPeer,
  type LintSession,
  needsReply,
  negotiatedBy,
  num,
  otherPeer,
  type PendingRequest,
  type Region,
  regionsOf,
  requesterOf,
} from "./lint_model.ts";

/** How bad a finding is: `error` breaks a MUST or its equivalent; `warning` a SHOULD, a
 * reserved field, or a rule whose check is an approximation. */
export type LintSeverity = "error" | "warning";

/** The spec sentence a rule checks. */
export interface SpecQuote {
  /** Section (or message) of the text the quote is from. */
  readonly section: string;
  /** The sentence, shortened with … where the table would get too wide. */
  readonly quote: string;
}

/** What a check reports: the peer at fault, a sentence with the values, the values. */
export interface FindingInput {
  /** The peer the finding is against. */
  peer: LintPeer;
  /** What the peer did, one sentence with the values. */
  message: string;
  /** The values the finding rests on (fields, codes, feature names). */
  values: Record<string, unknown>;
  /** The record the finding is about (its time stamps the finding). */
  at?: { ts: string };
}

/** Hands a finding to the engine. */
export type Report = (finding: FindingInput) => void;

/** A message as a rule sees it: the record, and for a reply the request it answers. */
export interface MessageEvent {
  /** The message as logged. */
  record: MessageRecord;
  /** For a reply: the waiting request with its code (undefined: none waits). */
  answers?: PendingRequest;
  /** For a reply: earlier requests on its channel that owed a reply and got none. */
  missed: PendingRequest[];
}

/** One rule. */
export interface LintRule {
  /** Stable id, kebab-case: the `rule` of a lint record. */
  readonly id: string;
  /** Whom the rule binds: one peer, or `both` (the finding names which). */
  readonly peer: LintPeer | "both";
  /** How bad a finding of this rule is. */
  readonly severity: LintSeverity;
  /** The spec sentence the rule checks, with its section. */
  readonly spec: SpecQuote;
  /** What the check looks at, one line. */
  readonly checks: string;
  /** Judges a message against the state before it (the state its sender acted on). */
  readonly onMessage?: (e: MessageEvent, s: LintSession, report: Report) => void;
  /** Judges the session's end (`end` undefined: the log stops before the session ended). */
  readonly onEnd?: (s: LintSession, end: SessionEndRecord | undefined, report: Report) => void;
  /** Judges an error or warning the proxy logged (a message it refused is not logged). */
  readonly onProblem?: (p: ProblemRecord, s: LintSession, report: Report) => void;
  /** Judges a device-state record (`transfer-end` is written after the CHECK it precedes). */
  readonly onTransferEnd?: (ts: string, s: LintSession, report: Report) => void;
}

/** `NAME(index=1 num=0)`-style label of a request for findings. */
function label(r: MessageRecord): string {
  return r.summary ? `${r.name}(${r.summary})` : r.name;
}

/** Names in `a` that `b` lacks. */
function missingFrom(a: Set<string>, b: Set<string> | undefined): string[] {
  return [...a].filter((x) => !(b ?? new Set()).has(x));
}

/** Requests for which the spec is content with the feature being offered (present in
 * GET_PROTOCOL_FEATURES); every other gated request needs it negotiated. */
const OFFER_IS_ENOUGH = new Set([
  "GET_QUEUE_NUM", // "set in queried protocol features by VHOST_USER_GET_PROTOCOL_FEATURES"
  "SET_BACKEND_REQ_FD", // "bit is present in VHOST_USER_GET_PROTOCOL_FEATURES"
  "SEND_RARP", // "present in VHOST_USER_GET_PROTOCOL_FEATURES"
  "NET_SET_MTU", // "present in VHOST_USER_GET_PROTOCOL_FEATURES"
  "RESET_DEVICE", // "Only valid if … protocol feature is set by the back-end"
]);

/** Requests with rules of their own for their gate. */
const OWN_GATE_RULE = new Set([
  "GET_PROTOCOL_FEATURES",
  "SET_PROTOCOL_FEATURES",
  "SET_DEVICE_STATE_FD",
  "CHECK_DEVICE_STATE",
]);

const POSTCOPY_REQUESTS = new Set(["POSTCOPY_ADVISE", "POSTCOPY_LISTEN", "POSTCOPY_END"]);

/** Requests whose `num` the spec reserves (must be 0). */
const NUM_RESERVED = new Set([
  "main:VRING_KICK",
  "main:GET_VRING_BASE",
  "backend:BACKEND_VRING_CALL",
  "backend:BACKEND_VRING_ERR",
]);

function overlaps(a: Region, b: Region, key: "gpa" | "uaddr"): boolean {
  return a[key] < b[key] + b.size && b[key] < a[key] + a.size && a.size > 0n && b.size > 0n;
}

/** The first pair of regions that overlap in guest or user address, with which. */
function firstOverlap(
  regions: Region[],
  added: Region[],
  checkGpa: boolean,
): { a: Region; b: Region; key: "gpa" | "uaddr" } | undefined {
  for (let i = 0; i < added.length; i++) {
    const others = [...regions, ...added.slice(0, i)];
    for (const other of others) {
      if (checkGpa && overlaps(added[i], other, "gpa")) {
        return { a: other, b: added[i], key: "gpa" };
      }
      if (overlaps(added[i], other, "uaddr")) return { a: other, b: added[i], key: "uaddr" };
    }
  }
  return undefined;
}

/** A request a peer sent and judged by the rule (not a proxy's relay of a held one). */
function isOwnRequest(e: MessageEvent): boolean {
  const r = e.record;
  return r.kind === "request" && !r.injected && !/^released after/.test(r.action ?? "");
}

function unansweredAtEnd(
  s: LintSession,
  end: SessionEndRecord | undefined,
  expect: "reply" | "ack",
  report: Report,
): void {
  // Only a replier that closed the connection itself is to blame; a session the requester or
  // the proxy ended, or a log that stops, says nothing about a reply that might have come.
  if (end === undefined) return;
  for (const channel of ["main", "backend"] as const) {
    const replier = otherPeer(requesterOf(channel));
    if (end.closedBy !== replier) continue;
    for (const p of s.pending[channel]) {
      if (p.expect !== expect || answeredByProxy(p.record)) continue;
      report({
        peer: replier,
        message: `${label(p.record)} on the ${channel} channel got no ${
          expect === "ack" ? "ack" : "reply"
        }: the ${replier} closed the connection (${end.reason})`,
        values: { request: p.record.name, channel, sentAt: p.record.ts, closedBy: end.closedBy },
        at: end,
      });
    }
  }
}

function reportMissed(e: MessageEvent, expect: "reply" | "ack", report: Report): void {
  for (const p of e.missed) {
    if (p.expect !== expect || answeredByProxy(p.record)) continue;
    const replier = otherPeer(requesterOf(p.record.channel));
    report({
      peer: replier,
      message: `${label(p.record)} got no ${
        expect === "ack" ? "ack" : "reply"
      }: the ${replier} answered the later ${e.record.name} first`,
      values: { request: p.record.name, channel: p.record.channel, sentAt: p.record.ts },
    });
  }
}

/**
 * The rule table. Order = the order of the README table: replies, negotiation, values, memory,
 * the back-end channel, device state.
 */
export const LINT_RULES: readonly LintRule[] = [
  {
    id: "reply-missing",
    peer: "both",
    severity: "error",
    spec: {
      section: "Communication",
      quote: "Most of the requests don't require replies. Here is a list of the ones that do",
    },
    checks:
      "a request with a reply body (GET_*, SET_LOG_BASE with LOG_SHMFD, SET_DEVICE_STATE_FD, …) gets it before a later reply or the replier's close",
    onMessage: (e, _s, report) => reportMissed(e, "reply", report),
    onEnd: (s, end, report) => unansweredAtEnd(s, end, "reply", report),
  },
  {
    id: "ack-missing",
    peer: "both",
    severity: "error",
    spec: {
      section: "VHOST_USER_PROTOCOL_F_REPLY_ACK",
      quote:
        "the sender (QEMU) can set the need_reply [Bit 3] flag to any command. This indicates that the back-end MUST respond",
    },
    checks: "a NEED_REPLY request with REPLY_ACK negotiated gets its u64 ack",
    onMessage: (e, _s, report) => reportMissed(e, "ack", report),
    onEnd: (s, end, report) => unansweredAtEnd(s, end, "ack", report),
  },
  {
    id: "reply-unasked",
    peer: "both",
    severity: "error",
    spec: {
      section: "VHOST_USER_PROTOCOL_F_REPLY_ACK",
      quote:
        "For the message types that already solicit a reply … need_reply bit being set brings no behavioural change",
    },
    checks:
      "no reply to a request that asks none (no reply body, no NEED_REPLY with REPLY_ACK), and no second reply",
    onMessage: (e, _s, report) => {
      const r = e.record;
      if (r.kind !== "reply" || r.injected) return;
      if (e.answers === undefined) {
        report({
          peer: r.from,
          message: `${r.name} reply on the ${r.channel} channel answers no waiting request`,
          values: { reply: r.name, channel: r.channel },
        });
      } else if (e.answers.expect === "none") {
        report({
          peer: r.from,
          message: `${r.name} reply to a request that asked none (NEED_REPLY ${
            needsReply(e.answers.record) ? "set, but REPLY_ACK not negotiated" : "not set"
          })`,
          values: {
            reply: r.name,
            channel: r.channel,
            requestFlags: e.answers.record.flags,
            payload: r.payload,
          },
        });
      }
    },
  },
  {
    id: "need-reply-without-reply-ack",
    peer: "both",
    severity: "warning",
    spec: {
      section: "VHOST_USER_PROTOCOL_F_REPLY_ACK",
      quote:
        "With this protocol extension negotiated, the sender (QEMU) can set the need_reply [Bit 3] flag to any command",
    },
    checks:
      "NEED_REPLY is set (on a request without a reply body) only once REPLY_ACK is negotiated",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || !needsReply(r)) return;
      const spec = findRequestByName(r.channel as Channel, r.name);
      if (spec === undefined || spec.replies === "always" || spec.replies === "asked") return;
      if (negotiatedBy(s, r.from).has("REPLY_ACK")) return;
      report({
        peer: r.from,
        message: `${label(r)} sets NEED_REPLY but REPLY_ACK is not negotiated`,
        values: { request: r.name, flags: r.flags },
      });
    },
  },
  {
    id: "protocol-features-unoffered",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "VHOST_USER_GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES",
      quote:
        "Only legal if feature bit VHOST_USER_F_PROTOCOL_FEATURES is present in VHOST_USER_GET_FEATURES",
    },
    checks: "GET/SET_PROTOCOL_FEATURES only after a GET_FEATURES reply that offered bit 30",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e)) return;
      if (r.name !== "GET_PROTOCOL_FEATURES" && r.name !== "SET_PROTOCOL_FEATURES") return;
      if (s.virtioOffered?.has("VHOST_USER_F_PROTOCOL_FEATURES")) return;
      report({
        peer: "front-end",
        message: s.virtioOffered === undefined
          ? `${r.name} before any GET_FEATURES reply`
          : `${r.name} although GET_FEATURES did not offer VHOST_USER_F_PROTOCOL_FEATURES`,
        values: { request: r.name, virtioOffered: s.virtioOffered ? [...s.virtioOffered] : null },
      });
    },
  },
  {
    id: "features-not-offered",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "VIRTIO 1.2 §2.2.1 Feature Bits, driver requirements",
      quote: "The driver MUST NOT accept a feature which the device did not offer",
    },
    checks:
      "SET_FEATURES ⊆ the GET_FEATURES offer; SET_PROTOCOL_FEATURES ⊆ the GET_PROTOCOL_FEATURES offer (as the front-end received it)",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e)) return;
      const set = r.payload?.features as { mask?: string; names?: string[] } | undefined;
      if (!set || !Array.isArray(set.names)) return;
      const names = new Set(set.names.map((n) => (n === "MIGRATORY_STATE" ? "DEVICE_STATE" : n)));
      const offered = r.name === "SET_FEATURES"
        ? s.virtioOffered
        : r.name === "SET_PROTOCOL_FEATURES"
        ? s.protocolOfferedToFront
        : undefined;
      if (r.name !== "SET_FEATURES" && r.name !== "SET_PROTOCOL_FEATURES") return;
      const extra = missingFrom(names, offered);
      if (extra.length === 0) return;
      report({
        peer: "front-end",
        message: `${r.name} sets ${extra.join(", ")}, which the back-end did not offer${
          offered === undefined ? " (no offer was seen)" : ""
        }`,
        values: { request: r.name, set: set.mask, notOffered: extra },
      });
    },
  },
  {
    id: "request-not-negotiated",
    peer: "both",
    severity: "error",
    spec: {
      section: "Communication; each gated request",
      quote:
        "Any protocol extensions are gated by protocol feature bits … This request should be sent only when … has been negotiated",
    },
    checks:
      "a request whose catalogue gate (protocol or virtio feature) its sender has not negotiated (offered is enough where the text says so)",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || OWN_GATE_RULE.has(r.name)) return;
      const spec = findRequestByName(r.channel as Channel, r.name);
      const gate = spec?.gate;
      if (!gate) return;
      if (gate.protocol !== undefined) {
        const have = negotiatedBy(s, r.from).has(gate.protocol) ||
          (OFFER_IS_ENOUGH.has(r.name) && (s.protocolOfferedToFront?.has(gate.protocol) ?? false));
        if (!have) {
          report({
            peer: r.from,
            message: `${label(r)} needs ${gate.protocol}, which was not ${
              OFFER_IS_ENOUGH.has(r.name) ? "offered" : "negotiated"
            }`,
            values: { request: r.name, feature: gate.protocol },
          });
        }
      }
      if (gate.virtio !== undefined && !(s.virtioAcked?.has(gate.virtio) ?? false)) {
        report({
          peer: r.from,
          message: `${label(r)} needs ${gate.virtio}, which SET_FEATURES did not set${
            s.virtioAcked === undefined ? " (no SET_FEATURES yet)" : ""
          }`,
          values: { request: r.name, feature: gate.virtio },
        });
      }
    },
  },
  {
    id: "inband-needs-backend-req-reply-ack",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "In-band notifications",
      quote:
        "It is also considered an error to negotiate this feature without also negotiating VHOST_USER_PROTOCOL_F_BACKEND_REQ and VHOST_USER_PROTOCOL_F_REPLY_ACK",
    },
    checks: "SET_PROTOCOL_FEATURES with INBAND_NOTIFICATIONS also sets BACKEND_REQ and REPLY_ACK",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || r.name !== "SET_PROTOCOL_FEATURES") return;
      const set = new Set((r.payload?.features as { names?: string[] })?.names ?? []);
      if (!set.has("INBAND_NOTIFICATIONS")) return;
      const lacking = ["BACKEND_REQ", "REPLY_ACK"].filter((f) => !set.has(f));
      if (lacking.length === 0) return;
      s.badInband = { record: r, flagged: false };
      report({
        peer: "front-end",
        message: `SET_PROTOCOL_FEATURES sets INBAND_NOTIFICATIONS without ${lacking.join(" and ")}`,
        values: { set: (r.payload?.features as { mask?: string })?.mask, lacking },
      });
    },
  },
  {
    id: "inband-not-closed",
    peer: "back-end",
    severity: "warning",
    spec: {
      section: "In-band notifications",
      quote:
        "the back-end should close the connection as a response to a VHOST_USER_SET_PROTOCOL_FEATURES message that sets the in-band notifications feature flag without the other two",
    },
    checks:
      "after such a SET_PROTOCOL_FEATURES the back-end sends nothing more (it closes the connection)",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (r.from !== "back-end" || r.injected || !s.badInband || s.badInband.flagged) return;
      s.badInband.flagged = true;
      report({
        peer: "back-end",
        message:
          `the back-end went on (${r.name}) after SET_PROTOCOL_FEATURES set INBAND_NOTIFICATIONS without BACKEND_REQ and REPLY_ACK`,
        values: { next: r.name, setAt: s.badInband.record.ts },
      });
    },
  },
  {
    id: "skip-drain-needs-inflight",
    peer: "both",
    severity: "error",
    spec: {
      section: "Protocol features, newest text (docs/protocol.md §1.10)",
      quote: "F_GET_VRING_BASE_SKIP_DRAIN, only together with bits 20 and 12",
    },
    checks:
      "bit 23 is offered (GET_PROTOCOL_FEATURES reply) and set (SET_PROTOCOL_FEATURES) only with GET_VRING_BASE_INFLIGHT (20) and INFLIGHT_SHMFD (12)",
    onMessage: (e, _s, report) => {
      const r = e.record;
      if (r.injected) return;
      const offer = r.name === "GET_PROTOCOL_FEATURES" && r.kind === "reply";
      const set = r.name === "SET_PROTOCOL_FEATURES" && r.kind === "request";
      if (!offer && !set) return;
      const names = new Set((r.payload?.features as { names?: string[] })?.names ?? []);
      if (!names.has("GET_VRING_BASE_SKIP_DRAIN")) return;
      const lacking = ["GET_VRING_BASE_INFLIGHT", "INFLIGHT_SHMFD"].filter((f) => !names.has(f));
      if (lacking.length === 0) return;
      report({
        peer: r.from,
        message: `${r.name}${offer ? " reply offers" : " sets"} GET_VRING_BASE_SKIP_DRAIN without ${
          lacking.join(" and ")
        }`,
        values: { mask: (r.payload?.features as { mask?: string })?.mask, lacking },
      });
    },
  },
  {
    id: "postcopy-after-mem-slots",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "Postcopy, newest text (docs/protocol.md §1.10)",
      quote: "postcopy requests MUST NOT be sent once CONFIGURE_MEM_SLOTS is negotiated",
    },
    checks: "no POSTCOPY_ADVISE, _LISTEN or _END once CONFIGURE_MEM_SLOTS is negotiated",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || !POSTCOPY_REQUESTS.has(r.name)) return;
      if (!negotiatedBy(s, "front-end").has("CONFIGURE_MEM_SLOTS")) return;
      report({
        peer: "front-end",
        message: `${r.name} although CONFIGURE_MEM_SLOTS is negotiated`,
        values: { request: r.name },
      });
    },
  },
  {
    id: "num-reserved",
    peer: "both",
    severity: "warning",
    spec: {
      section:
        "VHOST_USER_GET_VRING_BASE (VRING_KICK, BACKEND_VRING_CALL/ERR: “The state.num field …”)",
      quote: "The request payload’s num field is currently reserved and must be set to 0",
    },
    checks: "num = 0 in VRING_KICK, GET_VRING_BASE (request), BACKEND_VRING_CALL and _ERR",
    onMessage: (e, _s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || !NUM_RESERVED.has(`${r.channel}:${r.name}`)) return;
      const n = num(r, "num");
      if (n === undefined || n === 0) return;
      report({
        peer: r.from,
        message: `${label(r)}: the reserved num is ${n}, not 0`,
        values: { request: r.name, index: num(r, "index"), num: n },
      });
    },
  },
  {
    id: "vring-base-reserved-bits",
    peer: "both",
    severity: "warning",
    spec: {
      section: "A vring descriptor index for split virtqueues",
      quote: "Bits 16–31: Reserved (set to zero)",
    },
    checks:
      "split rings: SET_VRING_BASE (front-end) and the GET_VRING_BASE reply (back-end) leave bits 16–31 of num zero",
    onMessage: (e, _s, report) => {
      const r = e.record;
      if (r.injected || r.layout !== "vring_state") return;
      const set = r.name === "SET_VRING_BASE" && r.kind === "request" && isOwnRequest(e);
      const got = (r.name === "GET_VRING_BASE" || r.name === "GET_VRING_BASE_SKIP_DRAIN") &&
        r.kind === "reply";
      if (!set && !got) return;
      const n = num(r, "num");
      if (n === undefined || n >>> 16 === 0) return;
      report({
        peer: r.from,
        message: `${r.name}${got ? " reply" : ""} index=${num(r, "index")}: num ${
          hex(BigInt(n))
        } has reserved bits 16–31 set (split ring)`,
        values: { request: r.name, index: num(r, "index"), num: n },
      });
    },
  },
  {
    id: "memory-regions-overlap",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "Memory access",
      quote:
        "Guest addresses map to the vhost memory region containing that guest address … User addresses map to the vhost memory region containing that user address",
    },
    checks:
      "the regions of SET_MEM_TABLE, and each ADD_MEM_REG against the table, do not overlap in guest (unless IOMMU) or user address",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || r.layout === "postcopy_ack") return;
      if (r.name !== "SET_MEM_TABLE" && r.name !== "ADD_MEM_REG") return;
      const added = regionsOf(r);
      const base = r.name === "SET_MEM_TABLE" ? [] : s.regions;
      // With an IOMMU, "the vhost memory region guest address is not used".
      const checkGpa = !(s.virtioAcked?.has("VIRTIO_F_ACCESS_PLATFORM") ?? false);
      const o = firstOverlap(base, added, checkGpa);
      if (!o) return;
      const what = o.key === "gpa" ? "guest" : "user";
      report({
        peer: "front-end",
        message: `${r.name}: ${o.b.from} [${hex(o.b[o.key])}, +${
          hex(o.b.size)
        }) overlaps ${o.a.from} [${hex(o.a[o.key])}, +${hex(o.a.size)}) in ${what} address`,
        values: {
          request: r.name,
          address: what,
          region: { start: hex(o.b[o.key]), size: hex(o.b.size) },
          overlapped: { start: hex(o.a[o.key]), size: hex(o.a.size) },
        },
      });
    },
  },
  {
    id: "backend-fd-without-send-fd",
    peer: "back-end",
    severity: "error",
    spec: {
      section: "Back-end communication",
      quote:
        "If VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD protocol feature is negotiated, back-end can send file descriptors … using this fd communication channel",
    },
    checks: "a back-end-channel request carries fds only with BACKEND_SEND_FD negotiated",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (r.channel !== "backend" || !isOwnRequest(e)) return;
      const fds = r.fds?.length ?? 0;
      if (fds === 0 || negotiatedBy(s, "back-end").has("BACKEND_SEND_FD")) return;
      report({
        peer: "back-end",
        message: `${label(r)} carries ${fds} fd(s) but BACKEND_SEND_FD is not negotiated`,
        values: { request: r.name, fds },
      });
    },
  },
  {
    id: "device-state-not-negotiated",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "VHOST_USER_SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE",
      quote:
        "Using this function requires prior negotiation of the VHOST_USER_PROTOCOL_F_DEVICE_STATE feature",
    },
    checks: "SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE only with DEVICE_STATE negotiated",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e)) return;
      if (r.name !== "SET_DEVICE_STATE_FD" && r.name !== "CHECK_DEVICE_STATE") return;
      if (negotiatedBy(s, "front-end").has("DEVICE_STATE")) return;
      report({
        peer: "front-end",
        message: `${label(r)} but DEVICE_STATE is not negotiated`,
        values: { request: r.name, negotiated: [...negotiatedBy(s, "front-end")] },
      });
    },
  },
  {
    id: "device-state-rings-running",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "Device state transfer parameters; Suspended device state",
      quote:
        "0: Stopped …: The VM guest is stopped, and the vhost-user device is suspended … While all vrings are stopped, the device is suspended",
    },
    checks:
      "SET_DEVICE_STATE_FD (phase 0) only when every ring that got a kick fd has been stopped by GET_VRING_BASE since",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || r.name !== "SET_DEVICE_STATE_FD") return;
      if ((num(r, "phase") ?? 0) !== 0 || s.started.size === 0) return;
      const rings = [...s.started].sort((a, b) => a - b);
      report({
        peer: "front-end",
        message: `${label(r)} while ring(s) ${
          rings.join(", ")
        } run (SET_VRING_KICK without a GET_VRING_BASE since): the device is not suspended`,
        values: { request: r.name, running: rings },
      });
    },
  },
  {
    id: "check-before-transfer-end",
    peer: "front-end",
    severity: "error",
    spec: {
      section: "Migrating back-end state",
      quote:
        "after the respective front-end has seen all data transferred (when the transfer FD has been closed), it sends the VHOST_USER_CHECK_DEVICE_STATE message",
    },
    checks:
      "CHECK_DEVICE_STATE only after an accepted SET_DEVICE_STATE_FD and, for SAVE through the proxy, after the state's end of file (the transfer-end time)",
    onMessage: (e, s, report) => {
      const r = e.record;
      if (!isOwnRequest(e) || r.name !== "CHECK_DEVICE_STATE") return;
      const t = s.transfer;
      if (t === undefined || t.state !== "accepted") {
        report({
          peer: "front-end",
          message: t === undefined
            ? "CHECK_DEVICE_STATE without a SET_DEVICE_STATE_FD before it"
            : `CHECK_DEVICE_STATE after a SET_DEVICE_STATE_FD(${t.direction}) that was ${
              t.state === "refused" ? "refused" : "not answered yet"
            }`,
          values: { transfer: t ? { direction: t.direction, state: t.state } : null },
        });
        return;
      }
      // SAVE: the front-end reads until end of file, which the proxy makes when its copy ends.
      // (LOAD: the front-end closes its end first; the proxy's copy may finish after CHECK.)
      if (t.direction === "SAVE" && t.streamed) {
        if (t.endTs === undefined) s.waitingChecks.push({ record: r, transfer: t });
        else if (r.ts < t.endTs) {
          report({
            peer: "front-end",
            message: `CHECK_DEVICE_STATE at ${r.ts} before the SAVE stream ended (${t.endTs})`,
            values: { checkAt: r.ts, transferEnd: t.endTs },
          });
        }
      }
    },
    onTransferEnd: (ts, s, report) => {
      for (const w of s.waitingChecks.splice(0)) {
        if (w.record.ts >= ts) continue;
        report({
          peer: "front-end",
          message: `CHECK_DEVICE_STATE at ${w.record.ts} before the SAVE stream ended (${ts})`,
          values: { checkAt: w.record.ts, transferEnd: ts },
          at: w.record,
        });
      }
    },
    onEnd: (s, end, report) => {
      for (const w of s.waitingChecks.splice(0)) {
        report({
          peer: "front-end",
          message: `CHECK_DEVICE_STATE at ${w.record.ts} while the SAVE stream never ended`,
          values: { checkAt: w.record.ts },
          at: end ?? w.record,
        });
      }
    },
  },
  {
    id: "device-state-error-with-fd",
    peer: "back-end",
    severity: "error",
    spec: {
      section: "VHOST_USER_SET_DEVICE_STATE_FD",
      quote: "The back-end must not both indicate an error and return a file descriptor",
    },
    checks:
      "a SET_DEVICE_STATE_FD reply with an error (bits 0–7) has the invalid-FD bit 8 set and no fd (the proxy refuses one that does not)",
    onMessage: (e, _s, report) => {
      const r = e.record;
      if (r.name !== "SET_DEVICE_STATE_FD" || r.kind !== "reply" || r.injected) return;
      const error = num(r, "error") ?? 0;
      const fds = r.fds?.length ?? 0;
      if (error === 0 || (r.payload?.noFd === true && fds === 0)) return;
      report({
        peer: "back-end",
        message: `SET_DEVICE_STATE_FD reply: error ${error} with ${
          fds > 0 ? `${fds} fd(s)` : "the invalid-FD bit clear"
        }`,
        values: { error, noFd: r.payload?.noFd ?? null, fds },
      });
    },
    onProblem: (p, _s, report) => {
      // The codec's check of the same sentence: the proxy refused the reply (not logged as a
      // message) and ended the session.
      if (p.type !== "error" || p.request !== "SET_DEVICE_STATE_FD" || p.side !== "back-end") {
        return;
      }
      if (p.field !== "error") return;
      report({
        peer: "back-end",
        message: `SET_DEVICE_STATE_FD reply refused by the proxy: ${p.message}`,
        values: { field: p.field },
        at: p,
      });
    },
  },
];

/** The rule with this id. */
export function findLintRule(id: string): LintRule | undefined {
  return LINT_RULES.find((r) => r.id === id);
}

/**
 * Header and message codec of the vhost-user protocol: pure functions, no I/O.
 *
 * {@link decodeMessage} turns a header, its payload bytes and the number of
 * fds that arrived with it into a typed {@link Message}, or a
 * {@link ProtocolViolation} value — it never throws. {@link encodeMessage} is
 * its inverse. Everything message-specific comes from the catalogue rows
 * (`catalogue.ts`) and the payload layouts (`layouts.ts`).
 *
 * @example
 * ```ts
 * // The bytes of one message as they arrive on the main socket, with no fds.
 * const bytes = encodeMessage(createMessage({
 *   channel: "main",
 *   sender: "front-end",
 *   request: "SET_VRING_NUM",
 *   payload: { layout: "vring_state", index: 0, num: 256 },
 * }));
 * const header = readHeader(bytes);
 * const result = decodeMessage(header, bytes.subarray(HEADER_SIZE), 0, {
 *   channel: "main",
 *   sender: "front-end",
 *   dialect: "upstream",
 *   negotiated: NOTHING_NEGOTIATED,
 * });
 * if (result.ok) console.log(result.message.name, summarizeMessage(result.message));
 * else console.error(result.error.message);
 * ```
 *
 * @module
 */

import {
  type Channel,
  codeIn,
  type Dialect,
  type FdRule,
  findRequest,
  findRequestByName,
  type LayoutRef,
  type RequestSpec,
  type Side,
} from "./catalogue.ts";
import {
  hasProtocolFeature,
  hasVirtioFeature,
  protocolFeatureBit,
  unmetRequirements,
} from "./features.ts";
import {
  decodePayload,
  encodePayload,
  GPA_ADDRESS_LAYOUTS,
  hex,
  type LayoutName,
  LAYOUTS,
  type Payload,
  payloadToJson,
  sizeAllowed,
  sizeExpectation,
  summarizePayload,
} from "./layouts.ts";
import {
  MAX_PAYLOAD_SIZE,
  type ProtocolViolation,
  violation,
  type ViolationKind,
} from "./violations.ts";

export type { Channel, Dialect, Side } from "./catalogue.ts";
export { MAX_PAYLOAD_SIZE } from "./violations.ts";

/** Bytes in a message header: request u32, flags u32, size u32. */
export const HEADER_SIZE = 12;
/** Flags bits 0–1: protocol version, must be {@link PROTOCOL_VERSION}. */
export const FLAG_VERSION_MASK = 0x3;
/** Flags bit 2: the message is a reply. */
export const FLAG_REPLY = 0x4;
/** Flags bit 3: the sender asks for a reply (acked when REPLY_ACK is negotiated). */
export const FLAG_NEED_REPLY = 0x8;
/** Flags bits 4–31: reserved for later; relayed with a warning (rust-vmm rejects them). */
export const FLAG_RESERVED_MASK = 0xfffffff0;
/** The only protocol version. */
export const PROTOCOL_VERSION = 0x1;
/** Most fds one message may carry (`VHOST_MEMORY_BASELINE_NREGIONS`, back-end channel limit). */
export const MAX_FDS = 8;

/** A message header. */
export interface Header {
  /** Request code, in the sender's dialect. */
  request: number;
  /** Version (bits 0–1), REPLY (bit 2), NEED_REPLY (bit 3); the rest reserved. */
  flags: number;
  /** Payload size in bytes that follows the header. */
  size: number;
}

/**
 * Reads the 12-byte header at `offset`. Never throws when 12 bytes are
 * available; validation is {@link decodeMessage}'s business.
 *
 * @throws {RangeError} when fewer than 12 bytes follow `offset`.
 */
export function readHeader(bytes: Uint8Array, offset = 0): Header {
  if (offset < 0 || bytes.length - offset < HEADER_SIZE) {
    throw new RangeError(
      `Cannot read header: ${
        bytes.length - offset
      } bytes at offset ${offset}, expected ${HEADER_SIZE}`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  return {
    request: dv.getUint32(0, true),
    flags: dv.getUint32(4, true),
    size: dv.getUint32(8, true),
  };
}

function u32(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`Cannot write header: ${name} "${value}" is not a u32`);
  }
  return value;
}

/**
 * Writes a header into `into` at `offset`.
 *
 * @throws {RangeError} when the bytes do not fit or a field is not a u32.
 */
export function writeHeader(h: Header, into: Uint8Array, offset = 0): void {
  if (offset < 0 || into.length - offset < HEADER_SIZE) {
    throw new RangeError(
      `Cannot write header: ${
        into.length - offset
      } bytes at offset ${offset}, expected ${HEADER_SIZE}`,
    );
  }
  const dv = new DataView(into.buffer, into.byteOffset + offset, HEADER_SIZE);
  dv.setUint32(0, u32("request", h.request), true);
  dv.setUint32(4, u32("flags", h.flags), true);
  dv.setUint32(8, u32("size", h.size), true);
}

/** What the two peers negotiated so far, numbered in the sender's dialect. */
export interface Negotiated {
  /** Virtio features acked by SET_FEATURES (0 before it). */
  virtio: bigint;
  /** Protocol features acked by SET_PROTOCOL_FEATURES (0 before it). */
  protocol: bigint;
  /** POSTCOPY_LISTEN seen: SET_MEM_TABLE / ADD_MEM_REG get region replies and u64 acks. */
  postcopy: boolean;
}

/** Nothing negotiated: the state of a fresh connection. */
export const NOTHING_NEGOTIATED: Negotiated = Object.freeze({
  virtio: 0n,
  protocol: 0n,
  postcopy: false,
});

/** Where a message came from and what its sender negotiated. */
export interface DecodeContext {
  /** The socket the message arrived on. */
  channel: Channel;
  /** The peer that sent it: with the channel, whether it is a request or a reply. */
  sender: Side;
  /** The numbering the sender speaks. */
  dialect: Dialect;
  /** What the sender negotiated so far: decides payload layouts and reply rules. */
  negotiated: Negotiated;
}

/** A decoded message. */
export interface Message {
  /** The header as read from the wire. */
  readonly header: Header;
  /** Request code (= `header.request`), in {@link dialect}'s numbering. */
  readonly code: number;
  /** Catalogue name, or `UNKNOWN(99)` for codes the dialect does not define. */
  readonly name: string;
  /** The socket the message travelled on. */
  readonly channel: Channel;
  /** The peer that sent it. */
  readonly sender: Side;
  /** The numbering of {@link Message.code}. */
  readonly dialect: Dialect;
  /** A request, or the reply to one. */
  readonly kind: "request" | "reply";
  /** The catalogue row; undefined for unknown codes (payload is then raw). */
  readonly spec: RequestSpec | undefined;
  /** The typed payload, tagged with its layout name. */
  readonly payload: Payload;
  /** Number of fds that arrived with the message. */
  readonly fdCount: number;
  /** Harmless oddities a peer accepts; the message is still relayable. */
  readonly warnings: readonly string[];
  /**
   * `guest-physical` when F_GPA_ADDRESSES is negotiated and the payload's address fields
   * (region user addresses, ring addresses, IOTLB_MSG uaddr) carry guest-physical addresses.
   */
  readonly addresses?: "guest-physical";
}

/** Result of {@link decodeMessage}: a message, or the violation that prevents one. */
export type DecodeResult =
  | { readonly ok: true; readonly message: Message }
  | { readonly ok: false; readonly error: ProtocolViolation };

/** An inclusive range of fd counts. */
export interface FdRange {
  readonly min: number;
  readonly max: number;
}

/** The side that sends requests on a channel. */
export function requesterOf(channel: Channel): Side {
  return channel === "main" ? "front-end" : "back-end";
}

/** Whether `sender` sends requests or replies on `channel`. */
export function kindOf(channel: Channel, sender: Side): "request" | "reply" {
  return sender === requesterOf(channel) ? "request" : "reply";
}

/** Name of a request code: the catalogue name, or `UNKNOWN(code)`. */
export function requestName(channel: Channel, code: number, dialect: Dialect = "upstream"): string {
  return findRequest(channel, code, dialect)?.name ?? `UNKNOWN(${code})`;
}

/** Resolves a layout reference against what was negotiated. */
export function resolveLayout(
  ref: LayoutRef,
  negotiated: Negotiated,
  dialect: Dialect,
): LayoutName {
  if (typeof ref === "string") return ref;
  if ("byRing" in ref) {
    return hasVirtioFeature(negotiated.virtio, "VIRTIO_F_RING_PACKED")
      ? ref.byRing.packed
      : ref.byRing.split;
  }
  return hasProtocolFeature(negotiated.protocol, "XEN_MMAP", dialect)
    ? ref.byXen.xen
    : ref.byXen.plain;
}

/** Fd range of a payload under a rule, narrowed by the payload where the rule says so. */
function fdRangeOf(rule: FdRule, payload: Payload): FdRange {
  if (payload.layout === "postcopy_ack") return { min: 0, max: 0 };
  switch (rule.from) {
    case "nofd":
      if ("noFd" in payload) return payload.noFd ? { min: 0, max: 0 } : { min: 1, max: 1 };
      break;
    case "regions":
      if ("regions" in payload) return { min: payload.regions.length, max: payload.regions.length };
      break;
    case "mmap_size":
      if ("mmapSize" in payload) {
        return payload.mmapSize !== 0n ? { min: 1, max: 1 } : { min: 0, max: 0 };
      }
      break;
  }
  return { min: rule.min, max: rule.max };
}

/**
 * How many fds a decoded message may carry: the row's rule for its kind,
 * narrowed by its payload (NOFD bit, region count, inflight mmap_size, postcopy ack).
 */
export function allowedFds(message: Message): FdRange {
  if (message.spec === undefined) return { min: 0, max: MAX_FDS };
  const rule = message.kind === "request" ? message.spec.fds : message.spec.replyFds;
  return fdRangeOf(rule, message.payload);
}

/**
 * Fds a reply to `request` may carry. With the reply's payload the answer is
 * exact (GET_INFLIGHT_FD: 1 iff mmap_size ≠ 0; SET_DEVICE_STATE_FD: 1 iff bit 8
 * clear); without it, the widest range the row allows.
 */
export function replyFdsAllowed(request: Message, replyPayload?: Payload): FdRange {
  if (request.spec === undefined) return { min: 0, max: MAX_FDS };
  const rule = request.spec.replyFds;
  return replyPayload === undefined
    ? { min: rule.min, max: rule.max }
    : fdRangeOf(rule, replyPayload);
}

/**
 * Whether the peer will reply to this request (docs/protocol.md §1.5 reply column):
 * `always` rows; SET_LOG_BASE with F_LOG_SHMFD; postcopy SET_MEM_TABLE /
 * ADD_MEM_REG after POSTCOPY_LISTEN; `asked` rows (POSTCOPY_END) whenever NEED_REPLY is
 * set; otherwise only NEED_REPLY requests, and on
 * the main channel only with F_REPLY_ACK negotiated. On the back-end channel
 * QEMU answers every NEED_REPLY request, REPLY_ACK or not (QEMU hw/virtio/vhost-user.c, `backend_read`).
 * Postcopy acknowledgements and replies never get replies.
 */
export function replyExpected(message: Message, negotiated: Negotiated): boolean {
  if (message.kind !== "request" || message.payload.layout === "postcopy_ack") return false;
  const spec = message.spec;
  const needReply = (message.header.flags & FLAG_NEED_REPLY) !== 0;
  const acks = message.channel === "backend" ||
    hasProtocolFeature(negotiated.protocol, "REPLY_ACK", message.dialect);
  if (spec !== undefined) {
    if (spec.replies === "always") return true;
    if (spec.replies === "asked" && needReply) return true;
    if (spec.postcopy?.reply !== undefined && negotiated.postcopy) return true;
    if (
      spec.alwaysWith !== undefined &&
      hasProtocolFeature(negotiated.protocol, spec.alwaysWith, message.dialect)
    ) return true;
  }
  return needReply && acks;
}

/** Decodes one message; returns a violation value instead of throwing. */
export function decodeMessage(
  header: Header,
  payload: Uint8Array,
  fdCount: number,
  ctx: DecodeContext,
): DecodeResult {
  try {
    return decode(header, payload, fdCount, ctx);
  } catch (e) {
    // Unreachable by design (the property tests check it); keeps the boundary
    // exception-free should a layout ever misbehave.
    return {
      ok: false,
      error: violation({
        request: requestName(ctx.channel, header.request, ctx.dialect),
        code: header.request,
        channel: ctx.channel,
        sender: ctx.sender,
        messageKind: kindOf(ctx.channel, ctx.sender),
        kind: "internal",
        detail: `the codec failed: ${e instanceof Error ? e.message : String(e)}`,
      }),
    };
  }
}

function decode(
  header: Header,
  bytes: Uint8Array,
  fdCount: number,
  ctx: DecodeContext,
): DecodeResult {
  const code = header.request;
  const spec = findRequest(ctx.channel, code, ctx.dialect);
  const name = spec?.name ?? `UNKNOWN(${code})`;
  const kind = kindOf(ctx.channel, ctx.sender);
  const fail = (vkind: ViolationKind, field: string | undefined, detail: string): DecodeResult => ({
    ok: false,
    error: violation({
      request: name,
      code,
      channel: ctx.channel,
      sender: ctx.sender,
      messageKind: kind,
      kind: vkind,
      ...(field === undefined ? {} : { field }),
      detail,
    }),
  });

  // --- header ---
  const flags = header.flags >>> 0;
  const version = flags & FLAG_VERSION_MASK;
  if (version !== PROTOCOL_VERSION) {
    return fail("flags", "flags", `version is "${version}", expected ${PROTOCOL_VERSION}`);
  }
  const warnings: string[] = [];
  if ((flags & FLAG_RESERVED_MASK) !== 0) {
    // Reserved for later flags: a newer peer may use them; the receiver decides.
    warnings.push(
      `reserved flag bits "${hex((flags & FLAG_RESERVED_MASK) >>> 0)}" are set: relayed`,
    );
  }
  const isReply = (flags & FLAG_REPLY) !== 0;
  if (kind === "request" && isReply) {
    return fail(
      "flags",
      "flags",
      `flags "${
        hex(flags)
      }" have the REPLY bit set, but the ${ctx.sender} sends only requests on the ${ctx.channel} channel`,
    );
  }
  if (kind === "reply" && !isReply) {
    return fail(
      "flags",
      "flags",
      `flags "${
        hex(flags)
      }" lack the REPLY bit, but the ${ctx.sender} sends only replies on the ${ctx.channel} channel`,
    );
  }
  if (kind === "reply" && (flags & FLAG_NEED_REPLY) !== 0) {
    return fail("flags", "flags", `flags "${hex(flags)}" set NEED_REPLY on a reply`);
  }
  if (header.size > MAX_PAYLOAD_SIZE) {
    return fail("size", "size", `size is "${header.size}", expected at most ${MAX_PAYLOAD_SIZE}`);
  }
  if (bytes.length !== header.size) {
    return fail(
      "header",
      "size",
      `header size is "${header.size}" but ${bytes.length} payload bytes were given`,
    );
  }
  if (!Number.isInteger(fdCount) || fdCount < 0 || fdCount > MAX_FDS) {
    return fail("fds", "fds", `"${fdCount}" fds attached, expected at most ${MAX_FDS}`);
  }

  const done = (payload: Payload): DecodeResult => ({
    ok: true,
    message: {
      ...(gpaAddresses(payload, ctx) ? { addresses: "guest-physical" as const } : {}),
      header: { request: code, flags, size: header.size },
      code,
      name,
      channel: ctx.channel,
      sender: ctx.sender,
      dialect: ctx.dialect,
      kind,
      spec,
      payload,
      fdCount,
      warnings,
    },
  });

  // --- unknown codes are relayed verbatim (docs/protocol.md §7 #12) ---
  if (spec === undefined) {
    warnings.push(
      `unknown request code ${code} on the ${ctx.channel} channel: relayed as raw bytes`,
    );
    return done(decodePayload("raw", bytes).payload);
  }

  // --- layout ---
  const postcopy = ctx.negotiated.postcopy;
  let layout: LayoutName;
  if (kind === "request") {
    layout = spec.postcopy?.ack && bytes.length === 8
      ? "postcopy_ack"
      : resolveLayout(spec.request, ctx.negotiated, ctx.dialect);
    if (layout === "postcopy_ack" && !postcopy) {
      // Outside postcopy an 8-byte memory table (or code 0) is malformed: rust-vmm refuses it.
      return fail(
        "size",
        "size",
        `payload is 8 bytes, a postcopy acknowledgement, but POSTCOPY_LISTEN was not seen`,
      );
    }
  } else if (spec.postcopy?.reply !== undefined && bytes.length !== 8) {
    layout = resolveLayout(spec.postcopy.reply, ctx.negotiated, ctx.dialect);
    if (!postcopy) {
      warnings.push(`${name} reply carries postcopy regions but POSTCOPY_LISTEN was not seen`);
    }
  } else {
    layout = resolveLayout(spec.reply, ctx.negotiated, ctx.dialect);
  }

  const rule = LAYOUTS[layout].size;
  if (!sizeAllowed(rule, bytes.length)) {
    if (kind === "reply" && spec.lenientReply) {
      warnings.push(
        `reply is ${bytes.length} bytes, expected ${sizeExpectation(rule)}: relayed raw`,
      );
      layout = "raw";
    } else {
      return fail(
        "size",
        "size",
        `payload is ${bytes.length} bytes, expected ${sizeExpectation(rule)}`,
      );
    }
  }

  // --- payload values ---
  const { payload, issues } = decodePayload(layout, bytes);
  for (const issue of issues) {
    if (issue.severity === "violation") return fail(issue.kind, issue.field, issue.detail);
    warnings.push(issue.detail);
  }
  if (payload.layout === "postcopy_ack" && payload.value !== 0n) {
    warnings.push(`postcopy acknowledgement is "${payload.value}", expected 0`);
  }
  if (kind === "request" && gpaAddresses(payload, ctx)) {
    const regions = "regions" in payload
      ? payload.regions
      : "userspaceAddr" in payload
      ? [payload]
      : [];
    regions.forEach((r, i) => {
      if (r.userspaceAddr !== r.guestPhysAddr) {
        warnings.push(
          `region ${i} user address "${hex(r.userspaceAddr)}" differs from its guest address ${
            hex(r.guestPhysAddr)
          } though GPA_ADDRESSES is negotiated`,
        );
      }
    });
  }
  if (kind === "request" && payload.layout === "protocol_features") {
    warnings.push(...unmetRequirements(payload.features, ctx.dialect));
  }
  if (kind === "request" && payload.layout === "vring_state") {
    for (const check of spec.checks ?? []) {
      if (check === "num_is_bool" && payload.num > 1) {
        return fail("value", "num", `num is "${payload.num}", expected 0 or 1`);
      }
      if (check === "num_reserved" && payload.num !== 0) {
        warnings.push(`num is "${payload.num}" but is reserved in ${name} requests, expected 0`);
      }
    }
  }

  // --- fds ---
  const fdRule = kind === "request" ? spec.fds : spec.replyFds;
  const range = fdRangeOf(fdRule, payload);
  if (fdCount < range.min || fdCount > range.max) {
    return fail("fds", "fds", fdDetail(fdCount, range, fdRule, payload));
  }
  if (fdRule.warnAbove !== undefined && fdCount > fdRule.warnAbove) {
    warnings.push(
      `${fdCount} fds attached, expected at most ${fdRule.warnAbove}: the receiver must close them`,
    );
  }

  // --- feature gates (warnings: the relay forwards, the peer decides) ---
  if (kind === "request" && spec.gate !== undefined) {
    const gate = spec.gate.protocol;
    if (gate !== undefined && !hasProtocolFeature(ctx.negotiated.protocol, gate, ctx.dialect)) {
      const bit = protocolFeatureBit(gate, ctx.dialect);
      warnings.push(
        `${name} sent without protocol feature ${gate} (bit ${bit ?? "none"}) negotiated`,
      );
    }
    const vgate = spec.gate.virtio;
    // Virtio gates are checked once SET_FEATURES was seen: GET/SET_PROTOCOL_FEATURES
    // are legal as soon as bit 30 is offered, which precedes SET_FEATURES.
    if (
      vgate !== undefined && ctx.negotiated.virtio !== 0n &&
      !hasVirtioFeature(ctx.negotiated.virtio, vgate)
    ) {
      warnings.push(`${name} sent without virtio feature ${vgate} negotiated`);
    }
  }
  return done(payload);
}

/** Whether the payload's address fields are guest-physical (F_GPA_ADDRESSES, docs/protocol.md §1.10). */
function gpaAddresses(payload: Payload, ctx: DecodeContext): boolean {
  if (!GPA_ADDRESS_LAYOUTS.has(payload.layout)) return false;
  // BACKEND_IOTLB_MSG keeps its IOVA/user-address meaning.
  if (payload.layout === "iotlb" && ctx.channel === "backend") return false;
  return hasProtocolFeature(ctx.negotiated.protocol, "GPA_ADDRESSES", ctx.dialect);
}

function fdDetail(count: number, range: FdRange, rule: FdRule, payload: Payload): string {
  const attached = `${count} ${count === 1 ? "fd" : "fds"} attached`;
  if (rule.from === "nofd" && "noFd" in payload) {
    return payload.noFd
      ? `${attached} but the NOFD bit is set`
      : `${attached} but the NOFD bit is clear`;
  }
  if (rule.from === "regions" && "regions" in payload) {
    return `${attached} for ${payload.regions.length} regions`;
  }
  if (rule.from === "mmap_size" && "mmapSize" in payload) {
    return `${attached} but mmap_size is "${hex(payload.mmapSize)}"`;
  }
  return range.min === range.max
    ? `${attached}, expected ${range.min}`
    : `${attached}, expected ${range.min} to ${range.max}`;
}

/**
 * Encodes a message: header (with `size` taken from the encoded payload) then
 * payload. The inverse of {@link decodeMessage}.
 *
 * @throws {RangeError} when a payload value does not fit its wire field.
 */
export function encodeMessage(message: Message): Uint8Array {
  const payload = encodePayload(message.payload);
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  writeHeader({ ...message.header, request: message.code, size: payload.length }, out);
  out.set(payload, HEADER_SIZE);
  return out;
}

/**
 * The message with another payload, e.g. a feature bit changed on its way through; encode it
 * with {@link encodeMessage}. For the fixed-size layouts the proxy rewrites (features, results)
 * the encoding is the wire bytes with only that value changed.
 *
 * @example
 * ```ts
 * const reply = createMessage({
 *   channel: "main", sender: "back-end", request: "GET_PROTOCOL_FEATURES",
 *   payload: { layout: "protocol_features", features: 0x8000n },
 * });
 * const hidden = withPayload(reply, { layout: "protocol_features", features: 0n });
 * console.assert(encodeMessage(hidden).length === 20);
 * ```
 */
export function withPayload(message: Message, payload: Payload): Message {
  return { ...message, payload };
}

/** Options of {@link createMessage}. */
export interface CreateOptions {
  /** The socket the message is for. */
  channel: Channel;
  /** The peer it is sent as: a request from the requester of the channel, else a reply. */
  sender: Side;
  /** The numbering to write the code in (default upstream). */
  dialect?: Dialect;
  /** Request name (catalogue) or code. */
  request: string | number;
  /** The payload, tagged with its layout name (`{ layout: "empty" }` for none). */
  payload: Payload;
  /** Set NEED_REPLY on a request. */
  needReply?: boolean;
  /** Fds that will be sent with the message (default 0). */
  fdCount?: number;
}

/**
 * Builds a message from parts, e.g. a reply the relay answers itself. The
 * flags are those QEMU uses: `0x1` (`0x9` with NEED_REPLY) for requests,
 * `0x5` for replies. The result is not validated; round-trip it through
 * {@link encodeMessage} and {@link decodeMessage} to check it.
 *
 * @example
 * ```ts
 * const reply = createMessage({
 *   channel: "main", sender: "back-end", request: "SET_DEVICE_STATE_FD",
 *   payload: { layout: "device_state_result", error: 0, noFd: true, reserved: 0n },
 * });
 * ```
 *
 * @throws {TypeError} when a request name is not in the catalogue.
 * @throws {RangeError} when a payload value does not fit its wire field.
 */
export function createMessage(options: CreateOptions): Message {
  const dialect = options.dialect ?? "upstream";
  let spec: RequestSpec | undefined;
  let code: number;
  if (typeof options.request === "string") {
    spec = findRequestByName(options.channel, options.request);
    const c = spec === undefined ? undefined : codeIn(spec, dialect);
    if (spec === undefined || c === undefined) {
      throw new TypeError(
        `Cannot create message: "${options.request}" is not a ${options.channel} channel request in ${dialect}`,
      );
    }
    code = c;
  } else {
    code = options.request;
    spec = findRequest(options.channel, code, dialect);
  }
  const kind = kindOf(options.channel, options.sender);
  const flags = PROTOCOL_VERSION | (kind === "reply" ? FLAG_REPLY : 0) |
    (kind === "request" && options.needReply ? FLAG_NEED_REPLY : 0);
  const size = encodePayload(options.payload).length;
  return {
    header: { request: code, flags, size },
    code,
    name: spec?.name ?? `UNKNOWN(${code})`,
    channel: options.channel,
    sender: options.sender,
    dialect,
    kind,
    spec,
    payload: options.payload,
    fdCount: options.fdCount ?? 0,
    warnings: [],
  };
}

/**
 * Checks a reply against the request it answers, as QEMU does: same request
 * code; GET_CONFIG replies as long as the request; postcopy region replies
 * with the request's region count and guest addresses.
 * Returns the violation, or undefined when the reply fits.
 */
export function checkReply(request: Message, reply: Message): ProtocolViolation | undefined {
  const fail = (field: string, detail: string) =>
    violation({
      request: reply.name,
      code: reply.code,
      channel: reply.channel,
      sender: reply.sender,
      messageKind: "reply",
      kind: "value",
      field,
      detail,
    });
  if (reply.code !== request.code) {
    return fail(
      "request",
      `reply code is "${reply.code}", expected ${request.code} (${request.name})`,
    );
  }
  const rq = request.payload;
  const rp = reply.payload;
  if (rq.layout === "config" && rp.layout === "config" && rp.data.length !== rq.data.length) {
    return fail(
      "size",
      `config size is "${rp.data.length}", expected ${rq.data.length} as requested`,
    );
  }
  if ("regions" in rq && "regions" in rp) {
    if (rp.regions.length !== rq.regions.length) {
      return fail(
        "nregions",
        `nregions is "${rp.regions.length}", expected ${rq.regions.length} as requested`,
      );
    }
    for (let i = 0; i < rq.regions.length; i++) {
      if (rp.regions[i].guestPhysAddr !== rq.regions[i].guestPhysAddr) {
        return fail(
          "guestPhysAddr",
          `region ${i} guest address is "${hex(rp.regions[i].guestPhysAddr)}", expected ${
            hex(rq.regions[i].guestPhysAddr)
          }`,
        );
      }
    }
  }
  if ("guestPhysAddr" in rq && "guestPhysAddr" in rp && rp.guestPhysAddr !== rq.guestPhysAddr) {
    return fail(
      "guestPhysAddr",
      `guest address is "${hex(rp.guestPhysAddr)}", expected ${hex(rq.guestPhysAddr)}`,
    );
  }
  return undefined;
}

/** JSON-safe view of a message for the JSONL log: hex masks and addresses, feature names. */
export function messageToJson(message: Message): Record<string, unknown> {
  return {
    request: message.name,
    code: message.code,
    kind: message.kind,
    channel: message.channel,
    sender: message.sender,
    dialect: message.dialect,
    flags: hex(message.header.flags),
    needReply: (message.header.flags & FLAG_NEED_REPLY) !== 0,
    size: message.header.size,
    fds: message.fdCount,
    layout: message.payload.layout,
    ...(message.addresses === undefined ? {} : { addresses: message.addresses }),
    payload: payloadToJson(message.payload, { dialect: message.dialect, fdCount: message.fdCount }),
    ...(message.warnings.length > 0 ? { warnings: [...message.warnings] } : {}),
  };
}

/**
 * Key payload fields for a one-line human log, e.g. `index=0 num=256`,
 * `regions=1 [gpa=0x0 size=512MiB uaddr=0x7f0000000000 offset=0x0 fd]`, or
 * feature masks with their names. Empty for empty payloads.
 */
export function summarizeMessage(message: Message): string {
  return summarizePayload(message.payload, { dialect: message.dialect, fdCount: message.fdCount });
}

/**
 * Upstream ⇄ RFC 2023 dialect mapping, derived from the catalogue rows'
 * `dialects` codes and the protocol feature rows' `dialects` bits (docs/protocol.md §2.6).
 *
 * The two numberings clash on the wire: RFC 41 = upstream GET_SHARED_OBJECT
 * code, RFC 42 = upstream SET_DEVICE_STATE_FD code, RFC bit 17 = upstream
 * XEN_MMAP. A relay between peers of different dialects rewrites request codes
 * and protocol feature masks with {@link translateMessage}; whatever has no
 * counterpart is refused (requests) or dropped and reported (feature bits).
 *
 * @module
 */

import {
  type Channel,
  codeIn,
  type Dialect,
  findRequest,
  findRequestByName,
  type RequestSpec,
} from "./catalogue.ts";
import { FLAG_REPLY, HEADER_SIZE, type Message, readHeader } from "./codec.ts";
import { bitsOf, protocolFeatureAt, protocolFeaturePlace } from "./features.ts";
import type { LayoutName } from "./layouts.ts";

/** Why a message or code cannot be expressed in the target dialect. */
export interface DialectError {
  /** Tells a dialect error from other failures. */
  readonly kind: "dialect";
  /** The channel of the request. */
  readonly channel: Channel;
  /** Code in the source dialect. */
  readonly code: number;
  /** Request name, or `UNKNOWN(n)`. */
  readonly request: string;
  /** The dialect the code is in. */
  readonly from: Dialect;
  /** The dialect it could not be expressed in. */
  readonly to: Dialect;
  /** Sentence, e.g. `Cannot translate GET_SHARED_OBJECT (41) from upstream to rfc2023: the request does not exist in rfc2023`. */
  readonly message: string;
}

/** Failure of a translation: the sentence (for logs) and its structured details. */
export interface TranslateFailure {
  /** Tells a failure from a translation. */
  readonly ok: false;
  /** The sentence of {@link DialectError.message}. */
  readonly error: string;
  /** What could not be translated, structured. */
  readonly details: DialectError;
}

/** Result of a message translation: the translated value and the feature names dropped on the way. */
export type TranslateResult<T> =
  | { readonly ok: true; readonly value: T; readonly dropped: readonly string[] }
  | TranslateFailure;

/** Result of a request code translation. */
export type TranslateCodeResult = { readonly ok: true; readonly code: number } | TranslateFailure;

/**
 * The catalogue row of a request code in a dialect.
 *
 * @deprecated Use {@linkcode findRequest} from the catalogue, which this only calls.
 *
 * @example
 * ```ts
 * lookupRequest("main", 42, "upstream")?.name; // "SET_DEVICE_STATE_FD"
 * lookupRequest("main", 42, "rfc2023")?.name; // "CHECK_DEVICE_STATE"
 * ```
 */
export function lookupRequest(
  channel: Channel,
  code: number,
  dialect: Dialect,
): RequestSpec | undefined {
  return findRequest(channel, code, dialect);
}

/** Code of a named request in a dialect, or undefined when the dialect lacks it. */
export function codeFor(channel: Channel, name: string, dialect: Dialect): number | undefined {
  const spec = findRequestByName(channel, name);
  return spec === undefined ? undefined : codeIn(spec, dialect);
}

function dialectError(
  channel: Channel,
  code: number,
  request: string,
  from: Dialect,
  to: Dialect,
  why: string,
): TranslateFailure {
  const message = `Cannot translate ${request} (${code}) from ${from} to ${to}: ${why}`;
  return {
    ok: false,
    error: message,
    details: { kind: "dialect", channel, code, request, from, to, message },
  };
}

/**
 * Translates a request code between dialects. Codes unknown in both dialects
 * pass through unchanged (relayed verbatim); a code unknown in `from` but
 * meaning something in `to` is refused, since passing it would change its meaning.
 *
 * @example
 * ```ts
 * translateRequestCode("main", 42, "upstream", "rfc2023"); // { ok: true, code: 41 }
 * translateRequestCode("main", 41, "upstream", "rfc2023").ok; // false: GET_SHARED_OBJECT
 * ```
 */
export function translateRequestCode(
  channel: Channel,
  code: number,
  from: Dialect,
  to: Dialect,
): TranslateCodeResult {
  const spec = findRequest(channel, code, from);
  if (spec === undefined) {
    const there = findRequest(channel, code, to);
    if (there !== undefined) {
      return dialectError(
        channel,
        code,
        `UNKNOWN(${code})`,
        from,
        to,
        `code ${code} means ${there.name} in ${to}`,
      );
    }
    return { ok: true, code };
  }
  const target = codeIn(spec, to);
  if (target === undefined) {
    return dialectError(channel, code, spec.name, from, to, `the request does not exist in ${to}`);
  }
  return { ok: true, code: target };
}

/**
 * Renumbers a protocol feature mask between dialects. Features the target
 * lacks are dropped and named in `dropped`; bits unknown in `from` are kept
 * unless `to` gives them a meaning (then dropped as `bit N`).
 *
 * @example
 * ```ts
 * translateProtocolFeatures(1n << 19n, "upstream", "rfc2023"); // { bits: 1n << 17n, dropped: [] }
 * translateProtocolFeatures(1n << 17n, "upstream", "rfc2023"); // { bits: 0n, dropped: ["XEN_MMAP"] }
 * ```
 */
export function translateProtocolFeatures(
  bits: bigint,
  from: Dialect,
  to: Dialect,
): { bits: bigint; dropped: string[] } {
  let out = 0n;
  const dropped: string[] = [];
  for (const bit of bitsOf(bits)) {
    const feature = protocolFeatureAt(bit, from);
    if (feature === undefined) {
      if (protocolFeatureAt(bit, to) === undefined) out |= 1n << BigInt(bit);
      else dropped.push(`bit ${bit}`);
      continue;
    }
    const target = protocolFeaturePlace(feature.row, to);
    if (target === undefined) dropped.push(feature.name);
    else out |= 1n << BigInt(target.bit);
  }
  return { bits: out, dropped };
}

/** Whether messages of `spec` in the given direction carry a protocol feature mask. */
function carriesProtocolFeatures(spec: RequestSpec, isReply: boolean): boolean {
  const ref = isReply ? spec.reply : spec.request;
  // Feature masks never depend on negotiation; a string ref is the whole answer.
  const layout: LayoutName | undefined = typeof ref === "string" ? ref : undefined;
  return layout === "protocol_features";
}

/**
 * Rewrites a message for a peer of another dialect: the request code, and for
 * GET/SET_PROTOCOL_FEATURES masks (request or reply) the feature bits.
 *
 * Accepts a decoded {@link Message} (whose `dialect` must be `from`) or the raw
 * bytes of one message (header + payload; `channel` defaults to `main`).
 *
 * @example
 * ```ts
 * import { createMessage, encodeMessage } from "./codec.ts";
 *
 * // CHECK_DEVICE_STATE is 42 upstream and 41 in the RFC numbering.
 * const bytes = encodeMessage(createMessage({
 *   channel: "main",
 *   sender: "front-end",
 *   request: "CHECK_DEVICE_STATE",
 *   payload: { layout: "empty" },
 * }));
 * const r = translateMessage(bytes, "upstream", "rfc2023");
 * if (!r.ok) throw new Error(r.error);
 * if (r.dropped.length > 0) console.warn(`Dropped features: ${r.dropped.join(", ")}`);
 * console.log(new DataView(r.value.buffer).getUint32(0, true)); // 41
 * ```
 */
export function translateMessage(
  input: Message,
  from: Dialect,
  to: Dialect,
): TranslateResult<Message>;
/** Rewrites the raw bytes of one message (header and payload) for a peer of another dialect; `channel` defaults to `main`. */
export function translateMessage(
  input: Uint8Array,
  from: Dialect,
  to: Dialect,
  channel?: Channel,
): TranslateResult<Uint8Array>;
export function translateMessage(
  input: Message | Uint8Array,
  from: Dialect,
  to: Dialect,
  channel: Channel = "main",
): TranslateResult<Message> | TranslateResult<Uint8Array> {
  if (input instanceof Uint8Array) return translateBytes(input, from, to, channel);
  return translateDecoded(input, from, to);
}

function translateBytes(
  bytes: Uint8Array,
  from: Dialect,
  to: Dialect,
  channel: Channel,
): TranslateResult<Uint8Array> {
  if (bytes.length < HEADER_SIZE) {
    return dialectError(
      channel,
      0,
      "UNKNOWN(0)",
      from,
      to,
      `only ${bytes.length} bytes, expected a ${HEADER_SIZE}-byte header`,
    );
  }
  const header = readHeader(bytes);
  const code = translateRequestCode(channel, header.request, from, to);
  if (!code.ok) return code;
  const out = bytes.slice();
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(0, code.code, true);
  const spec = findRequest(channel, header.request, from);
  let dropped: string[] = [];
  const isReply = (header.flags & FLAG_REPLY) !== 0;
  if (
    spec !== undefined && carriesProtocolFeatures(spec, isReply) && header.size === 8 &&
    out.length === HEADER_SIZE + 8
  ) {
    const mask = translateProtocolFeatures(dv.getBigUint64(HEADER_SIZE, true), from, to);
    dv.setBigUint64(HEADER_SIZE, mask.bits, true);
    dropped = mask.dropped;
  }
  return { ok: true, value: out, dropped };
}

function translateDecoded(message: Message, from: Dialect, to: Dialect): TranslateResult<Message> {
  if (message.dialect !== from) {
    return dialectError(
      message.channel,
      message.code,
      message.name,
      from,
      to,
      `the message was decoded as ${message.dialect}, not ${from}`,
    );
  }
  const code = translateRequestCode(message.channel, message.code, from, to);
  if (!code.ok) return code;
  let payload = message.payload;
  let dropped: string[] = [];
  if (payload.layout === "protocol_features") {
    const mask = translateProtocolFeatures(payload.features, from, to);
    payload = { ...payload, features: mask.bits };
    dropped = mask.dropped;
  }
  return {
    ok: true,
    value: {
      ...message,
      header: { ...message.header, request: code.code },
      code: code.code,
      dialect: to,
      payload,
    },
    dropped,
  };
}

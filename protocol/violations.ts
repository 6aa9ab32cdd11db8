/**
 * Protocol violations as values, and an error class that carries one.
 *
 * The codec never throws at its decode boundary: a malformed message becomes a
 * {@link ProtocolViolation} value that the relay can log, count or turn into a
 * disconnect. Code that must propagate a violation through `throw` wraps it in
 * a {@link ProtocolError}.
 *
 * @module
 */

import type { Channel, Side } from "./catalogue.ts";
import { LARGEST_PAYLOAD } from "./layouts.ts";

/** What part of a message broke the rules. */
export type ViolationKind =
  /** Fewer than 12 header bytes, or header size and payload length disagree. */
  | "header"
  /** Version bits, reserved bits, REPLY or NEED_REPLY bit wrong for the direction. */
  | "flags"
  /** Payload length not allowed for the layout, or above {@link MAX_PAYLOAD_SIZE}. */
  | "size"
  /** Wrong number of file descriptors, or NOFD bit inconsistent with them. */
  | "fds"
  /** A field holds a value the spec forbids. */
  | "value"
  /** The codec itself failed; always a bug in the codec. */
  | "internal";

/**
 * The codec's bound: the largest payload in the spec (docs/protocol.md §1.1, docs/protocol.md §1.10; 2056, derived from the
 * layout table). rust-vmm accepts up to 4096, QEMU up to its payload union (now 2056).
 */
export const MAX_PAYLOAD_SIZE: number = LARGEST_PAYLOAD;

/** A malformed message, described precisely enough to log and act on. */
export interface ProtocolViolation {
  /** Request name (`SET_VRING_ADDR`, `UNKNOWN(99)`). */
  readonly request: string;
  /** Request code as found in the header. */
  readonly code: number;
  /** Channel the message travelled on. */
  readonly channel: Channel;
  /** Side that sent it. */
  readonly sender: Side;
  /** Whether the message was a request or a reply. */
  readonly messageKind: "request" | "reply";
  /** Category of the violation. */
  readonly kind: ViolationKind;
  /** The offending field (`flags`, `size`, `nregions`, `direction`…), when there is one. */
  readonly field?: string;
  /** The detail after the colon, e.g. `payload is 12 bytes, expected 40`. */
  readonly detail: string;
  /** The whole sentence, e.g. `Cannot decode SET_VRING_ADDR from front-end: payload is 12 bytes, expected 40`. */
  readonly message: string;
}

/** Everything of a {@link ProtocolViolation} except the rendered sentence. */
export type ViolationInit = Omit<ProtocolViolation, "message">;

/**
 * Builds a violation and renders its sentence.
 *
 * @example
 * ```ts
 * const v = violation({
 *   request: "SET_VRING_ADDR", code: 9, channel: "main", sender: "front-end",
 *   messageKind: "request", kind: "size", field: "size",
 *   detail: "payload is 12 bytes, expected 40",
 * });
 * v.message; // "Cannot decode SET_VRING_ADDR from front-end: payload is 12 bytes, expected 40"
 * ```
 */
export function violation(init: ViolationInit): ProtocolViolation {
  const what = init.messageKind === "reply" ? `${init.request} reply` : init.request;
  return { ...init, message: `Cannot decode ${what} from ${init.sender}: ${init.detail}` };
}

/** The direction a message travelled, named by its sender and receiver. */
export type Direction = "front-end → back-end" | "back-end → front-end";

/**
 * An exception carrying a {@link ProtocolViolation}, for code paths that must
 * throw (e.g. a relay loop aborting a session).
 *
 * @example
 * ```ts
 * import { decodeMessage, NOTHING_NEGOTIATED, readHeader } from "./codec.ts";
 *
 * // SET_VRING_ADDR (9) with a 12-byte payload instead of 40.
 * const header = readHeader(new Uint8Array([9, 0, 0, 0, 1, 0, 0, 0, 12, 0, 0, 0]));
 * const result = decodeMessage(header, new Uint8Array(12), 0, {
 *   channel: "main",
 *   sender: "front-end",
 *   dialect: "upstream",
 *   negotiated: NOTHING_NEGOTIATED,
 * });
 * try {
 *   if (!result.ok) throw new ProtocolError(result.error);
 * } catch (e) {
 *   if (e instanceof ProtocolError) console.log(e.request, e.direction, e.message);
 * }
 * ```
 */
export class ProtocolError extends Error {
  /** The violation this error reports. */
  readonly violation: ProtocolViolation;

  /** Wraps `violation`; the error message is the violation's sentence. */
  constructor(violation: ProtocolViolation, options?: ErrorOptions) {
    super(violation.message, options);
    this.name = "ProtocolError";
    this.violation = violation;
  }

  /** Name of the offending request. */
  get request(): string {
    return this.violation.request;
  }

  /** Which way the offending message travelled. */
  get direction(): Direction {
    return this.violation.sender === "front-end" ? "front-end → back-end" : "back-end → front-end";
  }
}

/**
 * The seam between the relay and device-state handling: a session asks its hooks about every
 * message before relaying it, and they may rewrite it, answer it themselves, or let it pass.
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import type { Reactor } from "../ffi/reactor.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import type { Message, Negotiated } from "../protocol/codec.ts";
import type { DeviceStateConfig } from "./config.ts";
import type { ChannelName, LogRecord } from "../log/record.ts";

/**
 * One socket of a session, as device-state handling sees it: which channel it is on. The
 * handler hands these back to the session (to relay or answer on), never reads them.
 */
export interface StateEndpoint {
  readonly kind: ChannelName;
}

/** A whole message as read off a socket: its bytes, its payload, the fds it carried. */
export interface StateFrame {
  readonly bytes: Uint8Array;
  readonly payload: Uint8Array;
  readonly fds: OwnedFd[];
}

/** A log record still to be written, as the relay gathers it (see the relay's session). */
export interface StateRecord {
  message: Message;
  size: number;
  warnings: string[];
  action?: string;
}

/** What of a session device-state handling uses: the relay's session implements it. */
export interface StateSession {
  readonly id: number;
  readonly reactor: Reactor;
  readonly options: {
    readonly frontDialect: Dialect;
    readonly backDialect: Dialect;
    readonly stuckAfterMs: number;
  };
  /** QEMU's main socket. */
  readonly front: StateEndpoint;
  /** The features as QEMU sees them. */
  readonly frontView: Negotiated;
  emit(record: LogRecord): void;
  /** Sends a message the proxy made (an answer) to `to`. */
  inject(
    to: StateEndpoint,
    message: Message,
    bytes: Uint8Array,
    fds: OwnedFd[],
    note: string,
  ): void;
  /** Relays a message the hooks held back, as if it had just arrived from `from`. */
  forward(
    from: StateEndpoint,
    message: Message,
    bytes: Uint8Array,
    fds: OwnedFd[],
    record: StateRecord,
  ): void;
}

/** Builds the per-session device-state hooks (injected so the engine stays small). */
export type DeviceStateFactory = (
  session: StateSession,
  config: DeviceStateConfig,
) => DeviceStateHooks | undefined;

/** What the session does with a message after the hooks saw it. */
export type Verdict =
  /** Relay it, possibly rewritten (`bytes`) or with other fds (`fds`, ownership moves). */
  | { action: "forward"; bytes?: Uint8Array; fds?: OwnedFd[]; note?: string }
  /** The hooks took care of it (answered, held for later); nothing is relayed now. */
  | { action: "answered"; note?: string };

/** Per-session device-state behaviour (relay, emulate, off). */
export interface DeviceStateHooks {
  /** Called for every decoded message, requests and replies, both channels. */
  intercept(from: StateEndpoint, message: Message, frame: StateFrame): Verdict;
  /** The session is ending: stop copies, close pipes. */
  close(): void;
}

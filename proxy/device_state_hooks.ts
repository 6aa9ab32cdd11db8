/**
 * The seam between the relay and device-state handling: a session asks its hooks about every
 * message before relaying it, and they may rewrite it, answer it themselves, or let it pass.
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import type { Frame } from "./channel.ts";
import type { Message } from "./codec.ts";
import type { Endpoint } from "./endpoint.ts";

/** What the session does with a message after the hooks saw it. */
export type Verdict =
  /** Relay it, possibly rewritten (`bytes`) or with other fds (`fds`, ownership moves). */
  | { action: "forward"; bytes?: Uint8Array; fds?: OwnedFd[]; note?: string }
  /** The hooks took care of it (answered, held for later); nothing is relayed now. */
  | { action: "answered"; note?: string };

/** Per-session device-state behaviour (relay, emulate, off). */
export interface DeviceStateHooks {
  /** Called for every decoded message, requests and replies, both channels. */
  intercept(from: Endpoint, message: Message, frame: Frame): Verdict;
  /** The session is ending: stop copies, close pipes. */
  close(): void;
}

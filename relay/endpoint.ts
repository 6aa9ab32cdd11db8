/**
 * One socket of a session as the reactor sees it: a framed channel plus the rule for when to read
 * it (only while the socket its messages go to has nothing queued: backpressure) and when to
 * write it (while output is queued).
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP } from "../ffi/poll.ts";
import type { Watch } from "../ffi/reactor.ts";
import { MessageChannel } from "./channel.ts";
import type { ChannelName, SenderSide } from "../log/record.ts";

/** Callbacks an endpoint reports to (its session). */
export interface EndpointOwner {
  /** The endpoint is readable (or hung up): read and relay what is there. */
  pump(endpoint: Endpoint): void;
  /** Flushing output failed (the peer is gone). */
  writeFailed(endpoint: Endpoint, error: unknown): void;
  /** The peer hung up while this socket was not being read (its target is backed up). */
  hungUp(endpoint: Endpoint): void;
}

/** A session socket: which channel it belongs to and who is at the other end. */
export class Endpoint implements Watch {
  readonly channel: MessageChannel;
  /** Main socket or back-end channel. */
  readonly kind: ChannelName;
  /** The peer on the far side of this socket. */
  readonly peer: SenderSide;
  /** Where messages read here are sent; set once both sides exist. */
  target: Endpoint | undefined;
  /** False until the session wants this socket read (e.g. while the back-end connects). */
  reading = true;
  readonly #owner: EndpointOwner;

  constructor(
    socket: OwnedFd,
    kind: ChannelName,
    peer: SenderSide,
    owner: EndpointOwner,
    maxPayload: number,
  ) {
    this.channel = new MessageChannel(socket, { maxPayload });
    this.kind = kind;
    this.peer = peer;
    this.#owner = owner;
  }

  get fd(): number {
    return this.channel.socket.fd;
  }

  /** True when reading may go on: the target has drained its queue. */
  get mayRead(): boolean {
    return this.reading && !this.channel.sawEof && this.target !== undefined &&
      this.target.channel.pendingOutput === 0;
  }

  interest(): number {
    const output = this.channel.pendingOutput > 0 ? POLLOUT : 0;
    if (this.mayRead) return POLLIN | output;
    // Not reading (backpressure): still watch for the peer hanging up, or a vanished peer would
    // go unnoticed for as long as the other side does not read.
    return this.reading && !this.channel.sawEof && this.target !== undefined
      ? POLLRDHUP | output
      : output;
  }

  onReady(revents: number): void {
    if (revents & POLLOUT) {
      try {
        this.channel.flush();
      } catch (e) {
        this.#owner.writeFailed(this, e);
        return;
      }
    }
    if (!this.mayRead && (revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      this.#owner.hungUp(this);
      return;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL | POLLRDHUP)) this.#owner.pump(this);
  }
}

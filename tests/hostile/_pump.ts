/**
 * A small single-threaded event loop for floods: several message streams through the proxy at
 * once, each sender writing only while its socket accepts more (so the test itself never
 * buffers a flood), each receiver reading when its gate allows (a slow or stalled reader).
 *
 * @module
 */

import { POLLIN, POLLOUT, PollSet } from "../../ffi/poll.ts";
import type { ScriptedPeer, WireMessage } from "../support/scripted_peer.ts";
import { sleepSync } from "./_wire.ts";

/** One direction of traffic. */
export interface Stream {
  from: ScriptedPeer;
  to: ScriptedPeer;
  /** The next message to send, or undefined when there is nothing to send now. */
  next(): Uint8Array | undefined;
  /** A message arrived at `to`. */
  received(m: WireMessage): void;
  /** How many messages `to` may read now (Infinity by default; 0 = a stalled reader). */
  readBudget?(): number;
}

/** Counters of a pump run. */
export interface PumpStats {
  sentBytes: number;
  elapsedMs: number;
}

/**
 * Runs the streams until `done()` or the deadline (then throws). `tick` runs every ~20 ms
 * (memory samples, isolation checks).
 */
export function pump(
  streams: Stream[],
  done: () => boolean,
  options: { timeoutMs: number; tick?: () => void },
): PumpStats {
  const t0 = performance.now();
  const deadline = t0 + options.timeoutMs;
  let sentBytes = 0;
  let lastTick = t0;
  const poll = new PollSet();
  while (!done()) {
    const now = performance.now();
    if (now > deadline) throw new Error(`Flood not done within ${options.timeoutMs} ms`);
    if (options.tick && now - lastTick >= 20) {
      lastTick = now;
      options.tick();
    }
    let progress = false;
    for (const s of streams) {
      // Write while the socket takes it: one queued message at most, the proxy's own rule too.
      s.from.channel.flush();
      while (s.from.channel.pendingOutput === 0) {
        const bytes = s.next();
        if (bytes === undefined) break;
        s.from.channel.send(bytes);
        sentBytes += bytes.length;
        progress = true;
      }
      let budget = s.readBudget?.() ?? Infinity;
      while (budget-- > 0) {
        const r = s.to.channel.read();
        if (r.kind === "pending") break;
        if (r.kind !== "frame") throw new Error(`Flood receiver got ${r.kind}`);
        progress = true;
        s.received({
          request: r.frame.request,
          flags: r.frame.flags,
          payload: r.frame.payload,
          fds: r.frame.fds,
        });
      }
    }
    if (progress) continue;
    poll.clear();
    for (const s of streams) {
      if (s.from.channel.pendingOutput > 0) poll.add(s.from.fd, POLLOUT);
      if ((s.readBudget?.() ?? Infinity) > 0) poll.add(s.to.fd, POLLIN);
    }
    if (poll.wait(10) === 0) sleepSync(1);
  }
  return { sentBytes, elapsedMs: Math.round(performance.now() - t0) };
}

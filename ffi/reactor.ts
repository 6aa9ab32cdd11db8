/**
 * A synchronous poll() reactor with timers, for the relay Worker.
 *
 * Interest is asked of every watch on every turn, so backpressure is just "return 0 for POLLIN
 * while my destination has output queued". A watch whose handler throws is reported to
 * `onError` and the loop goes on: one session's failure must not stop the others.
 *
 * @module
 */

import { PollSet } from "./poll.ts";

/** Something with an fd to wait on. */
export interface Watch {
  /** The fd to poll; must be open while the watch is registered. */
  readonly fd: number;
  /** poll events wanted now (0 = not polled this turn). */
  interest(): number;
  /** Called with the revents when the fd is ready. */
  onReady(revents: number): void;
}

/** A scheduled callback; `cancel` is idempotent. */
export interface Timer {
  cancel(): void;
}

interface TimerEntry {
  at: number;
  run: () => void;
  cancelled: boolean;
}

/** Poll loop core: watches, timers, one `turn` per wake-up. */
export class Reactor {
  #watches = new Set<Watch>();
  #timers: TimerEntry[] = [];
  #poll = new PollSet();
  #slots: Watch[] = [];
  readonly onError: (error: unknown, source: Watch | "timer") => void;

  /** `onError` receives what a watch handler or timer threw; the loop goes on. */
  constructor(onError: (error: unknown, source: Watch | "timer") => void) {
    this.onError = onError;
  }

  /** Starts polling a watch. */
  add(watch: Watch): void {
    this.#watches.add(watch);
  }

  /** Stops polling a watch (safe during a turn). */
  remove(watch: Watch): void {
    this.#watches.delete(watch);
  }

  /** Number of registered watches. */
  get size(): number {
    return this.#watches.size;
  }

  /** Runs `run` once after `ms` milliseconds. */
  setTimer(ms: number, run: () => void): Timer {
    const entry: TimerEntry = { at: performance.now() + ms, run, cancelled: false };
    let i = this.#timers.length;
    while (i > 0 && this.#timers[i - 1].at > entry.at) i--;
    this.#timers.splice(i, 0, entry);
    return {
      cancel: () => {
        entry.cancelled = true;
      },
    };
  }

  /**
   * Blocks in poll() until an fd is ready, the next timer is due or `maxWaitMs` passes
   * (-1 = no limit), then dispatches. Returns the number of watches dispatched.
   */
  turn(maxWaitMs = -1): number {
    this.#poll.clear();
    this.#slots.length = 0;
    for (const w of this.#watches) {
      const events = w.interest();
      if (events === 0) continue;
      this.#poll.add(w.fd, events);
      this.#slots.push(w);
    }
    let timeout = maxWaitMs;
    while (this.#timers.length > 0 && this.#timers[0].cancelled) this.#timers.shift();
    if (this.#timers.length > 0) {
      const due = Math.max(0, Math.ceil(this.#timers[0].at - performance.now()));
      timeout = timeout < 0 ? due : Math.min(timeout, due);
    }
    const ready = this.#poll.wait(timeout);
    let dispatched = 0;
    if (ready > 0) {
      for (let i = 0; i < this.#slots.length; i++) {
        const revents = this.#poll.revents(i);
        if (revents === 0) continue;
        const w = this.#slots[i];
        // A handler earlier in this turn may have closed this watch.
        if (!this.#watches.has(w)) continue;
        dispatched++;
        try {
          w.onReady(revents);
        } catch (e) {
          this.onError(e, w);
        }
      }
    }
    this.#runDueTimers();
    return dispatched;
  }

  #runDueTimers(): void {
    const now = performance.now();
    while (this.#timers.length > 0 && this.#timers[0].at <= now) {
      const t = this.#timers.shift()!;
      if (t.cancelled) continue;
      try {
        t.run();
      } catch (e) {
        this.onError(e, "timer");
      }
    }
  }
}

/**
 * Worker entry: the slower fingerprints (SHA-256, BLAKE3) of device-state streams, behind the
 * transfer instead of inside it (xxh3-128, the default, keeps up inline and never comes here).
 *
 * A 2-core machine cannot both move a large state at pipe speed and hash it with SHA-256 before
 * CHECK: that hash alone runs at ~1.4 GiB/s per core. So the relay hands the bytes over here and goes on
 * delivering; this thread runs at the lowest priority (nice 19), taking the CPU the transfer
 * leaves idle, and publishes progress and the digest through a shared control block, then
 * wakes the relay's poll loop with an eventfd (a loop blocked in poll() cannot see a message).
 *
 * Protocol (engine → here, structured clone; `data` names bytes in a mapping both threads see):
 * `init` once, then per transfer `open`, any number of `data`, and `end` or `drop`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { createHash } from "node:crypto";
import { createDigester, type Digester, fingerprintsReady } from "./fingerprint.ts";
import { viewOfMapping } from "../ffi/memory.ts";
import { signalEventFd } from "../ffi/poll.ts";
import { setThreadNice } from "../ffi/thread.ts";
import { type HashCommand, HashControl } from "./hash_control.ts";

interface Job {
  hash: Digester;
  control: HashControl;
}

const jobs = new Map<number, Job>();
let wakeFd = -1;
let arena: Uint8Array = new Uint8Array(0);

function wakeEngine(): void {
  if (wakeFd >= 0) signalEventFd(wakeFd);
}

/** Commands that came before the WebAssembly hashes were ready, in order. */
let early: HashCommand[] | undefined = [];
fingerprintsReady.then(() => {
  for (const cmd of early!) handle(cmd);
  early = undefined;
});

self.onmessage = (e: MessageEvent<HashCommand>) => {
  if (early) early.push(e.data);
  else handle(e.data);
};

function handle(cmd: HashCommand): void {
  switch (cmd.type) {
    case "init":
      wakeFd = cmd.wakeFd;
      arena = viewOfMapping(cmd.arena.address, cmd.arena.bytes);
      try {
        setThreadNice(cmd.nice);
      } catch {
        // Only a courtesy to the transfer: hashing at normal priority is still correct.
      }
      // The first SHA-256 of a thread loads and compiles node:crypto's code: 20–28 ms of CPU
      // measured, which landed in the next migration's downtime when left to the first job.
      createHash("sha256").update(new Uint8Array(64)).digest();
      break;
    case "open":
      jobs.set(cmd.id, {
        hash: createDigester(cmd.algorithm),
        control: new HashControl(cmd.control),
      });
      break;
    case "data": {
      const job = jobs.get(cmd.id);
      if (!job) break;
      job.hash.update(arena.subarray(cmd.offset, cmd.offset + cmd.bytes));
      // The relay may be waiting for the backlog to shrink: it set the flag before looking.
      if (job.control.hashed(cmd.bytes)) wakeEngine();
      break;
    }
    case "end": {
      const job = jobs.get(cmd.id);
      if (!job) break;
      jobs.delete(cmd.id);
      job.control.publish(job.hash.digest());
      wakeEngine();
      break;
    }
    case "drop":
      jobs.delete(cmd.id);
      break;
  }
}

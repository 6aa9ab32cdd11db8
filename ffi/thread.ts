/**
 * Scheduling of the calling thread.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { SystemError } from "./errors.ts";

const PRIO_PROCESS = 0;

/**
 * Sets the nice value of the calling thread only (Linux keeps a nice value per thread, and
 * setpriority(PRIO_PROCESS, tid) addresses one). Raising it needs no privilege.
 */
export function setThreadNice(nice: number): void {
  const tid = libc.gettid();
  if (libc.setpriority(PRIO_PROCESS, tid, nice) !== 0) {
    throw new SystemError("setpriority", errno(), `thread ${tid}, nice ${nice}`);
  }
}

/**
 * Bounded waiting: every wait in the harness has a deadline and says what it waited for.
 *
 * @module
 */

/** A wait ran past its deadline. */
export class WaitTimeoutError extends Error {
  /** What was awaited, e.g. `virtiofsd socket "/tmp/vup-x/vfs.sock"`. */
  readonly what: string;
  readonly timeoutMs: number;

  /** `detail` is appended after a colon, e.g. the tail of a log. */
  constructor(what: string, timeoutMs: number, detail?: string) {
    super(`Timed out after ${timeoutMs} ms waiting for ${what}${detail ? `: ${detail}` : ""}`);
    this.name = "WaitTimeoutError";
    this.what = what;
    this.timeoutMs = timeoutMs;
  }
}

/** Options for {@linkcode waitFor}. */
export interface WaitOptions {
  /** Human description used in the timeout error. */
  what: string;
  timeoutMs: number;
  /** Poll interval; default 100 ms. */
  intervalMs?: number;
  /** Adds context (e.g. a log tail) to the timeout error. */
  detail?: () => Promise<string> | string;
}

/**
 * Polls `probe` until it returns a value other than `undefined`, and returns that value. A
 * `probe` that throws ends the wait with its error (use that to fail fast when a peer exits).
 *
 * @example
 * ```ts
 * const size = await waitFor(async () => (await Deno.stat(path)).size || undefined, {
 *   what: "a non-empty log",
 *   timeoutMs: 5000,
 * });
 * ```
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  while (true) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      throw new WaitTimeoutError(options.what, options.timeoutMs, await options.detail?.());
    }
    await delay(options.intervalMs ?? 100);
  }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** True if a unix socket exists at `path`. */
export async function socketExists(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSocket === true;
  } catch {
    return false;
  }
}

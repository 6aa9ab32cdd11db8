// Reads a relay's memory and CPU use from /proc, the only view that needs no cooperation from
// the process being measured.

export interface MemSample {
  /** Resident set size now, KiB. */
  vmRssKiB: number;
  /** Peak resident set size since start ("high water mark"), KiB. */
  vmHwmKiB: number;
}

/** VmRSS/VmHWM of pid, or null once the process is gone. */
export function readMem(pid: number): MemSample | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const field = (name: string): number => {
    const m = text.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"));
    return m ? Number(m[1]) : NaN;
  };
  return { vmRssKiB: field("VmRSS"), vmHwmKiB: field("VmHWM") };
}

/** Clock ticks per second for /proc/<pid>/stat times (sysconf(_SC_CLK_TCK)). */
export function clockTicksPerSecond(): number {
  try {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stderr: "null" }).outputSync();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (out.success && n > 0) return n;
  } catch {
    // getconf missing: fall through to the Linux default.
  }
  return 100;
}

/** utime + stime of all threads of pid, in clock ticks, or null once the process is gone. */
export function readCpuTicks(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses, so split after the last ')'.
  // The remaining fields start at field 3 (state); utime is field 14, stime field 15.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(rest[14 - 3]) + Number(rest[15 - 3]);
}

/**
 * Tracks the largest VmRSS seen while a load runs. Sampling is coarse (250 ms) on purpose:
 * a faster timer would wake the bench process often enough to disturb latency on 2 cores.
 */
export class RssSampler {
  #maxKiB = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly pid: number) {}

  start(): void {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), 250);
  }

  /** Stops sampling; returns the largest VmRSS seen (KiB), including one final sample. */
  stop(): number {
    clearInterval(this.#timer);
    this.#sample();
    return this.#maxKiB;
  }

  #sample(): void {
    const m = readMem(this.pid);
    if (m && m.vmRssKiB > this.#maxKiB) this.#maxKiB = m.vmRssKiB;
  }
}

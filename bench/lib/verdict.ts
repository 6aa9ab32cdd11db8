// The proxy's latency and CPU targets (issue 12): the latency it adds over a direct connection
// must stay within 1.3× of what the minimal C poll relay adds (ffi-notes §3.1: the extra
// process hop costs about +25 µs per round trip on these 2-vCPU VMs whatever the relay is
// written in), its CPU per relayed message within 1.3× of the C relay's; with `--log <file>`
// on, both within 2×.

import type { PathName } from "./args.ts";
import type { PathResult } from "./measure.ts";

export const TARGET_RATIO = 1.3;
/** The same figures with `--log <file>` on. */
export const LOG_TARGET_RATIO = 2;
/**
 * A C relay that adds less than this over direct gives no ratio: p50s of identical runs
 * scatter by ±10–30 µs here (ffi-notes §3.1), and dividing by ~1 µs of noise gave −4×.
 */
export const NOISE_FLOOR_US = 5;

export interface Added {
  p50: number;
  p99: number;
}

export interface RatioCheck {
  fd: boolean;
  proxyAddedP50: number;
  cAddedP50: number;
  /** null when the C relay's added p50 is below NOISE_FLOOR_US (noise): no meaningful ratio. */
  ratio: number | null;
  pass: boolean;
}

export interface Verdict {
  limit: number;
  checks: RatioCheck[];
  /** null when proxy, C relay or direct was not measured. */
  pass: boolean | null;
}

function find(results: PathResult[], path: PathName, fd: boolean): PathResult | undefined {
  return results.find((r) => r.path === path && r.fd === fd);
}

/** Latency a path adds over direct with the same fd mode, from the medians. */
export function addedOverDirect(results: PathResult[], r: PathResult): Added | undefined {
  const direct = find(results, "direct", r.fd);
  if (!direct || r.path === "direct") return undefined;
  return {
    p50: r.summary.p50_us - direct.summary.p50_us,
    p99: r.summary.p99_us - direct.summary.p99_us,
  };
}

/** Added p50 of `proxyPath` over the C relay's, per fd mode, against `limit`. */
export function judge(
  results: PathResult[],
  proxyPath: PathName = "proxy",
  limit = TARGET_RATIO,
): Verdict {
  const checks: RatioCheck[] = [];
  for (const fd of [false, true]) {
    const proxy = find(results, proxyPath, fd);
    const c = find(results, "c", fd);
    const proxyAdded = proxy && addedOverDirect(results, proxy);
    const cAdded = c && addedOverDirect(results, c);
    if (!proxyAdded || !cAdded) continue;
    const ratio = cAdded.p50 >= NOISE_FLOOR_US ? proxyAdded.p50 / cAdded.p50 : null;
    checks.push({
      fd,
      proxyAddedP50: proxyAdded.p50,
      cAddedP50: cAdded.p50,
      ratio,
      pass: ratio !== null && ratio <= limit,
    });
  }
  return {
    limit,
    checks,
    pass: checks.length === 2 ? checks.every((c) => c.pass) : null,
  };
}

/** CPU per relayed message of a proxy path against the C relay's, one fd mode. */
export interface CpuCheck {
  fd: boolean;
  proxyUsPerMsg: number;
  cUsPerMsg: number;
  ratio: number;
  pass: boolean;
}

/** CPU per relayed message of `proxyPath` over the C relay's, per fd mode, against `limit`. */
export function judgeCpu(
  results: PathResult[],
  proxyPath: PathName = "proxy",
  limit = TARGET_RATIO,
): CpuCheck[] {
  const checks: CpuCheck[] = [];
  for (const fd of [false, true]) {
    const p = find(results, proxyPath, fd)?.relayCpuUsPerMsg;
    const c = find(results, "c", fd)?.relayCpuUsPerMsg;
    if (p === undefined || c === undefined || !(c > 0)) continue;
    checks.push({ fd, proxyUsPerMsg: p, cUsPerMsg: c, ratio: p / c, pass: p / c <= limit });
  }
  return checks;
}

// The machine-readable result (out/bench/latest.json), for comparing runs and for CI.

import type { BenchOptions, PathName } from "./args.ts";
import type { Measurement } from "./measure.ts";
import { addedOverDirect, type Verdict } from "./verdict.ts";

export interface BenchJson {
  schema: 1;
  date: string;
  host: { cpus: number; kernel: string; deno: string };
  options: BenchOptions;
  /** Paths that could not be started or broke mid-run, with the reason. */
  failures: Partial<Record<PathName, string>>;
  results: Array<Measurement["results"][number] & { added?: { p50_us: number; p99_us: number } }>;
  memory: Measurement["memory"];
  verdict: Verdict;
}

function kernel(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch {
    return Deno.osRelease();
  }
}

export function toJson(
  opts: BenchOptions,
  m: Measurement,
  startFailures: Partial<Record<PathName, string>>,
  verdict: Verdict,
): BenchJson {
  return {
    schema: 1,
    date: new Date().toISOString(),
    host: { cpus: navigator.hardwareConcurrency, kernel: kernel(), deno: Deno.version.deno },
    options: opts,
    failures: { ...startFailures, ...m.failures },
    results: m.results.map((r) => {
      const added = addedOverDirect(m.results, r);
      return added ? { ...r, added: { p50_us: added.p50, p99_us: added.p99 } } : r;
    }),
    memory: m.memory,
    verdict,
  };
}

export async function writeJson(path: string, data: BenchJson): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(data, null, 2) + "\n");
}

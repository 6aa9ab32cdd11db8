// Aggregation of per-run results: the median of each percentile over runs, which is robust
// against the one run in three that a noisy 2-vCPU VM spoils (ffi-notes: ±20 µs between runs).

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median over runs of each numeric field named in keys. */
export function medianOf<T, K extends keyof T>(runs: T[], keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = median(runs.map((r) => Number(r[k])));
  return out;
}

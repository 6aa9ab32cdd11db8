// Human-readable report: the latency table, the target verdict and the relays' resource use.

import type { BenchOptions } from "./args.ts";
import type { Measurement, RelayMemory } from "./measure.ts";
import { PATH_LABELS } from "./paths.ts";
import { addedOverDirect, type Verdict } from "./verdict.ts";

const us = (v: number | undefined, signed = false): string =>
  v === undefined || Number.isNaN(v) ? "–" : `${signed && v >= 0 ? "+" : ""}${v.toFixed(1)}`;

const mib = (kib: number | undefined): string =>
  kib === undefined || Number.isNaN(kib) ? "–" : `${(kib / 1024).toFixed(1)} MiB`;

function table(rows: string[][], rightAligned: boolean[]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r.map((cell, i) => rightAligned[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))
      .join("  ").trimEnd()
  ).join("\n");
}

export function latencyTable(m: Measurement, opts: BenchOptions): string {
  const head = [
    "path",
    "fd",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "mean",
    "max",
    "added p50",
    "added p99",
  ];
  head.push("relay CPU µs/msg", "fds back");
  const rows = [head];
  for (const r of m.results) {
    const added = addedOverDirect(m.results, r);
    rows.push([
      PATH_LABELS[r.path],
      r.fd ? "1" : "0",
      us(r.summary.p50_us),
      us(r.summary.p90_us),
      us(r.summary.p99_us),
      us(r.summary.p999_us),
      us(r.summary.mean_us),
      us(r.summary.max_us),
      us(added?.p50, true),
      us(added?.p99, true),
      us(r.relayCpuUsPerMsg),
      r.fdsBackOk ? "ok" : "WRONG",
    ]);
  }
  const title = `Round-trip latency in µs: median over ${opts.runs} run(s) of each per-run ` +
    `percentile, ${opts.rounds} round trips per run after ${opts.warmup} warm-up.\n` +
    `fd 0: SET_VRING_NUM + ack; fd 1: SET_VRING_CALL with an eventfd + ack` +
    (opts.fdBack ? " carrying the eventfd back (--fd-back)" : " (no fd back)") +
    `; "added" is over direct.`;
  return `${title}\n\n${table(rows, rows[0].map((_, i) => i > 1))}`;
}

export function verdictText(v: Verdict): string {
  if (v.pass === null) {
    return `Target (proxy added p50 / C relay added p50 ≤ ${v.limit}×): not evaluated ` +
      `(needs direct, c and proxy results for both fd modes)`;
  }
  const lines = [`Target: proxy added p50 / C relay added p50 ≤ ${v.limit}×`];
  for (const c of v.checks) {
    const ratio = c.ratio === null
      ? "n/a (C relay added < 5 µs: noise, rerun)"
      : `${c.ratio.toFixed(2)}×`;
    lines.push(
      `  ${c.fd ? "1 fd " : "no fd"}: ${us(c.proxyAddedP50, true)} / ` +
        `${us(c.cAddedP50, true)} µs = ${ratio}  ${c.pass ? "PASS" : "FAIL"}`,
    );
  }
  lines.push(`  overall: ${v.pass ? "PASS" : "FAIL"}`);
  return lines.join("\n");
}

export function memoryText(name: string, mem: RelayMemory): string {
  return `${name} memory: idle VmRSS ${mib(mem.idle?.vmRssKiB)}, max VmRSS under load ` +
    `${mib(mem.loadMaxRssKiB)}, after load VmRSS ${mib(mem.after?.vmRssKiB)} / ` +
    `VmHWM ${mib(mem.after?.vmHwmKiB)}`;
}

/**
 * What both demos share: where their files go, how they print, and running the proxy's own
 * command line the way a user would, output shown.
 *
 * @module
 */

import { peersDir } from "../harness/mod.ts";
import { PROXY_BIN } from "../e2e/_migration_rig.ts";

/** Where the logs stay after a demo (the repository's out/ is git-ignored). */
export const OUT_DIR = new URL("../../out/demo", import.meta.url).pathname;

/** The repository root, to print paths relative to it. */
const ROOT = new URL("../../", import.meta.url).pathname;

/** What a demo gets from the runner in `tests/demo.ts`. */
export interface DemoContext {
  /** Everything the demo starts is registered here; the runner disposes it in every case. */
  stack: AsyncDisposableStack;
  /** Registers a source of context (log tails) to print if the demo fails. */
  onFailure(describe: () => Promise<string>): void;
}

/** A failed demo step: the runner prints the message and exits 1. */
export class DemoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DemoError";
  }
}

/** Throws a {@linkcode DemoError} unless `condition` holds. */
export function expect(condition: unknown, message: string): asserts condition {
  if (!condition) throw new DemoError(message);
}

/** `path` relative to the repository root when it lies inside it. */
export function shortPath(path: string): string {
  return path.startsWith(ROOT) ? path.slice(ROOT.length) : path;
}

/** Prints `[n/total] text`. */
export function step(n: number, total: number, text: string): void {
  console.log(`\n[${n}/${total}] ${text}`);
}

/** Prints a section heading. */
export function heading(text: string): void {
  console.log(`\n== ${text} ==`);
}

/** Prefixes every line of `text`. */
export function indent(text: string, prefix = "    "): string {
  return text.split("\n").map((line) => `${prefix}${line}`).join("\n");
}

/** Prints the peers' versions from `versions.txt` (informative only). */
export function printVersions(): void {
  try {
    const versions = Deno.readTextFileSync(`${peersDir()}/versions.txt`);
    const wanted = /^(qemu|virtiofsd|guest kernel):/;
    const lines = versions.split("\n").filter((line) => wanted.test(line));
    console.log(`peers:\n${indent(lines.join("\n"), "  ")}`);
  } catch {
    // requirePeers has already checked the binaries themselves.
  }
}

/** Options for {@linkcode proxyCli}. */
export interface ProxyCliOptions {
  /** Exit codes that count as success (default `[0]`). */
  codes?: number[];
  /** Print at most this many lines of stdout, then say how many were left out. */
  maxLines?: number;
  /** Keep only the lines this accepts (printed as such, with the count of the others). */
  filter?: (line: string) => boolean;
  /** Print nothing (the caller only wants the output). */
  silent?: boolean;
}

/** The outcome of {@linkcode proxyCli}. */
export interface ProxyCliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `bin/vhost-user-proxy <args>`, prints the command line as a user would type it and its
 * output, and fails the demo on an unexpected exit code (with stderr in the message).
 */
export async function proxyCli(
  args: string[],
  options: ProxyCliOptions = {},
): Promise<ProxyCliResult> {
  const output = await new Deno.Command(PROXY_BIN, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  const result = {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
  const commandLine = `bin/vhost-user-proxy ${args.map(shortPath).join(" ")}`;
  const codes = options.codes ?? [0];
  if (!codes.includes(result.code)) {
    throw new DemoError(
      `\`${commandLine}\` exited with ${result.code} (expected ${codes.join(" or ")}):\n` +
        indent((result.stderr || result.stdout).trimEnd()),
    );
  }
  if (!options.silent) {
    console.log(`  $ ${commandLine}`);
    let lines = result.stdout.trimEnd().split("\n");
    const all = lines.length;
    if (options.filter) lines = lines.filter(options.filter);
    const filtered = all - lines.length;
    const max = options.maxLines ?? Infinity;
    const cut = Math.max(0, lines.length - max);
    console.log(indent(lines.slice(0, max).join("\n")));
    const omitted = [
      filtered ? `${filtered} other lines filtered out` : "",
      cut ? `${cut} more lines` : "",
    ].filter(Boolean).join(", ");
    if (omitted) console.log(`    … (${omitted})`);
    if (result.stderr.trim()) console.log(indent(result.stderr.trimEnd(), "    stderr: "));
    if (result.code !== 0) console.log(`    (exit ${result.code})`);
  }
  return result;
}

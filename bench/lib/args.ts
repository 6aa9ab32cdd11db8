// Command-line options of `deno task bench`.

/** direct, the C poll relay, the proxy as shipped (`--quiet`), the same with `--log <file>`. */
export const PATH_NAMES = ["direct", "c", "proxy", "proxyLog"] as const;
export type PathName = typeof PATH_NAMES[number];

/**
 * What `deno task bench` measures: round-trip latency and CPU per message, the device-state
 * stream, the proxy's memory with idle sessions, and the switch-over and downtime of real
 * migrations.
 */
export const SECTION_NAMES = ["latency", "stream", "memory", "downtime"] as const;
export type SectionName = typeof SECTION_NAMES[number];
/** The sections run by default: all of them (downtime needs the peers of setup_peers.sh). */
export const DEFAULT_SECTIONS: readonly SectionName[] = ["latency", "stream", "memory", "downtime"];

export interface BenchOptions {
  /** Timed round trips per run. */
  rounds: number;
  /** Untimed round trips before each run (connection set-up, caches, page faults). */
  warmup: number;
  /** Runs per path and fd mode; the report takes the median of the per-run percentiles. */
  runs: number;
  only: PathName[];
  /**
   * The back-end returns each request's fd in its reply, as in ffi-notes §3.1. Not valid
   * vhost-user (an ack carries no fd), so a protocol-checking proxy rejects it.
   */
  fdBack: boolean;
  /** Sections to run, in canonical order. */
  sections: SectionName[];
  /** Size of the synthetic device state of the stream section. */
  stateMib: number;
  /** Back-to-back transfers per path and direction in a round of the stream section. */
  stateRuns: number;
  /** Rounds of the stream section (each visits every path). */
  stateRounds: number;
  /** Migrations per path in the downtime section. */
  downtimeRuns: number;
}

export const USAGE =
  `usage: deno task bench [--rounds N] [--runs K] [--warmup W] [--only direct,c,proxy]
  --rounds N   timed round trips per run (default 20000)
  --runs K     runs per path and fd mode, interleaved; medians are reported (default 5)
  --warmup W   untimed round trips before each run (default 2000)
  --only LIST  comma-separated subset of direct,c,proxy,proxyLog (default: all; proxyLog is
               the proxy with --log <file>)
  --fd-back    the back-end returns the request's fd in its reply (ffi-notes §3.1 set-up; not
               valid vhost-user, so the proxy rejects it: use with --only direct,c)
  --sections LIST     comma-separated subset of latency,stream,memory,downtime (default:
                      all of them)
  --state-mib N       synthetic device state size of the stream section (default 256)
  --state-runs K      back-to-back transfers per path and direction in the stream section
                      (default 3)
  --state-rounds K    rounds of the stream section, the paths in turn in each; the median
                      round is reported (default 5)
  --downtime-runs K   live migrations per path in the downtime section, the switch-over and
                      downtime of each (default 7; needs QEMU, virtiofsd and the guest from
                      scripts/setup_peers.sh)`;

export class UsageError extends Error {}

function positiveInt(flag: string, value: string | undefined, allowZero = false): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < (allowZero ? 0 : 1)) {
    throw new UsageError(`${flag} needs a ${allowZero ? "non-negative" : "positive"} integer`);
  }
  return n;
}

function pathList(value: string | undefined): PathName[] {
  const names = (value ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (names.length === 0) throw new UsageError("--only needs a list such as direct,c");
  for (const n of names) {
    if (!(PATH_NAMES as readonly string[]).includes(n)) {
      throw new UsageError(`--only: unknown path "${n}" (known: ${PATH_NAMES.join(",")})`);
    }
  }
  // Keep the canonical order so that the table always reads direct, c, proxy.
  return PATH_NAMES.filter((p) => names.includes(p));
}

function sectionList(value: string | undefined): SectionName[] {
  const names = (value ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (names.length === 0) throw new UsageError("--sections needs a list such as latency,stream");
  for (const n of names) {
    if (!(SECTION_NAMES as readonly string[]).includes(n)) {
      throw new UsageError(
        `--sections: unknown section "${n}" (known: ${SECTION_NAMES.join(",")})`,
      );
    }
  }
  return SECTION_NAMES.filter((s) => names.includes(s));
}

/** Parses `--flag value` and `--flag=value`; throws UsageError (with "help" for --help). */
export function parseArgs(argv: string[]): BenchOptions {
  const opts: BenchOptions = {
    rounds: 20000,
    warmup: 2000,
    runs: 5,
    only: [...PATH_NAMES],
    fdBack: false,
    sections: [...DEFAULT_SECTIONS],
    stateMib: 256,
    stateRuns: 3,
    stateRounds: 5,
    downtimeRuns: 7,
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case "--rounds":
        opts.rounds = positiveInt(flag, value());
        break;
      case "--runs":
        opts.runs = positiveInt(flag, value());
        break;
      case "--warmup":
        opts.warmup = positiveInt(flag, value(), true);
        break;
      case "--only":
        opts.only = pathList(value());
        break;
      case "--fd-back":
        if (inline !== undefined) throw new UsageError("--fd-back takes no value");
        opts.fdBack = true;
        break;
      case "--sections":
        opts.sections = sectionList(value());
        break;
      case "--state-mib":
        opts.stateMib = positiveInt(flag, value());
        break;
      case "--state-runs":
        opts.stateRuns = positiveInt(flag, value());
        break;
      case "--state-rounds":
        opts.stateRounds = positiveInt(flag, value());
        break;
      case "--downtime-runs":
        opts.downtimeRuns = positiveInt(flag, value());
        break;
      case "-h":
      case "--help":
        throw new UsageError("help");
      default:
        throw new UsageError(`unknown argument: ${argv[i]}`);
    }
  }
  return opts;
}

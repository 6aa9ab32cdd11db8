/**
 * Command-line entry: `vhost-user-proxy <subcommand> …`. Parsing uses `node:util`'s parseArgs
 * (a maintained built-in; JSR libraries cannot be fetched here).
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import denoJson from "./deno.json" with { type: "json" };
import type { Dialect } from "./protocol/catalogue.ts";
import { REQUESTS } from "./protocol/catalogue.ts";
import {
  DEFAULT_HASH_BACKLOG_MIB,
  type DeviceStateConfig,
  type EngineConfig,
  refuseLoop,
} from "./relay/engine.ts";
import { fanOut, humanSink, jsonLinesSink, type Sink } from "./log/sink.ts";
import { listenForStopSignals, type RunningProxy, startProxy } from "./relay/server.ts";
import { checkListenPath } from "./ffi/socket.ts";
import { type ControlServer, parseControlRequest, serveControl } from "./relay/control.ts";
import { ctlCommand } from "./cli/ctl.ts";
import { parseFaults } from "./device_state/faults.ts";
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_STUCK_AFTER_MS } from "./relay/engine_defaults.ts";
import {
  DEFAULT_FINGERPRINT,
  FINGERPRINT_ALGORITHMS,
  hashesInline,
  isFingerprintAlgorithm,
} from "./device_state/fingerprint.ts";
import { BackendArgsError, runBackendWrapper } from "./cli/backend_wrapper.ts";
import {
  diffLogs,
  followLog,
  formatSummary,
  ioCause,
  loadLog,
  problemOf,
  sessionsOf,
  type ShowFilter,
  showFilter,
  summarizeLog,
} from "./log/tools.ts";
import { formatRecord, timeOfDay } from "./log/format.ts";
import type { LogRecord } from "./log/record.ts";
import { explainMigration, formatExplanation } from "./log/explain.ts";
import { formatLintReport, lintLog, lintSink } from "./log/lint.ts";

/** The version in deno.json, printed by `--version`. */
const VERSION: string = denoJson.version;

const EXIT_CODES = `exit codes: 0 success, 1 runtime failure, 2 usage error`;

/** The overview: `vhost-user-proxy --help`. */
const USAGE =
  `vhost-user-proxy ${VERSION}: a vhost-user man-in-the-middle that relays, decodes and logs

Usage:
  vhost-user-proxy run --listen <front.sock> --backend <back.sock> [options]
      relay between QEMU (connecting to <front.sock>) and a listening back-end
  vhost-user-proxy backend --backend-binary <prog> [options] -- <back-end arguments>
      drop-in back-end program: starts <prog> on a private socket and relays to it
  vhost-user-proxy state show <file> [--json]            decode a dumped device-state blob
  vhost-user-proxy log show <file.jsonl> [filters]       a JSON Lines log as human lines
  vhost-user-proxy log follow <file.jsonl> [filters]     the same, live, until Ctrl-C
  vhost-user-proxy log summary <file.jsonl> [--json]     counts, latencies, transfers, problems
  vhost-user-proxy log diff <a.jsonl> <b.jsonl> [--json] where two conversations part ways
  vhost-user-proxy log explain <source.jsonl> [<destination.jsonl>] [--json]
                                                         why a migration failed
  vhost-user-proxy log lint <file.jsonl> [--json]        which peer broke which spec rule
  vhost-user-proxy ctl <control.sock> status|restart-backend [options]
                                                         ask a proxy started with --control
  vhost-user-proxy --version

Each subcommand has its own help: vhost-user-proxy <subcommand> --help
(e.g. vhost-user-proxy run --help, vhost-user-proxy log show --help).

${EXIT_CODES}; the log tools and state show add their own (see their --help)
`;

/** Options of the relay itself, shared by `run` and `backend`, for their help. */
const ENGINE_HELP =
  `  --log <file.jsonl>       write one JSON object per message and event to <file.jsonl>
  --quiet                  no human-readable log on stderr
  --device-state <mode>    relay (default): stream the back-end's state through the proxy;
                           emulate: hold the state in the proxy for a back-end without
                           F_DEVICE_STATE; off: hide F_DEVICE_STATE from QEMU
  --state-dump <dir>       save every device-state blob into <dir> (an existing, writable
                           directory) as session-<n>-<save|load>-<k>.bin
  --state-buffer           read the whole state before delivering it (validated first)
  --state-hash <alg>       fingerprint every transfer: xxh3-128 (default, inline at stream
                           speed), blake3 or sha256 (both trail the stream on a thread);
                           off = none, a pipe-to-pipe transfer is pure splice
  --state-hash-backlog <MiB>
                           how far a sha256/blake3 hash may trail the stream, held in memory
                           (default 256; 0 = hash inline, the transfer waits for it)
  --fault <spec>           inject a device-state fault (repeatable; relay or emulate):
                           state-corrupt, state-truncate:<bytes>, state-delay:<ms>,
                           check-fail, state-refuse
  --state-save-cmd <cmd>   emulate only: its stdout travels with the proxy state (SAVE)
  --state-load-cmd <cmd>   emulate only: gets that part on stdin at LOAD; non-zero fails CHECK
  --front-dialect <d>      numbering QEMU's side speaks: upstream (default) or rfc2023
  --back-dialect <d>       numbering the back-end speaks: upstream (default) or rfc2023
  --stuck-after <ms>       flag a request still awaiting its reply after <ms>
                           (default 5000, 0 = never)
  --connect-timeout <ms>   keep retrying the back-end this long per connection (default 10000)
  --socket-mode <octal>    mode of the listening socket: 3 octal digits, optionally after a 0
                           (default 0600; 0660 lets the socket's group connect)
  -h, --help               this help`;

/** `<subcommand> --help`, by subcommand. */
const HELP: Record<string, string> = {
  run: `Usage: vhost-user-proxy run --listen <front.sock> --backend <back.sock> [options]

Listens on <front.sock> for QEMU (the front-end); for each connection it connects to the
back-end's socket <back.sock> and relays every message both ways with their fds, decoded and
logged (human lines on stderr, JSON Lines with --log). SIGINT/SIGTERM: stop, remove the
socket, exit 0.

  --listen <path>          socket QEMU connects to (created 0600; a stale file is replaced,
                           a live one refused)
  --backend <path>         the back-end's listening socket; if it is not there yet the proxy
                           says so and retries for --connect-timeout ms on each connection
  --control <path>         a control socket (JSON Lines, 0600) for vhost-user-proxy ctl:
                           status, restart-backend (see: vhost-user-proxy ctl --help)
${ENGINE_HELP}

${EXIT_CODES}
`,
  backend:
    `Usage: vhost-user-proxy backend --backend-binary <prog> [options] -- <back-end arguments>

The proxy as a drop-in vhost-user back-end program (QEMU's back-end program conventions, as
libvirt starts virtiofsd). From the back-end's arguments it takes --socket-path=PATH (or
--socket PATH) or an inherited listening --fd=N, and --print-capabilities; it starts <prog> on a
private socket with every other argument unchanged and relays between QEMU and it. It exits
when the back-end exits, with the back-end's exit status (reported on stderr), and on
SIGTERM/SIGINT (forwarded to the back-end).

  --backend-binary <prog>  the real back-end program (e.g. /usr/libexec/virtiofsd)
  --control <path>         a control socket (JSON Lines, 0600) for vhost-user-proxy ctl:
                           status, restart-backend (see: vhost-user-proxy ctl --help)
  --restart-on-exit        when the back-end exits with QEMU connected, hold QEMU (up to
                           30 s) and start a new back-end without state (virtio-fs: the
                           guest sees EIO until it remounts)
${ENGINE_HELP}

bin/vhost-user-proxy-virtiofsd runs this with, from its environment:
  VUP_BACKEND_BINARY       the real back-end (default /usr/libexec/virtiofsd)
  VUP_PROXY_ARGS           proxy options, split on spaces, e.g.
                           "--log /var/log/vup/fs0.jsonl --state-dump /var/lib/vup"

${EXIT_CODES}; otherwise the back-end's own exit status
`,
  state: `Usage: vhost-user-proxy state show <file> [--json]

Decodes a device-state blob saved with --state-dump: virtiofsd's state (version, inodes,
handles, negotiated FUSE options, the paths the guest holds) or the proxy's emulated state.

  --json                   print the decoded state as JSON
  -h, --help               this help

exit codes: 0 decoded, 1 unreadable file, 2 usage error, 3 unknown format, 4 known format
that fails to decode
`,
  log: `Usage: vhost-user-proxy log <tool> <file.jsonl>… [options]

Tools over the proxy's JSON Lines logs (--log):
  log show <file.jsonl> [filters]        the log as human lines; --problems: what went wrong
  log follow <file.jsonl> [filters]      the same, live, until Ctrl-C
  log summary <file.jsonl> [--json]      counts, reply latencies, transfers, problems
  log diff <a.jsonl> <b.jsonl> [--json]  where two conversations part ways
  log explain <source.jsonl> [<destination.jsonl>] [--json]
                                         why a migration failed
  log lint <file.jsonl> [--json]         conformance lint: which peer broke which spec rule

Each has its own help: vhost-user-proxy log <tool> --help

exit codes: 0 nothing found, 1 problems found (show, follow, summary), the logs differ (diff)
or the migration failed (explain), findings (lint), 2 usage error, 3 unreadable or empty
log, no such session, or (explain) no migration in the logs
`,
  "log show": `Usage: vhost-user-proxy log show <file.jsonl> [filters]

Prints a proxy's JSON Lines log (--log) as human lines; times are UTC ("Z").

  --session <n>            only session <n> (records of no session, e.g. proxy start, stay)
  --name <request>         only messages of this request, any case, VHOST_USER_ optional
                           (e.g. get_features)
  --channel main|backend   only messages on the main socket or the back-end channel
  --problems               only problems: errors, warnings, messages relayed with warnings,
                           failed, cut short or corrupted transfers, refused
                           SET_DEVICE_STATE_FD, failed CHECK_DEVICE_STATE
  -h, --help               this help

exit codes: 0 no problem among the records shown, 1 problems shown, 2 usage error,
3 unreadable or empty log, or no such session
`,
  "log follow": `Usage: vhost-user-proxy log follow <file.jsonl> [filters] [--from-end]

Prints a log as \`log show\` does, then every record appended to it, until SIGINT (Ctrl-C) or
SIGTERM. A truncated or replaced file (rotation) is read again from its start.

  --from-end               skip what the file already holds: only new records
  --session <n>            only session <n>
  --name <request>         only messages of this request (any case, VHOST_USER_ optional)
  --channel main|backend   only messages on the main socket or the back-end channel
  --problems               only problems (as log show --problems)
  -h, --help               this help

exit codes: 0 no problem shown, 1 problems shown, 2 usage error, 3 unreadable log
`,
  "log summary": `Usage: vhost-user-proxy log summary <file.jsonl> [--session <n>] [--json]

Per request: requests, replies, reply latency p50/p99/max; fds; device-state transfers and
CHECK_DEVICE_STATE results; how sessions ended; and every problem (as log show --problems).

  --session <n>            summarise session <n> only
  --json                   the summary as one JSON object
  -h, --help               this help

exit codes: 0 no problems, 1 problems found, 2 usage error,
3 unreadable or empty log, or no such session
`,
  "log diff":
    `Usage: vhost-user-proxy log diff <a.jsonl> <b.jsonl> [--session-a <n>] [--session-b <n>] [--json]

Compares the message sequences of two logs (channel, sender, request, reply or not, number of
fds; not times or addresses) and prints the first message where they part ways and the
requests one side has more of.

  --session-a <n>          compare session <n> of <a.jsonl> only
  --session-b <n>          compare session <n> of <b.jsonl> only
  --json                   the comparison as one JSON object
  -h, --help               this help

exit codes: 0 same conversation, 1 they differ, 2 usage error,
3 unreadable or empty log, or no such session
`,
  "log explain": `Usage: vhost-user-proxy log explain <source.jsonl> [<destination.jsonl>] [--json]

Reads the logs of the source's and the destination's proxies and prints the device-state
steps of both as one timeline (UTC), the fingerprints of the saved and the loaded state, and
a verdict naming the step that failed, the side and the culprit.

  --json                   one object; failed, step, side, culprit and reason are a contract
  -h, --help               this help

exit codes: 0 the migration succeeded, 1 it failed, 2 usage error,
3 no migration in the logs, or a log unreadable or empty
`,
  "log lint": `Usage: vhost-user-proxy log lint <file.jsonl> [--session <n>] [--json]

Checks the conversation in a proxy's log against the vhost-user spec, rule by rule (replies
that must come and none unasked, REPLY_ACK, feature negotiation, reserved fields, memory
regions, the back-end channel's fds, the device-state transfer; the rules and the spec
sentences they check are in the README's "Conformance lint"), and prints every finding per
session with the peer that broke the rule, then a verdict per peer. The proxy runs the same
lint live whenever it logs messages: its findings and verdicts are "lint" records in the log.

  --session <n>            lint session <n> only
  --json                   the report as one JSON object (sessions, their findings and
                           verdicts, the number of findings)
  -h, --help               this help

exit codes: 0 no findings, 1 findings, 2 usage error,
3 unreadable or empty log, no session in it, or no such session
`,
};

/** A bad command line: printed as one line with a pointer to the `--help` of `topic`. */
class UsageError extends Error {
  override name = "UsageError";
  constructor(message: string, readonly topic: string) {
    super(message);
  }
}

/** A failure the user can act on (a missing file, an empty log): one line, then `code`. */
class Failure extends Error {
  override name = "Failure";
  constructor(message: string, readonly code = 1) {
    super(message);
  }
}

/** parseArgs, its errors as usage errors of `topic` (their first sentence). */
function parse<T extends ParseArgsConfig>(topic: string, config: T) {
  try {
    return parseArgs(config);
  } catch (e) {
    if (e instanceof TypeError && "code" in e) {
      // node's messages run to several sentences and lines: keep the first, and the hint for
      // a value that starts with a dash.
      const lines = e.message.split("\n");
      let text = lines[0].split(/\. (?=[A-Z])/)[0].replace(/\.$/, "");
      const dash = lines.find((l) => l.startsWith("To specify an option argument starting"));
      if (dash) text += `: ${dash[0].toLowerCase()}${dash.slice(1).replace(/\.$/, "")}`;
      throw new UsageError(text, topic);
    }
    throw e;
  }
}

/** Whether the user asked for help (`-h`/`--help` before any `--`). */
function wantsHelp(args: readonly string[]): boolean {
  const dash = args.indexOf("--");
  return (dash < 0 ? args : args.slice(0, dash)).some((a) => a === "--help" || a === "-h");
}

function dialectOf(value: string | undefined, flag: string, topic: string): Dialect {
  const v = value ?? "upstream";
  if (v !== "upstream" && v !== "rfc2023") {
    throw new UsageError(`${flag} must be "upstream" or "rfc2023", not "${v}"`, topic);
  }
  return v;
}

/** A whole decimal number, digits only (no sign, exponent, hex or spaces). */
function intOf(value: string | undefined, flag: string, fallback: number, topic: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new UsageError(`${flag} must be a non-negative whole number, not "${value}"`, topic);
  }
  return n;
}

/** A socket mode: three octal digits, optionally after a 0 (`660`, `0660`). */
function socketModeOf(value: string | undefined, topic: string): number {
  if (value === undefined) return 0o600;
  if (!/^0?[0-7]{3}$/.test(value)) {
    throw new UsageError(
      `--socket-mode must be an octal mode like 0660, not "${value}"`,
      topic,
    );
  }
  const mode = parseInt(value, 8);
  if ((mode & 0o600) !== 0o600) {
    warn(topic, `--socket-mode ${value} does not let the socket's owner connect`);
  }
  return mode;
}

/** One warning line on stderr. */
function warn(topic: string, message: string): void {
  console.error(`vhost-user-proxy: ${topic}: warning: ${message}`);
}

/** Options of the relay itself, shared by `run` and `backend`. */
const ENGINE_OPTIONS = {
  log: { type: "string" },
  quiet: { type: "boolean", default: false },
  "socket-mode": { type: "string" },
  "front-dialect": { type: "string" },
  "back-dialect": { type: "string" },
  "device-state": { type: "string" },
  "state-dump": { type: "string" },
  "state-buffer": { type: "boolean", default: false },
  "state-hash": { type: "string" },
  "state-hash-backlog": { type: "string" },
  fault: { type: "string", multiple: true },
  "stuck-after": { type: "string" },
  "connect-timeout": { type: "string" },
  "state-save-cmd": { type: "string" },
  "state-load-cmd": { type: "string" },
} as const;

type EngineValues = {
  [K in keyof typeof ENGINE_OPTIONS]?: typeof ENGINE_OPTIONS[K] extends { multiple: true }
    ? string[]
    : typeof ENGINE_OPTIONS[K] extends { type: "boolean" } ? boolean
    : string;
};

/** Options that cannot work together are refused; options that would do nothing, warned. */
function refuseContradictions(values: EngineValues, mode: string, topic: string): void {
  for (const flag of ["state-save-cmd", "state-load-cmd"] as const) {
    if (values[flag] !== undefined && mode !== "emulate") {
      throw new UsageError(
        `--${flag} needs --device-state emulate (the proxy holds no state in ${mode} mode)`,
        topic,
      );
    }
  }
  if (mode === "off") {
    if (values.fault?.length) {
      throw new UsageError(
        `--fault ${values.fault[0]} cannot act with --device-state off (no state is transferred)`,
        topic,
      );
    }
    const idle = (["state-dump", "state-buffer", "state-hash", "state-hash-backlog"] as const)
      .filter((f) => values[f] !== undefined && values[f] !== false);
    for (const f of idle) warn(topic, `--${f} does nothing with --device-state off`);
  }
  if (values["state-hash"] === "off" && values["state-hash-backlog"] !== undefined) {
    warn(topic, "--state-hash-backlog does nothing with --state-hash off");
  }
  const algorithm = values["state-hash"] ?? DEFAULT_FINGERPRINT;
  if (
    values["state-hash-backlog"] !== undefined && isFingerprintAlgorithm(algorithm) &&
    hashesInline(algorithm)
  ) {
    warn(topic, `--state-hash-backlog does nothing with --state-hash ${algorithm} (hashed inline)`);
  }
}

/** `--state-dump <dir>` must be a directory the proxy can write into, known before listening. */
function checkDumpDir(dir: string, topic: string): void {
  let cause: string | undefined;
  try {
    if (!Deno.statSync(dir).isDirectory) cause = "not a directory";
    else Deno.removeSync(Deno.makeTempFileSync({ dir, prefix: ".vhost-user-proxy-probe-" }));
  } catch (e) {
    cause = ioCause(e);
  }
  if (cause !== undefined) {
    throw new Failure(`${topic}: --state-dump "${dir}" is not a writable directory: ${cause}`);
  }
}

/** The JSON Lines sink, or one line saying why the file cannot be opened. */
function openLog(path: string, topic: string): ReturnType<typeof jsonLinesSink> {
  try {
    return jsonLinesSink(path);
  } catch (e) {
    // The sink's own errors (LogFileError) already name the path and the cause.
    if (e instanceof Error && e.name === "LogFileError") {
      throw new Failure(`${topic}: ${e.message}`);
    }
    throw new Failure(`${topic}: cannot open the log "${path}": ${ioCause(e)}`);
  }
}

/**
 * The back-end's socket as it is at start: a missing one is a warning (the proxy retries while
 * the back-end starts), something that is not a socket is refused (connecting could only fail).
 */
function checkBackendSocket(path: string, timeoutMs: number, topic: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    warn(
      topic,
      `the back-end socket "${path}" is not there (${ioCause(e)}); ` +
        `each connection waits up to ${timeoutMs} ms for it (--connect-timeout)`,
    );
    return;
  }
  if (!info.isSocket) {
    const what = info.isFile ? "a regular file" : info.isDirectory ? "a directory" : "not a socket";
    throw new Failure(`${topic}: --backend "${path}" is ${what}, not a socket`);
  }
}

/**
 * SIGHUP: the log is reopened at its path (after logrotate moved it); the relay goes on. A
 * failure to reopen keeps the old file and says so in it.
 */
function reopenLog(reopen: () => void, sink: Sink): void {
  try {
    reopen();
    sink({ type: "proxy", ts: new Date().toISOString(), event: "log-reopened" });
  } catch (e) {
    sink({
      type: "error",
      ts: new Date().toISOString(),
      message: `SIGHUP: the log could not be reopened, writing on to the old file: ${
        e instanceof Error ? e.message : e
      }`,
    });
  }
}

/** The engine settings and log sinks the shared options describe. */
function engineFrom(values: EngineValues, topic: string) {
  const mode = values["device-state"] ?? "relay";
  if (mode !== "relay" && mode !== "emulate" && mode !== "off") {
    throw new UsageError(`--device-state must be relay, emulate or off, not "${mode}"`, topic);
  }
  const socketMode = socketModeOf(values["socket-mode"], topic);
  const hash = values["state-hash"] ?? DEFAULT_FINGERPRINT;
  if (hash !== "off" && !isFingerprintAlgorithm(hash)) {
    throw new UsageError(
      `--state-hash must be ${FINGERPRINT_ALGORITHMS.join(", ")} or off, not "${hash}"`,
      topic,
    );
  }
  refuseContradictions(values, mode, topic);
  const deviceState: DeviceStateConfig = {
    mode,
    dumpDir: values["state-dump"],
    buffer: values["state-buffer"],
    hash: hash !== "off",
    hashAlgorithm: hash === "off" ? undefined : hash,
    hashBacklogMiB: intOf(
      values["state-hash-backlog"],
      "--state-hash-backlog",
      DEFAULT_HASH_BACKLOG_MIB,
      topic,
    ),
    faults: values.fault ?? [],
    saveCmd: values["state-save-cmd"],
    loadCmd: values["state-load-cmd"],
  };
  const faults = parseFaults(deviceState.faults ?? []);
  if (!faults.ok) throw new UsageError(faults.error, topic);
  const frontDialect = dialectOf(values["front-dialect"], "--front-dialect", topic);
  const backDialect = dialectOf(values["back-dialect"], "--back-dialect", topic);
  const stuckAfterMs = intOf(values["stuck-after"], "--stuck-after", DEFAULT_STUCK_AFTER_MS, topic);
  const connectTimeoutMs = intOf(
    values["connect-timeout"],
    "--connect-timeout",
    DEFAULT_CONNECT_TIMEOUT_MS,
    topic,
  );
  if (deviceState.dumpDir !== undefined) checkDumpDir(deviceState.dumpDir, topic);
  const sinks: Sink[] = [];
  const closers: (() => void)[] = [];
  const reopeners: (() => void)[] = [];
  let firstSession: number | undefined;
  if (!values.quiet) sinks.push(humanSink());
  if (values.log) {
    const j = openLog(values.log, topic);
    sinks.push(j.sink);
    closers.push(j.close);
    reopeners.push(j.reopen);
    // Appending to an earlier run's log: its sessions keep their numbers, ours follow.
    if (j.lastSession > 0) firstSession = j.lastSession + 1;
  }
  const engine: Omit<EngineConfig, "listen" | "backend"> = {
    frontDialect,
    backDialect,
    stuckAfterMs,
    connectTimeoutMs,
    logMessages: sinks.length > 0,
    deviceState,
    ...(firstSession === undefined ? {} : { firstSession }),
  };
  return {
    engine,
    socketMode,
    // The conformance lint runs over the records on their way to the sinks (main thread).
    sink: sinks.length > 0 ? lintSink(fanOut(...sinks)) : fanOut(...sinks),
    close: () => closers.forEach((c) => c()),
    reopen: () => reopeners.forEach((r) => r()),
  };
}

async function runCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse("run", {
    args,
    strict: true,
    allowPositionals: true,
    options: {
      listen: { type: "string" },
      backend: { type: "string" },
      control: { type: "string" },
      ...ENGINE_OPTIONS,
    },
  });
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}"`, "run");
  }
  if (!values.listen) throw new UsageError("--listen <path> is required", "run");
  if (!values.backend) throw new UsageError("--backend <path> is required", "run");
  // Before the log is opened: a second proxy on a live socket must not touch the first's log.
  try {
    refuseLoop(values.listen, values.backend);
    checkListenPath(values.listen);
  } catch (e) {
    throw new Failure(`run: ${e instanceof Error ? e.message : e}`);
  }
  const { engine, socketMode, sink, close, reopen } = engineFrom(values, "run");
  try {
    checkBackendSocket(values.backend, engine.connectTimeoutMs, "run");
  } catch (e) {
    close();
    throw e;
  }
  const config: EngineConfig = {
    ...engine,
    listen: { path: values.listen, mode: socketMode },
    backend: values.backend,
    ...(values.control ? { restartable: true } : {}),
  };
  let proxy: RunningProxy | undefined;
  let control: ControlServer | undefined;
  let signalled = false;
  const unlisten = listenForStopSignals(() => {
    signalled = true;
    proxy?.stop("signal received");
  }, () => reopenLog(reopen, sink));
  try {
    try {
      proxy = await startProxy(config, sink);
    } catch (e) {
      console.error(`vhost-user-proxy: run: ${e instanceof Error ? e.message : e}`);
      return 1;
    }
    if (values.control) {
      try {
        control = serveRunControl(values.control, proxy);
      } catch (e) {
        await proxy.stop("the control socket could not be created");
        throw new Failure(
          `run: cannot create the control socket "${values.control}": ${
            e instanceof Error ? e.message : e
          }`,
        );
      }
    }
    if (signalled) proxy.stop("signal received");
    await proxy.finished;
    return 0;
  } finally {
    control?.close();
    unlisten();
    close();
  }
}

/** The control socket of `run`: requests go to the relay's thread as they are. */
function serveRunControl(path: string, proxy: RunningProxy): ControlServer {
  return serveControl(path, (raw) => {
    const request = parseControlRequest(raw);
    if (typeof request === "string") return Promise.resolve({ ok: false, error: request });
    if ("binary" in raw && raw.binary !== undefined) {
      return Promise.resolve({
        ok: false,
        error: "--binary is for the drop-in (backend) mode; in run mode give --backend <socket>",
      });
    }
    return proxy.control(request);
  });
}

/** How long QEMU is held for a new back-end after its back-end exited (`--restart-on-exit`). */
const RESTART_HOLD_MS = 30_000;

/** `backend --backend-binary B [options] -- <back-end's own arguments>`: the drop-in mode. */
async function backendCommand(args: string[]): Promise<number> {
  const dash = args.indexOf("--");
  const ours = dash < 0 ? args : args.slice(0, dash);
  const theirs = dash < 0 ? [] : args.slice(dash + 1);
  const { values, positionals } = parse("backend", {
    args: ours,
    strict: true,
    allowPositionals: true,
    options: {
      "backend-binary": { type: "string" },
      control: { type: "string" },
      "restart-on-exit": { type: "boolean", default: false },
      ...ENGINE_OPTIONS,
    },
  });
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument "${positionals[0]}": the back-end's arguments go after "--"`,
      "backend",
    );
  }
  const binary = values["backend-binary"];
  if (!binary) {
    throw new UsageError("--backend-binary <path of the real back-end> is required", "backend");
  }
  const { engine, socketMode, sink, close } = engineFrom(values, "backend");
  try {
    return await runBackendWrapper(theirs, {
      binary,
      engine: values.control || values["restart-on-exit"]
        ? {
          ...engine,
          restartable: true,
          ...(values["restart-on-exit"] ? { holdOnBackendLossMs: RESTART_HOLD_MS } : {}),
        }
        : engine,
      socketMode,
      onRecord: sink,
      ...(values.control ? { control: values.control } : {}),
      ...(values["restart-on-exit"] ? { restartOnExit: true } : {}),
    });
  } catch (e) {
    // Only the back-end's command line is a usage error; any other failure is reported as such.
    if (e instanceof BackendArgsError) throw new UsageError(e.message, "backend");
    throw e;
  } finally {
    close();
  }
}

async function stateCommand(args: string[]): Promise<number> {
  if (wantsHelp(args)) return help("state");
  const [verb, ...rest] = args;
  if (verb !== "show") {
    throw new UsageError(
      `unknown state subcommand "${verb ?? ""}": try "state show <file>"`,
      "state",
    );
  }
  const { values, positionals } = parse("state show", {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 1) {
    throw new UsageError("exactly one <file> is required", "state show");
  }
  // Loaded here: it instantiates the WebAssembly hashes, which `run`'s main thread never needs.
  const { stateShow } = await import("./device_state/state_show.ts");
  return stateShow(positionals[0], { json: values.json });
}

/** Prints the help of `topic` on stdout; exit code 0. */
function help(topic: string): number {
  console.log(HELP[topic === "state show" ? "state" : topic] ?? USAGE);
  return 0;
}

/** Filters shared by `log show` and `log follow`. */
const FILTER_OPTIONS = {
  session: { type: "string" },
  name: { type: "string" },
  channel: { type: "string" },
  problems: { type: "boolean", default: false },
} as const;

/** Lines of a log that are not records: shown, but at most this many. */
const MAX_LINE_PROBLEMS = 5;

/** A log's records, or a {@linkcode Failure} (exit 3) saying why there are none. */
function load(path: string, topic: string): LogRecord[] {
  const log = loadLog(path);
  if (!log.ok) throw new Failure(`${topic}: ${lowerFirst(log.error)}`, 3);
  for (const p of log.problems.slice(0, MAX_LINE_PROBLEMS)) warn(topic, `${path}: ${p}`);
  if (log.problems.length > MAX_LINE_PROBLEMS) {
    warn(topic, `${path}: ${log.problems.length - MAX_LINE_PROBLEMS} more lines are not records`);
  }
  return log.records;
}

/** A library's sentence (`Cannot read log …`) as the rest of a CLI line (`cannot read log …`). */
function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** `--session N` of a log that must hold session N (exit 3 otherwise). */
function sessionOf(
  value: string | undefined,
  flag: string,
  topic: string,
  records: LogRecord[] | undefined,
  path: string,
): number | undefined {
  if (value === undefined) return undefined;
  const n = intOf(value, flag, 0, topic);
  if (records === undefined) return n;
  const sessions = sessionsOf(records);
  if (!sessions.includes(n)) {
    const has = sessions.length === 0
      ? "it holds no session"
      : `its sessions: ${sessions.join(", ")}`;
    throw new Failure(`${topic}: there is no session ${n} in "${path}" (${has})`, 3);
  }
  return n;
}

/** The filter the options describe; `records` (when already read) must hold the session. */
function filterOf(
  values: { session?: string; name?: string; channel?: string; problems?: boolean },
  topic: string,
  records: LogRecord[] | undefined,
  path: string,
): ShowFilter {
  const channel = values.channel;
  if (channel !== undefined && channel !== "main" && channel !== "backend") {
    throw new UsageError(`--channel must be main or backend, not "${channel}"`, topic);
  }
  const name = values.name;
  if (name !== undefined) {
    const normal = name.toUpperCase().replace(/^VHOST_USER_/, "");
    const known = REQUESTS.some((r) => r.name === normal) ||
      records?.some((r) => r.type === "message" && r.name.toUpperCase() === normal);
    if (!known) {
      throw new UsageError(
        `--name "${name}" is not a vhost-user request (e.g. GET_FEATURES, set_vring_call)`,
        topic,
      );
    }
  }
  return {
    session: sessionOf(values.session, "--session", topic, records, path),
    name,
    channel,
    problemsOnly: values.problems,
  };
}

/** The line `log show` prints: the record, or with `--problems` what went wrong in it. */
function shownLine(r: LogRecord, problemsOnly: boolean | undefined): string {
  const problem = problemsOnly ? problemOf(r) : undefined;
  return problem === undefined ? formatRecord(r) : `${timeOfDay(r.ts)} ${problem}`;
}

function oneFile(positionals: string[], topic: string, what = "<file.jsonl>"): string {
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? `${what} is required` : `one ${what}, not ${positionals.length}`,
      topic,
    );
  }
  return positionals[0];
}

function logShow(rest: string[]): number {
  const topic = "log show";
  const { values, positionals } = parse(topic, {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: FILTER_OPTIONS,
  });
  const path = oneFile(positionals, topic);
  const records = load(path, topic);
  const filter = filterOf(values, topic, records, path);
  const shown = records.filter(showFilter(filter));
  for (const r of shown) console.log(shownLine(r, filter.problemsOnly));
  const problems = shown.filter((r) => problemOf(r) !== undefined).length;
  if (shown.length === 0) {
    console.error(
      `vhost-user-proxy: ${topic}: ${
        filter.problemsOnly ? "no problems" : "no record matches"
      } in "${path}" (${records.length} records)`,
    );
  }
  return problems > 0 ? 1 : 0;
}

async function logFollow(rest: string[]): Promise<number> {
  const topic = "log follow";
  const { values, positionals } = parse(topic, {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { ...FILTER_OPTIONS, "from-end": { type: "boolean", default: false } },
  });
  const path = oneFile(positionals, topic);
  // Sessions may begin after we start, so --session is not checked against the file.
  const filter = filterOf(values, topic, undefined, path);
  const pass = showFilter(filter);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  let problems = 0;
  try {
    const records = followLog(path, {
      fromEnd: values["from-end"],
      signal: stop.signal,
      onProblem: (p) => warn(topic, `${path}: ${p}`),
    });
    for await (const r of records) {
      if (!pass(r)) continue;
      console.log(shownLine(r, filter.problemsOnly));
      if (problemOf(r) !== undefined) problems++;
    }
  } catch (e) {
    throw new Failure(`${topic}: ${lowerFirst(e instanceof Error ? e.message : String(e))}`, 3);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
  return problems > 0 ? 1 : 0;
}

/** `<tool> <file.jsonl> [--session N] [--json]`: the log read, the session checked against it. */
function oneLog(topic: string, rest: string[]) {
  const { values, positionals } = parse(topic, {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { session: { type: "string" }, json: { type: "boolean", default: false } },
  });
  const path = oneFile(positionals, topic);
  const records = load(path, topic);
  const session = sessionOf(values.session, "--session", topic, records, path);
  return { json: values.json, path, records, session };
}

function logSummary(rest: string[]): number {
  const topic = "log summary";
  const { json, records, session } = oneLog(topic, rest);
  const s = summarizeLog(records, { session });
  if (json) console.log(JSON.stringify(s, null, 2));
  else for (const l of formatSummary(s)) console.log(l);
  return s.problems.length > 0 ? 1 : 0;
}

function logDiff(rest: string[]): number {
  const topic = "log diff";
  const { values, positionals } = parse(topic, {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: {
      "session-a": { type: "string" },
      "session-b": { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (positionals.length !== 2) {
    throw new UsageError("two logs are required: <a.jsonl> <b.jsonl>", topic);
  }
  const [pathA, pathB] = positionals;
  const a = load(pathA, topic);
  const b = load(pathB, topic);
  const d = diffLogs(a, b, {
    sessionA: sessionOf(values["session-a"], "--session-a", topic, a, pathA),
    sessionB: sessionOf(values["session-b"], "--session-b", topic, b, pathB),
  });
  if (values.json) console.log(JSON.stringify(d, null, 2));
  else if (d.same) console.log(`same conversation: ${d.leftMessages} messages`);
  else {
    console.log(`conversations differ at message ${d.firstDifference! + 1}:`);
    console.log(`  ${pathA}: ${d.left}`);
    console.log(`  ${pathB}: ${d.right}`);
    for (const c of d.counts) console.log(`  ${c.signature}: ${c.left} vs ${c.right}`);
  }
  return d.same ? 0 : 1;
}

function logExplain(rest: string[]): number {
  const topic = "log explain";
  const { values, positionals } = parse(topic, {
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false } },
  });
  if (positionals.length < 1 || positionals.length > 2) {
    throw new UsageError("<source.jsonl> [<destination.jsonl>] are required", topic);
  }
  const [source, destination] = positionals;
  const e = explainMigration(
    load(source, topic),
    destination ? load(destination, topic) : undefined,
  );
  if (values.json) console.log(JSON.stringify(e, null, 2));
  else console.log(formatExplanation(e));
  return e.failed ? 1 : e.found ? 0 : 3;
}

function logLint(rest: string[]): number {
  const topic = "log lint";
  const { json, path, records, session } = oneLog(topic, rest);
  const report = lintLog(records);
  if (session !== undefined) {
    report.sessions = report.sessions.filter((s) => s.session === session);
    report.unjudged = report.unjudged.filter((s) => s === session);
    report.findings = report.sessions.reduce(
      (n, s) => n + s.verdicts.reduce((m, v) => m + v.findings, 0),
      0,
    );
  }
  if (report.sessions.length === 0) {
    throw new Failure(`${topic}: no session to lint in "${path}" (${records.length} records)`, 3);
  }
  if (json) console.log(JSON.stringify(report, null, 2));
  else for (const l of formatLintReport(report)) console.log(l);
  return report.findings > 0 ? 1 : 0;
}

async function logCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === undefined || verb === "--help" || verb === "-h") {
    if (verb === undefined) {
      throw new UsageError(
        "a log tool is required: show, follow, summary, diff, explain or lint",
        "log",
      );
    }
    return help("log");
  }
  const topic = `log ${verb}`;
  if (HELP[topic] !== undefined && wantsHelp(rest)) return help(topic);
  switch (verb) {
    case "show":
      return logShow(rest);
    case "follow":
      return await logFollow(rest);
    case "summary":
      return logSummary(rest);
    case "diff":
      return logDiff(rest);
    case "explain":
      return logExplain(rest);
    case "lint":
      return logLint(rest);
    default:
      throw new UsageError(
        `unknown log tool "${verb}": show, follow, summary, diff, explain or lint`,
        "log",
      );
  }
}

/** An error's message in one line. */
function oneLine(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return text.replace(/\s*\n\s*/g, " ");
}

/** What `main` prints for an error nobody expected: one line, never a stack (VUP_DEBUG=1 adds it). */
function reportUnexpected(e: unknown): void {
  console.error(
    `vhost-user-proxy: unexpected error: ${oneLine(e)} ` +
      `(a bug; please report it with the command line; VUP_DEBUG=1 shows where)`,
  );
  if (Deno.env.get("VUP_DEBUG") && e instanceof Error) console.error(e.stack);
}

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case "run":
        return wantsHelp(rest) ? help("run") : await runCommand(rest);
      case "backend":
        return wantsHelp(rest) ? help("backend") : await backendCommand(rest);
      case "state":
        return await stateCommand(rest);
      case "log":
        return await logCommand(rest);
      case "ctl":
        return await ctlCommand(rest);
      case "--version":
      case "-V":
      case "version":
        console.log(`vhost-user-proxy ${VERSION}`);
        return 0;
      case undefined:
        throw new UsageError("a subcommand is required: run, backend, state, log or ctl", "");
      case "help":
      case "--help":
      case "-h": {
        const topic = rest.join(" ");
        if (topic !== "" && topic !== "state show" && HELP[topic] === undefined) {
          throw new UsageError(`no help on "${topic}"`, "");
        }
        return help(topic);
      }
      default:
        throw new UsageError(`unknown subcommand "${sub}"`, "");
    }
  } catch (e) {
    if (e instanceof UsageError) {
      const where = e.topic === "" ? "" : `${e.topic}: `;
      const see = e.topic === "" ? "vhost-user-proxy --help" : `vhost-user-proxy ${e.topic} --help`;
      console.error(`vhost-user-proxy: ${where}${e.message} (see: ${see})`);
      return 2;
    }
    if (e instanceof Failure) {
      console.error(`vhost-user-proxy: ${e.message}`);
      return e.code;
    }
    reportUnexpected(e);
    return 1;
  }
}

if (import.meta.main) {
  // Errors outside main's await (a timer, a worker): the same one line, exit 1.
  globalThis.addEventListener("unhandledrejection", (ev) => {
    ev.preventDefault();
    reportUnexpected(ev.reason);
    Deno.exit(1);
  });
  globalThis.addEventListener("error", (ev) => {
    ev.preventDefault();
    reportUnexpected(ev.error ?? ev.message);
    Deno.exit(1);
  });
  Deno.exit(await main(Deno.args));
}

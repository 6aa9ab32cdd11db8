/**
 * Command-line entry: `vhost-user-proxy <subcommand> …`. Parsing uses `node:util`'s parseArgs
 * (a maintained built-in; JSR libraries cannot be fetched here).
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Dialect } from "./proxy/catalogue.ts";
import {
  DEFAULT_HASH_BACKLOG_MIB,
  type DeviceStateConfig,
  type EngineConfig,
  refuseLoop,
} from "./proxy/engine.ts";
import { fanOut, humanSink, jsonLinesSink, type Sink } from "./proxy/log_sink.ts";
import { listenForStopSignals, type RunningProxy, startProxy } from "./proxy/server.ts";
import { checkListenPath } from "./ffi/socket.ts";
import { parseFaults } from "./proxy/faults.ts";
import { stateShow } from "./proxy/state_show.ts";
import { runBackendWrapper } from "./proxy/backend_wrapper.ts";
import { diffLogs, formatSummary, readLog, showLog, summarizeLog } from "./proxy/log_tools.ts";
import { explainMigration, formatExplanation } from "./proxy/log_explain.ts";

const USAGE = `vhost-user-proxy: a vhost-user man-in-the-middle that relays, decodes and logs

Usage:
  vhost-user-proxy run --listen <front.sock> --backend <back.sock> [options]
  vhost-user-proxy backend --backend-binary <prog> [options] -- <back-end arguments>
      drop-in back-end program: takes --socket-path/--fd/--print-capabilities, starts <prog>
      on a private socket with the other arguments, relays between QEMU and it
  vhost-user-proxy state show <file> [--json]   decode a dumped device-state blob
  vhost-user-proxy log show <file.jsonl> [--session N] [--name REQ] [--channel main|backend] [--problems]
  vhost-user-proxy log summary <file.jsonl> [--json]   counts, reply latencies, transfers, problems
  vhost-user-proxy log diff <a.jsonl> <b.jsonl> [--session-a N] [--session-b N]   where two runs part ways
  vhost-user-proxy log explain <source.jsonl> [<destination.jsonl>] [--json]   why a migration failed
      (exit 0: the migration succeeded, 1: it failed, 3: no migration in the logs)

run options:
  --listen <path>          socket QEMU connects to (created 0600; a stale file is replaced)
  --backend <path>         the back-end's listening socket
  --log <file.jsonl>       one JSON object per message and event
  --quiet                  no human-readable log on stderr
  --socket-mode <octal>    mode of the --listen socket (default 0600, e.g. 0660 for a group)
  --front-dialect <d>      numbering QEMU's side speaks: upstream (default) or rfc2023
  --back-dialect <d>       numbering the back-end speaks: upstream (default) or rfc2023
  --device-state <mode>    relay (default), emulate, off
  --state-dump <dir>       save every device-state blob into <dir>
  --state-buffer           read the whole state before delivering it
  --state-hash sha256|off  fingerprint every transfer (default sha256; off = pure splice)
  --state-hash-backlog <MiB>
                           bytes the SHA-256 may trail the stream by, held in memory
                           (default 256; 0 = hash inline, the transfer waits for it)
  --fault <spec>           inject a device-state fault (repeatable): state-corrupt,
                           state-truncate:<bytes>, state-delay:<ms>, check-fail, state-refuse
  --state-save-cmd <cmd>   emulate: its stdout travels with the proxy state (SAVE)
  --state-load-cmd <cmd>   emulate: gets that part on stdin at LOAD; non-zero fails CHECK
  --stuck-after <ms>       flag a request still awaiting its reply after <ms> (default 5000)
  --connect-timeout <ms>   keep retrying the back-end this long (default 10000)
`;

/** Thrown for bad command lines; printed without a stack. */
class UsageError extends Error {
  override name = "UsageError";
}

function dialectOf(value: string | undefined, flag: string): Dialect {
  const v = value ?? "upstream";
  if (v !== "upstream" && v !== "rfc2023") {
    throw new UsageError(`${flag} must be "upstream" or "rfc2023", not "${v}"`);
  }
  return v;
}

function intOf(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new UsageError(`${flag} must be a non-negative integer, not "${value}"`);
  }
  return n;
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
function engineFrom(values: EngineValues) {
  const mode = values["device-state"] ?? "relay";
  if (mode !== "relay" && mode !== "emulate" && mode !== "off") {
    throw new UsageError(`--device-state must be relay, emulate or off, not "${mode}"`);
  }
  const socketMode = values["socket-mode"] === undefined
    ? 0o600
    : parseInt(values["socket-mode"], 8);
  if (!Number.isInteger(socketMode) || socketMode < 0 || socketMode > 0o777) {
    throw new UsageError(`--socket-mode must be octal like 0660, not "${values["socket-mode"]}"`);
  }
  const hash = values["state-hash"] ?? "sha256";
  if (hash !== "sha256" && hash !== "off") {
    throw new UsageError(`--state-hash must be sha256 or off, not "${hash}"`);
  }
  const deviceState: DeviceStateConfig = {
    mode,
    dumpDir: values["state-dump"],
    buffer: values["state-buffer"],
    hash: hash === "sha256",
    hashBacklogMiB: intOf(
      values["state-hash-backlog"],
      "--state-hash-backlog",
      DEFAULT_HASH_BACKLOG_MIB,
    ),
    faults: values.fault ?? [],
    saveCmd: values["state-save-cmd"],
    loadCmd: values["state-load-cmd"],
  };
  const faults = parseFaults(deviceState.faults ?? []);
  if (!faults.ok) throw new UsageError(faults.error);
  const sinks: Sink[] = [];
  const closers: (() => void)[] = [];
  const reopeners: (() => void)[] = [];
  let firstSession: number | undefined;
  if (!values.quiet) sinks.push(humanSink());
  if (values.log) {
    const j = jsonLinesSink(values.log);
    sinks.push(j.sink);
    closers.push(j.close);
    reopeners.push(j.reopen);
    // Appending to an earlier run's log: its sessions keep their numbers, ours follow.
    if (j.lastSession > 0) firstSession = j.lastSession + 1;
  }
  const engine: Omit<EngineConfig, "listen" | "backend"> = {
    frontDialect: dialectOf(values["front-dialect"], "--front-dialect"),
    backDialect: dialectOf(values["back-dialect"], "--back-dialect"),
    stuckAfterMs: intOf(values["stuck-after"], "--stuck-after", 5000),
    connectTimeoutMs: intOf(values["connect-timeout"], "--connect-timeout", 10_000),
    logMessages: sinks.length > 0,
    deviceState,
    ...(firstSession === undefined ? {} : { firstSession }),
  };
  return {
    engine,
    socketMode,
    sink: fanOut(...sinks),
    close: () => closers.forEach((c) => c()),
    reopen: () => reopeners.forEach((r) => r()),
  };
}

async function runCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { listen: { type: "string" }, backend: { type: "string" }, ...ENGINE_OPTIONS },
  });
  if (!values.listen) throw new UsageError("run needs --listen <path>");
  if (!values.backend) throw new UsageError("run needs --backend <path>");
  // Before the log is opened: a second proxy on a live socket must not touch the first's log.
  try {
    refuseLoop(values.listen, values.backend);
    checkListenPath(values.listen);
  } catch (e) {
    console.error(`vhost-user-proxy: run: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
  let logged;
  try {
    logged = engineFrom(values);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    console.error(`vhost-user-proxy: run: ${e instanceof Error ? e.message : e}`);
    return 1;
  }
  const { engine, socketMode, sink, close, reopen } = logged;
  const config: EngineConfig = {
    ...engine,
    listen: { path: values.listen, mode: socketMode },
    backend: values.backend,
  };
  let proxy: RunningProxy | undefined;
  let signalled = false;
  const unlisten = listenForStopSignals(() => {
    signalled = true;
    proxy?.stop("signal received");
  }, () => reopenLog(reopen, sink));
  try {
    try {
      proxy = await startProxy(config, sink);
    } catch (e) {
      console.error(`vhost-user-proxy: ${e instanceof Error ? e.message : e}`);
      return 1;
    }
    if (signalled) proxy.stop("signal received");
    await proxy.finished;
    return 0;
  } finally {
    unlisten();
    close();
  }
}

/** `backend --backend-binary B [options] -- <back-end's own arguments>`: the drop-in mode. */
async function backendCommand(args: string[]): Promise<number> {
  const dash = args.indexOf("--");
  const ours = dash < 0 ? args : args.slice(0, dash);
  const theirs = dash < 0 ? [] : args.slice(dash + 1);
  const { values } = parseArgs({
    args: ours,
    strict: true,
    options: { "backend-binary": { type: "string" }, ...ENGINE_OPTIONS },
  });
  const binary = values["backend-binary"];
  if (!binary) throw new UsageError("backend needs --backend-binary <path of the real back-end>");
  const { engine, sink, close } = engineFrom(values);
  try {
    return await runBackendWrapper(theirs, { binary, engine, onRecord: sink });
  } catch (e) {
    if (e instanceof TypeError) throw new UsageError(e.message);
    throw e;
  } finally {
    close();
  }
}

function stateCommand(args: string[]): number {
  const [verb, ...rest] = args;
  if (verb !== "show") {
    throw new UsageError(`unknown state subcommand "${verb ?? ""}": try "state show <file>"`);
  }
  const { values, positionals } = parseArgs({
    args: rest,
    strict: true,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false } },
  });
  if (positionals.length !== 1) throw new UsageError("state show needs exactly one <file>");
  return stateShow(positionals[0], { json: values.json });
}

function logCommand(args: string[]): number {
  const [verb, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    strict: true,
    allowPositionals: true,
    options: {
      session: { type: "string" },
      name: { type: "string" },
      channel: { type: "string" },
      problems: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      "session-a": { type: "string" },
      "session-b": { type: "string" },
    },
  });
  const load = (path: string) => {
    const { records, problems } = readLog(path);
    for (const p of problems) console.error(`vhost-user-proxy: ${path}: ${p}`);
    return records;
  };
  const num = (v: string | undefined, flag: string) =>
    v === undefined ? undefined : intOf(v, flag, 0);
  switch (verb) {
    case "show": {
      if (positionals.length !== 1) throw new UsageError("log show needs exactly one <file.jsonl>");
      const lines = showLog(load(positionals[0]), {
        session: num(values.session, "--session"),
        name: values.name,
        channel: values.channel,
        problemsOnly: values.problems,
      });
      for (const l of lines) console.log(l);
      return 0;
    }
    case "summary": {
      if (positionals.length !== 1) {
        throw new UsageError("log summary needs exactly one <file.jsonl>");
      }
      const s = summarizeLog(load(positionals[0]));
      if (values.json) console.log(JSON.stringify(s, null, 2));
      else for (const l of formatSummary(s)) console.log(l);
      return s.errors.length > 0 ? 1 : 0;
    }
    case "diff": {
      if (positionals.length !== 2) throw new UsageError("log diff needs <a.jsonl> <b.jsonl>");
      const d = diffLogs(load(positionals[0]), load(positionals[1]), {
        sessionA: num(values["session-a"], "--session-a"),
        sessionB: num(values["session-b"], "--session-b"),
      });
      if (values.json) console.log(JSON.stringify(d, null, 2));
      else if (d.same) console.log(`same conversation: ${d.leftMessages} messages`);
      else {
        console.log(`conversations differ at message ${d.firstDifference! + 1}:`);
        console.log(`  ${positionals[0]}: ${d.left}`);
        console.log(`  ${positionals[1]}: ${d.right}`);
        for (const c of d.counts) console.log(`  ${c.signature}: ${c.left} vs ${c.right}`);
      }
      return d.same ? 0 : 1;
    }
    case "explain": {
      if (positionals.length < 1 || positionals.length > 2) {
        throw new UsageError("log explain needs <source.jsonl> [<destination.jsonl>]");
      }
      const [source, destination] = positionals;
      const e = explainMigration(load(source), destination ? load(destination) : undefined);
      if (values.json) console.log(JSON.stringify(e, null, 2));
      else console.log(formatExplanation(e));
      return e.failed ? 1 : e.found ? 0 : 3;
    }
    default:
      throw new UsageError(
        `unknown log subcommand "${verb ?? ""}": show, summary, diff or explain`,
      );
  }
}

/** Runs the CLI with `args`; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case "run":
        return await runCommand(rest);
      case "state":
        return stateCommand(rest);
      case "backend":
        return await backendCommand(rest);
      case "log":
        return logCommand(rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return sub === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown subcommand "${sub}"`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e instanceof TypeError && "code" in e)) {
      console.error(`vhost-user-proxy: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));

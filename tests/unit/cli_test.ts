/**
 * The command line as a user meets it, through `main()` in this process: help for every
 * subcommand, one-line usage errors with a pointer to the right help (exit 2), strict values,
 * contradictions refused, no stack trace for a missing file or an empty log, start-time checks,
 * and the log tools' problems, filters and exit codes on logs the real proxy wrote.
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import denoJson from "../../deno.json" with { type: "json" };
import { createPipe, readFd, writeFd } from "../../ffi/pipe.ts";
import type { LogRecord } from "../../log/record.ts";
import { readU64, u64 } from "../support/scripted_peer.ts";
import { rig } from "../support/proxy_rig.ts";

/** Runs `main(args)` with console.log/console.error captured. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  let code: number;
  try {
    code = await main(args);
  } finally {
    console.log = log;
    console.error = error;
  }
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}

/** stderr is exactly one line matching `re`, with no stack frame. */
function oneLine(stderr: string, re: RegExp): void {
  const lines = stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line expected, got:\n${stderr}`);
  assert.match(lines[0], re);
  assert.doesNotMatch(stderr, /\n\s+at |\.ts:\d+:\d+/);
}

async function usageError(args: string[], topic: string, re: RegExp): Promise<void> {
  const r = await cli(...args);
  assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
  assert.equal(r.stdout, "", "a usage error prints nothing on stdout");
  oneLine(r.stderr, re);
  const help = topic === "" ? "vhost-user-proxy --help" : `vhost-user-proxy ${topic} --help`;
  assert.ok(
    r.stderr.endsWith(`(see: ${help})`),
    `pointer to "${topic} --help" expected: ${r.stderr}`,
  );
}

const ENGINE_FLAGS = [
  "--log",
  "--quiet",
  "--socket-mode",
  "--front-dialect",
  "--back-dialect",
  "--device-state",
  "--state-dump",
  "--state-buffer",
  "--state-hash",
  "--state-hash-backlog",
  "--fault",
  "--stuck-after",
  "--connect-timeout",
  "--state-save-cmd",
  "--state-load-cmd",
];

Deno.test("CLI: every subcommand has --help (stdout, exit 0) naming its options; --version", async () => {
  const helps: [string[], string, string[]][] = [
    [["run"], "run", ["--listen", "--backend", "--control", ...ENGINE_FLAGS]],
    [["backend"], "backend", [
      "--backend-binary",
      "--control",
      "--restart-on-exit",
      ...ENGINE_FLAGS,
      "VUP_BACKEND_BINARY",
      "VUP_PROXY_ARGS",
    ]],
    [["state", "show"], "state show", ["--json"]],
    [["state"], "state show", ["--json"]],
    [["log", "show"], "log show", ["--session", "--name", "--channel", "--problems"]],
    [["log", "follow"], "log follow", ["--session", "--name", "--channel", "--from-end"]],
    [["log", "summary"], "log summary", ["--session", "--json"]],
    [["log", "diff"], "log diff", ["--session-a", "--session-b", "--json"]],
    [["log", "explain"], "log explain", ["--json"]],
  ];
  for (const [words, usage, flags] of helps) {
    for (const h of ["--help", "-h"]) {
      const r = await cli(...words, h);
      assert.equal(r.code, 0, `${words.join(" ")} ${h}: ${r.stderr}`);
      assert.equal(r.stderr, "");
      assert.match(r.stdout, new RegExp(`^Usage: vhost-user-proxy ${usage}`));
      assert.match(r.stdout, /exit codes: 0 /);
      for (const f of flags) assert.ok(r.stdout.includes(f), `${words.join(" ")} help: ${f}`);
    }
  }
  const top = await cli("--help");
  assert.equal(top.code, 0);
  for (const sub of ["run", "backend", "state show", "log show", "log follow", "log diff", "ctl"]) {
    assert.ok(top.stdout.includes(`vhost-user-proxy ${sub}`), sub);
  }
  assert.match(top.stdout, /exit codes: 0 success, 1 runtime failure, 2 usage error/);
  // --help after "--" belongs to the back-end, not to the drop-in.
  const passed = await cli("backend", "--backend-binary", "/x", "--socket-mode", "0o1", "--", "-h");
  assert.equal(passed.code, 2);
  const v = await cli("--version");
  assert.deepEqual([v.code, v.stdout], [0, `vhost-user-proxy ${denoJson.version}`]);
});

Deno.test("CLI: a usage error is one line on stderr with a pointer to the right --help, exit 2", async () => {
  await usageError(["run", "--bogus"], "run", /^vhost-user-proxy: run: Unknown option '--bogus'/);
  await usageError(["run", "--listen", "x"], "run", /--backend <path> is required/);
  await usageError(["backend"], "backend", /--backend-binary .* is required/);
  await usageError(["frob"], "", /unknown subcommand "frob"/);
  await usageError([], "", /^vhost-user-proxy: a subcommand is required: run, backend, state, log/);
  await usageError(["log", "grep", "x"], "log", /unknown log tool "grep"/);
  await usageError(["log", "show"], "log show", /<file.jsonl> is required/);
  await usageError(["log", "show", "x", "--session-a", "1"], "log show", /'--session-a'/);
  await usageError(
    ["state", "show"],
    "state show",
    /^vhost-user-proxy: state show: exactly one <file>/,
  );
  await usageError(["state", "shew", "x"], "state", /unknown state subcommand "shew"/);
});

Deno.test("CLI: strict values: --socket-mode is an octal mode, integers are digits", async () => {
  const base = ["run", "--listen", "/nonexistent/f.sock", "--backend", "/nonexistent/b.sock"];
  for (const bad of ["0o660", "0660x", "0", "660 ", "+660", "0x1b0", "06600", "0680"]) {
    await usageError(
      [...base, "--socket-mode", bad],
      "run",
      new RegExp(`--socket-mode must be an octal mode like 0660, not "${RegExp.escape(bad)}"`),
    );
  }
  for (const bad of ["1e3", "0x10", "", " 5", "5.0", "+1"]) {
    await usageError(
      [...base, "--stuck-after", bad],
      "run",
      /--stuck-after must be a non-negative/,
    );
  }
  await usageError(
    [...base, "--stuck-after", "-1"],
    "run",
    /'--stuck-after' argument is ambiguous: to specify .* use '--stuck-after=-XYZ'/,
  );
  // Accepted: the command goes on to the next check (a missing --state-dump: exit 1, not 2).
  for (const good of ["0660", "660", "0600"]) {
    const r = await cli(...base, "--socket-mode", good, "--state-dump", "/nonexistent/dump");
    assert.equal(r.code, 1, `${good}: ${r.stderr}`);
  }
});

Deno.test("CLI: contradictory options are refused; options that would do nothing are warned", async () => {
  const base = ["run", "--listen", "/nonexistent/f.sock", "--backend", "/nonexistent/b.sock"];
  await usageError(
    [...base, "--device-state", "off", "--fault", "check-fail"],
    "run",
    /--fault check-fail cannot act with --device-state off/,
  );
  for (const mode of ["relay", "off"]) {
    for (const flag of ["--state-save-cmd", "--state-load-cmd"]) {
      await usageError(
        [...base, "--device-state", mode, flag, "true"],
        "run",
        new RegExp(`${flag} needs --device-state emulate`),
      );
    }
  }
  await usageError(
    ["backend", "--backend-binary", "/bin/true", "--state-save-cmd", "true"],
    "backend",
    /--state-save-cmd needs --device-state emulate/,
  );
  const dir = Deno.makeTempDirSync();
  const r = await cli(
    ...base,
    "--device-state",
    "off",
    "--state-buffer",
    "--state-hash",
    "off",
    "--state-hash-backlog",
    "5",
    "--quiet",
    "--state-dump",
    `${dir}/missing`,
  );
  Deno.removeSync(dir, { recursive: true });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /warning: --state-buffer does nothing with --device-state off/);
  assert.match(r.stderr, /warning: --state-hash-backlog does nothing with --state-hash off/);
});

Deno.test("CLI: run refuses before listening: --log in a missing directory, --state-dump not a writable directory, --backend a regular file", async () => {
  const dir = Deno.makeTempDirSync();
  const listen = `${dir}/front.sock`;
  const base = ["run", "--quiet", "--listen", listen, "--backend", `${dir}/back.sock`];
  const log = await cli(...base, "--log", `${dir}/no-such-dir/x.jsonl`);
  assert.equal(log.code, 1);
  oneLine(log.stderr, new RegExp(`^vhost-user-proxy: run: .*"${dir}/no-such-dir/x.jsonl"`));
  Deno.writeTextFileSync(`${dir}/file`, "");
  const dump = await cli(...base, "--state-dump", `${dir}/file`);
  assert.equal(dump.code, 1);
  oneLine(dump.stderr, /--state-dump ".*\/file" is not a writable directory: not a directory$/);
  const missing = await cli(...base, "--state-dump", `${dir}/none`);
  oneLine(missing.stderr, /--state-dump ".*\/none" is not a writable directory: No such file/);
  const back = await cli("run", "--listen", listen, "--backend", `${dir}/file`);
  assert.equal(back.code, 1);
  oneLine(
    back.stderr,
    /^vhost-user-proxy: run: --backend ".*\/file" is a regular file, not a socket$/,
  );
  const sub = await cli("run", "--listen", listen, "--backend", dir);
  oneLine(sub.stderr, /--backend ".*" is a directory, not a socket$/);
  let exists = true;
  try {
    Deno.lstatSync(listen);
  } catch {
    exists = false;
  }
  assert.equal(exists, false, "nothing listened");
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("CLI: the drop-in with a missing back-end binary: one line, exit 1, no temporary directory left", async () => {
  const tmp = Deno.makeTempDirSync();
  const old = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", tmp);
  try {
    for (let i = 0; i < 3; i++) {
      const r = await cli(
        "backend",
        "--quiet",
        "--log",
        `${tmp}/log.jsonl`,
        "--backend-binary",
        `${tmp}/no-virtiofsd`,
        "--",
        `--socket-path=${tmp}/vfs.sock`,
      );
      assert.equal(r.code, 1);
      oneLine(r.stderr, /cannot start the back-end ".*\/no-virtiofsd": No such file or directory$/);
    }
    const caps = await cli(
      "backend",
      "--backend-binary",
      `${tmp}/nope`,
      "--",
      "--print-capabilities",
    );
    assert.equal(caps.code, 1);
    oneLine(caps.stderr, /cannot start the back-end ".*\/nope": No such file or directory$/);
    const left = [...Deno.readDirSync(tmp)].map((e) => e.name).filter((n) => n !== "log.jsonl");
    assert.deepEqual(left, [], "no vhost-user-proxy-* directory left behind");
  } finally {
    if (old === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", old);
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("CLI: the drop-in reports the back-end's exit status and exits with it", async () => {
  const dir = Deno.makeTempDirSync();
  const r = await cli(
    "backend",
    "--quiet",
    "--log",
    `${dir}/log.jsonl`,
    "--backend-binary",
    "/bin/false",
    "--",
    `--socket-path=${dir}/vfs.sock`,
  );
  Deno.removeSync(dir, { recursive: true });
  assert.equal(r.code, 1);
  oneLine(r.stderr, /^vhost-user-proxy: the back-end "\/bin\/false" exited with code 1$/);
});

Deno.test("CLI: the drop-in reports a back-end killed by a signal", async () => {
  const dir = Deno.makeTempDirSync();
  // The back-end runs as `sh -c 'kill -KILL $$' --socket-path=<private>`: it dies of SIGKILL.
  const killed = await cli(
    "backend",
    "--quiet",
    "--backend-binary",
    "/bin/sh",
    "--",
    `--socket-path=${dir}/vfs.sock`,
    "-c",
    "kill -KILL $$",
  );
  Deno.removeSync(dir, { recursive: true });
  assert.equal(killed.code, 137);
  oneLine(killed.stderr, /the back-end "\/bin\/sh" was killed by SIGKILL \(exit status 137\)$/);
});

Deno.test("CLI: the drop-in given an --fd that is not open: one line, exit 1 (not a usage error)", async () => {
  const r = await cli("backend", "--quiet", "--backend-binary", "/bin/false", "--", "--fd=987654");
  assert.equal(r.code, 1, r.stderr);
  oneLine(r.stderr, /^vhost-user-proxy: backend: cannot start the proxy: .*EBADF/);
});

Deno.test("CLI: the drop-in gives its --socket-path the --socket-mode asked for", async () => {
  const dir = Deno.makeTempDirSync();
  const socket = `${dir}/vfs.sock`;
  // A back-end that lives three seconds (`sh -c 'sleep 3' --socket-path=<private>`): the socket
  // exists from the drop-in's start (a Deno start-up, longer on a busy machine) to its end.
  const running = cli(
    "backend",
    "--quiet",
    "--socket-mode",
    "0660",
    "--backend-binary",
    "/bin/sh",
    "--",
    `--socket-path=${socket}`,
    "-c",
    "sleep 3",
  );
  let mode: number | undefined;
  for (let i = 0; i < 1000 && mode === undefined; i++) {
    try {
      mode = Deno.lstatSync(socket).mode! & 0o777;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const r = await running;
  Deno.removeSync(dir, { recursive: true });
  assert.equal(mode?.toString(8), "660");
  assert.equal(r.code, 0, r.stderr);
  oneLine(r.stderr, /the back-end "\/bin\/sh" exited with code 0$/);
});

Deno.test("CLI: state show on a missing file or a directory: one line with the path and the cause", async () => {
  const missing = await cli("state", "show", "/nonexistent/blob.bin");
  assert.equal(missing.code, 1);
  oneLine(
    missing.stderr,
    /^vhost-user-proxy: state show: cannot read "\/nonexistent\/blob.bin": No such file or directory$/,
  );
  const dir = Deno.makeTempDirSync();
  const isDir = await cli("state", "show", dir);
  Deno.removeSync(dir);
  oneLine(isDir.stderr, /: Is a directory$/);
});

Deno.test("CLI: log tools on a missing file, a directory, a junk line, an empty file: one line, exit 3", async () => {
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/junk.jsonl`, '{"type":"message"}\n');
  Deno.writeTextFileSync(`${dir}/empty.jsonl`, "");
  Deno.writeTextFileSync(`${dir}/text.jsonl`, "hello\nworld\n");
  const cases: [string[], RegExp][] = [
    [["log", "show", `${dir}/missing.jsonl`], /"[^"]*missing.jsonl": No such file or directory$/],
    [["log", "summary", dir], /: cannot read log "[^"]+": Is a directory$/],
    [
      ["log", "show", `${dir}/junk.jsonl`],
      /: no log records in "[^"]*junk.jsonl": .*line 1: message record without "ts"/,
    ],
    [
      ["log", "summary", `${dir}/empty.jsonl`],
      /: no log records in "[^"]*empty.jsonl": the file is empty$/,
    ],
    [
      ["log", "show", `${dir}/text.jsonl`],
      /none of its 2 line\(s\) is a log record \(line 1: not JSON/,
    ],
    [
      ["log", "diff", `${dir}/empty.jsonl`, `${dir}/junk.jsonl`],
      /empty.jsonl": the file is empty$/,
    ],
    [["log", "explain", `${dir}/missing.jsonl`], /No such file or directory$/],
    [["log", "follow", `${dir}/missing.jsonl`], /"[^"]*missing.jsonl": No such file or directory$/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 3, `${args.join(" ")}: ${r.stderr}`);
    oneLine(r.stderr, re);
  }
  Deno.removeSync(dir, { recursive: true });
});

const REQ = 0x1, REPLY = 0x5;
const GET_FEATURES = 1, SET_FEATURES = 2, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16;
const SET_STATE = 42, CHECK = 43;
const VIRTIO = (1n << 32n) | (1n << 30n), PROTOCOL = 1n << 19n; // VERSION_1|PROTOCOL_FEATURES; DEVICE_STATE

function direction(d: number): Uint8Array {
  const p = new Uint8Array(new ArrayBuffer(8));
  new DataView(p.buffer).setUint32(0, d, true);
  return p;
}

/**
 * A log written by the real proxy (engine, device state, faults) between scripted peers: a
 * GET_FEATURES with a reserved flag bit (relayed with a warning), then a SAVE truncated by
 * `--fault state-truncate:8` (CHECK failed by the proxy) or a LOAD corrupted by
 * `--fault state-corrupt` whose CHECK the back-end fails (1), or a clean SAVE.
 */
async function recordedLog(
  kind: "truncated-save" | "corrupt-load" | "clean",
): Promise<LogRecord[]> {
  const faults = kind === "truncated-save"
    ? ["state-truncate:8"]
    : kind === "corrupt-load"
    ? ["state-corrupt"]
    : [];
  const r = await rig({ deviceState: { faults } });
  try {
    // Negotiation as QEMU does it, F_DEVICE_STATE included; a reserved flag bit unless clean.
    r.front.send({ request: GET_FEATURES, flags: kind === "clean" ? REQ : REQ | 0x100 });
    r.back.expect();
    r.back.send({ request: GET_FEATURES, flags: REPLY, payload: u64(VIRTIO) });
    r.front.expect();
    r.front.send({ request: SET_FEATURES, flags: REQ, payload: u64(VIRTIO) });
    r.back.expect();
    r.front.send({ request: GET_PROTOCOL_FEATURES, flags: REQ });
    r.back.expect();
    r.back.send({ request: GET_PROTOCOL_FEATURES, flags: REPLY, payload: u64(PROTOCOL) });
    r.front.expect();
    r.front.send({ request: SET_PROTOCOL_FEATURES, flags: REQ, payload: u64(PROTOCOL) });
    r.back.expect();
    const load = kind === "corrupt-load";
    const [qr, qw] = createPipe();
    r.front.send({
      request: SET_STATE,
      flags: REQ,
      payload: direction(load ? 1 : 0),
      fds: [load ? qr : qw],
    });
    (load ? qr : qw).close();
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const data = new Uint8Array(60).map((_, i) => i);
    const [writer, reader] = load ? [qw, req.fds[0]] : [req.fds[0], qr];
    try {
      writeFd(writer, data, 0);
    } catch {
      // the truncating proxy may close its end first
    }
    writer.close();
    const buf = new Uint8Array(new ArrayBuffer(256));
    for (let t = 0; t < 200; t++) {
      const n = readFd(reader, buf);
      if (n === 0) break;
      await new Promise((res) => setTimeout(res, 5));
    }
    reader.close();
    r.front.send({ request: CHECK, flags: REQ });
    r.back.expect();
    r.back.send({ request: CHECK, flags: REPLY, payload: u64(load ? 1n : 0n) });
    const answer = readU64(r.front.expect().payload);
    assert.equal(answer, kind === "clean" ? 0n : 1n, "CHECK as QEMU hears it");
    await r.until((rs) => rs.some((x) => x.type === "device-state" && x.event === "transfer-end"));
  } finally {
    await r.stop();
  }
  return r.records;
}

function write(path: string, records: LogRecord[]): void {
  Deno.writeTextFileSync(path, records.map((x) => JSON.stringify(x)).join("\n") + "\n");
}

Deno.test("CLI: log show --problems and log summary count failed transfers, failed CHECKs and message warnings; exit 1", async () => {
  const dir = Deno.makeTempDirSync();
  const expected: Record<string, RegExp[]> = {
    "truncated-save": [
      /s1: warning: GET_FEATURES: reserved flag bits "0x100" are set/,
      /s1: error: CHECK_DEVICE_STATE \(SAVE\) failed: result 1, back-end said 0: .*cut after 8/,
      /s1: error: SAVE transfer failed after 8 bytes: the stream was cut after 8 bytes/,
    ],
    "corrupt-load": [
      /s1: warning: GET_FEATURES: reserved flag bits/,
      /s1: error: LOAD transfer altered by the proxy \(fault state-corrupt\)/,
      /s1: error: CHECK_DEVICE_STATE \(LOAD\) failed: result 1, back-end said 1/,
    ],
  };
  for (const [kind, problems] of Object.entries(expected)) {
    const path = `${dir}/${kind}.jsonl`;
    write(path, await recordedLog(kind as "truncated-save" | "corrupt-load"));
    const show = await cli("log", "show", path, "--problems");
    assert.equal(show.code, 1, `${kind}: ${show.stdout}`);
    const lines = show.stdout.split("\n");
    assert.equal(lines.length, problems.length, show.stdout);
    for (const re of problems) assert.ok(lines.some((l) => re.test(l)), `${re}:\n${show.stdout}`);
    assert.match(lines[0], /^\d\d:\d\d:\d\d\.\d{3}Z /, "the time says its zone");
    const summary = await cli("log", "summary", path);
    assert.equal(summary.code, 1, summary.stdout);
    assert.match(summary.stdout, new RegExp(`, ${problems.length} problem\\(s\\)`));
    for (const re of problems) assert.match(summary.stdout, re);
    const json = await cli("log", "summary", path, "--json");
    assert.equal(json.code, 1);
    assert.equal(JSON.parse(json.stdout).problems.length, problems.length);
    // The human session end agrees with its JSON: the warning is counted there too.
    const all = await cli("log", "show", path);
    assert.equal(all.code, 1, "log show exits 1: problems among the records shown");
    assert.match(all.stdout, /session end: .*, \d+ errors, 1 warnings,/);
  }
  const clean = `${dir}/clean.jsonl`;
  write(clean, await recordedLog("clean"));
  const ok = await cli("log", "summary", clean);
  assert.equal(ok.code, 0, ok.stdout);
  assert.match(ok.stdout, /no problems$/);
  const none = await cli("log", "show", clean, "--problems");
  assert.deepEqual([none.code, none.stdout], [0, ""]);
  oneLine(none.stderr, /no problems in ".*clean.jsonl"/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("CLI: log filters: names in any case, --channel checked, --session must exist, summary --session filters, diff --session-b", async () => {
  const dir = Deno.makeTempDirSync();
  const bad = await recordedLog("truncated-save");
  const good = (await recordedLog("clean")).map((x) => "session" in x ? { ...x, session: 2 } : x);
  const path = `${dir}/two.jsonl`;
  write(path, [...bad, ...good] as LogRecord[]);
  for (const name of ["get_features", "GET_FEATURES", "vhost_user_get_features", "Get_Features"]) {
    const r = await cli("log", "show", path, "--name", name);
    const lines = r.stdout.split("\n");
    assert.equal(lines.length, 4, `${name}: ${r.stdout}`); // request and reply, per session
    for (const l of lines) assert.match(l, / GET_FEATURES/);
  }
  const chan = await cli("log", "show", path, "--channel", "backend");
  assert.equal(chan.stdout, "", "no back-end channel message in this log");
  await usageError(
    ["log", "show", path, "--channel", "bogus"],
    "log show",
    /--channel must be main or backend, not "bogus"/,
  );
  await usageError(
    ["log", "show", path, "--name", "GET_FEETURES"],
    "log show",
    /is not a vhost-user request/,
  );
  const s99 = await cli("log", "show", path, "--session", "99");
  assert.equal(s99.code, 3);
  oneLine(s99.stderr, /there is no session 99 in ".*two.jsonl" \(its sessions: 1, 2\)$/);
  const sum99 = await cli("log", "summary", path, "--session", "99");
  assert.equal(sum99.code, 3);
  const s1 = await cli("log", "summary", path, "--session", "1", "--json");
  const s2 = await cli("log", "summary", path, "--session", "2", "--json");
  assert.deepEqual([s1.code, s2.code], [1, 0], "the problems are in session 1 only");
  assert.equal(JSON.parse(s1.stdout).sessions, 1);
  assert.equal(JSON.parse(s2.stdout).problems.length, 0);
  assert.equal(JSON.parse(s2.stdout).session, 2);
  const human = await cli("log", "summary", path, "--session", "2");
  assert.match(human.stdout, /^session 2: 1 session\(s\), /);
  const show2 = await cli("log", "show", path, "--session", "2");
  assert.equal(show2.code, 0);
  assert.doesNotMatch(show2.stdout, / s1 /);
  const clean = `${dir}/clean.jsonl`;
  write(clean, good as LogRecord[]);
  const diff9 = await cli("log", "diff", path, clean, "--session-b", "9");
  assert.equal(diff9.code, 3);
  oneLine(diff9.stderr, /there is no session 9 in ".*clean.jsonl" \(its sessions: 2\)$/);
  const same = await cli("log", "diff", path, clean, "--session-a", "2", "--session-b", "2");
  assert.equal(same.code, 0, same.stdout);
  const shorter = `${dir}/shorter.jsonl`;
  write(shorter, good.filter((x) => !(x.type === "message" && x.name === "SET_PROTOCOL_FEATURES")));
  const differ = await cli("log", "diff", path, shorter, "--session-a", "2", "--json");
  assert.equal(differ.code, 1);
  assert.equal(JSON.parse(differ.stdout).same, false);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("CLI: a record with a field of the wrong type is a line problem, not a crash", async () => {
  const dir = Deno.makeTempDirSync();
  const good = (await recordedLog("clean")).filter((x) => x.type === "message").slice(0, 2);
  const bad = { ...good[0], warnings: "oops", fds: 3 };
  const path = `${dir}/odd.jsonl`;
  write(path, [...good, bad as unknown as LogRecord]);
  const r = await cli("log", "show", path);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split("\n").length, 2);
  oneLine(
    r.stderr,
    /warning: .*odd.jsonl: line 3: message record whose "fds", "warnings" is not a list$/,
  );
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("CLI: an error nobody expected is one line with a hint to report it, exit 1", async () => {
  // A TMPDIR that does not exist: the drop-in cannot make its private directory.
  const old = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", "/nonexistent/tmp");
  let r;
  try {
    r = await cli("backend", "--quiet", "--backend-binary", "/bin/false", "--", "--socket-path=x");
  } finally {
    if (old === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", old);
  }
  assert.equal(r.code, 1);
  oneLine(
    r.stderr,
    /^vhost-user-proxy: unexpected error: NotFound: No such file or directory.* \(a bug; please report it/,
  );
});

import assert from "node:assert/strict";
import type { LogRecord, MessageRecord } from "../../log/record.ts";
import {
  diffLogs,
  followLog,
  formatSummary,
  parseLog,
  showLog,
  summarizeLog,
} from "../../log/tools.ts";

function msg(
  name: string,
  kind: "request" | "reply",
  extra: Partial<MessageRecord> = {},
): MessageRecord {
  return {
    type: "message",
    ts: "2026-11-25T00:00:00.000Z",
    session: 1,
    channel: "main",
    from: kind === "request" ? "front-end" : "back-end",
    direction: kind === "request" ? "front-end → back-end" : "back-end → front-end",
    kind,
    code: 1,
    name,
    flags: kind === "request" ? "0x1" : "0x5",
    flagNames: [],
    size: 0,
    layout: "empty",
    payload: {},
    summary: "",
    fds: [],
    ...extra,
  };
}

const run: LogRecord[] = [
  { type: "session-start", ts: "t", session: 1, frontEnd: null, backend: "b" },
  msg("GET_FEATURES", "request"),
  msg("GET_FEATURES", "reply", { latencyUs: 100 }),
  msg("SET_VRING_CALL", "request", { fds: [{ kind: "eventfd" }] }),
  msg("GET_VRING_BASE", "request"),
  msg("GET_VRING_BASE", "reply", { latencyUs: 900 }),
  {
    type: "session-end",
    ts: "t",
    session: 1,
    reason: "front-end closed the main channel",
    closedBy: "front-end",
    inFlight: [],
    summary: {
      durationMs: 1,
      messages: 5,
      bytes: 0,
      fdsRelayed: 1,
      byName: {},
      errors: 0,
      warnings: 0,
    },
  },
];

Deno.test("log summary counts requests, replies, fds and reply latencies per name", () => {
  const s = summarizeLog(run);
  assert.equal(s.sessions, 1);
  assert.equal(s.messages, 5);
  assert.equal(s.fds, 1);
  const vb = s.byName.find((r) => r.name === "GET_VRING_BASE")!;
  assert.deepEqual([vb.requests, vb.replies, vb.p50Us], [1, 1, 900]);
  assert.ok(formatSummary(s).some((l) => l.includes("closed by front-end")));
});

Deno.test("log diff finds where two conversations part ways", () => {
  assert.equal(diffLogs(run, run).same, true);
  const other = run.filter((r) => !(r.type === "message" && r.name === "SET_VRING_CALL"));
  const d = diffLogs(run, other);
  assert.equal(d.same, false);
  assert.equal(d.firstDifference, 2);
  assert.match(d.left!, /SET_VRING_CALL/);
  assert.deepEqual(d.counts, [{
    signature: "main front-end SET_VRING_CALL fds=1",
    left: 1,
    right: 0,
  }]);
});

Deno.test("CLI: log show renders a JSONL file and bad arguments are usage errors", async () => {
  const dir = Deno.makeTempDirSync();
  const file = `${dir}/run.jsonl`;
  Deno.writeTextFileSync(file, run.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const cli = new URL("../../cli.ts", import.meta.url).pathname;
  const show = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "log", "show", file],
  }).output();
  assert.equal(show.code, 0);
  const text = new TextDecoder().decode(show.stdout);
  assert.match(text, /GET_VRING_BASE reply \+900µs/);
  const bad = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "run", "--listen", "x"],
  }).output();
  assert.equal(bad.code, 2);
  assert.match(
    new TextDecoder().decode(bad.stderr),
    /run: --backend <path> is required \(see: vhost-user-proxy run --help\)/,
  );
  const fault = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "run",
      "--listen",
      "x",
      "--backend",
      "y",
      "--fault",
      "state-truncate:abc",
    ],
  }).output();
  assert.equal(fault.code, 2);
  assert.match(new TextDecoder().decode(fault.stderr), /state-truncate:abc/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("log summary counts a request the proxy held and released once", () => {
  // As device_state.ts logs a CHECK_DEVICE_STATE that arrives during the copy (recorded from a
  // real destination proxy, 2026-12-03): the request held, the same request released, the reply.
  const held: LogRecord[] = [
    msg("CHECK_DEVICE_STATE", "request", {
      action: "held: waiting for the LOAD copy to end (0 bytes so far)",
    }),
    msg("CHECK_DEVICE_STATE", "request", { action: "released after the state copy finished" }),
    msg("CHECK_DEVICE_STATE", "reply", { latencyUs: 1200 }),
  ];
  const s = summarizeLog(held);
  const c = s.byName.find((r) => r.name === "CHECK_DEVICE_STATE")!;
  assert.deepEqual([c.requests, c.replies, s.messages], [1, 1, 2]);
});

Deno.test("log tools: a failed back-end restart is a problem; a record type from a newer proxy is kept", () => {
  const records: LogRecord[] = [
    ...run,
    {
      type: "restart",
      event: "step",
      ts: "2026-12-03T14:00:00.000Z",
      session: 1,
      step: "load",
      ms: 1.25,
      ok: false,
      detail: "CHECK_DEVICE_STATE answered 1",
    },
    {
      type: "restart",
      event: "done",
      ts: "2026-12-03T14:00:00.001Z",
      session: 1,
      ok: false,
      backend: "/run/vfs-new.sock",
      withState: true,
      pauseMs: 2.5,
      totalMs: 9,
      failedStep: "load",
      error: "CHECK_DEVICE_STATE answered 1",
      rolledBack: "the old back-end serves on",
    },
  ];
  const s = summarizeLog(records);
  assert.deepEqual(s.problems, [
    "s1: error: back-end restart step load failed: CHECK_DEVICE_STATE answered 1",
    "s1: error: back-end restart failed at load: CHECK_DEVICE_STATE answered 1 " +
    "(rolled back: the old back-end serves on)",
  ]);
  assert.deepEqual(showLog(records.slice(-2)), [
    "14:00:00.000Z s1 restart load FAILED 1.3 ms (CHECK_DEVICE_STATE answered 1)",
    "14:00:00.001Z s1 restart FAILED at load → /run/vfs-new.sock: pause 2.5 ms, total 9.0 ms, " +
    "state ? bytes: CHECK_DEVICE_STATE answered 1 (rolled back: the old back-end serves on)",
  ]);
  const future = '{"type":"hologram","ts":"2027-01-01T00:00:00.000Z","session":1,"x":1}';
  const parsed = parseLog(`${future}\n{"type":"message"}\n`);
  assert.equal(parsed.records.length, 1, "a newer proxy's record type is kept");
  assert.equal(showLog(parsed.records)[0], future);
  assert.equal(parsed.problems.length, 1);
});

Deno.test("followLog: --from-end skips what is there, a half-written line waits, truncation and replacement start over", async () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/live.jsonl`;
  const line = (name: string) => JSON.stringify(msg(name, "request")) + "\n";
  Deno.writeTextFileSync(path, line("GET_FEATURES") + line("SET_OWNER").slice(0, 20));
  const stop = new AbortController();
  const problems: string[] = [];
  const seen: string[] = [];
  const follow = (async () => {
    for await (
      const r of followLog(path, {
        fromEnd: true,
        intervalMs: 10,
        signal: stop.signal,
        onProblem: (p) => problems.push(p),
      })
    ) {
      if (r.type === "message") seen.push(r.name);
    }
  })();
  const until = async (n: number) => {
    for (let i = 0; i < 300 && seen.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  };
  await new Promise((r) => setTimeout(r, 50));
  // The rest of the half-written line (skipped: its start was there before), then a new one.
  Deno.writeTextFileSync(path, line("SET_OWNER").slice(20) + line("GET_QUEUE_NUM"), {
    append: true,
  });
  await until(1);
  Deno.writeTextFileSync(path, line("RESET_DEVICE")); // truncated: shorter than before
  await until(2);
  Deno.writeTextFileSync(`${dir}/next.jsonl`, line("SET_VRING_CALL") + line("SET_VRING_ERR"));
  Deno.renameSync(`${dir}/next.jsonl`, path); // replaced, as logrotate does
  await until(4);
  stop.abort();
  await follow;
  Deno.removeSync(dir, { recursive: true });
  assert.deepEqual(seen, ["GET_QUEUE_NUM", "RESET_DEVICE", "SET_VRING_CALL", "SET_VRING_ERR"]);
  assert.equal(problems.length, 2, problems.join("\n"));
  assert.match(problems[0], /was truncated/);
  assert.match(problems[1], /was replaced/);
});

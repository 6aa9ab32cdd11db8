/**
 * `explainMigration` on recorded logs: each way a migration of back-end state fails is named by
 * its step, side and culprit. The records are shaped as the proxy writes them (log_record.ts);
 * the fault e2e test checks the same verdicts on real QEMU + virtiofsd logs.
 */

import assert from "node:assert/strict";
import { explainMigration, formatExplanation } from "../../log/explain.ts";
import type { LogRecord, MessageRecord, StateDirection } from "../../log/record.ts";

let clock = Date.parse("2026-12-02T10:00:00.000Z");
const ts = () => new Date(clock += 5).toISOString();

function message(
  name: string,
  kind: "request" | "reply",
  payload: Record<string, unknown> = {},
  extra: Partial<MessageRecord> = {},
): MessageRecord {
  const from = kind === "request" ? "front-end" : "back-end";
  return {
    type: "message",
    ts: ts(),
    session: 1,
    channel: "main",
    from,
    direction: from === "front-end" ? "front-end → back-end" : "back-end → front-end",
    kind,
    code: 0,
    name,
    flags: "0x1",
    flagNames: [],
    size: 8,
    layout: "",
    payload,
    summary: "",
    fds: [],
    ...extra,
  };
}

const features = (...names: string[]) => ({ value: { mask: "0x0", names } });

/** A session's set-up: the back-end's offers and the front-end's choice. */
function setUp(protocol: string[], virtio = ["VERSION_1", "PROTOCOL_FEATURES"]): LogRecord[] {
  return [
    { type: "session-start", ts: ts(), session: 1, frontEnd: null, backend: "/run/vfs.sock" },
    message("GET_FEATURES", "reply", features(...virtio)),
    message("SET_FEATURES", "request", features(...virtio)),
    message("GET_PROTOCOL_FEATURES", "reply", features(...protocol)),
  ];
}

function transfer(
  direction: StateDirection,
  opts: {
    sha256?: string;
    /** A record of this proxy: `fingerprint`, and `sha256` only if given too. */
    fingerprint?: { algorithm: "xxh3-128" | "blake3" | "sha256"; value: string };
    check?: number;
    backendResult?: number;
    faults?: string[];
  } = {},
): LogRecord[] {
  const result = opts.check ?? 0;
  return [
    message("SET_DEVICE_STATE_FD", "request", { direction: direction === "SAVE" ? 0 : 1 }),
    message("SET_DEVICE_STATE_FD", "reply", { error: 0, noFd: true }),
    {
      type: "device-state",
      event: "transfer-start",
      ts: ts(),
      session: 1,
      direction,
      phase: 0,
      via: "proxy-pipe",
      mode: "splice",
    },
    message("CHECK_DEVICE_STATE", "request"),
    {
      type: "device-state",
      event: "check",
      ts: ts(),
      session: 1,
      direction,
      backendResult: opts.backendResult ?? result,
      result,
      ...(opts.faults?.includes("check-fail") ? { reason: "fault check-fail" } : {}),
    },
    {
      type: "device-state",
      event: "transfer-end",
      ts: ts(),
      session: 1,
      direction,
      ok: true,
      bytes: 60,
      bytesIn: 60,
      durationMs: 0.2,
      throughputMiBps: 1,
      // Without `fingerprint`, the record as proxies before it wrote it: `sha256` alone.
      ...(opts.fingerprint
        ? { fingerprint: opts.fingerprint, ...(opts.sha256 ? { sha256: opts.sha256 } : {}) }
        : { sha256: opts.sha256 ?? "ab".repeat(32) }),
      ...(opts.faults ? { faults: opts.faults } : {}),
    },
  ];
}

const STATE = ["MQ", "REPLY_ACK", "BACKEND_REQ", "DEVICE_STATE"];

function verdict(source: LogRecord[], destination?: LogRecord[]) {
  const e = explainMigration(source, destination);
  return {
    e,
    got: { failed: e.failed, step: e.step, side: e.side, culprit: e.culprit },
    text: formatExplanation(e),
  };
}

Deno.test("explain: a clean migration succeeds with equal fingerprints", () => {
  const { e, got, text } = verdict(
    [...setUp(STATE), ...transfer("SAVE")],
    [...setUp(STATE), ...transfer("LOAD")],
  );
  assert.deepEqual(got, { failed: false, step: null, side: null, culprit: null }, text);
  assert.equal(e.fingerprints.equal, true);
  assert.match(text, /Verdict: OK/);
});

Deno.test("explain: the destination back-end rejecting unchanged bytes is the back-end's fault", () => {
  const { got, e, text } = verdict(
    [...setUp(STATE), ...transfer("SAVE")],
    [...setUp(STATE), ...transfer("LOAD", { check: 1 })],
  );
  assert.deepEqual(got, {
    failed: true,
    step: "CHECK_DEVICE_STATE",
    side: "destination",
    culprit: "back-end",
  }, text);
  assert.match(e.reason, /rejected the state it loaded \(CHECK_DEVICE_STATE = 1\)/);
  assert.match(e.reason, /exactly the bytes the source saved/);
});

Deno.test("explain: a destination proxy's corruption is named, with differing fingerprints", () => {
  const { got, e, text } = verdict(
    [...setUp(STATE), ...transfer("SAVE")],
    [
      ...setUp(STATE),
      ...transfer("LOAD", { check: 1, sha256: "cd".repeat(32), faults: ["state-corrupt"] }),
    ],
  );
  assert.deepEqual(got, {
    failed: true,
    step: "CHECK_DEVICE_STATE",
    side: "destination",
    culprit: "proxy",
  }, text);
  assert.equal(e.fingerprints.equal, false);
  assert.match(e.reason, /differ from those the source saved/);
  assert.match(e.reason, /the destination proxy altered them \(fault state-corrupt\)/);
  assert.match(text, /\(DIFFER\)/);
});

Deno.test("explain: a source back-end without F_DEVICE_STATE", () => {
  const { got, e, text } = verdict(setUp(["MQ", "REPLY_ACK", "BACKEND_REQ"]));
  assert.deepEqual(got, {
    failed: true,
    step: "GET_PROTOCOL_FEATURES",
    side: "source",
    culprit: "back-end",
  }, text);
  assert.match(e.reason, /does not offer F_DEVICE_STATE/);
});

Deno.test("explain: the proxy's own emulation of F_DEVICE_STATE is not a missing feature", () => {
  const noState = setUp(["MQ", "REPLY_ACK"]);
  noState.push({
    type: "device-state",
    event: "note",
    ts: ts(),
    session: 1,
    message: "offering F_DEVICE_STATE to the front-end: the proxy holds the device state",
  });
  const { got, text } = verdict(noState);
  assert.equal(got.failed, false, text);
});

Deno.test("explain: the source back-end refusing SET_DEVICE_STATE_FD", () => {
  const records = [...setUp(STATE), ...transfer("SAVE")].slice(0, 6);
  records[5] = message("SET_DEVICE_STATE_FD", "reply", { error: 22, noFd: true });
  const { got, e, text } = verdict(records);
  assert.deepEqual(got, {
    failed: true,
    step: "SET_DEVICE_STATE_FD",
    side: "source",
    culprit: "back-end",
  }, text);
  assert.match(e.reason, /error 22/);
});

Deno.test("explain: a destination back-end lacking a feature the source negotiated", () => {
  const { got, e, text } = verdict(
    [...setUp(STATE, ["VERSION_1", "PROTOCOL_FEATURES", "RING_PACKED"]), ...transfer("SAVE")],
    setUp(STATE, ["VERSION_1", "PROTOCOL_FEATURES"]),
  );
  assert.deepEqual(got, {
    failed: true,
    step: "GET_FEATURES",
    side: "destination",
    culprit: "back-end",
  }, text);
  assert.match(e.reason, /lacks RING_PACKED/);
});

Deno.test("explain: a back-end that disconnects mid-transfer", () => {
  const records = [...setUp(STATE), ...transfer("SAVE")].slice(0, 7);
  records.push({
    type: "session-end",
    ts: ts(),
    session: 1,
    reason: "back-end closed the main channel",
    closedBy: "back-end",
    inFlight: [],
    summary: {
      durationMs: 1,
      messages: 1,
      bytes: 1,
      fdsRelayed: 0,
      byName: {},
      errors: 0,
      warnings: 0,
    },
  });
  const { got, text } = verdict(records);
  assert.deepEqual(got, { failed: true, step: "SAVE", side: "source", culprit: "back-end" }, text);
});

Deno.test("explain: a stuck SET_DEVICE_STATE_FD names the peer that owes the reply", () => {
  const records = [...setUp(STATE), ...transfer("SAVE")].slice(0, 5);
  records.push({
    type: "warning",
    ts: ts(),
    session: 1,
    channel: "main",
    side: "back-end",
    request: "SET_DEVICE_STATE_FD",
    message: "SET_DEVICE_STATE_FD has waited 2000 ms for a reply from the back-end",
  });
  const { got, e, text } = verdict(records);
  assert.deepEqual(got, {
    failed: true,
    step: "SET_DEVICE_STATE_FD",
    side: "source",
    culprit: "back-end",
  }, text);
  assert.match(e.reason, /has waited 2000 ms/);
});

Deno.test("explain: logs given the wrong way round are placed by their transfers", () => {
  const { got, e, text } = verdict(
    [...setUp(STATE), ...transfer("LOAD", { check: 1 })],
    [...setUp(STATE), ...transfer("SAVE")],
  );
  assert.equal(got.side, "destination", text);
  assert.equal(e.sessions.source, 1);
});

Deno.test("explain: the verdict is about a session's last attempt", () => {
  const records = [
    ...setUp(STATE),
    ...transfer("SAVE", { check: 1, faults: ["check-fail"], backendResult: 0 }),
    ...transfer("SAVE"),
  ];
  const { got, e, text } = verdict(records);
  assert.equal(got.failed, false, text);
  assert.equal(e.earlierAttempts.source, 1);
});

Deno.test("explain: a destination that migrates onwards: its LOAD is not an earlier attempt of its SAVE", () => {
  const records = [
    ...setUp(STATE),
    ...transfer("LOAD"),
    ...transfer("SAVE", { check: 1, faults: ["check-fail"], backendResult: 0 }),
  ];
  const { got, e, text } = verdict(records);
  assert.equal(got.failed, true, text);
  assert.equal(got.side, "source", text);
  assert.deepEqual(e.earlierAttempts, {}, text);
  assert.doesNotMatch(text, /attempts/);
});

Deno.test("explain: a log with no migration says so", () => {
  const { e } = verdict([]);
  assert.equal(e.found, false);
  assert.equal(e.failed, false);
});

Deno.test("CLI: log explain --json keeps the contract fields, and its exit code says the verdict", async () => {
  const dir = Deno.makeTempDirSync();
  const write = (name: string, records: LogRecord[]) => {
    const path = `${dir}/${name}`;
    Deno.writeTextFileSync(path, records.map((r) => JSON.stringify(r)).join("\n") + "\n");
    return path;
  };
  const source = write("source.jsonl", [...setUp(STATE), ...transfer("SAVE")]);
  const failedLoad = write("dst.jsonl", [...setUp(STATE), ...transfer("LOAD", { check: 1 })]);
  const goodLoad = write("dst-ok.jsonl", [...setUp(STATE), ...transfer("LOAD")]);
  const empty = write("empty.jsonl", []);
  const cli = new URL("../../cli.ts", import.meta.url).pathname;
  const explain = (...args: string[]) =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", cli, "log", "explain", ...args] })
      .output();

  const failed = await explain(source, failedLoad, "--json");
  assert.equal(failed.code, 1);
  const e = JSON.parse(new TextDecoder().decode(failed.stdout));
  assert.deepEqual(
    { failed: e.failed, step: e.step, side: e.side, culprit: e.culprit },
    { failed: true, step: "CHECK_DEVICE_STATE", side: "destination", culprit: "back-end" },
  );
  assert.equal(typeof e.reason, "string");

  const ok = await explain(source, goodLoad);
  assert.equal(ok.code, 0);
  assert.match(new TextDecoder().decode(ok.stdout), /Verdict: OK/);
  assert.equal((await explain(empty)).code, 3);
  assert.equal((await explain()).code, 2);
});

const xxh = (value: string) => ({ algorithm: "xxh3-128" as const, value });

Deno.test("explain: fingerprints are compared by their named algorithm (xxh3-128)", () => {
  const same = verdict(
    [...setUp(STATE), ...transfer("SAVE", { fingerprint: xxh("12".repeat(16)) })],
    [...setUp(STATE), ...transfer("LOAD", { fingerprint: xxh("12".repeat(16)) })],
  );
  assert.deepEqual(same.e.fingerprints, {
    algorithm: "xxh3-128",
    source: "12".repeat(16),
    destination: "12".repeat(16),
    equal: true,
  });
  assert.match(same.text, /Fingerprints \(xxh3-128\): source 1212.*\(equal\)/);
  assert.match(same.text, /transfer ended: 60 bytes in 0.2 ms, xxh3-128 1212121212121212…/);

  const differ = verdict(
    [...setUp(STATE), ...transfer("SAVE", { fingerprint: xxh("12".repeat(16)) })],
    [...setUp(STATE), ...transfer("LOAD", { fingerprint: xxh("34".repeat(16)), check: 1 })],
  );
  assert.equal(differ.e.fingerprints.equal, false);
  assert.match(differ.e.reason, /differ from those the source saved \(xxh3-128 1212/);
});

Deno.test("explain: an old-format record (sha256 only) is compared with a new one's sha256", () => {
  // A source proxy from before the `fingerprint` field, a destination run with --state-hash
  // sha256 (which logs both).
  const digest = "cd".repeat(32);
  const mixed = verdict(
    [...setUp(STATE), ...transfer("SAVE", { sha256: digest })],
    [
      ...setUp(STATE),
      ...transfer("LOAD", { fingerprint: { algorithm: "sha256", value: digest }, sha256: digest }),
    ],
  );
  assert.deepEqual(mixed.e.fingerprints, {
    algorithm: "sha256",
    source: digest,
    destination: digest,
    equal: true,
  });
  assert.match(mixed.text, /transfer ended: 60 bytes in 0.2 ms, sha256 cdcdcdcdcdcdcdcd…/);

  // An old record against an xxh3-128 one: two algorithms, nothing to compare.
  const apart = verdict(
    [...setUp(STATE), ...transfer("SAVE", { sha256: digest })],
    [...setUp(STATE), ...transfer("LOAD", { fingerprint: xxh("12".repeat(16)) })],
  );
  assert.deepEqual(apart.e.fingerprints, {
    algorithm: "sha256",
    destinationAlgorithm: "xxh3-128",
    source: digest,
    destination: "12".repeat(16),
  });
  assert.match(apart.text, /Fingerprints \(source sha256, destination xxh3-128: not comparable\)/);
});

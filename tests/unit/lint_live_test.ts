/**
 * The lint live: a real proxy (its engine Worker, real sockets) between two scripted peers,
 * its records going through `lintSink` as `run` wires them. A scripted front-end and back-end
 * break rules; the findings arrive in the record stream right after the message they are about,
 * and the verdicts right after the session's end.
 */

import assert from "node:assert/strict";
import type { LogRecord } from "../../log/record.ts";
import type { LintFindingRecord, LintVerdictRecord } from "../../log/lint_record.ts";
import { lintSink } from "../../log/lint.ts";
import { startProxy } from "../../relay/server.ts";
import { readU64, ScriptedListener, ScriptedPeer, u64 } from "../support/scripted_peer.ts";

const REQ = 0x1;
const NEED_REPLY = 0x9;
const REPLY = 0x5;

function ring(index: number, num: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(8));
  const v = new DataView(out.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return out;
}

async function until(records: LogRecord[], pred: (rs: LogRecord[]) => boolean): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!pred(records) && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("lint live: scripted peers that break rules get findings in the stream, then verdicts", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vup-lint-live-" });
  const backend = new ScriptedListener(`${dir}/back.sock`);
  const records: LogRecord[] = [];
  const proxy = await startProxy({
    listen: { path: `${dir}/front.sock` },
    backend: backend.path,
    frontDialect: "upstream",
    backDialect: "upstream",
    stuckAfterMs: 0,
    connectTimeoutMs: 2000,
    logMessages: true,
    deviceState: { mode: "relay" },
  }, lintSink((r) => records.push(r)));
  const front = ScriptedPeer.connect(`${dir}/front.sock`);
  const back = backend.accept();
  try {
    // GET_FEATURES: VERSION_1|PROTOCOL_FEATURES offered; the protocol offer is REPLY_ACK only.
    front.send({ request: 1, flags: REQ });
    back.expect();
    back.send({ request: 1, flags: REPLY, payload: u64(0x1_4000_0000n) });
    front.expect();
    front.send({ request: 15, flags: REQ });
    back.expect();
    back.send({ request: 15, flags: REPLY, payload: u64(1n << 3n) });
    assert.equal(readU64(front.expect().payload), 1n << 3n);
    // The front-end sets MQ, which was not offered (features-not-offered).
    front.send({ request: 16, flags: REQ, payload: u64((1n << 3n) | 1n) });
    back.expect();
    // SET_VRING_NUM without NEED_REPLY, acked anyway by the back-end (reply-unasked).
    front.send({ request: 8, flags: REQ, payload: ring(0, 256) });
    back.expect();
    back.send({ request: 8, flags: REPLY, payload: u64(0) });
    front.expect();
    // GET_VRING_BASE with the reserved num set (num-reserved), answered properly.
    front.send({ request: 11, flags: NEED_REPLY, payload: ring(0, 7) });
    back.expect();
    back.send({ request: 11, flags: REPLY, payload: ring(0, 42) });
    front.expect();
    front.close();
    await until(
      records,
      (rs) => rs.filter((r) => r.type === "lint" && r.event === "verdict").length === 2,
    );
  } finally {
    back.close();
    await proxy.stop();
    backend.close();
    Deno.removeSync(dir, { recursive: true });
  }

  const findings = records.filter((r): r is LintFindingRecord =>
    r.type === "lint" && r.event === "finding"
  );
  assert.deepEqual(findings.map((f) => [f.rule, f.peer]), [
    ["features-not-offered", "front-end"],
    ["reply-unasked", "back-end"],
    ["num-reserved", "front-end"],
  ]);
  // Each finding follows the message it is about.
  for (const f of findings) {
    const before = records[records.indexOf(f) - 1];
    assert.equal(before.type, "message", f.rule);
    assert.equal(before.ts, f.ts, f.rule);
  }
  const end = records.findIndex((r) => r.type === "session-end");
  const verdicts = records.slice(end + 1).filter((r): r is LintVerdictRecord =>
    r.type === "lint" && r.event === "verdict"
  );
  assert.deepEqual(verdicts.map((v) => [v.peer, v.verdict, v.findings]), [
    ["front-end", "findings", 2],
    ["back-end", "findings", 1],
  ]);
});

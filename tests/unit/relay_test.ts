/**
 * The relay on real sockets with scripted peers on both sides, the proxy in its Worker.
 */

import assert from "node:assert/strict";
import { closeAll } from "../../ffi/fd.ts";
import { countOpenFds, fdKind } from "../../ffi/fdinfo.ts";
import { createMemfd, readFd, writeFd } from "../../ffi/pipe.ts";
import { createEventFd } from "../../ffi/poll.ts";
import { socketPair } from "../../ffi/socket.ts";
import type { LogRecord, MessageRecord, SessionEndRecord } from "../../log/record.ts";
import { startProxy } from "../../relay/server.ts";
import { rig } from "../support/proxy_rig.ts";
import { readU64, ScriptedListener, ScriptedPeer, u64 } from "../support/scripted_peer.ts";

const REQ = 0x1, NEED_REPLY = 0x9, REPLY = 0x5;

/** Lets the Worker's record batches reach the main thread. */
async function settle(ms = 50): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Waits (bounded) until the records satisfy `pred`; records arrive asynchronously. */
async function until(records: LogRecord[], pred: (rs: LogRecord[]) => boolean, ms = 3000) {
  const deadline = performance.now() + ms;
  while (!pred(records) && performance.now() < deadline) await settle(10);
}

function messages(records: LogRecord[]): MessageRecord[] {
  return records.filter((r): r is MessageRecord => r.type === "message");
}

Deno.test("GET_FEATURES is relayed both ways and the reply carries its latency", async () => {
  const r = await rig();
  try {
    r.front.send({ request: 1, flags: REQ });
    const req = r.back.expect();
    assert.equal(req.request, 1);
    assert.equal(req.flags, REQ);
    r.back.send({ request: 1, flags: REPLY, payload: u64(0x1_4000_0000n) });
    const rep = r.front.expect();
    assert.equal(rep.flags, REPLY);
    assert.equal(readU64(rep.payload), 0x1_4000_0000n);
    await until(r.records, (rs) => messages(rs).length >= 2);
    const msgs = messages(r.records);
    assert.deepEqual(msgs.map((m) => [m.name, m.kind, m.from]), [
      ["GET_FEATURES", "request", "front-end"],
      ["GET_FEATURES", "reply", "back-end"],
    ]);
    assert.ok(typeof msgs[1].latencyUs === "number" && msgs[1].latencyUs >= 0);
    assert.ok(JSON.stringify(msgs[1].payload).includes("PROTOCOL_FEATURES"));
  } finally {
    await r.stop();
  }
});

Deno.test("SET_MEM_TABLE relays 2 memfds whose contents the back-end can read", async () => {
  const r = await rig();
  try {
    const m1 = createMemfd("ram0", 4096), m2 = createMemfd("ram1", 4096);
    writeFd(m1, new TextEncoder().encode("region-0"));
    writeFd(m2, new TextEncoder().encode("region-1"));
    const table = new Uint8Array(new ArrayBuffer(8 + 2 * 32));
    const v = new DataView(table.buffer);
    v.setUint32(0, 2, true);
    for (let i = 0; i < 2; i++) {
      v.setBigUint64(8 + 32 * i, BigInt(i * 4096), true); // gpa
      v.setBigUint64(8 + 32 * i + 8, 4096n, true); // size
      v.setBigUint64(8 + 32 * i + 16, 0x7f00_0000_0000n + BigInt(i * 4096), true); // uaddr
    }
    r.front.send({ request: 5, flags: REQ, payload: table, fds: [m1, m2] });
    const got = r.back.expect();
    assert.equal(got.request, 5);
    assert.equal(got.fds.length, 2);
    for (const [i, fd] of got.fds.entries()) {
      assert.equal(fdKind(fd.fd), "memfd");
      assert.equal(
        new TextDecoder().decode(Deno.readFileSync(`/proc/self/fd/${fd.fd}`).subarray(0, 8)),
        `region-${i}`,
      );
    }
    closeAll(got.fds);
    await until(r.records, (rs) => messages(rs).some((m) => m.name === "SET_MEM_TABLE"));
    const rec = messages(r.records).find((m) => m.name === "SET_MEM_TABLE")!;
    assert.deepEqual(rec.fds.map((f) => f.kind), ["memfd", "memfd"]);
  } finally {
    await r.stop();
  }
});

Deno.test("SET_BACKEND_REQ_FD is interposed: back-end channel requests and replies are relayed", async () => {
  const r = await rig();
  try {
    const [qemuEnd, backendEnd] = socketPair();
    r.front.send({ request: 21, flags: REQ, fds: [backendEnd] });
    const got = r.back.expect();
    assert.equal(got.request, 21);
    assert.equal(got.fds.length, 1);
    const backChannel = new ScriptedPeer(got.fds[0]);
    const qemuChannel = new ScriptedPeer(qemuEnd);
    // Back-end asks QEMU something on the back-end channel (CONFIG_CHANGE with NEED_REPLY).
    backChannel.send({ request: 2, flags: NEED_REPLY });
    const req = qemuChannel.expect();
    assert.equal(req.request, 2);
    qemuChannel.send({ request: 2, flags: REPLY, payload: u64(0) });
    const rep = backChannel.expect();
    assert.equal(rep.flags, REPLY);
    assert.equal(readU64(rep.payload), 0n);
    await until(r.records, (rs) => messages(rs).filter((m) => m.channel === "backend").length >= 2);
    const msgs = messages(r.records);
    assert.equal(
      msgs.find((m) => m.name === "SET_BACKEND_REQ_FD")?.action,
      "interposed the back-end channel",
    );
    const onBackendCh = msgs.filter((m) => m.channel === "backend").map((m) => [m.name, m.kind]);
    assert.deepEqual(onBackendCh, [
      ["BACKEND_CONFIG_CHANGE_MSG", "request"],
      ["BACKEND_CONFIG_CHANGE_MSG", "reply"],
    ]);
    backChannel.close();
    qemuChannel.close();
  } finally {
    await r.stop();
  }
});

Deno.test("an eventfd relayed through the proxy is the same eventfd on the far side", async () => {
  const r = await rig();
  try {
    const efd = createEventFd();
    const dup = efd.dup();
    r.front.send({ request: 13, flags: REQ, payload: u64(0), fds: [efd] });
    const got = r.back.expect();
    assert.equal(got.fds.length, 1);
    writeFd(got.fds[0], u64(42));
    const buf = new Uint8Array(new ArrayBuffer(8));
    assert.equal(readFd(dup, buf), 8);
    assert.equal(readU64(buf), 42n);
    closeAll([dup, ...got.fds]);
  } finally {
    await r.stop();
  }
});

Deno.test("a back-end that closes while GET_VRING_BASE awaits its reply closes QEMU's side and says so", async () => {
  const r = await rig();
  try {
    const state = new Uint8Array(new ArrayBuffer(8));
    r.front.send({ request: 11, flags: REQ, payload: state });
    r.back.expect();
    r.back.close();
    assert.ok(r.front.closedWithin(2000), "QEMU side closed");
    await until(r.records, (rs) => rs.some((x) => x.type === "session-end"));
    const end = r.records.find((x): x is SessionEndRecord => x.type === "session-end")!;
    assert.equal(end.closedBy, "back-end");
    assert.match(end.reason, /back-end closed the main channel.*GET_VRING_BASE awaited a reply/);
  } finally {
    await r.stop();
  }
});

Deno.test("a malformed message ends only its session; the next session works; fds return to baseline", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vup-relay-" });
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
  }, (x) => records.push(x));
  try {
    await settle();
    const baseline = countOpenFds();
    // Session 1: SET_VRING_ADDR with a 12-byte payload instead of 40.
    const f1 = ScriptedPeer.connect(`${dir}/front.sock`);
    const b1 = backend.accept();
    f1.send({ request: 9, flags: REQ, payload: new Uint8Array(12) });
    assert.ok(f1.closedWithin(2000), "hostile session closed");
    assert.ok(b1.closedWithin(2000), "back-end side closed too");
    f1.close();
    b1.close();
    // Session 2 works.
    const f2 = ScriptedPeer.connect(`${dir}/front.sock`);
    const b2 = backend.accept();
    f2.send({ request: 1, flags: REQ });
    assert.equal(b2.expect().request, 1);
    b2.send({ request: 1, flags: REPLY, payload: u64(0) });
    assert.equal(f2.expect().request, 1);
    f2.close();
    b2.close();
    await settle(200);
    assert.equal(countOpenFds(), baseline);
    const err = records.find((x) => x.type === "error");
    assert.ok(err && err.type === "error");
    assert.match(err.message, /SET_VRING_ADDR/);
    assert.match(err.message, /front-end/);
    assert.match(err.message, /12/);
  } finally {
    await proxy.stop();
    backend.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a request whose reply never comes is flagged by name", async () => {
  const r = await rig({ stuckAfterMs: 100 });
  try {
    r.front.send({ request: 11, flags: REQ, payload: new Uint8Array(8) });
    r.back.expect();
    await until(r.records, (rs) => rs.some((x) => x.type === "warning"));
    const w = r.records.find((x) => x.type === "warning");
    assert.ok(w && w.type === "warning");
    assert.match(w.message, /GET_VRING_BASE has waited 100 ms for a reply from the back-end/);
  } finally {
    await r.stop();
  }
});

Deno.test("the session-end record carries the session model: features offered and set, rings, what was set up", async () => {
  const r = await rig();
  try {
    r.front.send({ request: 1, flags: REQ });
    r.back.expect();
    r.back.send({ request: 1, flags: 0x5, payload: u64((1n << 32n) | (1n << 30n)) });
    r.front.expect();
    r.front.send({ request: 3, flags: REQ });
    r.back.expect();
    r.front.send({ request: 2, flags: REQ, payload: u64(1n << 32n) });
    r.back.expect();
    const ring = new Uint8Array(new ArrayBuffer(8));
    new DataView(ring.buffer).setUint32(4, 256, true);
    r.front.send({ request: 8, flags: REQ, payload: ring });
    r.back.expect();
    r.front.close();
    await until(r.records, (rs) => rs.some((x) => x.type === "session-end"));
    const end = r.records.find((x): x is SessionEndRecord => x.type === "session-end")!;
    assert.deepEqual(
      {
        offered: end.model?.virtioOffered,
        acked: end.model?.virtioAcked,
        names: end.model?.virtioFeatures,
        owner: end.model?.owner,
        rings: end.model?.rings,
      },
      {
        offered: "0x140000000",
        acked: "0x100000000",
        names: ["VIRTIO_F_VERSION_1"],
        owner: true,
        rings: [{ index: 0, num: 256, base: undefined, enabled: false, started: false }],
      },
    );
  } finally {
    await r.stop();
  }
});

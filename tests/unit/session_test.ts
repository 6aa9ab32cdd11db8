/**
 * A `Session` alone, on this thread: two socketpairs, a reactor turned by the test, no engine, no
 * Worker, no socket file. What the relay does with one message at a time is visible here.
 */

import assert from "node:assert/strict";
import { countOpenFds } from "../../ffi/fdinfo.ts";
import { createEventFd } from "../../ffi/poll.ts";
import { Reactor } from "../../ffi/reactor.ts";
import { socketPair } from "../../ffi/socket.ts";
import type { LogRecord } from "../../log/record.ts";
import { Session } from "../../relay/session.ts";
import { readU64, ScriptedPeer, u64 } from "../support/scripted_peer.ts";

const REQ = 0x1, NEED_REPLY = 0x8, REPLY = 0x5;
const GET_FEATURES = 1, SET_VRING_CALL = 13;

function alone() {
  const [qemu, proxyFront] = socketPair();
  const [backend, proxyBack] = socketPair();
  const records: LogRecord[] = [];
  const errors: unknown[] = [];
  const reactor = new Reactor((e) => errors.push(e));
  let ended = false;
  const session = new Session(
    proxyFront,
    {
      id: 7,
      backendPath: "(socketpair)",
      backendSocket: proxyBack,
      frontDialect: "upstream",
      backDialect: "upstream",
      stuckAfterMs: 0,
      connectTimeoutMs: 1000,
      logMessages: true,
    },
    reactor,
    (r) => records.push(r),
    () => (ended = true),
    null,
  );
  const front = new ScriptedPeer(qemu);
  const back = new ScriptedPeer(backend);
  /** Turns the reactor until nothing is ready. */
  const settle = () => {
    while (reactor.turn(20) > 0) { /* relay what is there */ }
  };
  return { session, reactor, records, errors, front, back, settle, ended: () => ended };
}

Deno.test("Session alone: building it does no I/O; start() logs the session and adopts the back-end", () => {
  const s = alone();
  assert.equal(s.records.length, 0, "nothing logged before start()");
  assert.equal(s.session.back, undefined, "no back-end before start()");
  s.session.start();
  assert.equal(s.records[0]?.type, "session-start");
  assert.ok(s.session.back !== undefined);
  assert.ok(s.session.owns(s.session.front) && s.session.owns(s.session.back));
  assert.ok(!s.session.owns({}));
  s.session.end("test over", "proxy");
  s.front.close();
  s.back.close();
});

Deno.test("Session alone: a request and its reply are relayed in order, with a record each", () => {
  const s = alone();
  s.session.start();
  s.front.send({ request: GET_FEATURES, flags: REQ });
  s.settle();
  assert.equal(s.back.expect(500).request, GET_FEATURES);
  s.back.send({ request: GET_FEATURES, flags: REPLY, payload: u64(0x1_4000_0000n) });
  s.settle();
  assert.equal(readU64(s.front.expect(500).payload), 0x1_4000_0000n);
  const names = s.records.filter((r) => r.type === "message").map((r) =>
    (r as { name: string }).name
  );
  assert.deepEqual(names, ["GET_FEATURES", "GET_FEATURES"]);
  assert.deepEqual(s.errors, []);
  s.session.end("test over", "proxy");
  s.front.close();
  s.back.close();
});

Deno.test("Session alone: an fd crosses, and the proxy's copy is closed once sent", () => {
  const s = alone();
  s.session.start();
  s.settle();
  const before = countOpenFds();
  const call = createEventFd();
  const payload = new Uint8Array(8); // ring 0, fd attached
  s.front.send({ request: SET_VRING_CALL, flags: REQ | NEED_REPLY, payload, fds: [call] });
  s.settle();
  const got = s.back.expect(500);
  assert.equal(got.fds.length, 1);
  got.fds[0].close();
  s.back.send({ request: SET_VRING_CALL, flags: REPLY, payload: u64(0) });
  s.settle();
  assert.equal(readU64(s.front.expect(500).payload), 0n);
  assert.equal(countOpenFds(), before, "no fd left behind in the proxy");
  s.session.end("test over", "proxy");
  s.front.close();
  s.back.close();
});

Deno.test("Session alone: the back-end hanging up ends the session and closes QEMU's socket", () => {
  const s = alone();
  s.session.start();
  s.back.close();
  s.settle();
  assert.ok(s.ended() && s.session.ended);
  assert.ok(s.records.some((r) => r.type === "session-end"));
  assert.ok(s.front.closedWithin(500), "QEMU sees its socket closed");
  s.front.close();
});

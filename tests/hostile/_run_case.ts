/**
 * Runs one row of the case table against the proxy subprocess and checks everything issue 4
 * asks of it: the policy (rejected / relayed / closed), the hostile session closed within 2 s,
 * the log naming session, side, message and field, the proxy alive, its fd count back to the
 * baseline, and a fresh well-formed session served afterwards.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeAll } from "../../ffi/fd.ts";
import { SystemError } from "../../ffi/errors.ts";
import type { MessageRecord, ProblemRecord } from "../../log/record.ts";
import type { ScriptedPeer } from "../support/scripted_peer.ts";
import { type Case, type Expect, OPPOSITE, type PeerName, type Send, SIDE } from "./_cases.ts";
import { drain, type ProxyProcess, type Session } from "./_rig.ts";
import { frame, makeFds, REPLY, sendmsgFds, sleepSync } from "./_wire.ts";

/** How long a hostile session may take to be closed (issue 4). */
export const CLOSE_WITHIN_MS = 2000;

/** What a case measured, for the summary table. */
export interface CaseResult {
  closeMs?: number;
  note?: string;
}

function peerOf(s: Session, name: PeerName): ScriptedPeer {
  const p = { front: s.front, back: s.back, qemuCh: s.qemuCh, backCh: s.backCh }[name];
  if (p === undefined) throw new Error(`The case needs the back-end channel (${name})`);
  return p;
}

/** Bytes a Send puts on the wire (before any cut). */
function bytesOf(send: Send): Uint8Array {
  return send.raw ?? frame(send.request ?? 0, send.flags ?? 0, send.payload);
}

/** Writes all of `bytes`, fds with the first byte; stops quietly if the proxy hung up. */
function sendAll(fd: number, bytes: Uint8Array, fds: number[]): void {
  let off = 0;
  try {
    while (off < bytes.length) {
      off += sendmsgFds(fd, bytes.subarray(off), off === 0 ? fds : []);
    }
  } catch (e) {
    if (!(e instanceof SystemError && e.isDisconnect)) throw e;
  }
}

/** Performs one Send. */
export function perform(s: Session, send: Send): void {
  const peer = peerOf(s, send.by);
  const bytes = bytesOf(send).subarray(0, send.cut);
  const fds = makeFds(send.fds ?? 0, send.fdKind);
  const raw = fds.map((f) => f.fd);
  try {
    if (send.split !== undefined) {
      sendAll(peer.fd, bytes.subarray(0, send.split), send.lateFds ? [] : raw);
      sleepSync(20); // a separate segment for the proxy's recvmsg
      sendAll(peer.fd, bytes.subarray(send.split), send.lateFds ? raw : []);
    } else if (bytes.length > 0) {
      sendAll(peer.fd, bytes, raw);
    }
  } finally {
    closeAll(fds); // the kernel holds its own references now
  }
  if (send.thenClose) peer.close();
  if (send.receiverResets) {
    sleepSync(100); // let the proxy relay it into the receiver's buffer
    peerOf(s, OPPOSITE[send.by]).close();
  }
}

/** Sends a well-formed prelude message and requires it to arrive verbatim. */
function relayPrelude(s: Session, send: Send): void {
  perform(s, send);
  const got = peerOf(s, OPPOSITE[send.by]).expect(3000);
  closeAll(got.fds);
  assert.deepEqual(frame(got.request, got.flags, got.payload), bytesOf(send), "prelude relayed");
  assert.equal(got.fds.length, send.fds ?? 0, "prelude fds relayed");
}

function matches(value: string | undefined, want: string | RegExp): boolean {
  return typeof want === "string" ? value === want : want.test(value ?? "");
}

/**
 * Every session socket sees EOF within the bound; returns how long it took. With `opposite`,
 * that peer must have received nothing: the offending message was not forwarded.
 */
function allClosed(proxy: ProxyProcess, s: Session, opposite?: PeerName): number {
  const t0 = performance.now();
  const order: PeerName[] = ["front", "back", "qemuCh", "backCh"];
  // The receiver first: if the proxy forwarded the message, say so rather than time out.
  if (opposite) order.sort((a, b) => Number(b === opposite) - Number(a === opposite));
  for (const name of order) {
    const p = { front: s.front, back: s.back, qemuCh: s.qemuCh, backCh: s.backCh }[name];
    if (p === undefined || !p.channel.socket.isOpen) continue;
    const left = Math.max(0, CLOSE_WITHIN_MS - (performance.now() - t0));
    const r = drain(p, left);
    if (name === opposite && r.got.length > 0) {
      const logged = proxy.log.of(s.id).filter((x) => x.type === "message").at(-1);
      const warnings = logged?.type === "message" ? logged.warnings ?? [] : [];
      assert.fail(
        `The proxy forwarded request ${r.got[0].request} to ${name} instead of rejecting it ` +
          `(its log warnings: ${JSON.stringify(warnings)})`,
      );
    }
    assert.ok(r.eof, `the proxy closed ${name} within ${CLOSE_WITHIN_MS} ms`);
  }
  return Math.round(performance.now() - t0);
}

function lastMessage(proxy: ProxyProcess, s: Session, send: Send): MessageRecord | undefined {
  const record = proxy.log.waitFor(
    (r): r is MessageRecord =>
      r.type === "message" && r.session === s.id && r.code === send.request &&
      r.from === SIDE[send.by],
    3000,
  );
  return record;
}

function checkPolicy(proxy: ProxyProcess, s: Session, c: Case, e: Expect): CaseResult {
  const send = c.send;
  const opposite = OPPOSITE[send.by];
  switch (e.policy) {
    case "reject": {
      const closeMs = allClosed(proxy, s, opposite);
      const err = proxy.errorOf(s.id);
      assert.ok(err, "an error record names the session");
      assert.equal(err.side, e.side, `error names the side: ${err.message}`);
      assert.ok(
        matches(err.request, e.request),
        `error names ${e.request}: ${JSON.stringify(err)}`,
      );
      if (e.field !== undefined) {
        assert.ok(
          matches(err.field, e.field),
          `error names field ${e.field}: ${JSON.stringify(err)}`,
        );
      }
      assert.equal(err.channel, e.channel ?? "main", "error names the channel");
      if (e.message) assert.match(err.message, e.message);
      const end = proxy.sessionEnd(s.id);
      assert.ok(end, "a session-end record follows");
      assert.equal(end.closedBy, "proxy", "the proxy ended the session");
      assert.equal(end.violationBy, e.side, "session-end says who broke the rules");
      assert.doesNotMatch(end.reason, /undefined/, "no session end reads undefined");
      return { closeMs, note: `${err.field ?? "-"}: ${err.message}` };
    }
    case "relay": {
      const got = peerOf(s, opposite).expect(3000);
      closeAll(got.fds);
      assert.deepEqual(
        frame(got.request, got.flags, got.payload),
        bytesOf(send),
        "relayed verbatim",
      );
      assert.equal(got.fds.length, e.fds ?? 0, "fds relayed");
      const record = lastMessage(proxy, s, send);
      assert.ok(record, "the message is logged");
      if (e.warning) {
        assert.ok(
          record.warnings?.some((w) => e.warning!.test(w)),
          `warning ${e.warning} logged: ${JSON.stringify(record.warnings)}`,
        );
      }
      if (e.noWarning) {
        assert.ok(
          !record.warnings?.some((w) => e.noWarning!.test(w)),
          `no warning matching ${e.noWarning}: ${JSON.stringify(record.warnings)}`,
        );
      }
      if (e.answer) {
        s.relay(peerOf(s, opposite), peerOf(s, send.by), {
          request: e.answer.request,
          flags: REPLY,
          payload: e.answer.payload,
        });
      }
      s.roundTrip(); // the session goes on
      return { note: record.warnings?.join("; ") };
    }
    case "no-fd": {
      const to = peerOf(s, opposite);
      const r = drain(to, 500);
      if (r.eof) {
        allClosed(proxy, s);
        const err = proxy.errorOf(s.id);
        assert.ok(err && err.field === "fds", `rejected for its fds: ${JSON.stringify(err)}`);
        return { note: `rejected: ${err.message}` };
      }
      assert.equal(r.got.length, 1, "relayed once");
      assert.equal(r.got[0].fds.length, 0, `${e.request} reached the receiver without the fd`);
      return { note: "relayed without the fd" };
    }
    case "peer-close": {
      const closeMs = allClosed(proxy, s);
      const end = proxy.sessionEnd(s.id);
      assert.ok(end, "a session-end record");
      assert.equal(end.closedBy, e.closedBy, `who closed first: ${end.reason}`);
      assert.match(end.reason, e.reason);
      assert.doesNotMatch(end.reason, /undefined/, "no session end reads undefined");
      for (const name of e.inFlight ?? []) {
        assert.ok(end.inFlight.some((f) => f.name === name), `${name} listed in flight`);
      }
      return { closeMs, note: end.reason };
    }
    case "channel-close": {
      const t0 = performance.now();
      const r = drain(peerOf(s, opposite), CLOSE_WITHIN_MS);
      assert.ok(r.eof, "the other end of the back-end channel was closed");
      const closeMs = Math.round(performance.now() - t0);
      const w = proxy.log.waitFor(
        (x): x is ProblemRecord =>
          x.type === "warning" && x.session === s.id && x.channel === "backend" &&
          e.warning.test(x.message),
      );
      assert.ok(w, `warning ${e.warning} logged`);
      assert.equal(w.side, e.side);
      s.roundTrip(); // the main channel goes on
      return { closeMs, note: w.message };
    }
  }
}

/** Runs one case: set-up, prelude, the hostile act, the policy, then the proxy's health. */
export function runCase(proxy: ProxyProcess, c: Case, baseline: number): CaseResult {
  const s = proxy.open();
  let result: CaseResult;
  try {
    if (c.setup !== undefined && c.setup !== "fresh") {
      s.negotiate(c.setup.acked);
      if (c.setup.channel) s.openChannel();
    }
    for (const p of c.prelude ?? []) relayPrelude(s, p);
    perform(s, c.send);
    result = checkPolicy(proxy, s, c, c.expect);
  } finally {
    s.close();
  }
  assert.ok(proxy.alive, `the proxy is alive: ${proxy.stderr}`);
  const fds = proxy.settleFds(baseline);
  assert.ok(
    fds <= baseline,
    `fd count back to ${baseline}, is ${fds}:\n${proxy.fdList().join("\n")}`,
  );
  proxy.proveServing();
  return result;
}

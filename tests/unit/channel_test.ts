/**
 * Framing on real sockets: header first with its fds, payload possibly later, partial sends
 * with fds only on the first chunk, backpressure, bounded sizes.
 */

import assert from "node:assert/strict";
import { closeAll } from "../../ffi/fd.ts";
import { countOpenFds, fdKind } from "../../ffi/fdinfo.ts";
import { POLLIN, POLLOUT, PollSet } from "../../ffi/poll.ts";
import { createEventFd } from "../../ffi/poll.ts";
import { sendWithFds, socketPair } from "../../ffi/socket.ts";
import { MessageChannel } from "../../relay/channel.ts";
import { frame } from "../support/scripted_peer.ts";

function wait(fd: number, events: number, ms = 1000): void {
  const p = new PollSet();
  p.add(fd, events);
  p.wait(ms);
}

Deno.test("a payload that arrives after its header (libvhost-user style) completes one frame", () => {
  const [a, b] = socketPair();
  const ch = new MessageChannel(b, { maxPayload: 4096 });
  const bytes = frame(9, 1, new Uint8Array(40).fill(7));
  const efd = createEventFd();
  sendWithFds(a.fd, bytes, 0, 12, [efd.fd]); // header + fd
  assert.equal(ch.read().kind, "pending");
  sendWithFds(a.fd, bytes, 12, 40); // payload later
  const r = ch.read();
  assert.equal(r.kind, "frame");
  if (r.kind !== "frame") return;
  assert.equal(r.frame.request, 9);
  assert.equal(r.frame.size, 40);
  assert.equal(r.frame.fds.length, 1);
  assert.equal(r.frame.lateFds, false);
  assert.equal(fdKind(r.frame.fds[0].fd), "eventfd");
  closeAll([...r.frame.fds, efd, a]);
  ch.close();
});

Deno.test("two fd-less and fd-carrying messages back to back keep their fds apart", () => {
  const [a, b] = socketPair();
  const ch = new MessageChannel(b, { maxPayload: 4096 });
  const efd = createEventFd();
  sendWithFds(a.fd, frame(1, 1), 0, 12);
  const second = frame(13, 1, new Uint8Array(8));
  sendWithFds(a.fd, second, 0, second.length, [efd.fd]);
  const r1 = ch.read(), r2 = ch.read();
  assert.ok(r1.kind === "frame" && r2.kind === "frame");
  if (r1.kind !== "frame" || r2.kind !== "frame") return;
  assert.equal(r1.frame.fds.length, 0, "the fd-less first message gets no fd");
  assert.equal(r2.frame.fds.length, 1);
  closeAll([...r2.frame.fds, efd, a]);
  ch.close();
});

Deno.test("a size field beyond the bound is a violation before anything is allocated", () => {
  const [a, b] = socketPair();
  const ch = new MessageChannel(b, { maxPayload: 4096 });
  const h = frame(1, 1);
  new DataView(h.buffer).setUint32(8, 0xffffffff, true); // 4 GiB
  sendWithFds(a.fd, h, 0, 12);
  const r = ch.read();
  assert.equal(r.kind, "violation");
  if (r.kind === "violation") {
    assert.deepEqual(r.reason, { kind: "too-large", size: 0xffffffff, limit: 4096 });
  }
  a.close();
  ch.close();
});

Deno.test("partial sends with a slow reader: order kept, fds only with the first chunk, none leaked", () => {
  const before = countOpenFds();
  const [a, b] = socketPair();
  const sender = new MessageChannel(a, { maxPayload: 4096 });
  const reader = new MessageChannel(b, { maxPayload: 4096 });
  const n = 300;
  const efd = createEventFd();
  let queuedAtSomePoint = false;
  // Fill the socket far beyond its buffer without reading: the channel must queue.
  for (let i = 0; i < n; i++) {
    const payload = new Uint8Array(4000).fill(i & 0xff);
    new DataView(payload.buffer).setUint32(0, i, true);
    sender.send(frame(5, 1, payload), i % 2 === 0 ? [efd.dup()] : []);
    if (sender.pendingOutput > 0) queuedAtSomePoint = true;
  }
  assert.ok(queuedAtSomePoint, "the kernel buffer filled and output was queued");
  let got = 0;
  while (got < n) {
    if (sender.pendingOutput > 0) sender.flush();
    const r = reader.read();
    if (r.kind === "frame") {
      const seq = new DataView(r.frame.payload.buffer, r.frame.payload.byteOffset).getUint32(
        0,
        true,
      );
      assert.equal(seq, got, "order preserved");
      assert.equal(r.frame.fds.length, got % 2 === 0 ? 1 : 0, `fds of message ${got}`);
      assert.equal(r.frame.lateFds, false);
      closeAll(r.frame.fds);
      got++;
      continue;
    }
    assert.equal(r.kind, "pending");
    wait(b.fd, POLLIN, 100);
    if (sender.pendingOutput > 0) wait(a.fd, POLLOUT, 10);
  }
  assert.equal(sender.pendingOutput, 0);
  efd.close();
  sender.close();
  reader.close();
  assert.equal(countOpenFds(), before);
});

Deno.test("closing a channel closes the fds of a half-read message and of queued output", () => {
  const before = countOpenFds();
  const [a, b] = socketPair();
  const reader = new MessageChannel(b, { maxPayload: 4096 });
  const efd = createEventFd();
  const bytes = frame(5, 1, new Uint8Array(40));
  sendWithFds(a.fd, bytes, 0, 12, [efd.fd]); // header + fd, payload never comes
  assert.equal(reader.read().kind, "pending");
  reader.close();
  closeAll([efd, a]);
  assert.equal(countOpenFds(), before);
});

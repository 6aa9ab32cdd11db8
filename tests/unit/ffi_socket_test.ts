import assert from "node:assert/strict";
import { closeAll, type OwnedFd } from "../../ffi/fd.ts";
import { countOpenFds, fdKind, isPipe } from "../../ffi/fdinfo.ts";
import { createMemfd, createPipe, readFd, writeFd } from "../../ffi/pipe.ts";
import { createEventFd, drainEventFd, signalEventFd } from "../../ffi/poll.ts";
import {
  acceptConnection,
  connectUnix,
  listenUnix,
  peerCredentials,
  recvWithFds,
  sendWithFds,
  socketPair,
} from "../../ffi/socket.ts";
import { SystemError } from "../../ffi/errors.ts";

function recvAll(fd: OwnedFd, len: number) {
  const buf = new Uint8Array(new ArrayBuffer(len));
  const r = recvWithFds(fd.fd, buf, 0, len);
  assert.equal(r.kind, "data");
  if (r.kind !== "data") throw new Error("unreachable");
  return { buf, ...r };
}

Deno.test("an eventfd sent with SCM_RIGHTS works on the receiving side", () => {
  const [a, b] = socketPair();
  const efd = createEventFd();
  assert.equal(sendWithFds(a.fd, new Uint8Array([1, 2, 3]), 0, 3, [efd.fd]), 3);
  const got = recvAll(b, 3);
  assert.deepEqual([...got.buf], [1, 2, 3]);
  assert.equal(got.fds.length, 1);
  assert.equal(fdKind(got.fds[0].fd), "eventfd");
  assert.notEqual(got.fds[0].fd, efd.fd);
  signalEventFd(got.fds[0], 42);
  assert.equal(drainEventFd(efd), 42);
  closeAll([a, b, efd, ...got.fds]);
});

Deno.test("received fds are CLOEXEC", () => {
  const [a, b] = socketPair();
  const efd = createEventFd();
  sendWithFds(a.fd, new Uint8Array([0]), 0, 1, [efd.fd]);
  const got = recvAll(b, 1);
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${got.fds[0].fd}`);
  const flags = parseInt(/flags:\s+([0-7]+)/.exec(info)![1], 8);
  assert.ok(flags & 0o2000000, "O_CLOEXEC set");
  closeAll([a, b, efd, ...got.fds]);
});

Deno.test("memfd contents are readable on the far side", () => {
  const [a, b] = socketPair();
  const mfd = createMemfd("vup-test");
  writeFd(mfd, new TextEncoder().encode("guest memory"));
  sendWithFds(a.fd, new Uint8Array([9]), 0, 1, [mfd.fd]);
  const got = recvAll(b, 1);
  assert.equal(fdKind(got.fds[0].fd), "memfd");
  const text = Deno.readTextFileSync(`/proc/self/fd/${got.fds[0].fd}`);
  assert.equal(text, "guest memory");
  closeAll([a, b, mfd, ...got.fds]);
});

Deno.test("8 fds travel in one message", () => {
  const [a, b] = socketPair();
  const fds = Array.from({ length: 8 }, () => createEventFd());
  sendWithFds(a.fd, new Uint8Array([7]), 0, 1, fds.map((f) => f.fd));
  const got = recvAll(b, 1);
  assert.equal(got.fds.length, 8);
  assert.equal(got.truncated, false);
  closeAll([a, b, ...fds, ...got.fds]);
});

Deno.test("sendWithFds refuses more than 8 fds and leaks nothing", () => {
  const before = countOpenFds();
  const [a, b] = socketPair();
  const fds = Array.from({ length: 9 }, () => createEventFd());
  // sendWithFds refuses more than 8, so build the oversized message with two control blocks:
  // the kernel merges nothing, but the receiver's 8-fd buffer cannot hold 9.
  assert.throws(
    () => sendWithFds(a.fd, new Uint8Array([1]), 0, 1, fds.map((f) => f.fd)),
    RangeError,
  );
  sendWithFds(a.fd, new Uint8Array([1]), 0, 1, fds.slice(0, 8).map((f) => f.fd));
  const first = recvAll(b, 1);
  assert.equal(first.truncated, false);
  closeAll(first.fds);
  closeAll([a, b, ...fds]);
  assert.equal(countOpenFds(), before);
});

Deno.test("a connection from a foreign sender with 10 fds is truncated", async () => {
  // Python sends 10 fds in one sendmsg, which our own API refuses to do.
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/s.sock`;
  const listener = listenUnix(path);
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      `
import socket, os, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(${JSON.stringify(path)})
fds = [os.eventfd(0) for _ in range(10)]
s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
s.recv(1)
`,
    ],
  }).spawn();
  let conn: OwnedFd | undefined;
  for (let i = 0; i < 200 && !conn; i++) {
    conn = acceptConnection(listener);
    if (!conn) await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(conn);
  const before = countOpenFds();
  let r = recvWithFds(conn.fd, new Uint8Array(new ArrayBuffer(1)), 0, 1);
  for (let i = 0; i < 200 && r.kind === "wouldBlock"; i++) {
    await new Promise((res) => setTimeout(res, 10));
    r = recvWithFds(conn.fd, new Uint8Array(new ArrayBuffer(1)), 0, 1);
  }
  assert.equal(r.kind, "data");
  if (r.kind !== "data") throw new Error("unreachable");
  assert.equal(r.truncated, true);
  assert.equal(r.fds.length, 8);
  closeAll(r.fds);
  assert.equal(countOpenFds(), before);
  conn.close();
  await child.status;
  listener.close();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("listenUnix: mode 0600, stale socket replaced, live socket refused", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/p.sock`;
  const l1 = listenUnix(path);
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  assert.throws(() => listenUnix(path), /another process is accepting/);
  l1.close(); // the file stays: now stale
  const l2 = listenUnix(path);
  const c = connectUnix(path);
  const s = acceptConnection(l2);
  assert.ok(s);
  const cred = peerCredentials(s);
  assert.equal(cred.pid, Deno.pid);
  closeAll([l2, c, s]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("connectUnix to nothing is a typed error", () => {
  assert.throws(() => connectUnix("/nonexistent/x.sock"), (e: unknown) => {
    assert.ok(e instanceof SystemError);
    assert.equal(e.code, "ENOENT");
    return true;
  });
});

Deno.test("pipes: nonblocking read reports would-block, then data, then EOF", () => {
  const [r, w] = createPipe({ nonBlocking: true });
  const buf = new Uint8Array(new ArrayBuffer(16));
  assert.equal(readFd(r, buf), -1);
  writeFd(w, new Uint8Array([1, 2]));
  assert.equal(readFd(r, buf), 2);
  w.close();
  assert.equal(readFd(r, buf), 0);
  r.close();
});

Deno.test("no fd leak after 10,000 messages with an fd each", () => {
  const before = countOpenFds();
  const [a, b] = socketPair();
  const efd = createEventFd();
  const buf = new Uint8Array(new ArrayBuffer(20));
  for (let i = 0; i < 10_000; i++) {
    assert.equal(sendWithFds(a.fd, buf, 0, 20, [efd.fd]), 20);
    const r = recvWithFds(b.fd, buf, 0, 20);
    if (r.kind !== "data" || r.fds.length !== 1) throw new Error(`message ${i} lost its fd`);
    closeAll(r.fds);
  }
  closeAll([a, b, efd]);
  assert.equal(countOpenFds(), before);
});

Deno.test("epoll reports readiness of registered fds with the packed 12-byte event layout", async () => {
  const { Epoll, EPOLLIN, EPOLLOUT } = await import("../../ffi/epoll.ts");
  const ep = new Epoll();
  const [a, b] = socketPair();
  const efd = createEventFd();
  ep.add(b.fd, EPOLLIN);
  ep.add(efd.fd, EPOLLIN);
  assert.deepEqual(ep.wait(0), []);
  signalEventFd(efd);
  sendWithFds(a.fd, new Uint8Array([1]), 0, 1);
  const ready = ep.wait(100).sort((x, y) => x.fd - y.fd);
  assert.deepEqual(ready.map((r) => r.fd), [b.fd, efd.fd].sort((x, y) => x - y));
  ep.modify(b.fd, EPOLLIN | EPOLLOUT);
  ep.remove(efd.fd);
  assert.ok(ep.wait(0).every((r) => r.fd === b.fd));
  ep.close();
  closeAll([a, b, efd]);
});

Deno.test("isPipe answers for both ends of a pipe and for nothing else, as fdKind does", () => {
  const [r, w] = createPipe();
  const [a, b] = socketPair();
  const e = createEventFd();
  const m = createMemfd("vup-is-pipe", 4096);
  try {
    for (const fd of [r, w, a, b, e, m]) {
      assert.equal(isPipe(fd.fd), fdKind(fd.fd) === "pipe", `fd ${fd.fd} (${fdKind(fd.fd)})`);
    }
    assert.ok(isPipe(r.fd) && isPipe(w.fd));
    const closed = r.fd;
    r.close();
    assert.equal(isPipe(closed), false, "a closed fd is no pipe");
  } finally {
    closeAll([w, a, b, e, m]);
  }
});

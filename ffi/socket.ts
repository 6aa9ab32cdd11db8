/**
 * Unix stream sockets with SCM_RIGHTS fd passing.
 *
 * All sockets are CLOEXEC and nonblocking; `sendmsg`/`recvmsg` run with MSG_DONTWAIT, sends with
 * MSG_NOSIGNAL (a vanished peer must not raise SIGPIPE), receives with MSG_CMSG_CLOEXEC (a child
 * process must never inherit guest-memory fds in flight). The receive control buffer holds exactly
 * 8 fds, so a 9th makes the kernel report MSG_CTRUNC (docs/ffi-notes.md §1.2).
 *
 * @module
 */

import { resolve } from "node:path";
import { addressOf, C, errno, getSize, libc, setPointer } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";
import { OwnedFd, ownedOrThrow, retryEintr } from "./fd.ts";

/**
 * Fds the receive buffer has room for in one message; more arrive truncated (MSG_CTRUNC, the
 * extra ones closed by the kernel). Sized by the caller's protocol: vhost-user allows 8.
 */
export const RIGHTS_CAPACITY = 8;

const CMSG_HDR = 16;
const cmsgAlign = (n: number) => (n + 7) & ~7;
const cmsgSpace = (n: number) => CMSG_HDR + cmsgAlign(n);
const RECV_CONTROL = cmsgSpace(4 * RIGHTS_CAPACITY); // 48 bytes: room for exactly 8 fds

/** One reusable msghdr + iovec + control block, all inside one ArrayBuffer that never moves. */
class MsgScratch {
  readonly bytes = new Uint8Array(new ArrayBuffer(64 + 16 + 16 + cmsgSpace(4 * RIGHTS_CAPACITY)));
  readonly view = new DataView(this.bytes.buffer);
  readonly base = addressOf(this.bytes);
  static readonly IOV = 64;
  static readonly CONTROL = 96;

  prepare(data: Uint8Array, offset: number, length: number, controlLen: number): void {
    const v = this.view;
    // msg_name, msg_namelen, msg_flags stay 0; the kernel writes only controllen and flags.
    setPointer(v, 16, this.base + MsgScratch.IOV); // msg_iov
    setPointer(v, 24, 1); // msg_iovlen
    setPointer(v, 32, controlLen > 0 ? this.base + MsgScratch.CONTROL : 0); // msg_control
    setPointer(v, 40, controlLen); // msg_controllen
    v.setInt32(48, 0, true); // msg_flags
    setPointer(v, MsgScratch.IOV, addressOf(data) + offset);
    setPointer(v, MsgScratch.IOV + 8, length);
  }
}

const sendScratch = new MsgScratch();
const recvScratch = new MsgScratch();

/** Outcome of a receive. `fds` are owned by the caller, including when `truncated`. */
export type RecvResult =
  | { kind: "data"; bytes: number; fds: OwnedFd[]; truncated: boolean }
  | { kind: "eof" }
  | { kind: "wouldBlock" };

const WOULD_BLOCK: RecvResult = { kind: "wouldBlock" };
const EOF: RecvResult = { kind: "eof" };
const NO_FDS: OwnedFd[] = [];

/**
 * Receives up to `length` bytes into `buf[offset…]` with any attached fds.
 * Throws SystemError for real errors (check `isDisconnect`).
 */
export function recvWithFds(
  fd: number,
  buf: Uint8Array,
  offset: number,
  length: number,
): RecvResult {
  const s = recvScratch;
  s.prepare(buf, offset, length, RECV_CONTROL);
  const n = retryEintr(() => libc.recvmsg(fd, s.bytes, C.MSG_DONTWAIT | C.MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return WOULD_BLOCK;
    throw new SystemError("recvmsg", e);
  }
  const v = s.view;
  const controlLen = getSize(v, 40);
  const flags = v.getInt32(48, true);
  let fds = NO_FDS;
  if (controlLen >= CMSG_HDR) fds = parseRights(v, controlLen);
  // Test the bit: the kernel echoes MSG_CMSG_CLOEXEC in msg_flags too (docs/ffi-notes.md §1.2).
  const truncated = (flags & C.MSG_CTRUNC) !== 0;
  if (n === 0 && fds.length === 0 && !truncated) return EOF;
  return { kind: "data", bytes: n, fds, truncated };
}

function parseRights(v: DataView, controlLen: number): OwnedFd[] {
  const fds: OwnedFd[] = [];
  let off = 0;
  while (off + CMSG_HDR <= controlLen) {
    const len = getSize(v, MsgScratch.CONTROL + off);
    if (len < CMSG_HDR) break;
    const level = v.getInt32(MsgScratch.CONTROL + off + 8, true);
    const type = v.getInt32(MsgScratch.CONTROL + off + 12, true);
    if (level === C.SOL_SOCKET && type === C.SCM_RIGHTS) {
      const count = Math.floor((len - CMSG_HDR) / 4);
      for (let i = 0; i < count; i++) {
        fds.push(new OwnedFd(v.getInt32(MsgScratch.CONTROL + off + CMSG_HDR + 4 * i, true)));
      }
    }
    off += cmsgAlign(len);
  }
  return fds;
}

/**
 * Sends `buf[offset…offset+length]` with `fds` attached (raw numbers; the caller keeps ownership
 * and closes them once this returns a positive count). Returns bytes sent, or -1 when the socket
 * would block with nothing sent. Throws SystemError for real errors.
 */
export function sendWithFds(
  fd: number,
  buf: Uint8Array,
  offset: number,
  length: number,
  fds: readonly number[] = [],
): number {
  if (fds.length > RIGHTS_CAPACITY) {
    throw new RangeError(
      `Cannot send ${fds.length} fds in one message: at most ${RIGHTS_CAPACITY}`,
    );
  }
  const s = sendScratch;
  const space = fds.length > 0 ? cmsgSpace(4 * fds.length) : 0;
  s.prepare(buf, offset, length, space);
  if (fds.length > 0) {
    const v = s.view;
    s.bytes.fill(0, MsgScratch.CONTROL, MsgScratch.CONTROL + space);
    setPointer(v, MsgScratch.CONTROL, CMSG_HDR + 4 * fds.length);
    v.setInt32(MsgScratch.CONTROL + 8, C.SOL_SOCKET, true);
    v.setInt32(MsgScratch.CONTROL + 12, C.SCM_RIGHTS, true);
    for (let i = 0; i < fds.length; i++) {
      v.setInt32(MsgScratch.CONTROL + CMSG_HDR + 4 * i, fds[i], true);
    }
  }
  for (;;) {
    const n = libc.sendmsg(fd, s.bytes, C.MSG_DONTWAIT | C.MSG_NOSIGNAL);
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("sendmsg", e);
  }
}

function sockaddrUn(path: string): Uint8Array {
  const encoded = new TextEncoder().encode(path);
  if (encoded.length === 0 || encoded.length > 107) {
    throw new RangeError(`Unix socket path must be 1..107 bytes: "${path}" is ${encoded.length}`);
  }
  const addr = new Uint8Array(new ArrayBuffer(110));
  new DataView(addr.buffer).setUint16(0, C.AF_UNIX, true);
  addr.set(encoded, 2);
  return addr;
}

function newSocket(): OwnedFd {
  return ownedOrThrow(
    libc.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC, 0),
    "socket",
  );
}

/** Options for {@link listenUnix}. */
export interface ListenOptions {
  /** File mode of the socket, default 0o600. */
  mode?: number;
  /** Listen backlog, default 16. */
  backlog?: number;
}

/**
 * Creates a listening socket at `path`. A stale socket file (nobody accepting) is removed; a live
 * one is refused, so two proxies never steal each other's path.
 */
export function listenUnix(path: string, options: ListenOptions = {}): OwnedFd {
  if (checkListenPath(path) === "stale") Deno.removeSync(path);
  const sock = newSocket();
  try {
    // Bound by its absolute path where it fits, so /proc/net/unix names it unambiguously.
    const abs = absolute(path);
    const addr = sockaddrUn(new TextEncoder().encode(abs).length <= 107 ? abs : path);
    if (libc.bind(sock.fd, addr, 110) < 0) throw new SystemError("bind", errno(), path);
    // Before listen() nobody can connect, so tightening the mode here leaves no window.
    Deno.chmodSync(path, options.mode ?? 0o600);
    if (libc.listen(sock.fd, options.backlog ?? 16) < 0) {
      throw new SystemError("listen", errno(), path);
    }
    return sock;
  } catch (e) {
    sock.close();
    throw e;
  }
}

/**
 * Whether `path` can be listened on: `"free"` (nothing there), `"stale"` (a socket file nobody
 * accepts on, which listening replaces); throws when it is another kind of file or another
 * process accepts on it. Nothing is changed, so a caller can check before it touches anything
 * else (its log, say).
 */
export function checkListenPath(path: string): "free" | "stale" {
  let stat: Deno.FileInfo | undefined;
  try {
    stat = Deno.lstatSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (stat === undefined) return "free";
  if (!stat.isSocket) {
    throw new Error(`Cannot listen on "${path}": it exists and is not a socket`);
  }
  if (isLive(path)) {
    throw new Error(`Cannot listen on "${path}": another process is accepting on it`);
  }
  return "stale";
}

function absolute(path: string): string {
  return resolve(path);
}

/** __SO_ACCEPTCON in /proc/net/unix's Flags column: the socket is listening. */
const SO_ACCEPTCON = 0x10000;

/**
 * Whether a listening socket bound to `path` (absolutely) is listed in /proc/net/unix: the
 * check that does not connect, so the process accepting there logs no phantom session.
 */
function listedAsListening(path: string): boolean {
  let table: string;
  try {
    table = Deno.readTextFileSync("/proc/net/unix");
  } catch {
    return false;
  }
  const abs = absolute(path);
  for (const line of table.split("\n")) {
    // Num RefCount Protocol Flags Type St Inode Path
    const cols = line.trim().split(/\s+/);
    if (cols.length < 8 || cols[7] !== abs) continue;
    if ((parseInt(cols[3], 16) & SO_ACCEPTCON) !== 0) return true;
  }
  return false;
}

function isLive(path: string): boolean {
  if (listedAsListening(path)) return true;
  // Bound by another name (relative, another namespace) or not at all: ask by connecting.
  try {
    connectUnix(path).close();
    return true;
  } catch (e) {
    if (e instanceof SystemError && e.errno === Errno.ECONNREFUSED) return false;
    if (e instanceof SystemError && e.errno === Errno.EAGAIN) return true; // backlog full: alive
    throw e;
  }
}

/**
 * Connects to a listening unix socket. Throws SystemError (ENOENT, ECONNREFUSED…) when nobody
 * listens. A full backlog (EAGAIN on a nonblocking unix connect) is reported as such.
 */
export function connectUnix(path: string): OwnedFd {
  const sock = newSocket();
  const addr = sockaddrUn(path);
  const r = retryEintr(() => libc.connect(sock.fd, addr, 110));
  if (r < 0) {
    const e = errno();
    sock.close();
    throw new SystemError("connect", e, path);
  }
  return sock;
}

/** Accepts one pending connection, or returns undefined when none is waiting. */
export function acceptConnection(listener: OwnedFd | number): OwnedFd | undefined {
  const lfd = typeof listener === "number" ? listener : listener.fd;
  const r = retryEintr(() => libc.accept4(lfd, null, null, C.SOCK_NONBLOCK | C.SOCK_CLOEXEC));
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN || e === Errno.ECONNABORTED) return undefined;
    throw new SystemError("accept4", e);
  }
  return new OwnedFd(r);
}

/** A connected pair of nonblocking, CLOEXEC unix stream sockets. */
export function socketPair(): [OwnedFd, OwnedFd] {
  const out = new Int32Array(new ArrayBuffer(8));
  const r = libc.socketpair(
    C.AF_UNIX,
    C.SOCK_STREAM | C.SOCK_NONBLOCK | C.SOCK_CLOEXEC,
    0,
    new Uint8Array(out.buffer),
  );
  if (r < 0) throw new SystemError("socketpair", errno());
  return [new OwnedFd(out[0]), new OwnedFd(out[1])];
}

/** Shuts a socket down (wakes anything blocked on it, unlike close). Errors are ignored. */
export function shutdownSocket(fd: OwnedFd, how: number = C.SHUT_RDWR): void {
  if (fd.isOpen) libc.shutdown(fd.fd, how);
}

/** The peer's process credentials (SO_PEERCRED). */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Reads SO_PEERCRED of a connected unix socket. */
export function peerCredentials(fd: OwnedFd): PeerCredentials {
  const buf = new Uint8Array(new ArrayBuffer(12));
  const len = new Uint8Array(new ArrayBuffer(4));
  new DataView(len.buffer).setUint32(0, 12, true);
  if (libc.getsockopt(fd.fd, C.SOL_SOCKET, C.SO_PEERCRED, buf, len) < 0) {
    throw new SystemError("getsockopt(SO_PEERCRED)", errno());
  }
  const v = new DataView(buf.buffer);
  return { pid: v.getInt32(0, true), uid: v.getUint32(4, true), gid: v.getUint32(8, true) };
}

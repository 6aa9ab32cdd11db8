/**
 * The differential test's machinery: a scripted vhost-user conversation (messages with real
 * fds: eventfds, memfds, pipes, a socket for the back-end channel) is played once directly
 * between a scripted front-end and a scripted back-end, and once through the proxy against an
 * identical fresh back-end. Everything each of the four sockets of a session receives is
 * recorded — the header and payload bytes, whether the fds rode with the first header byte,
 * and every fd with its kind, its tag (an eventfd's counter, a memfd's name and size), its
 * access mode and file status flags, and whether it is the very file the sender attached — as
 * are the device-state bytes that cross a SET_DEVICE_STATE_FD pipe. The two recordings are then
 * compared byte for byte ({@linkcode compareRecordings}).
 *
 * The back-end side (and QEMU's side of the back-end channel) is a responder: an answer step
 * makes it reply to the oldest request of a given code that it has received, with a payload
 * computed from that request's bytes as received (per the catalogue of spec §1.5/§1.6, the
 * fuzz generator's `replyTo` for everything else). A conversation is data, so the same one
 * is played on both paths; the player never throws on a peer's behaviour (a close, a timeout,
 * an unexpected message are recorded and end the conversation), so a difference always shows
 * as a difference between recordings.
 *
 * @module
 */

import { closeAll, OwnedFd } from "../../ffi/fd.ts";
import { SystemError } from "../../ffi/errors.ts";
import { classifyLink } from "../../ffi/fdinfo.ts";
import { createMemfd, createPipe, readFd, writeAll } from "../../ffi/pipe.ts";
import { createEventFd, POLLIN } from "../../ffi/poll.ts";
import { socketPair } from "../../ffi/socket.ts";
import { type Channel, judge, Model } from "../fuzz/_oracle.ts";
import { replyTo } from "../fuzz/_gen.ts";
import { Prng, shmemConfig, sleepSync, u64, vringState } from "../hostile/_wire.ts";
import { frame, ScriptedPeer, waitFor } from "./scripted_peer.ts";
import { SPEC_BACKEND_NAMES, SPEC_FRONT_END_NAMES } from "./spec_names.ts";

/** The four sockets of a session: QEMU's and the back-end's main sockets, and their ends of the
 * back-end channel. */
export type PeerName = "front" | "back" | "qemuCh" | "backCh";

/** Who receives what a peer sends. */
export const OPPOSITE: Record<PeerName, PeerName> = {
  front: "back",
  back: "front",
  qemuCh: "backCh",
  backCh: "qemuCh",
};

/** The channel a peer's socket belongs to. */
export const CHANNEL_OF: Record<PeerName, Channel> = {
  front: "main",
  back: "main",
  qemuCh: "backend",
  backCh: "backend",
};

/** Whether a peer sends requests (not replies) on its channel. */
export const REQUESTER: Record<PeerName, boolean> = {
  front: true,
  back: false,
  qemuCh: false,
  backCh: true,
};

/** Header flags. */
export const REQ = 0x1;
export const NEED_REPLY = 0x9;
export const REPLY = 0x5;

/** An fd a step attaches, created fresh (and tagged) when the step is played. */
export type FdSpec =
  | { kind: "eventfd" }
  | { kind: "memfd"; size?: number }
  /** A pipe: `send` says which end travels; the other stays with the sender as its state end. */
  | { kind: "pipe"; send: "read" | "write" }
  /** A socketpair: one end travels, the other becomes the sender's end of the back-end channel. */
  | { kind: "channel" }
  /** A socketpair end for some other protocol (GPU_SET_SOCKET); the sender keeps the other. */
  | { kind: "socket" }
  /** A userfaultfd (POSTCOPY_ADVISE's reply). */
  | { kind: "userfaultfd" };

/** A message one peer puts on the wire. */
export interface SendStep {
  by: PeerName;
  request: number;
  flags: number;
  payload?: Uint8Array;
  fds?: FdSpec[];
  /** Send the first `split` bytes (with the fds), pause, then the rest (legal framing). */
  split?: number;
  /** With `split`: the fds ride on the second segment (§1.2 says peers must not). */
  lateFds?: boolean;
}

/** The responder on `answer`'s socket replies to the oldest received request `code`. */
export interface AnswerStep {
  answer: "back" | "qemuCh";
  code: number;
}

/** Device-state bytes cross the pipe of the last SET_DEVICE_STATE_FD (SAVE: back-end → QEMU). */
export interface StreamStep {
  stream: "SAVE" | "LOAD";
  bytes: number;
}

/** One step of a conversation. */
export type Step = SendStep | AnswerStep | StreamStep;

/** A scripted conversation: the same data is played direct and through the proxy. */
export interface Conversation {
  name: string;
  steps: Step[];
  /** Whether REPLY_ACK is negotiated (for the oracle's check of the direct recording). */
  replyAck: boolean;
}

/** An fd as its receiver sees it. */
export interface FdSeen {
  kind: string;
  /** An eventfd's counter or a memfd's name (the sender tags every one uniquely). */
  tag?: string;
  /** A memfd's size. */
  size?: number;
  access: "r" | "w" | "rw";
  /** File status flags (octal, O_CLOEXEC left out: that one is the receiver's own). */
  flags: string;
  /** The very open file the sender attached (false: another file of the same kind). */
  sameAsSent: boolean;
}

/** A message one socket received. */
export interface MessageEntry {
  step: number;
  at: PeerName;
  /** For reading only, e.g. "GET_FEATURES reply". */
  name: string;
  header: string;
  payload: string;
  /** Some fds arrived after the first header byte. */
  lateFds: boolean;
  fds: FdSeen[];
}

/** What one socket received, or what happened instead. */
export type Entry =
  | MessageEntry
  | { step: number; at: PeerName; stream: string }
  | { step: number; at: PeerName; event: string };

/** Everything the peers of one conversation received, in order. */
export interface Recording {
  name: string;
  entries: Entry[];
  /** Messages and fds received, for the summary. */
  messages: number;
  fds: number;
}

const O_CLOEXEC = 0o2000000;
const RECV_TIMEOUT_MS = 3000;

/** Lower-case hex of bytes. */
export function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** The spec's name of a request code on a channel. */
export function requestName(channel: Channel, code: number): string {
  const names = channel === "main" ? SPEC_FRONT_END_NAMES : SPEC_BACKEND_NAMES;
  return names[code] ?? `UNKNOWN(${code})`;
}

/** Identity of an open file, comparable between sender and receiver in this process. */
function identity(link: string, kind: string, fdinfo: string): string {
  if (kind === "eventfd") return `eventfd:${eventfdCount(fdinfo)}`;
  return link; // memfds by their (unique) name, pipes and sockets by inode
}

function eventfdCount(fdinfo: string): string {
  const m = /eventfd-count:\s*([0-9a-fA-F]+)/.exec(fdinfo);
  return m ? BigInt(`0x${m[1]}`).toString() : "?";
}

/** Kind, tag, access, flags and identity of one of this process's fds. */
export function inspectFd(fd: number): Omit<FdSeen, "sameAsSent"> & { identity: string } {
  const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  const kind = classifyLink(link);
  const flags = parseInt(/flags:\s*([0-7]+)/.exec(info)?.[1] ?? "0", 8);
  const seen: Omit<FdSeen, "sameAsSent"> & { identity: string } = {
    kind,
    access: (["r", "w", "rw", "rw"] as const)[flags & 3],
    flags: (flags & ~O_CLOEXEC).toString(8),
    identity: identity(link, kind, info),
  };
  if (kind === "eventfd") seen.tag = eventfdCount(info);
  if (kind === "anon") seen.tag = link;
  if (kind === "memfd") {
    seen.tag = link.replace(/ \(deleted\)$/, "");
    seen.size = Deno.statSync(`/proc/self/fd/${fd}`).size;
  }
  return seen;
}

/** A frame as received, with whether its fds came late. */
export interface Received {
  request: number;
  flags: number;
  bytes: Uint8Array;
  payload: Uint8Array;
  fds: OwnedFd[];
  lateFds: boolean;
}

/** Receives one message; or says why none came. Never throws on the peer's behaviour. */
export function receive(peer: ScriptedPeer, timeoutMs = RECV_TIMEOUT_MS): Received | string {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    let r;
    try {
      r = peer.channel.read();
    } catch (e) {
      return `read failed: ${e instanceof Error ? e.message : e}`;
    }
    if (r.kind === "frame") {
      return {
        request: r.frame.request,
        flags: r.frame.flags,
        bytes: r.frame.bytes.slice(),
        payload: r.frame.payload.slice(),
        fds: r.frame.fds,
        lateFds: r.frame.lateFds,
      };
    }
    if (r.kind === "eof") return r.midMessage ? `closed mid-message (${r.have} bytes)` : "closed";
    if (r.kind === "violation") return `malformed message: ${r.reason.kind}`;
    const left = deadline - performance.now();
    if (left <= 0 || !waitFor(peer.fd, POLLIN, left)) return `nothing within ${timeoutMs} ms`;
  }
}

/**
 * Writes bytes with raw fds on the first segment (optionally split, the fds then optionally on
 * the second); false if the peer is gone.
 */
function sendBytes(
  peer: ScriptedPeer,
  bytes: Uint8Array,
  fds: number[],
  split?: number,
  lateFds = false,
): boolean {
  try {
    if (split !== undefined && split > 0 && split < bytes.length) {
      peer.sendRaw(bytes.subarray(0, split), lateFds ? [] : fds);
      sleepSync(2); // a separate segment for the receiver's recvmsg
      peer.sendRaw(bytes.subarray(split), lateFds ? fds : []);
    } else {
      peer.sendRaw(bytes, fds);
    }
    return true;
  } catch (e) {
    if (e instanceof SystemError && e.isDisconnect) return false;
    throw e;
  }
}

/** Header + payload (the scripted peer's own framing). */
export const frameBytes: (request: number, flags: number, payload: Uint8Array) => Uint8Array =
  frame;

/** A deterministic 32-bit seed of some bytes (FNV-1a). */
function seedOf(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

/** Virtio features the scripted back-end offers: VERSION_1, PROTOCOL_FEATURES, ring features. */
export const RESPONDER_VIRTIO_FEATURES = (1n << 32n) | (1n << 30n) | (1n << 29n) | (1n << 28n);
/** Protocol features it offers: bits 0–23 (the newest text) and an unknown bit 40. */
export const RESPONDER_PROTOCOL_FEATURES = ((1n << 24n) - 1n) | (1n << 40n);
/** Its shared-memory regions (GET_SHMEM_CONFIG): ids 0 and 5 (spec §1.10: index = region id). */
export const RESPONDER_SHMEM = { 0: 1n << 21n, 5: 1n << 30n };

let libcSyscall:
  | Deno.DynamicLibrary<{
    syscall: { parameters: ["i64", "i64"]; result: "i64" };
  }>
  | undefined;

/** A userfaultfd (nonblocking, CLOEXEC), as a back-end answers POSTCOPY_ADVISE with. */
export function createUserfaultfd(): OwnedFd {
  libcSyscall ??= Deno.dlopen("libc.so.6", {
    syscall: { parameters: ["i64", "i64"], result: "i64" },
  });
  const SYS_USERFAULTFD = Deno.build.arch === "aarch64" ? 282n : 323n;
  const fd = Number(libcSyscall.symbols.syscall(SYS_USERFAULTFD, 0o2004000n));
  if (fd < 0) throw new Error("Cannot create a userfaultfd: the syscall failed");
  return new OwnedFd(fd);
}

/** A reply the responder sends: payload and fds. */
export interface Reply {
  payload: Uint8Array;
  fds?: FdSpec[];
}

/**
 * The responder's reply to `req` as it arrived on `channel`: a function of the request's bytes
 * only, so that a request the proxy altered draws a different reply.
 */
export function replyFor(channel: Channel, req: Received): Reply {
  const reply = replyPayload(channel, req);
  if (channel === "main" && req.request === 28) {
    return { payload: reply, fds: [{ kind: "userfaultfd" }] };
  }
  if (channel === "main" && (req.request === 31 || req.request === 41)) {
    return { payload: reply, fds: [{ kind: "memfd" }] }; // the inflight area; a dma-buf
  }
  if (channel === "backend" && req.request === 8) {
    return { payload: reply, fds: [{ kind: "memfd" }] };
  }
  return { payload: reply };
}

function replyPayload(channel: Channel, req: Received): Uint8Array {
  const rng = new Prng(seedOf(req.bytes));
  const index = req.payload.length >= 4
    ? new DataView(req.payload.buffer, req.payload.byteOffset).getUint32(0, true)
    : 0;
  if (channel === "main") {
    switch (req.request) {
      case 1:
        return u64(RESPONDER_VIRTIO_FEATURES);
      case 15:
        return u64(RESPONDER_PROTOCOL_FEATURES);
      case 11:
      case 45:
        return vringState(index, rng.int(0, 0xffff));
      case 17:
        return u64(2);
      case 24: { // GET_CONFIG: identical size, the request's header, then data
        const out = req.payload.slice();
        out.set(rng.bytes(Math.max(0, out.length - 12)), 12);
        return out;
      }
      case 26: { // CREATE_CRYPTO_SESSION: the same struct with a session id
        const out = req.payload.slice();
        if (out.length === 1072) new DataView(out.buffer).setBigInt64(1064, 7n, true);
        return out;
      }
      case 28: // POSTCOPY_ADVISE: size 0 and the userfaultfd
        return new Uint8Array(0);
      case 31: { // GET_INFLIGHT_FD: the area's size, the request's queue geometry, one fd
        const out = new Uint8Array(new ArrayBuffer(24));
        out.set(req.payload.subarray(16, 20), 16);
        new DataView(out.buffer).setBigUint64(0, 4096n, true);
        return out;
      }
      case 36:
        return u64(509);
      case 40:
        return u64(0x0f);
      case 41: // GET_SHARED_OBJECT: found, with its dma-buf fd
        return u64(0);
      case 42: // SET_DEVICE_STATE_FD: accepted, no fd of its own (bit 8)
        return u64(1n << 8n);
      case 43:
        return u64(0);
      case 44:
        return shmemConfig(RESPONDER_SHMEM);
    }
  } else if (req.request === 8) {
    return u64(0); // SHARED_OBJECT_LOOKUP: found, with its fd
  }
  return replyTo(rng, channel, req.request).payload;
}

/** What the two ends of a session are connected through. */
export interface Link {
  /** Connects a front-end and returns it with the back-end's side of the same session. */
  open(): { front: ScriptedPeer; back: ScriptedPeer };
}

/** A device-state blob: deterministic bytes. */
export function stateBlob(bytes: number, seed: number): Uint8Array {
  return new Prng(seed).bytes(bytes);
}

function readToEof(fd: OwnedFd, timeoutMs: number): Uint8Array | string {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(new ArrayBuffer(65536));
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0 || !waitFor(fd.fd, POLLIN, left)) return `no EOF within ${timeoutMs} ms`;
    const n = readFd(fd, buf);
    if (n === 0) break;
    if (n > 0) {
      chunks.push(buf.slice(0, n));
      total += n;
    }
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * Plays `conversation` over `link` and records what every socket received. Runs synchronously
 * in lock step: each sent message is received at the opposite socket before the next step.
 */
export function play(conversation: Conversation, link: Link): Recording {
  const entries: Entry[] = [];
  const rec: Recording = { name: conversation.name, entries, messages: 0, fds: 0 };
  const { front, back } = link.open();
  const peers: Partial<Record<PeerName, ScriptedPeer>> = { front, back };
  const received: Record<Channel, Received[]> = { main: [], backend: [] };
  let frontState: OwnedFd | undefined;
  let backState: OwnedFd | undefined;
  let tag = 0;
  const kept: OwnedFd[] = []; // other ends a sender holds until the conversation ends
  const stop = (step: number, at: PeerName, event: string) => entries.push({ step, at, event });

  /** Creates the step's fds; returns the ones that travel and their identities. */
  const makeFds = (specs: FdSpec[], by: PeerName): OwnedFd[] => {
    const out: OwnedFd[] = [];
    for (const spec of specs) {
      tag++;
      if (spec.kind === "eventfd") out.push(createEventFd(0x1000 + tag));
      else if (spec.kind === "memfd") out.push(createMemfd(`dt-${tag}`, spec.size ?? 4096));
      else if (spec.kind === "userfaultfd") out.push(createUserfaultfd());
      else if (spec.kind === "socket") {
        const [mine, theirs] = socketPair();
        out.push(theirs);
        kept.push(mine);
      } else if (spec.kind === "pipe") {
        const [r, w] = createPipe();
        const [travels, stays] = spec.send === "read" ? [r, w] : [w, r];
        out.push(travels);
        frontState?.close();
        frontState = stays;
      } else {
        const [mine, theirs] = socketPair();
        out.push(theirs);
        if (by === "front") {
          peers.qemuCh?.close();
          peers.qemuCh = new ScriptedPeer(mine);
        } else mine.close();
      }
    }
    return out;
  };

  try {
    for (let step = 0; step < conversation.steps.length; step++) {
      const s = conversation.steps[step];
      if ("stream" in s) {
        const blob = stateBlob(s.bytes, step);
        const [writer, reader, at]: [OwnedFd | undefined, OwnedFd | undefined, PeerName] =
          s.stream === "SAVE" ? [backState, frontState, "front"] : [frontState, backState, "back"];
        if (!writer || !reader) {
          stop(step, at, `no state fd for ${s.stream}`);
          break;
        }
        try {
          writeAll(writer, blob);
        } catch (e) {
          stop(step, at, `state write failed: ${e instanceof Error ? e.message : e}`);
          break;
        }
        writer.close();
        const got = readToEof(reader, RECV_TIMEOUT_MS);
        reader.close();
        frontState = backState = undefined;
        if (typeof got === "string") {
          stop(step, at, got);
          break;
        }
        entries.push({ step, at, stream: hex(got) });
        continue;
      }

      let by: PeerName, request: number, flags: number, payload: Uint8Array;
      let specs: FdSpec[] = [], split: number | undefined, lateFds = false;
      if ("answer" in s) {
        by = s.answer;
        const channel = CHANNEL_OF[by];
        const queue = received[channel];
        const i = queue.findIndex((r) => r.request === s.code);
        if (i < 0) {
          stop(step, by, `no ${requestName(channel, s.code)} request to answer`);
          break;
        }
        const [req] = queue.splice(i, 1);
        request = req.request;
        flags = REPLY;
        ({ payload, fds: specs = [] } = replyFor(channel, req));
      } else {
        ({ by, request, flags } = s);
        payload = s.payload ?? new Uint8Array(0);
        specs = s.fds ?? [];
        split = s.split;
        lateFds = s.lateFds ?? false;
      }
      const from = peers[by];
      const to = OPPOSITE[by];
      const receiver = peers[to];
      if (!from || !receiver) {
        stop(step, by, `no ${from ? to : by} socket`);
        break;
      }
      const fds = makeFds(specs, by);
      const sentIds = new Set(fds.map((f) => inspectFd(f.fd).identity));
      const bytes = frameBytes(request, flags, payload);
      const ok = sendBytes(from, bytes, fds.map((f) => f.fd), split, lateFds);
      closeAll(fds); // the kernel holds its own references now
      if (!ok) {
        stop(step, by, "send failed: the other side hung up");
        break;
      }
      const got = receive(receiver);
      if (typeof got === "string") {
        stop(step, to, got);
        break;
      }
      const channel = CHANNEL_OF[to];
      const isReply = (got.flags & 0x4) !== 0;
      const seen: FdSeen[] = got.fds.map((f) => {
        const { identity, ...rest } = inspectFd(f.fd);
        return { ...rest, sameAsSent: sentIds.has(identity) };
      });
      entries.push({
        step,
        at: to,
        name: `${requestName(channel, got.request)}${isReply ? " reply" : ""}`,
        header: hex(got.bytes.subarray(0, 12)),
        payload: hex(got.payload),
        lateFds: got.lateFds,
        fds: seen,
      });
      rec.messages++;
      rec.fds += got.fds.length;
      // The receiver keeps what it will use: the back-end channel, the state fd.
      const keep = new Set<OwnedFd>();
      if (!isReply && to === "back" && got.fds.length === 1) {
        if (got.request === 21 && seen[0].kind === "socket") {
          peers.backCh?.close();
          peers.backCh = new ScriptedPeer(got.fds[0]);
          keep.add(got.fds[0]);
        } else if (got.request === 42 && seen[0].kind === "pipe") {
          backState?.close();
          backState = got.fds[0];
          keep.add(got.fds[0]);
        }
      }
      for (const f of got.fds) if (!keep.has(f)) f.close();
      if (!isReply && !REQUESTER[to]) received[channel].push({ ...got, fds: [] });
    }
    // Nothing else may arrive anywhere (a message the proxy made up, or one it repeated).
    for (const name of ["front", "back", "qemuCh", "backCh"] as const) {
      const p = peers[name];
      if (!p || !waitFor(p.fd, POLLIN, 5)) continue;
      const got = receive(p, 5);
      if (typeof got === "string") continue; // a close at the end is no message
      closeAll(got.fds);
      stop(-1, name, `unexpected message ${hex(got.bytes.subarray(0, 12))}`);
    }
  } finally {
    closeAll(kept);
    frontState?.close();
    backState?.close();
    for (const p of Object.values(peers)) p?.close();
  }
  return rec;
}

/**
 * Messages that the proxy substitutes an fd on by design (README: the back-end channel is
 * interposed; a phase-0 SET_DEVICE_STATE_FD gets the proxy's pipe): there, and only there, the
 * back-end may receive another file of the same kind, access and flags.
 */
function interposed(e: MessageEntry): string | undefined {
  if (e.at !== "back") return undefined;
  const code = u32At(e.header, 0);
  if (code === 21 && e.fds.every((f) => f.kind === "socket")) {
    return "SET_BACKEND_REQ_FD: the back-end channel socket is the proxy's";
  }
  if (
    code === 42 && e.payload.length === 16 && u32At(e.payload, 4) === 0 &&
    e.fds.every((f) => f.kind === "pipe")
  ) {
    return "SET_DEVICE_STATE_FD phase 0: the state pipe is the proxy's";
  }
  return undefined;
}

/** The little-endian u32 at byte `offset` of a hex string. */
function u32At(hexText: string, offset: number): number {
  const bytes = hexText.slice(2 * offset, 2 * offset + 8).match(/../g) ?? [];
  return bytes.reduceRight((v, b) => v * 256 + parseInt(b, 16), 0);
}

function describe(e: Entry | undefined): string {
  if (e === undefined) return "nothing";
  if ("event" in e) return `${e.at}: ${e.event}`;
  if ("stream" in e) return `${e.at}: ${e.stream.length / 2} state bytes`;
  return `${e.at}: ${e.name} header ${e.header} payload ${e.payload.slice(0, 96)}${
    e.payload.length > 96 ? "…" : ""
  } (${e.payload.length / 2} bytes) fds ${JSON.stringify(e.fds)}${e.lateFds ? " late" : ""}`;
}

function firstDiff(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** What {@linkcode compareRecordings} found. */
export interface Comparison {
  /** One line per difference; empty when the recordings are the same. */
  differences: string[];
  /** The by-design fd substitutions that were compared without identity. */
  interposed: string[];
}

/**
 * Compares two recordings entry by entry, byte for byte. Fd identity (`sameAsSent`) is left
 * out only at the proxy's documented interposition points ({@linkcode interposed}); kind,
 * access and flags are compared there too.
 */
export function compareRecordings(direct: Recording, proxied: Recording): Comparison {
  const differences: string[] = [];
  const notes: string[] = [];
  const n = Math.max(direct.entries.length, proxied.entries.length);
  for (let i = 0; i < n; i++) {
    let a = direct.entries[i], b = proxied.entries[i];
    if (a && b && "header" in a && "header" in b) {
      const why = interposed(b);
      if (why !== undefined && a.fds.every((f) => f.sameAsSent)) {
        notes.push(`${direct.name} step ${b.step}: ${why}`);
        const strip = (e: MessageEntry): MessageEntry => ({
          ...e,
          fds: e.fds.map(({ sameAsSent: _, ...f }) => ({ ...f, sameAsSent: true })),
        });
        a = strip(a);
        b = strip(b);
      }
    }
    const ja = JSON.stringify(a), jb = JSON.stringify(b);
    if (ja === jb) continue;
    let detail = "";
    if (a && b && "header" in a && "header" in b) {
      if (a.header !== b.header) {
        detail = `header differs at byte ${firstDiff(a.header, b.header) >> 1}`;
      } else if (a.payload !== b.payload) {
        detail = `payload differs at byte ${firstDiff(a.payload, b.payload) >> 1}`;
      } else if (JSON.stringify(a.fds) !== JSON.stringify(b.fds)) detail = "fds differ";
      else detail = "framing differs";
    } else if (a && b && "stream" in a && "stream" in b) {
      detail = `state bytes differ at byte ${firstDiff(a.stream, b.stream) >> 1}`;
    }
    differences.push(
      `${direct.name}, entry ${i}${detail ? ` (${detail})` : ""}:\n    direct:  ${
        describe(a)
      }\n    proxied: ${describe(b)}`,
    );
    break; // after the first difference the conversations part ways
  }
  return { differences, interposed: notes };
}

/**
 * Replays the direct recording through the fuzz oracle (`_oracle.ts`, written from the spec
 * independently of the proxy): the faults it finds, i.e. why a conversation would not be
 * well-formed. The differential test only counts conversations the oracle accepts.
 */
export function oracleFaults(c: Conversation, r: Recording): string[] {
  const model = new Model(c.replyAck);
  const faults: string[] = [];
  for (const e of r.entries) {
    if ("event" in e) {
      faults.push(`step ${e.step}: ${e.event}`);
      continue;
    }
    if (!("header" in e)) continue;
    const bytes = Uint8Array.from(e.header.match(/../g)!.map((x) => parseInt(x, 16)));
    const v = new DataView(bytes.buffer);
    const payload = Uint8Array.from((e.payload.match(/../g) ?? []).map((x) => parseInt(x, 16)));
    const seen = {
      request: v.getUint32(0, true),
      flags: v.getUint32(4, true),
      payload,
      fdCount: e.fds.length,
    };
    const fromRequester = REQUESTER[OPPOSITE[e.at]];
    const fault = judge(model, CHANNEL_OF[e.at], seen, fromRequester);
    if (fault) faults.push(`step ${e.step} (${e.name}): ${fault}`);
    else model.delivered(CHANNEL_OF[e.at], seen, !fromRequester);
  }
  return faults;
}

/**
 * Builds a conversation step by step with the oracle's model of what is owed a reply, so that
 * the responders answer everything a real peer would wait for.
 */
export class ScriptBuilder {
  readonly steps: Step[] = [];
  readonly model: Model;

  constructor(replyAck: boolean) {
    this.model = new Model(replyAck);
  }

  /** Adds a message; returns the oracle's fault if a strict peer would reject it. */
  send(step: SendStep, commit = true): string | undefined {
    const seen = {
      request: step.request,
      flags: step.flags,
      payload: step.payload ?? new Uint8Array(0),
      fdCount: step.fds?.length ?? 0,
    };
    const channel = CHANNEL_OF[step.by];
    const fault = judge(this.model, channel, seen, REQUESTER[step.by]);
    if (fault !== undefined || !commit) return fault;
    this.steps.push(step);
    this.model.delivered(channel, seen, !REQUESTER[step.by]);
    return undefined;
  }

  /** The responder answers the oldest request owed a reply on `channel`; false if none is. */
  answerOne(channel: Channel): boolean {
    const code = this.model.owed(channel)[0];
    if (code === undefined) return false;
    this.steps.push({ answer: channel === "main" ? "back" : "qemuCh", code });
    // The reply's bytes are made at play time; the model only needs its code and flags.
    this.model.delivered(channel, {
      request: code,
      flags: REPLY,
      payload: new Uint8Array(0),
      fdCount: 0,
    }, true);
    return true;
  }

  /** Answers everything owed on both channels. */
  settle(): void {
    while (this.answerOne("main"));
    while (this.answerOne("backend"));
  }

  /** The conversation. */
  build(name: string): Conversation {
    return { name, steps: this.steps, replyAck: this.model.replyAck };
  }
}

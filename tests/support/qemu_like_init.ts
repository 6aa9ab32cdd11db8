/**
 * A scripted front-end that talks to a real back-end the way QEMU 10 does (protocol.md §1.8,
 * Q-vu/Q-vh): feature negotiation, the back-end channel, a memory table on a memfd, every ring
 * brought up and enabled, a migration start (log base, LOG_ALL, logged ring addresses), the
 * rings stopped, the device state saved when the back-end has F_DEVICE_STATE, with NEED_REPLY
 * wherever QEMU sets it once REPLY_ACK is negotiated (and QEMU's GET_FEATURES barrier where it
 * is not). It is adaptive like QEMU — what it sends next depends on the replies — so two runs
 * that got the same replies sent the same requests. It records every reply (and anything the
 * back-end sends on its channel) for {@linkcode compareRecordings}.
 *
 * One deviation from QEMU, so that SET_MEM_TABLE is exercised: F_CONFIGURE_MEM_SLOTS is not
 * acked (QEMU would then use ADD_MEM_REG).
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../../ffi/fd.ts";
import { createMemfd, createPipe, readFd } from "../../ffi/pipe.ts";
import { createEventFd, POLLIN, PollSet } from "../../ffi/poll.ts";
import { socketPair } from "../../ffi/socket.ts";
import { SystemError } from "../../ffi/errors.ts";
import { logArea, memTable, PF, readU64, u64, vringFile, vringState } from "../hostile/_wire.ts";
import {
  type Entry,
  frameBytes,
  hex,
  inspectFd,
  NEED_REPLY,
  receive,
  type Received,
  type Recording,
  REPLY,
  REQ,
  requestName,
} from "./differential.ts";
import { ScriptedPeer } from "./scripted_peer.ts";

/** The device QEMU would drive. */
export interface InitOptions {
  device: "fs" | "net";
  /** Virtqueues brought up (fs: hiprio + one request queue; net: rx + tx). */
  queues: number;
  /** How long a reply may take (a real back-end maps memory on some requests). */
  replyTimeoutMs?: number;
}

const BIT = (n: number) => 1n << BigInt(n);
/** QEMU 10's protocol ack mask: bits 0–19 (F_MAX 20), F_CONFIG off for devices without config
 * ops, F_CONFIGURE_MEM_SLOTS off (see the module note). */
const PROTOCOL_ACK_MASK = (BIT(20) - 1n) & ~PF.CONFIG & ~PF.CONFIGURE_MEM_SLOTS;
const F_PROTOCOL_FEATURES = BIT(30);
const F_LOG_ALL = BIT(26);
/** Virtio features the devices accept (vhost-user-fs / vhost-user-net user_feature_bits,
 * trimmed to what a guest without a driver would leave). */
const DEVICE_FEATURES = {
  fs: BIT(32) | BIT(28) | BIT(29) | BIT(24),
  net: BIT(32) | BIT(28) | BIT(29) | BIT(15),
};
const GUEST_RAM = 4 << 20;
const RAM_UADDR = 0x7f00_0000_0000n;
const RING_SIZE = 256;

class Stop extends Error {}

function ringGpa(q: number): bigint {
  return 0x10_0000n + BigInt(q) * 0x1_0000n;
}

/** `struct vhost_vring_addr` with QEMU's user addresses (and the used ring's GPA for logging). */
function ringAddr(q: number, log: boolean): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(40));
  const v = new DataView(b.buffer);
  const desc = RAM_UADDR + ringGpa(q);
  v.setUint32(0, q, true);
  v.setUint32(4, log ? 1 : 0, true);
  v.setBigUint64(8, desc, true);
  v.setBigUint64(16, desc + 0x2000n, true); // used
  v.setBigUint64(24, desc + 0x1000n, true); // avail
  v.setBigUint64(32, ringGpa(q) + 0x2000n, true);
  return b;
}

/** Runs the conversation on `front` (connected to the back-end, directly or via the proxy). */
export function qemuLikeInit(front: ScriptedPeer, options: InitOptions): Recording {
  const timeout = options.replyTimeoutMs ?? 10_000;
  const entries: Entry[] = [];
  const rec: Recording = {
    name: `QEMU-like ${options.device} init`,
    entries,
    messages: 0,
    fds: 0,
  };
  let step = 0;
  let qemuCh: ScriptedPeer | undefined;
  const held: OwnedFd[] = []; // QEMU keeps its kick/call eventfds and guest memory

  const record = (at: "front" | "qemuCh", got: Received) => {
    const channel = at === "front" ? "main" : "backend";
    const isReply = (got.flags & 0x4) !== 0;
    entries.push({
      step,
      at,
      name: `${requestName(channel, got.request)}${isReply ? " reply" : ""}`,
      header: hex(got.bytes.subarray(0, 12)),
      payload: hex(got.payload),
      lateFds: got.lateFds,
      fds: got.fds.map((f) => {
        const { identity: _, ...seen } = inspectFd(f.fd);
        return { ...seen, sameAsSent: false };
      }),
    });
    rec.messages++;
    rec.fds += got.fds.length;
  };

  /** Serves the back-end channel like QEMU: records each request, answers NEED_REPLY with 1. */
  const serveChannel = () => {
    if (!qemuCh) return;
    const p = new PollSet();
    p.add(qemuCh.fd, POLLIN);
    while (p.wait(0) > 0) {
      const got = receive(qemuCh, 100);
      if (typeof got === "string") {
        entries.push({ step, at: "qemuCh", event: got });
        qemuCh.close();
        qemuCh = undefined;
        return;
      }
      record("qemuCh", got);
      closeAll(got.fds);
      if (got.flags & 0x8) {
        qemuCh.send({ request: got.request, flags: REPLY, payload: u64(1) });
      }
    }
  };

  /** Sends a request; returns its reply when one is expected. */
  const request = (
    code: number,
    flags: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: OwnedFd[] = [],
    replied = false,
  ): Received | undefined => {
    step++;
    try {
      front.sendRaw(frameBytes(code, flags, payload), fds.map((f) => f.fd));
    } catch (e) {
      if (e instanceof SystemError && e.isDisconnect) {
        entries.push({ step, at: "front", event: `send of ${requestName("main", code)} failed` });
        throw new Stop();
      }
      throw e;
    }
    closeAll(fds);
    serveChannel();
    if (!replied) return undefined;
    const got = receive(front, timeout);
    if (typeof got === "string") {
      entries.push({ step, at: "front", event: `${requestName("main", code)}: ${got}` });
      throw new Stop();
    }
    record("front", got);
    serveChannel();
    return got;
  };

  try {
    const features = readU64(request(1, REQ, undefined, [], true)!.payload);
    let acked = 0n;
    if (features & F_PROTOCOL_FEATURES) {
      const offered = readU64(request(15, REQ, undefined, [], true)!.payload);
      acked = offered & PROTOCOL_ACK_MASK;
      request(16, REQ, u64(acked)); // QEMU never sets NEED_REPLY here
    }
    const ack = (acked & PF.REPLY_ACK) !== 0n;
    const nr = ack ? NEED_REPLY : REQ;
    /** QEMU's enforce_reply: the ack with REPLY_ACK, else a GET_FEATURES barrier. */
    const waited = (code: number, payload?: Uint8Array, fds: OwnedFd[] = []) => {
      request(code, nr, payload, fds, ack);
      if (!ack) request(1, REQ, undefined, [], true);
    };
    /** Acked when REPLY_ACK is negotiated, otherwise fire and forget (QEMU 10.2's ring fds). */
    const acks = (code: number, payload?: Uint8Array, fds: OwnedFd[] = []) =>
      request(code, nr, payload, fds, ack);

    if (acked & PF.MQ) request(17, REQ, undefined, [], true);
    if (acked & PF.BACKEND_REQ) {
      const [mine, theirs] = socketPair();
      qemuCh = new ScriptedPeer(mine);
      acks(21, undefined, [theirs]);
    }
    request(3, REQ);
    request(1, REQ, undefined, [], true);
    for (let q = 0; q < options.queues; q++) {
      const call = createEventFd();
      held.push(call.dup());
      acks(13, vringFile(q, false), [call]);
      const err = createEventFd();
      held.push(err.dup());
      acks(14, vringFile(q, false), [err]);
    }

    // ---- start (vhost_dev_start) ----
    const virtio = (features & DEVICE_FEATURES[options.device]) | F_PROTOCOL_FEATURES;
    request(2, REQ, u64(virtio));
    const status = (acked & PF.STATUS) !== 0n;
    if (status) {
      const s = readU64(request(40, REQ, undefined, [], true)!.payload);
      waited(39, u64(s | 0x08n));
    }
    const ram = createMemfd("guest-ram", GUEST_RAM);
    held.push(ram.dup());
    acks(5, memTable([{ gpa: 0n, size: BigInt(GUEST_RAM), uaddr: RAM_UADDR }]), [ram]);
    for (let q = 0; q < options.queues; q++) {
      request(8, REQ, vringState(q, RING_SIZE));
      request(10, REQ, vringState(q, 0));
      request(9, REQ, ringAddr(q, false));
      const kick = createEventFd();
      held.push(kick.dup());
      acks(12, vringFile(q, false), [kick]);
      const call = createEventFd();
      held.push(call.dup());
      acks(13, vringFile(q, false), [call]);
    }
    if (features & F_PROTOCOL_FEATURES) {
      for (let q = 0; q < options.queues; q++) waited(18, vringState(q, 1));
    }
    if (status) waited(39, u64(0x0f));

    // ---- migration starts (vhost_migration_log) ----
    if ((acked & PF.LOG_SHMFD) && (features & F_LOG_ALL)) {
      const log = createMemfd("dirty-log", 4096);
      held.push(log.dup());
      request(6, REQ, logArea(4096n), [log], true); // answered whenever LOG_SHMFD is negotiated
      waited(2, u64(virtio | F_LOG_ALL));
      for (let q = 0; q < options.queues; q++) waited(9, ringAddr(q, true));
    }

    // ---- stop (do_vhost_dev_stop) ----
    if (features & F_PROTOCOL_FEATURES) {
      for (let q = 0; q < options.queues; q++) waited(18, vringState(q, 0));
    }
    for (let q = 0; q < options.queues; q++) request(11, REQ, vringState(q, 0), [], true);
    if (acked & PF.DEVICE_STATE) {
      const [r, w] = createPipe();
      try {
        const reply = request(42, REQ, vringState(0, 0), [w], true)!;
        closeAll(reply.fds);
        const value = readU64(reply.payload);
        if ((value & 0xffn) === 0n && reply.fds.length === 0) {
          entries.push({ step, at: "front", stream: hex(readState(r, timeout)) });
        }
      } finally {
        r.close();
      }
      request(43, REQ, undefined, [], true);
    }
    if (status) waited(39, u64(0));
    request(1, REQ, undefined, [], true);
    // Whatever the back-end still sends on its channel.
    serveChannel();
  } catch (e) {
    if (!(e instanceof Stop)) throw e;
  } finally {
    closeAll(held);
    qemuCh?.close();
  }
  return rec;
}

function readState(fd: OwnedFd, timeoutMs: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(new ArrayBuffer(65536));
  const p = new PollSet();
  p.add(fd.fd, POLLIN);
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = Math.ceil(deadline - performance.now());
    if (left <= 0) throw new Error(`No end of the device state within ${timeoutMs} ms`);
    if (p.wait(left) === 0) continue;
    const n = readFd(fd, buf);
    if (n === 0) break;
    if (n > 0) chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

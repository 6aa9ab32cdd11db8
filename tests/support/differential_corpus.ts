/**
 * The conversations of the differential test with scripted peers: the well-formed (`relay`)
 * rows of the hostile case table, a seeded batch of fuzz conversations the oracle accepts, and
 * the newest spec text's conversation (protocol.md §1.10).
 *
 * @module
 */

import { type Case, CASES, type Send } from "../hostile/_cases.ts";
import {
  config,
  deviceStateParams,
  inflight,
  iotlb,
  logArea,
  memReg,
  memTable,
  PF,
  Prng,
  region,
  u64,
  uuid,
  vringAddr,
  vringFile,
  vringState,
} from "../hostile/_wire.ts";
import { backendRequest, frontRequest, type Msg } from "../fuzz/_gen.ts";
import { caseSeed } from "../fuzz/live_fuzz.ts";
import {
  CHANNEL_OF,
  type Conversation,
  type FdSpec,
  NEED_REPLY,
  OPPOSITE,
  type PeerName,
  REPLY,
  REQ,
  RESPONDER_VIRTIO_FEATURES,
  ScriptBuilder,
  type SendStep,
} from "./differential.ts";

function fdSpecs(n: number, kind: "eventfd" | "memfd" = "eventfd"): FdSpec[] {
  return Array.from({ length: n }, () => kind === "memfd" ? { kind, size: 4096 } : { kind });
}

/** QEMU's init handshake as the hostile rig does it, answered by the responder. */
function negotiate(b: ScriptBuilder, acked: bigint, channel: boolean): void {
  b.send({ by: "front", request: 1, flags: REQ });
  b.settle();
  b.send({ by: "front", request: 15, flags: REQ });
  b.settle();
  b.send({ by: "front", request: 16, flags: REQ, payload: u64(acked) });
  if (channel) b.send({ by: "front", request: 21, flags: REQ, fds: [{ kind: "channel" }] });
}

function stepOf(s: Send): SendStep {
  return {
    by: s.by,
    request: s.request ?? 0,
    flags: s.flags ?? 0,
    payload: s.payload,
    fds: fdSpecs(s.fds ?? 0, s.fdKind),
    split: s.split,
    lateFds: s.lateFds,
  };
}

/** Why a `relay` row is not part of the well-formed corpus, if it is not. */
export function excludedWhy(c: Case): string | undefined {
  const sends = [...(c.prelude ?? []), c.send];
  if (sends.some((s) => s.raw !== undefined || s.cut !== undefined || s.thenClose)) {
    return "not a framed message";
  }
  return undefined;
}

/** The hostile table's `relay` rows as conversations, and the rows left out with the reason. */
export function hostileRelayConversations(): {
  conversations: Conversation[];
  excluded: string[];
} {
  const conversations: Conversation[] = [];
  const excluded: string[] = [];
  for (const c of CASES) {
    if (c.expect.policy !== "relay") continue;
    const why = excludedWhy(c);
    if (why !== undefined) {
      excluded.push(`${c.name}: ${why}`);
      continue;
    }
    const setup = c.setup === undefined || c.setup === "fresh" ? undefined : c.setup;
    const b = new ScriptBuilder(((setup?.acked ?? 0n) & PF.REPLY_ACK) !== 0n);
    if (setup) negotiate(b, setup.acked, setup.channel ?? false);
    const sends: SendStep[] = [...(c.prelude ?? []), c.send].map(stepOf);
    const answer = c.expect.answer;
    if (answer) {
      sends.push({
        by: OPPOSITE[c.send.by],
        request: answer.request,
        flags: REPLY,
        payload: answer.payload,
      });
    }
    sends.forEach((s, i) => {
      b.steps.push(s); // the row says it is relayed: played as written, oracle or not
      b.model.delivered(CHANNEL_OF[s.by], {
        request: s.request,
        flags: s.flags,
        payload: s.payload ?? new Uint8Array(0),
        fdCount: s.fds?.length ?? 0,
      }, (s.flags & 0x4) !== 0);
      const next = sends[i + 1];
      // A scripted reply comes next: the responder must not answer in its place.
      const repliedNext = next && (next.flags & 0x4) !== 0 &&
        CHANNEL_OF[next.by] === CHANNEL_OF[s.by];
      if (!repliedNext) b.settle();
    });
    b.send({ by: "front", request: 1, flags: REQ }); // the session goes on
    b.settle();
    conversations.push(b.build(`hostile row "${c.name}"`));
  }
  return { conversations, excluded };
}

function toStep(by: PeerName, m: Msg, rng: Prng): SendStep {
  const bytes = 12 + m.payload.length;
  return {
    by,
    request: m.request,
    flags: m.flags,
    payload: m.payload,
    fds: fdSpecs(m.fds, m.fdKind),
    // Legal framing only: sometimes split in two segments, the fds always with the first byte.
    split: rng.chance(0.1) ? rng.int(1, bytes - 1) : undefined,
  };
}

/**
 * Fuzz conversation `index` of a run seeded `seed`: the live fuzz's generator and choices of
 * who acts (pipelined requests, replies when owed, both channels), unmutated, each message
 * kept only if the oracle accepts it; then every owed reply and a GET_FEATURES round trip.
 */
export function fuzzConversation(seed: number, index: number): Conversation {
  const rng = new Prng(caseSeed(seed, index));
  const setup = rng.pick(["fresh", "ack", "channel", "channel"] as const);
  const b = new ScriptBuilder(setup !== "fresh");
  const extra = PF.MQ | PF.STATUS | PF.CONFIGURE_MEM_SLOTS;
  if (setup === "ack") negotiate(b, PF.REPLY_ACK | extra, false);
  if (setup === "channel") {
    negotiate(b, PF.REPLY_ACK | PF.BACKEND_REQ | PF.BACKEND_SEND_FD | extra, true);
  }
  const channel = setup === "channel";
  const steps = rng.int(1, 30);
  for (let i = 0; i < steps; i++) {
    const choices: PeerName[] = ["front", "front", "front"];
    if (b.model.owed("main").length > 0) choices.push("back", "back", "back");
    if (channel) {
      choices.push("backCh", "backCh");
      if (b.model.owed("backend").length > 0) choices.push("qemuCh", "qemuCh");
    }
    const by = rng.pick(choices);
    if (by === "back") b.answerOne("main");
    else if (by === "qemuCh") b.answerOne("backend");
    else {
      const m = by === "front" ? frontRequest(rng, b.model.replyAck) : backendRequest(rng);
      b.send(toStep(by, m, rng)); // a message the oracle rejects is left out
    }
  }
  b.settle();
  b.send({ by: "front", request: 1, flags: REQ });
  b.settle();
  return b.build(`fuzz seed ${seed} conversation ${index} (${setup})`);
}

/** `struct VhostUserMMap` (40 bytes): shmid, pad, fd_offset, shm_offset, len, flags. */
function shmemMap(shmid: number, shmOffset: bigint, len: bigint, flags: bigint): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(40));
  const v = new DataView(b.buffer);
  v.setUint8(0, shmid);
  v.setBigUint64(8, 0n, true);
  v.setBigUint64(16, shmOffset, true);
  v.setBigUint64(24, len, true);
  v.setBigUint64(32, flags, true);
  return b;
}

/** Protocol features of the newest-spec conversation (§1.10): 23 only with 20 and 12. */
export const NEWEST_ACKED = PF.REPLY_ACK | PF.BACKEND_REQ | PF.BACKEND_SEND_FD |
  PF.INFLIGHT_SHMFD | PF.DEVICE_STATE | PF.GET_VRING_BASE_INFLIGHT | PF.GPA_ADDRESSES |
  PF.SHMEM | PF.GET_VRING_BASE_SKIP_DRAIN;

/**
 * The newest spec text's conversation: features with bits 12, 20, 21, 22, 23; the back-end
 * channel; a ring brought up with NEED_REPLY acks; GET_SHMEM_CONFIG answered with 2056 bytes
 * (regions at ids 0 and 5); BACKEND_SHMEM_MAP/UNMAP on the back-end channel;
 * GET_VRING_BASE_SKIP_DRAIN (45) and its reply; SET_DEVICE_STATE_FD phase 1 with its reply and
 * the state it carries; CHECK_DEVICE_STATE.
 */
export function newestSpecConversation(): Conversation {
  const steps: Conversation["steps"] = [];
  const ask = (request: number, payload?: Uint8Array, fds?: FdSpec[], flags = REQ) => {
    steps.push({ by: "front", request, flags, payload, fds });
    steps.push({ answer: "back", code: request });
  };
  const tell = (request: number, payload?: Uint8Array, fds?: FdSpec[]) =>
    steps.push({ by: "front", request, flags: REQ, payload, fds });
  ask(1);
  ask(15);
  ask(16, u64(NEWEST_ACKED), undefined, NEED_REPLY);
  ask(21, undefined, [{ kind: "channel" }], NEED_REPLY);
  tell(3);
  ask(2, u64(RESPONDER_VIRTIO_FEATURES), undefined, NEED_REPLY);
  // GPA_ADDRESSES (bit 21): a region's user address duplicates its guest address.
  const gpa = (i: number) => ({ ...region(i), uaddr: region(i).gpa });
  ask(5, memTable([gpa(0), gpa(1)]), fdSpecs(2, "memfd"), NEED_REPLY);
  tell(8, vringState(0, 256));
  tell(10, vringState(0, 0));
  // The ring addresses are guest-physical too.
  ask(
    9,
    vringAddr({ index: 0, desc: 0x10000n, avail: 0x11000n, used: 0x12000n }),
    undefined,
    NEED_REPLY,
  );
  ask(12, vringFile(0, false), fdSpecs(1), NEED_REPLY);
  ask(13, vringFile(0, false), fdSpecs(1), NEED_REPLY);
  ask(18, vringState(0, 1), undefined, NEED_REPLY);
  ask(44); // GET_SHMEM_CONFIG: the responder answers 2056 bytes, regions at ids 0 and 5
  steps.push({
    by: "backCh",
    request: 9, // BACKEND_SHMEM_MAP into region 5
    flags: NEED_REPLY,
    payload: shmemMap(5, 0x10000n, 0x4000n, 1n),
    fds: fdSpecs(1, "memfd"),
  });
  steps.push({ answer: "qemuCh", code: 9 });
  steps.push({
    by: "backCh",
    request: 10, // BACKEND_SHMEM_UNMAP
    flags: NEED_REPLY,
    payload: shmemMap(5, 0x10000n, 0x4000n, 0n),
  });
  steps.push({ answer: "qemuCh", code: 10 });
  ask(18, vringState(0, 0), undefined, NEED_REPLY);
  ask(45, vringState(0, 0)); // GET_VRING_BASE_SKIP_DRAIN: vring state in, vring state out
  // SET_DEVICE_STATE_FD with phase 1 (reserved for later): relayed untouched, fd and all.
  ask(42, deviceStateParams(0, 1), [{ kind: "pipe", send: "write" }]);
  steps.push({ stream: "SAVE", bytes: 3000 });
  ask(43);
  ask(1);
  return { name: "newest spec text (§1.10)", steps, replyAck: true };
}

/**
 * Device state in phase 0, where the proxy does take part: SAVE and LOAD through its pipe, the
 * bytes on each side compared, CHECK_DEVICE_STATE after each.
 */
export function deviceStateConversation(): Conversation {
  const steps: Conversation["steps"] = [];
  const ask = (request: number, payload?: Uint8Array, fds?: FdSpec[]) => {
    steps.push({ by: "front", request, flags: REQ, payload, fds });
    steps.push({ answer: "back", code: request });
  };
  ask(1);
  ask(15);
  steps.push({ by: "front", request: 16, flags: REQ, payload: u64(PF.DEVICE_STATE) });
  ask(11, vringState(0, 0));
  ask(42, deviceStateParams(0, 0), [{ kind: "pipe", send: "write" }]);
  steps.push({ stream: "SAVE", bytes: 20_000 });
  ask(43);
  ask(42, deviceStateParams(1, 0), [{ kind: "pipe", send: "read" }]);
  steps.push({ stream: "LOAD", bytes: 30_000 });
  ask(43);
  ask(1);
  return { name: "device state, phase 0 SAVE and LOAD", steps, replyAck: false };
}

const B = (n: number) => 1n << BigInt(n);

/** A 1072-byte `VhostUserCryptoSession` (QEMU ≥ 8.0): op_code, the session info, session_id. */
function cryptoSession(): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(1072));
  const v = new DataView(b.buffer);
  v.setBigUint64(0, 1n, true); // op_code
  b.fill(0x5a, 8, 8 + 48); // sym session info, then key bytes
  v.setBigInt64(1064, -1n, true); // session_id: filled in by the back-end
  return b;
}

/** `VhostUserVringArea` (24 bytes): index (NOFD in bit 8), size, offset. */
function vringArea(index: number, size: bigint): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(24));
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(index), true);
  v.setBigUint64(8, size, true);
  return b;
}

/**
 * One well-formed instance of (nearly) every request of spec §1.5 and §1.6 with the feature
 * that gates it negotiated, each answered as the spec says (replies with fds included: the
 * inflight area, a dma-buf, a shared object's fd). Memory goes through ADD/REM_MEM_REG
 * (F_CONFIGURE_MEM_SLOTS); the postcopy requests, which must not meet that feature, are in
 * {@linkcode postcopyConversation}; SET_DEVICE_STATE_FD in {@linkcode deviceStateConversation}.
 */
export function catalogueConversation(): Conversation {
  const acked = (B(24) - 1n) & ~PF.PAGEFAULT & ~B(17) /* XEN_MMAP */ & ~PF.GPA_ADDRESSES;
  const steps: Conversation["steps"] = [];
  const ask = (request: number, payload?: Uint8Array, fds?: FdSpec[], flags = REQ) => {
    steps.push({ by: "front", request, flags, payload, fds });
    steps.push({ answer: "back", code: request });
  };
  const acks = (request: number, payload?: Uint8Array, fds?: FdSpec[]) =>
    ask(request, payload, fds, NEED_REPLY);
  const tell = (request: number, payload?: Uint8Array, fds?: FdSpec[]) =>
    steps.push({ by: "front", request, flags: REQ, payload, fds });
  const backend = (request: number, payload?: Uint8Array, fds?: FdSpec[]) => {
    steps.push({ by: "backCh", request, flags: NEED_REPLY, payload, fds });
    steps.push({ answer: "qemuCh", code: request });
  };
  ask(1);
  ask(15);
  acks(16, u64(acked));
  ask(17); // GET_QUEUE_NUM
  ask(36); // GET_MAX_MEM_SLOTS
  acks(21, undefined, [{ kind: "channel" }]);
  acks(3);
  acks(2, u64(RESPONDER_VIRTIO_FEATURES));
  ask(40);
  acks(39, u64(0x0b));
  acks(37, memReg(region(0)), [{ kind: "memfd" }]);
  acks(37, memReg(region(1)), [{ kind: "memfd" }]);
  acks(38, memReg(region(1)));
  ask(6, logArea(4096n), [{ kind: "memfd" }]); // answered with F_LOG_SHMFD
  tell(7, undefined, [{ kind: "eventfd" }]); // SET_LOG_FD
  acks(8, vringState(0, 256));
  acks(10, vringState(0, 0));
  acks(23, vringState(0, 0)); // SET_VRING_ENDIAN (F_CROSS_ENDIAN)
  acks(9, vringAddr({ index: 0 }));
  acks(12, vringFile(0, false), [{ kind: "eventfd" }]);
  acks(13, vringFile(0, true)); // no MSI vector: NOFD
  acks(14, vringFile(0, false), [{ kind: "eventfd" }]);
  acks(18, vringState(0, 1));
  tell(35, vringState(0, 0)); // VRING_KICK (F_INBAND_NOTIFICATIONS)
  tell(19, u64(0x5254_0012_3456n)); // SEND_RARP: the guest's MAC
  acks(20, u64(1500)); // NET_SET_MTU
  acks(22, iotlb(0x1000n, { type: 2 })); // IOTLB_MSG update
  ask(24, config(new Uint8Array(16))); // GET_CONFIG: answered with the same size
  acks(25, config(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])));
  ask(26, cryptoSession()); // 1072 bytes each way
  tell(27, u64(7)); // CLOSE_CRYPTO_SESSION
  ask(31, inflight({ numQueues: 2, queueSize: 256 })); // answered with an fd
  tell(32, inflight({ mmapSize: 4096n, numQueues: 2, queueSize: 256 }), [{ kind: "memfd" }]);
  tell(33, undefined, [{ kind: "socket" }]); // GPU_SET_SOCKET
  ask(41, uuid(4)); // GET_SHARED_OBJECT: answered with a dma-buf fd
  ask(44);
  backend(1, iotlb(0x2000n, { type: 1 })); // BACKEND_IOTLB_MSG miss
  backend(2); // BACKEND_CONFIG_CHANGE_MSG
  backend(3, vringArea(0, 4096n), [{ kind: "memfd" }]); // host notifier
  backend(3, vringArea(0x100, 4096n)); // host notifier removed (NOFD)
  backend(4, vringState(0, 0)); // BACKEND_VRING_CALL (in-band)
  backend(5, vringState(0, 0)); // BACKEND_VRING_ERR
  backend(6, uuid(6)); // SHARED_OBJECT_ADD
  backend(8, uuid(6)); // SHARED_OBJECT_LOOKUP: answered with an fd
  backend(7, uuid(6)); // SHARED_OBJECT_REMOVE
  backend(9, shmemMap(0, 0n, 0x1000n, 1n), [{ kind: "memfd" }]); // SHMEM_MAP
  backend(10, shmemMap(0, 0n, 0x1000n, 0n)); // SHMEM_UNMAP
  acks(18, vringState(0, 0));
  ask(11, vringState(0, 0));
  ask(45, vringState(0, 0));
  acks(34); // RESET_DEVICE
  tell(4); // RESET_OWNER (deprecated, never answered)
  ask(1);
  return { name: "every request of the catalogue", steps, replyAck: true };
}

/**
 * Postcopy (F_PAGEFAULT): the userfaultfd reply, POSTCOPY_LISTEN, the SET_MEM_TABLE the
 * back-end answers with its own mapping addresses, QEMU's 8-byte acknowledgement of it, and
 * POSTCOPY_END.
 */
export function postcopyConversation(): Conversation {
  const steps: Conversation["steps"] = [];
  const ask = (request: number, payload?: Uint8Array, fds?: FdSpec[], flags = REQ) => {
    steps.push({ by: "front", request, flags, payload, fds });
    steps.push({ answer: "back", code: request });
  };
  const regions = [region(0), region(1)];
  ask(1);
  ask(15);
  ask(16, u64(PF.REPLY_ACK | PF.PAGEFAULT | PF.LOG_SHMFD), undefined, NEED_REPLY);
  ask(3, undefined, undefined, NEED_REPLY);
  ask(5, memTable(regions), fdSpecs(2, "memfd"), NEED_REPLY);
  ask(28); // POSTCOPY_ADVISE: size 0 and a userfaultfd
  ask(29, undefined, undefined, NEED_REPLY); // POSTCOPY_LISTEN
  // In postcopy the memory table is answered with the back-end's own addresses…
  steps.push({
    by: "front",
    request: 5,
    flags: REQ,
    payload: memTable(regions),
    fds: fdSpecs(2, "memfd"),
  });
  const mapped = regions.map((r, i) => ({
    ...r,
    uaddr: 0x7e00_0000_0000n + BigInt(i) * 0x10_0000n,
  }));
  steps.push({ by: "back", request: 5, flags: REPLY, payload: memTable(mapped) });
  // …which QEMU acknowledges with an 8-byte SET_MEM_TABLE.
  steps.push({ by: "front", request: 5, flags: REQ, payload: u64(0) });
  ask(30, undefined, undefined, NEED_REPLY); // POSTCOPY_END
  ask(1);
  return { name: "postcopy", steps, replyAck: true };
}

/** `VhostUserMemory` with F_XEN_MMAP: 40-byte regions (flags bit 0 foreign, a domid). */
function xenMemTable(n: number): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(8 + 40 * n));
  const v = new DataView(b.buffer);
  v.setUint32(0, n, true);
  for (let i = 0; i < n; i++) {
    const r = region(i);
    v.setBigUint64(8 + 40 * i, r.gpa, true);
    v.setBigUint64(16 + 40 * i, r.size, true);
    v.setBigUint64(24 + 40 * i, r.uaddr, true);
    v.setBigUint64(32 + 40 * i, 0n, true);
    v.setUint32(40 + 40 * i, 1, true); // foreign mapping
    v.setUint32(44 + 40 * i, 7, true); // domid
  }
  return b;
}

/**
 * Layouts that depend on what was negotiated: F_XEN_MMAP's 40-byte regions (a full table of 8,
 * with 8 memfds), packed rings' vring bases with both wrap counters, the largest config space
 * (256 bytes) read and written in a migration write.
 */
export function layoutsConversation(): Conversation {
  const steps: Conversation["steps"] = [];
  const ask = (request: number, payload?: Uint8Array, fds?: FdSpec[], flags = REQ) => {
    steps.push({ by: "front", request, flags, payload, fds });
    steps.push({ answer: "back", code: request });
  };
  const config256 = new Prng(256).bytes(256);
  ask(1);
  ask(15);
  ask(16, u64(PF.REPLY_ACK | B(17) | PF.CONFIG), undefined, NEED_REPLY);
  ask(2, u64(B(34) | B(32) | B(30)), undefined, NEED_REPLY); // RING_PACKED
  ask(5, xenMemTable(8), fdSpecs(8, "memfd"), NEED_REPLY);
  for (let q = 0; q < 2; q++) {
    steps.push({ by: "front", request: 8, flags: REQ, payload: vringState(q, 256) });
    // Packed: avail index 3 with its wrap counter (bit 15), used index 5 with its (bit 31).
    steps.push({ by: "front", request: 10, flags: REQ, payload: vringState(q, 0x8005_8003) });
    steps.push({ by: "front", request: 9, flags: REQ, payload: vringAddr({ index: q }) });
  }
  ask(24, config(new Uint8Array(256))); // the largest config space QEMU reads
  ask(25, config(config256, { flags: 1 }), undefined, NEED_REPLY); // a migration write
  ask(11, vringState(0, 0));
  ask(11, vringState(1, 0));
  ask(1);
  return {
    name: "negotiated layouts (Xen regions, packed rings, 256-byte config)",
    steps,
    replyAck: true,
  };
}

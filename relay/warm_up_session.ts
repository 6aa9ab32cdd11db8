/**
 * Runs the messages of a live migration's switch-over through a real Session when the engine
 * starts, between two scripted peers on this thread, so that a proxy's one migration does not
 * run them cold.
 *
 * Measured through the proxy (pingpong round trip, p50): 870 µs the first few times a message
 * path runs in a process, 190 µs after 5 s idle once warm, 87 µs hot. Traced in real migrations,
 * every handler of the switch-over took 0.15–1.2 ms, and the relay thread spent 8–11 ms of CPU
 * per migration (per-thread schedstat), most of the proxy's share of the downtime: each proxy
 * process meets these paths for the first time while the VM is stopped.
 *
 * The script is what QEMU 10 sends around a migration (docs/protocol.md; traced
 * with `-trace vhost_user_*`): the destination's LOAD, CHECK and ring start, then the source's
 * ring stop, SAVE and CHECK. The back-end peer answers as virtiofsd does. The session runs over
 * socketpairs (no file, no connect).
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { createMemfd, createPipe, readFd, writeAll } from "../ffi/pipe.ts";
import { createEventFd } from "../ffi/poll.ts";
import { Reactor } from "../ffi/reactor.ts";
import { socketPair } from "../ffi/socket.ts";
import type { DeviceStateConfig, DeviceStateFactory } from "./engine.ts";
import type { LogRecord } from "../log/record.ts";
import { Session } from "./session.ts";
import { frame, ScriptedPeer, u64 } from "./scripted_peer.ts";
import { codeIn, findRequestByName } from "../protocol/catalogue.ts";
import { protocolFeatureMask, virtioFeatureMask } from "../protocol/features.ts";

const REQUEST = 0x1;
const NEED_REPLY = 0x8;
const REPLY = 0x5;
/** The rehearsal's largest message is a 40-byte region: pooled channel buffers suffice. */
const PEER_PAYLOAD = 4096;
/** Virtio bit 30 (protocol features) and the protocol features QEMU and virtiofsd agree on. */
const FEATURES = virtioFeatureMask("VIRTIO_F_VERSION_1") |
  virtioFeatureMask("VHOST_USER_F_PROTOCOL_FEATURES");
const PROTOCOL = protocolFeatureMask("MQ") | protocolFeatureMask("REPLY_ACK") |
  protocolFeatureMask("CONFIGURE_MEM_SLOTS") | protocolFeatureMask("DEVICE_STATE");
const STATE = new Uint8Array(4096).map((_, i) => i * 13);

/** The requests the rehearsal sends, by their catalogue names. */
type RequestName =
  | "GET_FEATURES"
  | "GET_PROTOCOL_FEATURES"
  | "SET_PROTOCOL_FEATURES"
  | "GET_QUEUE_NUM"
  | "SET_FEATURES"
  | "SET_DEVICE_STATE_FD"
  | "CHECK_DEVICE_STATE"
  | "SET_VRING_CALL"
  | "ADD_MEM_REG"
  | "SET_VRING_NUM"
  | "SET_VRING_BASE"
  | "SET_VRING_ADDR"
  | "SET_VRING_KICK"
  | "SET_VRING_ENABLE"
  | "GET_VRING_BASE";

/** A request's code, from the catalogue (upstream numbering), never a number written here. */
function codeOf(name: RequestName): number {
  const spec = findRequestByName("main", name);
  const code = spec === undefined ? undefined : codeIn(spec, "upstream");
  if (code === undefined) throw new Error(`warm-up: ${name} is not in the catalogue`);
  return code;
}

/** What a warm-up did, for the engine's tests. */
export interface WarmUpResult {
  rounds: number;
  ms: number;
  /** Records the session emitted that were not expected (a script that no longer fits). */
  problems: string[];
}

function u32s(...values: number[]): Uint8Array {
  const b = new Uint8Array(new ArrayBuffer(4 * values.length));
  const v = new DataView(b.buffer);
  values.forEach((x, i) => v.setUint32(4 * i, x, true));
  return b;
}

/**
 * Runs `rounds` switch-overs through a Session of the engine's configuration (relay mode, no
 * dump, no faults, upstream numbering) and returns what it saw; `onRecord` sees the session's
 * records (for tests). Throws on a script failure; callers treat it as an optimisation.
 */
export function warmUpSession(
  deviceState: DeviceStateConfig,
  hooks: DeviceStateFactory | undefined,
  rounds: number,
  onRecord?: (r: LogRecord) => void,
): WarmUpResult {
  const started = performance.now();
  const reactor = new Reactor((e) => {
    throw e;
  });
  const problems: string[] = [];
  const emit = (r: LogRecord) => {
    onRecord?.(r);
    if (r.type === "error" || r.type === "warning") problems.push(`${r.type}: ${r.message}`);
  };
  const config: DeviceStateConfig = {
    mode: "relay",
    hash: deviceState.hash,
    hashAlgorithm: deviceState.hashAlgorithm,
    buffer: false,
  };
  // Socketpairs on both sides: the rehearsal creates no file and connects nowhere.
  const [frontEnd, proxyEnd] = socketPair();
  const [backFd, proxyBackEnd] = socketPair();
  const owned: { close(): void }[] = [];
  let session: Session | undefined;
  try {
    const front = new ScriptedPeer(frontEnd, { maxPayload: PEER_PAYLOAD });
    owned.push(front);
    session = new Session(
      proxyEnd,
      {
        id: 0,
        backendPath: "(warm-up socketpair)",
        backendSocket: proxyBackEnd,
        frontDialect: "upstream",
        backDialect: "upstream",
        stuckAfterMs: 0,
        connectTimeoutMs: 1000,
        logMessages: false,
        deviceState: hooks ? (s) => hooks(s, config) : undefined,
      },
      reactor,
      emit,
      () => {},
      null,
    );
    session.start();
    const back = new ScriptedPeer(backFd, { maxPayload: PEER_PAYLOAD });
    owned.push(back);

    /** Turns the reactor until `peer` has a frame. */
    const next = (peer: ScriptedPeer) => {
      for (let i = 0; i < 200; i++) {
        const f = peer.poll();
        if (f) return f;
        reactor.turn(i < 20 ? 0 : 1);
      }
      throw new Error("warm-up: a message did not arrive");
    };
    /** front → proxy → back, and for a reply, back → proxy → front. */
    const exchange = (
      name: RequestName,
      payload?: Uint8Array,
      fds: number[] = [],
      reply?: Uint8Array,
      needReply = false,
    ) => {
      const request = codeOf(name);
      front.sendRaw(frame(request, REQUEST | (needReply ? NEED_REPLY : 0), payload), fds);
      const got = next(back);
      const received = got.fds;
      if (reply === undefined && !needReply) {
        closeAll(received);
        return [];
      }
      back.sendRaw(frame(request, REPLY, reply ?? u64(0n)));
      closeAll(next(front).fds);
      return received;
    };

    exchange("GET_FEATURES", undefined, [], u64(FEATURES));
    exchange("GET_PROTOCOL_FEATURES", undefined, [], u64(PROTOCOL));
    exchange("SET_PROTOCOL_FEATURES", u64(PROTOCOL));
    exchange("GET_QUEUE_NUM", undefined, [], u64(1n));
    exchange("SET_FEATURES", u64(FEATURES));
    const drain = (fd: OwnedFd) => {
      fd.setNonBlocking(true);
      const buf = new Uint8Array(new ArrayBuffer(STATE.length));
      try {
        for (let i = 0; i < 400; i++) {
          const n = readFd(fd, buf);
          if (n === 0) return;
          if (n < 0) reactor.turn(i < 20 ? 0 : 1);
        }
        throw new Error("warm-up: the state did not reach its reader");
      } finally {
        fd.close();
      }
    };
    for (let round = 0; round < rounds; round++) switchOver(exchange, drain);
    return { rounds, ms: performance.now() - started, problems };
  } finally {
    session?.end("warm-up done", "proxy");
    for (let i = 0; i < 5; i++) reactor.turn(0);
    for (const o of owned.reverse()) o.close();
    // If the session never took it (it threw first), the proxy's end is still ours.
    if (!session) proxyBackEnd.close();
  }
}

type Exchange = (
  name: RequestName,
  payload?: Uint8Array,
  fds?: number[],
  reply?: Uint8Array,
  needReply?: boolean,
) => OwnedFd[];

/** One destination switch-over then one source switch-over, as QEMU 10 sends them. */
function switchOver(exchange: Exchange, drain: (fd: OwnedFd) => void): void {
  const noFdOk = u64(0x100n); // SET_DEVICE_STATE_FD reply: success, no fd of its own
  // Destination: LOAD. QEMU writes the state into a pipe whose read end the back-end gets.
  {
    const [r, w] = createPipe();
    const [backR] = exchange("SET_DEVICE_STATE_FD", u32s(1, 0), [r.fd], noFdOk) as [OwnedFd];
    r.close();
    writeAll(w, STATE);
    w.close();
    drain(backR);
    exchange("CHECK_DEVICE_STATE", undefined, [], u64(0n));
  }
  const calls = [createEventFd(), createEventFd()];
  const mem = createMemfd("warm-up", 1 << 16);
  try {
    exchange("SET_VRING_CALL", u64(0n), [calls[0].fd]);
    exchange("SET_VRING_CALL", u64(1n), [calls[1].fd]);
    exchange("SET_FEATURES", u64(FEATURES));
    const region = new Uint8Array(new ArrayBuffer(40));
    new DataView(region.buffer).setBigUint64(16, 1n << 16n, true);
    closeAll(exchange("ADD_MEM_REG", region, [mem.fd], undefined, true));
    for (const q of [0, 1]) {
      exchange("SET_VRING_NUM", u32s(q, 256));
      exchange("SET_VRING_BASE", u32s(q, 0));
      const addr = new Uint8Array(new ArrayBuffer(40));
      addr.set(u32s(q, 0));
      exchange("SET_VRING_ADDR", addr);
      exchange("SET_VRING_KICK", u64(BigInt(q)), [calls[q].fd]);
    }
    for (const q of [0, 1]) exchange("SET_VRING_ENABLE", u32s(q, 1), [], undefined, true);
    // Source: stop the rings, fetch their bases, SAVE and CHECK.
    for (const q of [0, 1]) exchange("SET_VRING_ENABLE", u32s(q, 0), [], undefined, true);
    for (const q of [0, 1]) exchange("GET_VRING_BASE", u32s(q, 0), [], u32s(q, 0));
    exchange("SET_VRING_CALL", u64(0n), [calls[0].fd]);
  } finally {
    closeAll([...calls, mem]);
  }
  {
    const [r, w] = createPipe();
    const [backW] = exchange("SET_DEVICE_STATE_FD", u32s(0, 0), [w.fd], noFdOk) as [OwnedFd];
    w.close();
    writeAll(backW, STATE);
    backW.close();
    drain(r);
    exchange("CHECK_DEVICE_STATE", undefined, [], u64(0n));
  }
}

/**
 * The hostile-peer case table: one row per malformed or hostile thing a peer can do, with the
 * policy the proxy must apply (issue 4):
 *
 * - `reject`: what the strictest real peer (QEMU or rust-vmm, spec §1 and §6.2) would reject is
 *   never forwarded; the proxy logs an error naming session, side, message and field, and
 *   closes both sides of that session;
 * - `relay`: legal (or merely odd) traffic goes through verbatim, e.g. unknown request codes,
 *   which are logged as unknown (spec §7 #12);
 * - `peer-close`: a peer that vanishes (mid-message or not) gets the other side closed
 *   promptly, and the log says who closed first and what was in flight;
 * - `channel-close`: the back-end channel alone is lost; the main channel goes on;
 * - `no-fd`: the fd must not reach the receiver (rejected, or relayed without it).
 *
 * Rows are data; `malformed_test.ts` runs them against the proxy subprocess.
 *
 * @module
 */

import type { ChannelName, SenderSide } from "../../log/record.ts";
import {
  config,
  deviceStateParams,
  type FdKind,
  frame,
  inflight,
  iotlb,
  logArea,
  memReg,
  memTable,
  NEED_REPLY,
  PF,
  Prng,
  region,
  REPLY,
  REQ,
  shmemConfig,
  u64,
  uuid,
  vringAddr,
  vringFile,
  vringState,
} from "./_wire.ts";

/** Which socket of a session sends: QEMU's and the back-end's main sockets, and their ends of
 * the back-end channel. */
export type PeerName = "front" | "back" | "qemuCh" | "backCh";

/** Who receives what a peer sends. */
export const OPPOSITE: Record<PeerName, PeerName> = {
  front: "back",
  back: "front",
  qemuCh: "backCh",
  backCh: "qemuCh",
};

/** The protocol side of each socket. */
export const SIDE: Record<PeerName, SenderSide> = {
  front: "front-end",
  back: "back-end",
  qemuCh: "front-end",
  backCh: "back-end",
};

/** What the session negotiates before the case runs. */
export type Setup =
  | "fresh"
  | { acked: bigint; channel?: boolean };

/** One thing a peer puts on the wire. */
export interface Send {
  by: PeerName;
  request?: number;
  flags?: number;
  payload?: Uint8Array;
  /** Raw bytes instead of a framed message. */
  raw?: Uint8Array;
  /** Fds attached to the first byte (any number: 9+ makes the proxy see MSG_CTRUNC). */
  fds?: number;
  fdKind?: FdKind;
  /** Send the first `split` bytes, pause, then the rest; `lateFds` moves the fds to the rest. */
  split?: number;
  lateFds?: boolean;
  /** Send only the first `cut` bytes. */
  cut?: number;
  /** Close the sender afterwards. */
  thenClose?: boolean;
  /** The receiver then closes with this message unread: the proxy sees ECONNRESET. */
  receiverResets?: boolean;
}

/** What the proxy must do. */
export type Expect =
  | {
    policy: "reject";
    side: SenderSide;
    channel?: ChannelName;
    /** Message name the error record must carry (exact, or a pattern). */
    request: string | RegExp;
    /** Field the error record must name (exact, or a pattern). */
    field?: string | RegExp;
    /** Pattern the error sentence must match. */
    message?: RegExp;
  }
  | {
    policy: "relay";
    warning?: RegExp;
    /** No logged warning of the relayed message may match. */
    noWarning?: RegExp;
    fds?: number;
    /** The receiver's reply, which must then be relayed back verbatim. */
    answer?: { request: number; payload?: Uint8Array };
  }
  | { policy: "no-fd"; request: string }
  | { policy: "peer-close"; closedBy: SenderSide; reason: RegExp; inFlight?: string[] }
  | { policy: "channel-close"; side: SenderSide; warning: RegExp };

/** One row. */
export interface Case {
  /** Reads like the spec: what is sent and what must happen. */
  name: string;
  /** Table section, one Deno test each. */
  group: Group;
  /** Where the rule comes from. */
  source: string;
  setup?: Setup;
  /** Well-formed messages first (each must arrive verbatim at the opposite peer). */
  prelude?: Send[];
  /** The hostile act. */
  send: Send;
  expect: Expect;
}

/** Sections of the table. */
export type Group =
  | "header flags"
  | "sizes"
  | "memory table"
  | "fds"
  | "reply correlation"
  | "values"
  | "unknown codes"
  | "newest spec"
  | "framing and vanishing peers";

const ACK: Setup = { acked: PF.REPLY_ACK };
const CHANNEL: Setup = { acked: PF.REPLY_ACK | PF.BACKEND_REQ | PF.BACKEND_SEND_FD, channel: true };
const GET_FEATURES: Send = { by: "front", request: 1, flags: REQ };
const GET_VRING_BASE: Send = { by: "front", request: 11, flags: REQ, payload: vringState(0, 0) };
const FOUR_GIB = 0xffffffff;

const reject = (
  side: SenderSide,
  request: string | RegExp,
  field?: string | RegExp,
  extra: { channel?: ChannelName; message?: RegExp } = {},
): Expect => ({ policy: "reject", side, request, field, ...extra });

/** A header alone, with any size field. */
function header(request: number, flags: number, size: number): Uint8Array {
  const h = frame(request, flags);
  new DataView(h.buffer).setUint32(8, size, true);
  return h;
}

/** Deterministic garbage (the seed is in the case name so it reproduces). */
function garbage(seed: number, bytes: number): Uint8Array {
  return new Prng(seed).bytes(bytes);
}

const regions = (n: number) => Array.from({ length: n }, (_, i) => region(i));

/** The table. */
export const CASES: readonly Case[] = [
  // ---- header flags (spec §1.1; rust-vmm `is_valid`, QEMU `vhost_user_read_header`) --------
  ...[0x0, 0x2, 0x3].map((flags): Case => ({
    name: `GET_FEATURES with version ${flags} (flags 0x${flags.toString(16)}) is rejected`,
    group: "header flags",
    source: "§1.1 version = 1; rust-vmm get_version() != 1",
    send: { ...GET_FEATURES, flags },
    expect: reject("front-end", "GET_FEATURES", "flags", { message: /version/ }),
  })),
  ...[0x11, 0x80000001, 0xfffffff1].map((flags): Case => ({
    name: `GET_FEATURES with reserved flag bits (0x${
      flags.toString(16)
    }) is relayed with a warning`,
    group: "header flags",
    source: "§1.1 bits 4–31 reserved for later: the receiver decides (forward compatibility)",
    send: { ...GET_FEATURES, flags },
    expect: { policy: "relay", warning: /reserved flag bits/ },
  })),
  {
    name: "a front-end request with the REPLY bit (GET_FEATURES 0x5) is rejected",
    group: "header flags",
    source: "§1.1 REPLY marks replies; the front-end only replies on the back-end channel",
    send: { ...GET_FEATURES, flags: 0x5 },
    expect: reject("front-end", "GET_FEATURES", "flags", { message: /REPLY/ }),
  },
  {
    name: "a reply from the front-end on the main channel (SET_FEATURES reply) is rejected",
    group: "header flags",
    source: "§1.1; rust-vmm check_request_size: is_reply() ⇒ InvalidMessage",
    send: { by: "front", request: 2, flags: REPLY, payload: u64(0) },
    expect: reject("front-end", "SET_FEATURES", "flags"),
  },
  {
    name: "a GET_FEATURES reply with NEED_REPLY (flags 0xd) is rejected",
    group: "header flags",
    source: "§1.1 QEMU requires reply flags exactly 0x5",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags: 0xd, payload: u64(1n << 30n) },
    expect: reject("back-end", "GET_FEATURES", "flags", { message: /NEED_REPLY/ }),
  },
  ...[0x4, 0x6].map((flags): Case => ({
    name: `a GET_FEATURES reply with flags 0x${flags.toString(16)} is rejected`,
    group: "header flags",
    source: "§1.1 QEMU requires reply flags exactly 0x5",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags, payload: u64(1n << 30n) },
    expect: reject("back-end", "GET_FEATURES", "flags"),
  })),
  {
    name: "a GET_FEATURES reply with a reserved flag bit (flags 0x15) is relayed with a warning",
    group: "header flags",
    source: "§1.1 bits 4–31 reserved for later: the receiver decides (forward compatibility)",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags: 0x15, payload: u64(1n << 30n) },
    expect: { policy: "relay", warning: /reserved flag bits "0x10"/ },
  },
  {
    name: "a request from the back-end on the main channel is rejected",
    group: "header flags",
    source: "§1.5 the main channel carries front-end requests only",
    send: { by: "back", request: 1, flags: REQ },
    expect: reject("back-end", "GET_FEATURES", "flags"),
  },
  {
    name: "a back-end-channel request with the REPLY bit is rejected",
    group: "header flags",
    source: "§1.6 the back-end sends requests on its channel",
    setup: CHANNEL,
    send: { by: "backCh", request: 1, flags: REPLY, payload: iotlb(0n) },
    expect: reject("back-end", "BACKEND_IOTLB_MSG", "flags", { channel: "backend" }),
  },
  {
    name: "a request from QEMU on the back-end channel is rejected",
    group: "header flags",
    source: "§1.6 the front-end only replies on the back-end channel",
    setup: CHANNEL,
    send: { by: "qemuCh", request: 1, flags: REQ, payload: iotlb(0n) },
    expect: reject("front-end", "BACKEND_IOTLB_MSG", "flags", { channel: "backend" }),
  },
  {
    name: "a back-end-channel reply with NEED_REPLY is rejected",
    group: "header flags",
    source: "§1.6 QEMU replies with flags (req & ~NEED_REPLY) | REPLY",
    setup: CHANNEL,
    prelude: [{ by: "backCh", request: 2, flags: NEED_REPLY }],
    send: { by: "qemuCh", request: 2, flags: 0xd, payload: u64(0) },
    expect: reject("front-end", "BACKEND_CONFIG_CHANGE_MSG", "flags", { channel: "backend" }),
  },

  // ---- sizes (spec §1.4/§1.5 exact layouts; rust-vmm check_request_size, MAX_MSG_SIZE) -----
  ...([
    [9, "SET_VRING_ADDR", 12],
    [9, "SET_VRING_ADDR", 2000],
    [2, "SET_FEATURES", 4],
    [1, "GET_FEATURES", 8],
    [8, "SET_VRING_NUM", 16],
    [22, "IOTLB_MSG", 24],
    [16, "SET_PROTOCOL_FEATURES", 9],
    [3, "SET_OWNER", 1],
  ] as const).map(([request, name, size]): Case => ({
    name: `${name} with a ${size}-byte payload is rejected`,
    group: "sizes",
    source: "§1.5 exact payload size; rust-vmm check_request_size",
    send: { by: "front", request, flags: REQ, payload: new Uint8Array(size) },
    expect: reject("front-end", name, "size", { message: new RegExp(`${size} bytes`) }),
  })),
  {
    name: "a GET_FEATURES reply of 4 bytes is rejected",
    group: "sizes",
    source: "§1.5 QEMU checks size == 8",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags: REPLY, payload: new Uint8Array(4) },
    expect: reject("back-end", "GET_FEATURES", "size"),
  },
  {
    name: "a GET_VRING_BASE reply of 12 bytes is rejected",
    group: "sizes",
    source: "§1.5 QEMU checks size == 8",
    prelude: [GET_VRING_BASE],
    send: { by: "back", request: 11, flags: REPLY, payload: new Uint8Array(12) },
    expect: reject("back-end", "GET_VRING_BASE", "size"),
  },
  {
    name: "a BACKEND_IOTLB_MSG of 24 bytes is rejected",
    group: "sizes",
    source: "§1.6 iotlb is 32 bytes",
    setup: CHANNEL,
    send: { by: "backCh", request: 1, flags: REQ, payload: new Uint8Array(24) },
    expect: reject("back-end", "BACKEND_IOTLB_MSG", "size", { channel: "backend" }),
  },
  {
    name: "a back-end-channel ack of 16 bytes is rejected",
    group: "sizes",
    source: "§1.6 QEMU replies with a u64",
    setup: CHANNEL,
    prelude: [{ by: "backCh", request: 1, flags: NEED_REPLY, payload: iotlb(0n) }],
    send: { by: "qemuCh", request: 1, flags: REPLY, payload: new Uint8Array(16) },
    expect: reject("front-end", "BACKEND_IOTLB_MSG", "size", { channel: "backend" }),
  },
  {
    name: "a header announcing 4 GiB of payload is rejected before any allocation",
    group: "sizes",
    source: "§1.1 rust-vmm MAX_MSG_SIZE 0x1000",
    send: { by: "front", raw: header(1, REQ, FOUR_GIB) },
    expect: reject("front-end", "GET_FEATURES", "size", { message: /4294967295/ }),
  },
  {
    name: "a reply header announcing 4 GiB is rejected",
    group: "sizes",
    source: "§1.1 QEMU rejects reply size > 1072",
    prelude: [GET_FEATURES],
    send: { by: "back", raw: header(1, REPLY, FOUR_GIB) },
    expect: reject("back-end", "GET_FEATURES", "size"),
  },
  {
    name: "a back-end-channel header announcing 4 GiB is rejected",
    group: "sizes",
    source: "§1.6 QEMU closes the back-end channel on size > max",
    setup: CHANNEL,
    send: { by: "backCh", raw: header(1, REQ, FOUR_GIB) },
    expect: reject("back-end", "BACKEND_IOTLB_MSG", "size", { channel: "backend" }),
  },
  {
    name: "an unknown request with 2057 bytes (one over the bound) is rejected",
    group: "sizes",
    source: "§1.10 2056 (GET_SHMEM_CONFIG's reply) is the largest payload: unknown codes too",
    send: { by: "front", request: 99, flags: REQ, payload: new Uint8Array(2057) },
    expect: reject("front-end", "UNKNOWN(99)", "size", { message: /limit of 2056 bytes/ }),
  },
  {
    name: "SET_VRING_ADDR with a 4096-byte payload (over the bound) is rejected",
    group: "sizes",
    source: "§1.10 2056 is the largest payload; rust-vmm MAX_MSG_SIZE 0x1000",
    send: { by: "front", request: 9, flags: REQ, payload: new Uint8Array(4096) },
    expect: reject("front-end", "SET_VRING_ADDR", "size", { message: /limit of 2056 bytes/ }),
  },

  // ---- SET_MEM_TABLE (spec §1.4.1, §1.5 #5; rust-vmm set_mem_table) ------------------------
  {
    name: "SET_MEM_TABLE with nregions 9 is rejected",
    group: "memory table",
    source: "§1.4.1 n ≤ 8 (VHOST_MEMORY_BASELINE_NREGIONS)",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(1), { nregions: 9 }),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "nregions"),
  },
  {
    name: "SET_MEM_TABLE carrying 9 regions is rejected",
    group: "memory table",
    source: "§1.4.1 n ≤ 8",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(9)),
      fds: 8,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "size"),
  },
  {
    name: "SET_MEM_TABLE with 2 regions and 1 fd is rejected",
    group: "memory table",
    source: "§1.5 #5 one fd per region; rust-vmm files.len() != num_regions",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(2)),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "fds"),
  },
  {
    name: "SET_MEM_TABLE with 2 regions and 3 fds is rejected",
    group: "memory table",
    source: "§1.5 #5 one fd per region",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(2)),
      fds: 3,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "fds"),
  },
  {
    name: "SET_MEM_TABLE whose nregions (1) disagrees with its 2 regions is rejected",
    group: "memory table",
    source: "rust-vmm size != 8 + num_regions·32",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(2), { nregions: 1 }),
      fds: 2,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "nregions"),
  },
  {
    name: "SET_MEM_TABLE of 8 + 31 bytes is rejected",
    group: "memory table",
    source: "§1.4.1 8 + 32·n",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: new Uint8Array(39),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "size"),
  },
  {
    name: "SET_MEM_TABLE with non-zero padding is rejected",
    group: "memory table",
    source: "rust-vmm VhostUserMemory::is_valid: padding1 != 0 ⇒ InvalidMessage",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(1), { padding: 7 }),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "padding"),
  },
  {
    name: "SET_MEM_TABLE with a zero-sized region is rejected",
    group: "memory table",
    source: "rust-vmm VhostUserMemoryRegion::is_valid: memory_size != 0",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable([{ ...region(0), size: 0n }]),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", /size/i),
  },
  {
    name: "SET_MEM_TABLE with an 8-byte payload (no regions) outside postcopy is rejected",
    group: "memory table",
    source:
      "rust-vmm num_regions == 0 ⇒ InvalidMessage; QEMU sends 8 bytes only after POSTCOPY_LISTEN",
    send: { by: "front", request: 5, flags: REQ, payload: u64(0) },
    expect: reject("front-end", "SET_MEM_TABLE"),
  },

  // ---- fds (spec §1.2; rust-vmm check_attached_files, handle_vring_fd_request) --------------
  ...([
    [1, "GET_FEATURES", new Uint8Array(0), 1],
    [8, "SET_VRING_NUM", vringState(0, 256), 2],
    [3, "SET_OWNER", new Uint8Array(0), 8],
    [9, "SET_VRING_ADDR", vringAddr(), 1],
    [22, "IOTLB_MSG", iotlb(0n), 1],
  ] as const).map(([request, name, payload, fds]): Case => ({
    name: `${name} carrying ${fds} fd${fds > 1 ? "s" : ""} is rejected`,
    group: "fds",
    source: "§1.2 rust-vmm rejects fds on requests that carry none",
    send: { by: "front", request, flags: REQ, payload, fds },
    expect: reject("front-end", name, "fds"),
  })),
  ...[9, 16, 64].map((fds): Case => ({
    name: `SET_MEM_TABLE carrying ${fds} fds (MSG_CTRUNC at the proxy) is rejected`,
    group: "fds",
    source: "§1.2 at most 8 fds per message",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(8)),
      fds,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_MEM_TABLE", "fds"),
  })),
  {
    name: "SET_VRING_KICK with the NOFD bit and an fd is rejected",
    group: "fds",
    source: "§1.4.1 vring file; rust-vmm handle_vring_fd_request",
    send: { by: "front", request: 12, flags: REQ, payload: vringFile(0, true), fds: 1 },
    expect: reject("front-end", "SET_VRING_KICK", "fds", { message: /NOFD/ }),
  },
  {
    name: "SET_VRING_CALL without the NOFD bit and without an fd is rejected",
    group: "fds",
    source: "§1.4.1 vring file; rust-vmm handle_vring_fd_request",
    send: { by: "front", request: 13, flags: REQ, payload: vringFile(0, false) },
    expect: reject("front-end", "SET_VRING_CALL", "fds", { message: /NOFD/ }),
  },
  {
    name: "SET_VRING_ERR with 2 fds is rejected",
    group: "fds",
    source: "§1.2 every fd-carrying request other than SET_MEM_TABLE carries exactly 1",
    send: { by: "front", request: 14, flags: REQ, payload: vringFile(0, false), fds: 2 },
    expect: reject("front-end", "SET_VRING_ERR", "fds"),
  },
  ...[0, 2].map((fds): Case => ({
    name: `SET_BACKEND_REQ_FD with ${fds} fds is rejected`,
    group: "fds",
    source: "§1.5 #21 one socket end; rust-vmm take_single_file",
    setup: { acked: PF.REPLY_ACK | PF.BACKEND_REQ },
    send: { by: "front", request: 21, flags: REQ, fds },
    expect: reject("front-end", "SET_BACKEND_REQ_FD", "fds"),
  })),
  {
    name: "SET_LOG_FD without its eventfd is rejected",
    group: "fds",
    source: "§1.5 #7 one eventfd",
    send: { by: "front", request: 7, flags: REQ },
    expect: reject("front-end", "SET_LOG_FD", "fds"),
  },
  {
    name: "REM_MEM_REG with an fd does not pass the fd on",
    group: "fds",
    source: "§6.1 the back-end MUST close it unused; rust-vmm check_attached_files rejects it",
    setup: { acked: PF.REPLY_ACK | PF.CONFIGURE_MEM_SLOTS },
    send: {
      by: "front",
      request: 38,
      flags: REQ,
      payload: memReg(region(0)),
      fds: 1,
      fdKind: "memfd",
    },
    expect: { policy: "no-fd", request: "REM_MEM_REG" },
  },
  {
    name: "a GET_FEATURES reply carrying an fd is rejected",
    group: "fds",
    source: "§1.2 QEMU takes at most 1 fd, and only where one is expected",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags: REPLY, payload: u64(1n << 30n), fds: 1 },
    expect: reject("back-end", "GET_FEATURES", "fds"),
  },
  {
    name: "a GET_FEATURES reply carrying 9 fds (MSG_CTRUNC) is rejected",
    group: "fds",
    source: "§1.2 at most 8 fds per message",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 1, flags: REPLY, payload: u64(1n << 30n), fds: 9 },
    expect: reject("back-end", "GET_FEATURES", "fds"),
  },
  {
    name: "a POSTCOPY_ADVISE reply without its userfaultfd is rejected",
    group: "fds",
    source: "§1.5 #28 reply = size 0 + 1 fd",
    prelude: [{ by: "front", request: 28, flags: REQ }],
    send: { by: "back", request: 28, flags: REPLY },
    expect: reject("back-end", "POSTCOPY_ADVISE", "fds"),
  },
  {
    name: "a GET_INFLIGHT_FD reply with mmap_size ≠ 0 and no fd is rejected",
    group: "fds",
    source: "§1.5 #31 1 fd if mmap_size ≠ 0",
    prelude: [{ by: "front", request: 31, flags: REQ, payload: inflight() }],
    send: { by: "back", request: 31, flags: REPLY, payload: inflight({ mmapSize: 4096n }) },
    expect: reject("back-end", "GET_INFLIGHT_FD", "fds"),
  },
  {
    name: "a BACKEND_IOTLB_MSG carrying an fd is rejected",
    group: "fds",
    source: "§1.6 BACKEND_IOTLB_MSG carries no fd",
    setup: CHANNEL,
    send: { by: "backCh", request: 1, flags: REQ, payload: iotlb(0n), fds: 1 },
    expect: reject("back-end", "BACKEND_IOTLB_MSG", "fds", { channel: "backend" }),
  },
  {
    name: "a BACKEND_VRING_HOST_NOTIFIER_MSG without NOFD and without an fd is rejected",
    group: "fds",
    source: "§1.6 #3 NOFD bit 8 ⇔ no fd",
    setup: CHANNEL,
    send: { by: "backCh", request: 3, flags: REQ, payload: new Uint8Array(24) },
    expect: reject("back-end", "BACKEND_VRING_HOST_NOTIFIER_MSG", "fds", { channel: "backend" }),
  },
  {
    name: "a back-end-channel request carrying 9 fds (MSG_CTRUNC) is rejected",
    group: "fds",
    source: "§1.2 back-end channel: at most 8 fds per message",
    setup: CHANNEL,
    send: { by: "backCh", request: 3, flags: REQ, payload: new Uint8Array(24), fds: 9 },
    expect: reject("back-end", "BACKEND_VRING_HOST_NOTIFIER_MSG", "fds", { channel: "backend" }),
  },

  // ---- reply correlation (spec §7 #4; QEMU process_message_reply) -------------------------
  {
    name: "an unsolicited GET_FEATURES reply is rejected",
    group: "reply correlation",
    source: "§7 #4 a reply must answer the oldest pending request",
    send: { by: "back", request: 1, flags: REPLY, payload: u64(0) },
    expect: reject("back-end", "GET_FEATURES", "request", { message: /unsolicited/ }),
  },
  {
    name: "a reply with the wrong request code is rejected",
    group: "reply correlation",
    source: "§1.1 QEMU checks reply.request == request",
    prelude: [GET_FEATURES],
    send: { by: "back", request: 15, flags: REPLY, payload: u64(0) },
    expect: reject("back-end", "GET_PROTOCOL_FEATURES", "request", { message: /GET_FEATURES/ }),
  },
  {
    name: "a reply to SET_VRING_NUM (no NEED_REPLY) is relayed with a warning",
    group: "reply correlation",
    source: "§1.1 a reply echoes its request's code: matched by code, the front-end decides",
    setup: ACK,
    prelude: [{ by: "front", request: 8, flags: REQ, payload: vringState(0, 256) }],
    send: { by: "back", request: 8, flags: REPLY, payload: u64(0) },
    expect: { policy: "relay", warning: /does not expect to be answered/ },
  },
  {
    name: "an ack to NEED_REPLY without REPLY_ACK negotiated is relayed with a warning",
    group: "reply correlation",
    source: "spec REPLY_ACK: acks only when F_REPLY_ACK was negotiated; the code still matches",
    prelude: [{ by: "front", request: 8, flags: NEED_REPLY, payload: vringState(0, 256) }],
    send: { by: "back", request: 8, flags: REPLY, payload: u64(0) },
    expect: { policy: "relay", warning: /does not expect to be answered/ },
  },
  {
    name: "a second reply to one IOTLB_MSG is rejected",
    group: "reply correlation",
    source: "§7 #4 one reply per request",
    setup: ACK,
    prelude: [
      { by: "front", request: 22, flags: NEED_REPLY, payload: iotlb(0n, { type: 2 }) },
      { by: "back", request: 22, flags: REPLY, payload: u64(0) },
    ],
    send: { by: "back", request: 22, flags: REPLY, payload: u64(0) },
    expect: reject("back-end", "IOTLB_MSG", "request"),
  },
  {
    name: "an unsolicited reply from QEMU on the back-end channel is rejected",
    group: "reply correlation",
    source: "§1.6 QEMU replies only to NEED_REPLY requests",
    setup: CHANNEL,
    send: { by: "qemuCh", request: 1, flags: REPLY, payload: u64(0) },
    expect: reject("front-end", "BACKEND_IOTLB_MSG", "request", { channel: "backend" }),
  },
  {
    name: "a back-end-channel reply with the wrong request code is rejected",
    group: "reply correlation",
    source: "§1.6 replies echo the request code",
    setup: CHANNEL,
    prelude: [{ by: "backCh", request: 2, flags: NEED_REPLY }],
    send: { by: "qemuCh", request: 1, flags: REPLY, payload: u64(0) },
    expect: reject("front-end", "BACKEND_IOTLB_MSG", "request", { channel: "backend" }),
  },
  {
    name: "a GET_CONFIG reply shorter than the request is rejected",
    group: "reply correlation",
    source: "§1.5 #24 reply of identical size; QEMU -EPROTO on mismatch",
    setup: { acked: PF.REPLY_ACK | PF.CONFIG },
    prelude: [{ by: "front", request: 24, flags: REQ, payload: config(new Uint8Array(16)) }],
    send: { by: "back", request: 24, flags: REPLY, payload: config(new Uint8Array(8)) },
    expect: reject("back-end", "GET_CONFIG", "size"),
  },
  {
    name: "a SET_LOG_BASE reply of 2000 bytes (inside QEMU's payload union) is relayed raw",
    group: "reply correlation",
    source: "§1.10 QEMU's payload union is now 2056 bytes; it reads SET_LOG_BASE's reply leniently",
    setup: { acked: PF.REPLY_ACK | PF.LOG_SHMFD },
    prelude: [{
      by: "front",
      request: 6,
      flags: REQ,
      payload: logArea(4096n),
      fds: 1,
      fdKind: "memfd",
    }],
    send: { by: "back", request: 6, flags: REPLY, payload: new Uint8Array(2000) },
    expect: { policy: "relay", warning: /reply is 2000 bytes, expected 8: relayed raw/ },
  },

  // ---- payload values (spec MUST lines; rust-vmm `is_valid`) ---------------------------------
  {
    name: "SET_VRING_ENABLE with num 2 is rejected",
    group: "values",
    source: "§1.5 #18 num 0/1; rust-vmm InvalidParam",
    send: { by: "front", request: 18, flags: REQ, payload: vringState(0, 2) },
    expect: reject("front-end", "SET_VRING_ENABLE", "num"),
  },
  {
    name: "SET_VRING_ENDIAN with num 5 is rejected",
    group: "values",
    source: "§6.1 values other than 0/1 are invalid",
    send: { by: "front", request: 23, flags: REQ, payload: vringState(0, 5) },
    expect: reject("front-end", "SET_VRING_ENDIAN", "num"),
  },
  {
    name: "SET_DEVICE_STATE_FD with direction 7 is rejected",
    group: "values",
    source: "§1.4.1 direction 0 SAVE / 1 LOAD; rust-vmm try_into",
    send: { by: "front", request: 42, flags: REQ, payload: deviceStateParams(7, 0), fds: 1 },
    expect: reject("front-end", "SET_DEVICE_STATE_FD", "direction"),
  },
  {
    name: "SET_DEVICE_STATE_FD with phase 1 is relayed untouched with a warning",
    group: "values",
    source: "§1.10 phases other than 0 (STOPPED) might be added",
    setup: { acked: PF.DEVICE_STATE },
    send: { by: "front", request: 42, flags: REQ, payload: deviceStateParams(0, 1), fds: 1 },
    expect: {
      policy: "relay",
      warning: /phase is "1", reserved for later/,
      fds: 1,
      answer: { request: 42, payload: u64(1n << 8n) },
    },
  },
  {
    name: "IOTLB_MSG with type 9 is rejected",
    group: "values",
    source: "§1.4.1 iotlb type 1–4",
    send: { by: "front", request: 22, flags: REQ, payload: iotlb(0n, { type: 9 }) },
    expect: reject("front-end", "IOTLB_MSG", "type"),
  },
  {
    name: "SET_CONFIG whose size field disagrees with its data is rejected",
    group: "values",
    source: "rust-vmm set_config: size - 12 != msg.size",
    send: {
      by: "front",
      request: 25,
      flags: REQ,
      payload: config(new Uint8Array(8), { size: 16 }),
    },
    expect: reject("front-end", "SET_CONFIG", "size"),
  },
  {
    name: "SET_DEVICE_STATE_FD reply with an error and an fd is rejected",
    group: "values",
    source: "§6.1 must not both report an error and return an fd",
    prelude: [{ by: "front", request: 42, flags: REQ, payload: deviceStateParams(0, 0), fds: 1 }],
    send: { by: "back", request: 42, flags: REPLY, payload: u64(1), fds: 1 },
    expect: reject("back-end", "SET_DEVICE_STATE_FD", "error"),
  },
  {
    name: "SET_VRING_ADDR with unknown flag bits is relayed with a warning",
    group: "values",
    source: "flags beyond VHOST_VRING_F_LOG are reserved for later; the back-end decides",
    send: { by: "front", request: 9, flags: REQ, payload: vringAddr({ flags: 0x2 }) },
    expect: { policy: "relay", warning: /only bit 0 \(LOG\) is defined/ },
  },
  {
    name: "SET_VRING_ADDR with a misaligned descriptor table is rejected",
    group: "values",
    source: "rust-vmm VhostUserVringAddr::is_valid: descriptor & 0xf == 0",
    send: { by: "front", request: 9, flags: REQ, payload: vringAddr({ desc: 0x1001n }) },
    expect: reject("front-end", "SET_VRING_ADDR", /desc/i),
  },
  {
    name: "SET_LOG_BASE with mmap_size 0 is rejected",
    group: "values",
    source: "rust-vmm VhostUserLog::is_valid: mmap_size != 0",
    setup: { acked: PF.REPLY_ACK | PF.LOG_SHMFD },
    send: { by: "front", request: 6, flags: REQ, payload: logArea(0n), fds: 1, fdKind: "memfd" },
    expect: reject("front-end", "SET_LOG_BASE", /mmap/i),
  },
  {
    name: "SET_INFLIGHT_FD with num_queues 0 is rejected",
    group: "values",
    source: "rust-vmm VhostUserInflight::is_valid: num_queues, queue_size != 0",
    send: {
      by: "front",
      request: 32,
      flags: REQ,
      payload: inflight({ mmapSize: 4096n, numQueues: 0 }),
      fds: 1,
      fdKind: "memfd",
    },
    expect: reject("front-end", "SET_INFLIGHT_FD", /queue/i),
  },
  {
    name: "SET_CONFIG of size 0 is rejected",
    group: "values",
    source: "rust-vmm VhostUserConfig::is_valid: size != 0",
    send: { by: "front", request: 25, flags: REQ, payload: config(new Uint8Array(0)) },
    expect: reject("front-end", "SET_CONFIG", "size"),
  },
  {
    name: "NONE (code 0) outside postcopy is rejected",
    group: "values",
    source: "rust-vmm get_code() fails for 0; QEMU sends it only after POSTCOPY_LISTEN",
    send: { by: "front", request: 0, flags: REQ, payload: u64(0) },
    expect: reject("front-end", "NONE"),
  },

  // ---- unknown request codes: relayed verbatim and logged as unknown (spec §7 #12) -------
  {
    name: "an unknown front-end request (99, 16 bytes) is relayed verbatim and logged as unknown",
    group: "unknown codes",
    source: "§7 #12",
    send: { by: "front", request: 99, flags: REQ, payload: uuid(3) },
    expect: { policy: "relay", warning: /unknown request code 99/ },
  },
  {
    name: "an unknown request 0xffffffff with no payload is relayed",
    group: "unknown codes",
    source: "§7 #12",
    send: { by: "front", request: 0xffffffff, flags: REQ },
    expect: { policy: "relay", warning: /unknown request code 4294967295/ },
  },
  {
    name: "an unknown request with 2056 bytes (the bound) is relayed",
    group: "unknown codes",
    source: "§7 #12; §1.10 2056 is the largest payload",
    send: { by: "front", request: 47, flags: REQ, payload: garbage(47, 2056) },
    expect: { policy: "relay", warning: /unknown request code 47/ },
  },
  {
    name: "an unknown request with an fd is relayed with its fd",
    group: "unknown codes",
    source: "§7 #12 (future requests may carry fds)",
    send: { by: "front", request: 46, flags: REQ, payload: u64(1), fds: 1 },
    expect: { policy: "relay", warning: /unknown request code 46/, fds: 1 },
  },
  {
    name: "the reply to an unknown request without NEED_REPLY is relayed, matched by its code",
    group: "unknown codes",
    source: "§1.1 a reply echoes its request's code (a newer request may always answer)",
    prelude: [{ by: "front", request: 99, flags: REQ, payload: u64(7) }],
    send: { by: "back", request: 99, flags: REPLY, payload: u64(9) },
    expect: { policy: "relay", warning: /does not expect to be answered/ },
  },
  {
    name: "the reply to an unknown NEED_REPLY request is relayed",
    group: "unknown codes",
    source: "§7 #12 with REPLY_ACK: every NEED_REPLY request gets an ack",
    setup: ACK,
    prelude: [{ by: "front", request: 99, flags: NEED_REPLY, payload: u64(7) }],
    send: { by: "back", request: 99, flags: REPLY, payload: u64(0) },
    expect: { policy: "relay" },
  },
  {
    name: "an unknown back-end-channel request (77) is relayed to QEMU",
    group: "unknown codes",
    source: "§7 #12 (back-end codes 9/10 are in flight)",
    setup: CHANNEL,
    send: { by: "backCh", request: 77, flags: REQ, payload: u64(77) },
    expect: { policy: "relay", warning: /unknown request code 77/ },
  },

  // ---- the newest spec text (protocol.md §1.10): known, relayed, no false warnings --------
  {
    name: "GET_VRING_BASE_SKIP_DRAIN (45) is relayed as a known request",
    group: "newest spec",
    source: "§1.10 front-end request 45, vring state in, vring state out",
    setup: { acked: PF.INFLIGHT_SHMFD | PF.GET_VRING_BASE_INFLIGHT | PF.GET_VRING_BASE_SKIP_DRAIN },
    send: { by: "front", request: 45, flags: REQ, payload: vringState(0, 0) },
    expect: { policy: "relay", noWarning: /./, answer: { request: 45, payload: vringState(0, 3) } },
  },
  {
    name: "the reply to GET_VRING_BASE_SKIP_DRAIN is relayed to QEMU",
    group: "newest spec",
    source: "§1.10 request 45 is always answered",
    setup: { acked: PF.INFLIGHT_SHMFD | PF.GET_VRING_BASE_INFLIGHT | PF.GET_VRING_BASE_SKIP_DRAIN },
    prelude: [{ by: "front", request: 45, flags: REQ, payload: vringState(0, 0) }],
    send: { by: "back", request: 45, flags: REPLY, payload: vringState(0, 17) },
    expect: { policy: "relay", noWarning: /./ },
  },
  {
    name: "GET_SHMEM_CONFIG with bit 22 negotiated draws no missing-feature warning",
    group: "newest spec",
    source: "§1.10 bit 22 = SHMEM (21 in the earlier series is GPA_ADDRESSES now)",
    setup: { acked: PF.REPLY_ACK | PF.SHMEM },
    send: { by: "front", request: 44, flags: REQ },
    expect: {
      policy: "relay",
      noWarning: /./,
      answer: { request: 44, payload: shmemConfig({ 1: 1n << 21n }) },
    },
  },
  {
    name: "a 2056-byte GET_SHMEM_CONFIG reply (regions at ids 0 and 5) is relayed",
    group: "newest spec",
    source: "§1.10 the reply is 8 + 256 × 8 bytes; the array index is the region id",
    setup: { acked: PF.REPLY_ACK | PF.SHMEM },
    prelude: [{ by: "front", request: 44, flags: REQ }],
    send: {
      by: "back",
      request: 44,
      flags: REPLY,
      payload: shmemConfig({ 0: 1n << 20n, 5: 1n << 30n }),
    },
    expect: { policy: "relay", noWarning: /./ },
  },
  {
    name: "a POSTCOPY_END reply without REPLY_ACK negotiated is relayed",
    group: "newest spec",
    source: "§1.10 POSTCOPY_END always answers NEED_REPLY with a u64",
    setup: { acked: PF.PAGEFAULT },
    prelude: [{ by: "front", request: 30, flags: NEED_REPLY }],
    send: { by: "back", request: 30, flags: REPLY, payload: u64(0) },
    expect: { policy: "relay", noWarning: /./ },
  },

  // ---- framing, garbage, vanishing peers (spec §1.2, §6.3) ------------------------------
  {
    name: "64 KiB of garbage from QEMU (seed 64) is rejected",
    group: "framing and vanishing peers",
    source: "§1.1 header validation",
    send: { by: "front", raw: garbage(64, 65536) },
    expect: reject("front-end", /./, /size|flags/),
  },
  {
    name: "64 KiB of garbage from the back-end (seed 65) is rejected",
    group: "framing and vanishing peers",
    source: "§1.1 header validation",
    prelude: [GET_FEATURES],
    send: { by: "back", raw: garbage(65, 65536) },
    expect: reject("back-end", /./, /size|flags/),
  },
  {
    name: "64 KiB of garbage on the back-end channel (seed 66) is rejected",
    group: "framing and vanishing peers",
    source: "§1.6 QEMU closes the channel on a malformed header",
    setup: CHANNEL,
    send: { by: "backCh", raw: garbage(66, 65536) },
    expect: reject("back-end", /./, /size|flags/, { channel: "backend" }),
  },
  {
    name: "a truncated header (7 bytes) then close ends the session, naming QEMU",
    group: "framing and vanishing peers",
    source: "§6.1 a peer unable to send the full message closes",
    send: { by: "front", raw: frame(1, REQ), cut: 7, thenClose: true },
    // The header is incomplete, so no request can be named (in particular not NONE, code 0).
    expect: {
      policy: "peer-close",
      closedBy: "front-end",
      reason: /in the middle of a message header \(7 of 12 bytes read\)/,
    },
  },
  {
    name: "a SET_VRING_ADDR payload cut at 20 of 40 bytes then close ends the session",
    group: "framing and vanishing peers",
    source: "§6.1",
    send: { by: "front", request: 9, flags: REQ, payload: vringAddr(), cut: 32, thenClose: true },
    expect: {
      policy: "peer-close",
      closedBy: "front-end",
      reason: /in the middle of SET_VRING_ADDR \(32 bytes read\)/,
    },
  },
  {
    name: "a header with 8 memfds then close: the fds are closed, the session ends",
    group: "framing and vanishing peers",
    source: "§1.2 fds ride with the first byte",
    send: {
      by: "front",
      request: 5,
      flags: REQ,
      payload: memTable(regions(8)),
      fds: 8,
      fdKind: "memfd",
      cut: 12,
      thenClose: true,
    },
    expect: {
      policy: "peer-close",
      closedBy: "front-end",
      reason: /in the middle of SET_MEM_TABLE/,
    },
  },
  {
    name: "a back-end that cuts a reply short and closes names GET_VRING_BASE in flight",
    group: "framing and vanishing peers",
    source: "§6.3 the other side is closed, the log says what was in flight",
    prelude: [GET_VRING_BASE],
    send: {
      by: "back",
      request: 11,
      flags: REPLY,
      payload: vringState(0, 5),
      cut: 5,
      thenClose: true,
    },
    expect: {
      policy: "peer-close",
      closedBy: "back-end",
      reason:
        /back-end closed the main channel in the middle of a message header \(5 of 12 bytes read\)/,
      inFlight: ["GET_VRING_BASE"],
    },
  },
  {
    name: "QEMU vanishing with GET_VRING_BASE in flight closes the back-end promptly",
    group: "framing and vanishing peers",
    source: "§6.3",
    prelude: [GET_VRING_BASE],
    send: { by: "front", raw: new Uint8Array(0), thenClose: true },
    expect: {
      policy: "peer-close",
      closedBy: "front-end",
      reason: /front-end closed the main channel/,
      inFlight: ["GET_VRING_BASE"],
    },
  },
  {
    name: "a back-end vanishing with GET_VRING_BASE in flight closes QEMU's side promptly",
    group: "framing and vanishing peers",
    source: "§7 #11 if the back-end dies, close the QEMU side",
    prelude: [GET_VRING_BASE],
    send: { by: "back", raw: new Uint8Array(0), thenClose: true },
    expect: {
      policy: "peer-close",
      closedBy: "back-end",
      reason: /back-end closed the main channel/,
      inFlight: ["GET_VRING_BASE"],
    },
  },
  {
    name: "a back-end that resets the connection (closes with unread input) closes QEMU's side",
    group: "framing and vanishing peers",
    source: "§7 #11",
    prelude: [GET_VRING_BASE],
    send: {
      by: "front",
      request: 8,
      flags: REQ,
      payload: vringState(0, 256),
      receiverResets: true,
    },
    expect: {
      policy: "peer-close",
      closedBy: "back-end",
      reason: /back-end closed the main channel/,
    },
  },
  {
    name: "a back-end-channel request cut mid-payload then close loses only the channel",
    group: "framing and vanishing peers",
    source: "§1.6 QEMU closes the back-end channel alone",
    setup: CHANNEL,
    send: { by: "backCh", request: 1, flags: REQ, payload: iotlb(0n), cut: 20, thenClose: true },
    expect: {
      policy: "channel-close",
      side: "back-end",
      warning: /in the middle of BACKEND_IOTLB_MSG \(20 bytes read\)/,
    },
  },
  {
    name:
      "QEMU closing the back-end channel with a request awaiting its reply loses only the channel",
    group: "framing and vanishing peers",
    source: "§1.6",
    setup: CHANNEL,
    prelude: [{ by: "backCh", request: 8, flags: REQ, payload: uuid(8) }],
    send: { by: "qemuCh", raw: new Uint8Array(0), thenClose: true },
    expect: {
      policy: "channel-close",
      side: "front-end",
      warning: /front-end closed the back-end channel/,
    },
  },
  {
    name: "fds sent after the first header byte are relayed with the first byte, with a warning",
    group: "framing and vanishing peers",
    source: "§1.2 fds ride with the first byte; the proxy re-attaches them",
    send: {
      by: "front",
      request: 13,
      flags: REQ,
      payload: vringFile(0, false),
      fds: 1,
      split: 4,
      lateFds: true,
    },
    expect: { policy: "relay", warning: /fds arrived after the first header byte/, fds: 1 },
  },
  {
    name: "a payload in a second segment (libvhost-user style) is relayed",
    group: "framing and vanishing peers",
    source: "§1.2 the payload may follow in a later recvmsg",
    send: { by: "front", request: 13, flags: REQ, payload: vringFile(1, false), fds: 1, split: 12 },
    expect: { policy: "relay", fds: 1 },
  },
  {
    name: "SET_BACKEND_REQ_FD carrying a memfd instead of a socket is rejected",
    group: "framing and vanishing peers",
    source: "nothing from the wire used unchecked",
    setup: { acked: PF.REPLY_ACK | PF.BACKEND_REQ },
    send: { by: "front", request: 21, flags: REQ, fds: 1, fdKind: "memfd" },
    // rust-vmm cannot check the fd's type, but the proxy can (it reads /proc for its logs),
    // and it is the one that will use the fd as a socket.
    expect: reject("front-end", "SET_BACKEND_REQ_FD", "fds"),
  },
];

/**
 * What the fuzzer sends: well-formed messages for each role (QEMU's requests and replies, the
 * back-end's requests and replies, on both channels), and the mutations that make them
 * hostile. Everything draws from one seeded PRNG, so a case seed replays a case exactly.
 *
 * @module
 */

import {
  frame,
  iotlb,
  memTable,
  type Prng,
  region,
  u64,
  uuid,
  vringAddr,
  vringFile,
  vringState,
} from "../hostile/_wire.ts";
import { BACKEND, type Channel, MAIN } from "./_oracle.ts";

/** A message before it hits the wire. */
export interface Msg {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number;
  fdKind: "eventfd" | "memfd";
}

/** How a message goes on the wire. */
export interface Wire {
  bytes: Uint8Array;
  fds: number;
  fdKind: "eventfd" | "memfd";
  /** Send in two segments at this offset. */
  split?: number;
  /** With `split`: the fds ride on the second segment (peers must not, the proxy re-attaches). */
  lateFds?: boolean;
  /** Only a prefix goes out, then the sender closes. */
  truncated?: boolean;
}

const REQ = 0x1, NEED_REPLY = 0x9, REPLY = 0x5;

/** Codes the generator sends on each channel (also the targets of the "other code" mutation). */
export const MAIN_CODES = [...MAIN.keys()];
export const BACKEND_CODES = [...BACKEND.keys()];

function flagsFor(rng: Prng, acks: boolean, always: boolean): number {
  return !always && acks && rng.chance(0.4) ? NEED_REPLY : REQ;
}

/** A well-formed front-end request (QEMU on the main socket). */
export function frontRequest(rng: Prng, replyAck: boolean): Msg {
  const code = rng.chance(0.08) ? rng.int(46, 300) : rng.pick(MAIN_CODES);
  const row = MAIN.get(code);
  const m: Msg = {
    request: code,
    flags: flagsFor(rng, replyAck, row?.always ?? false),
    payload: new Uint8Array(0),
    fds: 0,
    fdKind: "eventfd",
  };
  switch (code) {
    case 5: {
      const n = rng.int(1, 8);
      m.payload = memTable(Array.from({ length: n }, (_, i) => region(i)));
      m.fds = n;
      m.fdKind = "memfd";
      break;
    }
    case 8:
    case 10:
      m.payload = vringState(rng.int(0, 3), rng.int(0, 0xffff));
      break;
    case 11:
    case 45:
      m.payload = vringState(rng.int(0, 3), 0);
      break;
    case 9:
      m.payload = vringAddr({ index: rng.int(0, 3), flags: rng.int(0, 1) });
      break;
    case 12:
    case 13:
    case 14: {
      const noFd = rng.chance(0.3);
      m.payload = vringFile(rng.int(0, 3), noFd);
      m.fds = noFd ? 0 : 1;
      break;
    }
    case 18:
      m.payload = vringState(rng.int(0, 3), rng.int(0, 1));
      break;
    case 22:
      m.payload = iotlb(BigInt(rng.int(0, 1 << 20)) * 0x1000n, { type: rng.pick([2, 3]) });
      break;
    case 39:
      m.payload = u64(rng.int(0, 0xff));
      break;
    default:
      if (row === undefined) m.payload = rng.bytes(rng.int(0, 64)); // unknown: any payload
  }
  return m;
}

/** A well-formed back-end request on the back-end channel. */
export function backendRequest(rng: Prng): Msg {
  const code = rng.chance(0.08) ? rng.int(11, 300) : rng.pick(BACKEND_CODES);
  const row = BACKEND.get(code);
  const m: Msg = {
    request: code,
    flags: flagsFor(rng, true, row?.always ?? false),
    payload: new Uint8Array(0),
    fds: 0,
    fdKind: "eventfd",
  };
  switch (code) {
    case 1:
      m.payload = iotlb(BigInt(rng.int(0, 1 << 20)) * 0x1000n, { type: rng.pick([1, 4]) });
      break;
    case 3: {
      // Host notifier: NOFD (unmap) or a memfd to map.
      const noFd = rng.chance(0.5);
      const area = new Uint8Array(24);
      new DataView(area.buffer).setBigUint64(0, BigInt(rng.int(0, 3)) | (noFd ? 0x100n : 0n), true);
      new DataView(area.buffer).setBigUint64(8, 0x1000n, true);
      m.payload = area;
      m.fds = noFd ? 0 : 1;
      m.fdKind = "memfd";
      break;
    }
    case 4:
    case 5:
      m.payload = vringState(rng.int(0, 3), 0);
      break;
    case 6:
    case 7:
    case 8:
      m.payload = uuid(rng.int(0, 255));
      break;
    default:
      if (row === undefined) m.payload = rng.bytes(rng.int(0, 64));
  }
  return m;
}

/** The well-formed reply to `request` on `channel`. */
export function replyTo(rng: Prng, channel: Channel, request: number): Msg {
  let payload = u64(channel === "main" ? 0 : rng.int(0, 1));
  if (channel === "main" && (request === 11 || request === 45)) {
    payload = vringState(rng.int(0, 3), rng.int(0, 0xffff));
  } else if (channel === "main" && request === 44) {
    payload = new Uint8Array(8 + 8 * 256); // no shared memory regions
  } else if (channel === "main" && MAIN.get(request)?.always) {
    payload = u64(rng.u64());
  }
  return { request, flags: REPLY, payload, fds: 0, fdKind: "eventfd" };
}

/** The mutations, each a way real peers break (or bend) the rules. */
export const MUTATIONS = [
  "version",
  "reserved-bit",
  "reply-bit",
  "need-reply-bit",
  "resize",
  "oversize-header",
  "truncate-and-close",
  "add-fds",
  "drop-fds",
  "too-many-fds",
  "unknown-code",
  "other-code",
  "garbage-and-close",
  "flip-payload",
] as const;

/** One mutation's name. */
export type Mutation = typeof MUTATIONS[number];

/** Applies `mutation` to `m` (in place for header fields) and returns the wire form. */
export function mutate(rng: Prng, channel: Channel, m: Msg, mutation: Mutation): Wire {
  switch (mutation) {
    case "version":
      m.flags = (m.flags & ~0x3) | rng.pick([0, 2, 3]);
      break;
    case "reserved-bit":
      m.flags = (m.flags | (1 << rng.int(4, 31))) >>> 0;
      break;
    case "reply-bit":
      m.flags ^= 0x4;
      break;
    case "need-reply-bit":
      m.flags ^= 0x8;
      break;
    case "resize": {
      const n = rng.chance(0.8)
        ? Math.max(0, m.payload.length + rng.int(-16, 16))
        : rng.int(0, 4096);
      const p = new Uint8Array(n);
      p.set(m.payload.subarray(0, n));
      m.payload = p;
      break;
    }
    case "oversize-header": {
      const bytes = frame(m.request, m.flags);
      new DataView(bytes.buffer).setUint32(
        8,
        rng.chance(0.5) ? 0xffffffff : rng.int(2057, 1 << 30),
        true,
      );
      return { bytes, fds: m.fds, fdKind: m.fdKind };
    }
    case "truncate-and-close": {
      const bytes = frame(m.request, m.flags, m.payload);
      return {
        bytes: bytes.subarray(0, rng.int(0, bytes.length - 1)),
        fds: m.fds,
        fdKind: m.fdKind,
        truncated: true,
      };
    }
    case "add-fds":
      m.fds += rng.int(1, 3);
      if (m.fds > 8) m.fds = 8;
      break;
    case "drop-fds":
      if (m.fds === 0) m.fds = 1;
      else m.fds = rng.int(0, m.fds - 1);
      break;
    case "too-many-fds":
      m.fds = rng.int(9, 24);
      break;
    case "unknown-code":
      m.request = channel === "main" ? rng.int(46, 100_000) : rng.int(11, 100_000);
      break;
    case "other-code":
      m.request = rng.pick(channel === "main" ? MAIN_CODES : BACKEND_CODES);
      break;
    case "garbage-and-close":
      return { bytes: rng.bytes(rng.int(1, 2048)), fds: 0, fdKind: "eventfd", truncated: true };
    case "flip-payload":
      if (m.payload.length > 0) {
        m.payload = m.payload.slice();
        m.payload[rng.int(0, m.payload.length - 1)] ^= 1 << rng.int(0, 7);
      }
      break;
  }
  return { bytes: frame(m.request, m.flags, m.payload), fds: m.fds, fdKind: m.fdKind };
}

/** The wire form of an unmutated message, sometimes split in two segments (legal framing). */
export function wireOf(rng: Prng, m: Msg): Wire {
  const bytes = frame(m.request, m.flags, m.payload);
  const w: Wire = { bytes, fds: m.fds, fdKind: m.fdKind };
  if (rng.chance(0.1)) {
    w.split = rng.int(1, bytes.length - 1);
    w.lateFds = m.fds > 0 && rng.chance(0.3);
  }
  return w;
}

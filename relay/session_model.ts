/**
 * What a session negotiated and set up with its back-end, as the back-end received it: the frames
 * (in the back-end's dialect), updated from decoded messages only. It is what `ctl status` shows,
 * what the session-end record carries as `model`, and what a restart replays to a new back-end.
 *
 * Dups of the fds the frames carried are kept only when the proxy can restart back-ends
 * (`--control`, `keepFds`): holding a dup of every memory region, kick, call and err fd costs a
 * dup and a close per fd-carrying message.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import type { Message } from "../protocol/codec.ts";
import { hex, type MemoryRegion, readPayload } from "../protocol/layouts.ts";
import {
  describeProtocolFeatures,
  describeVirtioFeatures,
  hasProtocolFeature,
  hasVirtioFeature,
} from "../protocol/features.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import type { RestartSummary, SessionSnapshot } from "../log/record.ts";

export type { RestartSummary, SessionSnapshot };

/** A frame as the back-end got it, with dups of its fds (owned by the model). */
export interface KeptFrame {
  bytes: Uint8Array;
  fds: OwnedFd[];
}

/** One virtqueue's set-up. */
export interface RingModel {
  index: number;
  num?: number;
  /** Last SET_VRING_BASE, then the base the back-end reported when the ring stopped. */
  base?: number;
  enabled: boolean;
  /** A kick fd was set since the ring last stopped: the back-end is processing it. */
  started: boolean;
  frames: Partial<Record<RingStep, KeptFrame>>;
}

/** The ring set-up requests, in the order a front-end sends them. */
export const RING_STEPS = [
  // QEMU's vhost_virtqueue_start order: the base before the addresses, as libvhost-user reads
  // the used index when the addresses come and compares it with the base it was given.
  "SET_VRING_NUM",
  "SET_VRING_BASE",
  "SET_VRING_ADDR",
  "SET_VRING_KICK",
  "SET_VRING_CALL",
  "SET_VRING_ERR",
] as const;
export type RingStep = typeof RING_STEPS[number];

const HEADER = 12;
/** VHOST_F_LOG_ALL: QEMU acks it while it logs dirty pages (a migration), and drops it after. */
const LOG_ALL = 1n << 26n;
const LOGGING = "dirty-page logging (a migration is under way)";

/** The model of one session. */
export class SessionModel {
  /** The back-end's dialect: the numbering of the kept frames. */
  readonly dialect: Dialect;
  virtioOffered = 0n;
  virtioAcked = 0n;
  protocolOffered = 0n;
  protocolAcked = 0n;
  owner = false;
  backendChannel = false;
  transfers = 0;
  readonly restarts: RestartSummary[] = [];
  /** SET_PROTOCOL_FEATURES and SET_FEATURES as sent. */
  readonly setup = new Map<"SET_PROTOCOL_FEATURES" | "SET_FEATURES" | "SET_STATUS", KeptFrame>();
  /** SET_MEM_TABLE as sent, when the front-end used it. */
  memTable: KeptFrame | undefined;
  /** ADD_MEM_REG frames by guest address (CONFIGURE_MEM_SLOTS). */
  readonly addedRegions = new Map<bigint, KeptFrame>();
  readonly rings = new Map<number, RingModel>();
  /** Things a restart cannot reproduce, seen in this session. */
  readonly unsupported = new Set<string>();

  /** Whether the frames keep dups of their fds (a restart needs them). */
  readonly keepsFds: boolean;

  constructor(dialect: Dialect, options: { keepFds?: boolean } = {}) {
    this.dialect = dialect;
    this.keepsFds = options.keepFds ?? false;
  }

  /** A request the back-end is about to receive (`bytes` exactly as sent, `fds` still open). */
  sent(message: Message, bytes: Uint8Array, fds: readonly OwnedFd[]): void {
    const keep = (): KeptFrame => ({
      bytes: bytes.slice(),
      fds: this.keepsFds ? fds.map((f) => f.dup()) : [],
    });
    const payload = bytes.subarray(HEADER);
    switch (message.name) {
      case "SET_OWNER":
        this.owner = true;
        return;
      case "SET_PROTOCOL_FEATURES":
        this.protocolAcked = readPayload("protocol_features", payload).features;
        this.#replace(this.setup, "SET_PROTOCOL_FEATURES", keep());
        return;
      case "SET_FEATURES":
        this.virtioAcked = readPayload("virtio_features", payload).features;
        this.#replace(this.setup, "SET_FEATURES", keep());
        // QEMU's vhost_migration_log(false) after a migration failed or was cancelled: logging
        // is over (the log area stays with the back-end, unused), the set-up replays again.
        if ((this.virtioAcked & LOG_ALL) === 0n) this.unsupported.delete(LOGGING);
        return;
      case "SET_STATUS":
        this.#replace(this.setup, "SET_STATUS", keep());
        return;
      case "SET_BACKEND_REQ_FD":
        this.backendChannel = true;
        return;
      case "SET_MEM_TABLE":
        if (this.memTable) closeAll(this.memTable.fds);
        this.memTable = keep();
        return;
      case "ADD_MEM_REG":
        this.#replace(
          this.addedRegions,
          readPayload("mem_region", payload).guestPhysAddr,
          keep(),
        );
        return;
      case "REM_MEM_REG": {
        const gpa = readPayload("mem_region", payload).guestPhysAddr;
        const kept = this.addedRegions.get(gpa);
        if (kept) closeAll(kept.fds);
        this.addedRegions.delete(gpa);
        return;
      }
      case "SET_VRING_NUM":
      case "SET_VRING_ADDR":
      case "SET_VRING_BASE":
      case "SET_VRING_KICK":
      case "SET_VRING_CALL":
      case "SET_VRING_ERR": {
        const ring = this.#ring(ringIndex(message.name, payload));
        const old = ring.frames[message.name];
        if (old) closeAll(old.fds);
        ring.frames[message.name] = keep();
        if (message.name === "SET_VRING_NUM") ring.num = readPayload("vring_state", payload).num;
        if (message.name === "SET_VRING_BASE") ring.base = readPayload("vring_state", payload).num;
        if (message.name === "SET_VRING_KICK") ring.started = true;
        return;
      }
      case "SET_VRING_ENABLE": {
        const state = readPayload("vring_state", payload);
        this.#ring(state.index).enabled = state.num === 1;
        return;
      }
      case "SET_DEVICE_STATE_FD":
        this.transfers++;
        return;
      case "SET_LOG_BASE":
      case "SET_LOG_FD":
        this.unsupported.add(LOGGING);
        return;
      case "SET_INFLIGHT_FD":
        this.unsupported.add("inflight I/O tracking (SET_INFLIGHT_FD)");
        return;
      case "POSTCOPY_ADVISE":
        this.unsupported.add("postcopy");
        return;
    }
  }

  /** A reply from the back-end. */
  replied(message: Message, payload: Uint8Array): void {
    switch (message.name) {
      case "GET_FEATURES":
        this.virtioOffered = readPayload("virtio_features", payload).features;
        return;
      case "GET_PROTOCOL_FEATURES":
        this.protocolOffered = readPayload("protocol_features", payload).features;
        return;
      case "GET_VRING_BASE": {
        const state = readPayload("vring_state", payload);
        const ring = this.#ring(state.index);
        ring.base = state.num;
        ring.started = false;
        return;
      }
    }
  }

  /** Whether `name` was negotiated (protocol features, the back-end's numbering). */
  hasProtocol(name: Parameters<typeof hasProtocolFeature>[1]): boolean {
    return hasProtocolFeature(this.protocolAcked, name, this.dialect);
  }

  /** Whether a virtio feature was acked. */
  hasVirtio(name: Parameters<typeof hasVirtioFeature>[1]): boolean {
    return hasVirtioFeature(this.virtioAcked, name);
  }

  /**
   * The memory region holding user address `addr` (QEMU's address space, as in SET_VRING_ADDR):
   * its fd and the offset of `addr` in that fd.
   */
  regionOf(addr: bigint): { fd: OwnedFd; offset: bigint } | undefined {
    const regions: { region: MemoryRegion; fd: OwnedFd | undefined }[] = [];
    if (this.memTable) {
      const table = readPayload("memory_table", this.memTable.bytes.subarray(HEADER));
      table.regions.forEach((region, i) => regions.push({ region, fd: this.memTable!.fds[i] }));
    }
    for (const f of this.addedRegions.values()) {
      regions.push({ region: readPayload("mem_region", f.bytes.subarray(HEADER)), fd: f.fds[0] });
    }
    for (const { region: r, fd } of regions) {
      if (fd && addr >= r.userspaceAddr && addr < r.userspaceAddr + r.memorySize) {
        return { fd, offset: addr - r.userspaceAddr + r.mmapOffset };
      }
    }
    return undefined;
  }

  /** The rings in index order. */
  orderedRings(): RingModel[] {
    return [...this.rings.values()].sort((a, b) => a.index - b.index);
  }

  snapshot(notRestartable?: string): SessionSnapshot {
    return {
      virtioOffered: hex(this.virtioOffered),
      virtioAcked: hex(this.virtioAcked),
      virtioFeatures: describeVirtioFeatures(this.virtioAcked),
      protocolOffered: hex(this.protocolOffered),
      protocolAcked: hex(this.protocolAcked),
      protocolFeatures: describeProtocolFeatures(this.protocolAcked, this.dialect),
      owner: this.owner,
      memoryRegions: this.memTable
        ? readPayload("memory_table", this.memTable.bytes.subarray(HEADER)).regions.length
        : this.addedRegions.size,
      rings: this.orderedRings().map((r) => ({
        index: r.index,
        num: r.num,
        base: r.base,
        enabled: r.enabled,
        started: r.started,
      })),
      backendChannel: this.backendChannel,
      transfers: this.transfers,
      restarts: [...this.restarts],
      ...(notRestartable === undefined ? {} : { notRestartable }),
    };
  }

  /** Closes every fd the model holds. */
  close(): void {
    for (const f of this.setup.values()) closeAll(f.fds);
    if (this.memTable) closeAll(this.memTable.fds);
    for (const f of this.addedRegions.values()) closeAll(f.fds);
    for (const r of this.rings.values()) {
      for (const f of Object.values(r.frames)) if (f) closeAll(f.fds);
    }
    this.setup.clear();
    this.addedRegions.clear();
    this.rings.clear();
    this.memTable = undefined;
  }

  #ring(index: number): RingModel {
    let r = this.rings.get(index);
    if (!r) {
      r = { index, enabled: false, started: false, frames: {} };
      this.rings.set(index, r);
    }
    return r;
  }

  /** Keeps `f` under `key`, closing the fd dups of the frame it replaces. */
  #replace<K>(map: Map<K, KeptFrame>, key: K, f: KeptFrame): void {
    const old = map.get(key);
    if (old) closeAll(old.fds);
    map.set(key, f);
  }
}

/** The ring a ring set-up request is about, from the layout its name has. */
function ringIndex(name: RingStep, payload: Uint8Array): number {
  switch (name) {
    case "SET_VRING_ADDR":
      return readPayload("vring_addr", payload).index;
    case "SET_VRING_KICK":
    case "SET_VRING_CALL":
    case "SET_VRING_ERR":
      return readPayload("vring_file", payload).index;
    default:
      return readPayload("vring_state", payload).index;
  }
}

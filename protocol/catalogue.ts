/**
 * The vhost-user request catalogue: one row per request, from which decoding,
 * encoding, validation, logging and the dialect mapping are all derived.
 *
 * Rows follow docs/protocol.md §1.5 (front-end requests on the main channel) and docs/protocol.md §1.6
 * (back-end requests on the back-end channel). Adding a message is one row.
 *
 * @module
 */

import type { Dialect, ProtocolFeatureName, VirtioFeatureName } from "./features.ts";
import type { LayoutName } from "./layouts.ts";

/** The socket a message travels on: the main socket, or the back-end channel of SET_BACKEND_REQ_FD. */
export type Channel = "main" | "backend";

/** A peer of the protocol. */
export type Side = "front-end" | "back-end";

export type { Dialect } from "./features.ts";

/** Every dialect, upstream first. */
export const DIALECTS: readonly Dialect[] = ["upstream", "rfc2023"];

/**
 * A payload layout, possibly chosen by what was negotiated: the ring layout
 * (VIRTIO_F_RING_PACKED) or the memory-region layout (F_XEN_MMAP).
 */
export type LayoutRef =
  | LayoutName
  | { readonly byRing: { readonly split: LayoutName; readonly packed: LayoutName } }
  | { readonly byXen: { readonly plain: LayoutName; readonly xen: LayoutName } };

/** How many fds a message may carry. */
export interface FdRule {
  /** Fewest fds the message may carry. */
  readonly min: number;
  /** Most fds the message may carry (before {@link FdRule.from} narrows the range). */
  readonly max: number;
  /**
   * Narrows the range from the decoded payload: `nofd` — exactly 0 when the
   * payload's NOFD bit is set, else exactly 1; `regions` — one per memory
   * region; `mmap_size` — exactly 1 when mmap_size ≠ 0, else 0.
   */
  readonly from?: "nofd" | "regions" | "mmap_size";
  /** More fds than this are legal but odd: decoded with a warning. */
  readonly warnAbove?: number;
}

/**
 * When a request gets a reply.
 * - `always`: the peer must reply with the reply layout.
 * - `ack`: a u64 result, when NEED_REPLY is set and (main channel) REPLY_ACK is negotiated.
 * - `asked`: a u64 result whenever NEED_REPLY is set, REPLY_ACK or not (POSTCOPY_END in the
 *   newest text: QEMU reads a reply whenever it set NEED_REPLY).
 * - `never`: no reply of its own; the generic REPLY_ACK rule still makes a
 *   NEED_REPLY request get a u64 ack (spec "REPLY_ACK": every request without
 *   an explicit reply body).
 */
export type ReplyRule = "always" | "ack" | "asked" | "never";

/** Which negotiated feature makes a request legal. */
export interface FeatureGate {
  /** The protocol feature that must be negotiated (offered, for a few requests). */
  readonly protocol?: ProtocolFeatureName;
  /** The virtio feature that must be acked by SET_FEATURES. */
  readonly virtio?: VirtioFeatureName;
}

/** Postcopy special cases of SET_MEM_TABLE and ADD/REM_MEM_REG (docs/protocol.md §1.5 #5, #37). */
export interface PostcopyRule {
  /** A front-end request of exactly 8 bytes is QEMU's u64 acknowledgement, not this layout. */
  readonly ack: boolean;
  /** A reply longer than 8 bytes carries the back-end's mapped region(s) in this layout. */
  readonly reply?: LayoutRef;
}

/** Extra value checks on a request's vring state payload. */
export type RowCheck =
  /** `num` must be 0 or 1 (SET_VRING_ENABLE, SET_VRING_ENDIAN): a violation otherwise. */
  | "num_is_bool"
  /** `num` is reserved and should be 0 (GET_VRING_BASE request): a warning otherwise. */
  | "num_reserved";

/** One catalogue row. */
export interface RequestSpec {
  /** Request code in the upstream numbering. */
  readonly code: number;
  /** Spec name without `VHOST_USER_`, e.g. `SET_MEM_TABLE`. */
  readonly name: string;
  /** The socket the request travels on: main (front-end requests) or backend (back-end requests). */
  readonly channel: Channel;
  /** Layout of the request payload. */
  readonly request: LayoutRef;
  /** Layout of the reply payload (a u64 `result` for acks). */
  readonly reply: LayoutRef;
  /** Fds the request carries. */
  readonly fds: FdRule;
  /** Fds the reply carries. */
  readonly replyFds: FdRule;
  /** When the request gets a reply. */
  readonly replies: ReplyRule;
  /** With this protocol feature negotiated the request always gets a reply (SET_LOG_BASE). */
  readonly alwaysWith?: ProtocolFeatureName;
  /**
   * The receiver checks only the reply's request code, not its size: a reply
   * that does not fit {@link reply} is relayed raw with a warning.
   */
  readonly lenientReply?: boolean;
  /** The feature that must be negotiated before the request is legal; absent: always legal. */
  readonly gate?: FeatureGate;
  /** How postcopy changes the request and its reply (SET_MEM_TABLE, ADD/REM_MEM_REG). */
  readonly postcopy?: PostcopyRule;
  /** Value checks beyond the layout's own. */
  readonly checks?: readonly RowCheck[];
  /**
   * Codes in other dialects: `null` when the request does not exist there.
   * Absent dialects use {@link code}.
   */
  readonly dialects?: Readonly<Partial<Record<Dialect, number | null>>>;
  /** What the request means, one line. */
  readonly summary: string;
}

const NO_FDS: FdRule = { min: 0, max: 0 };
const ONE_FD: FdRule = { min: 1, max: 1 };
const NOFD_BIT: FdRule = { min: 0, max: 1, from: "nofd" };
const OPTIONAL_FD: FdRule = { min: 0, max: 1 };

/** A row as the table states it: the channel and the common defaults are added by {@link rowsOf}. */
type Row =
  & Omit<RequestSpec, "channel" | "reply" | "fds" | "replyFds">
  & Partial<Pick<RequestSpec, "reply" | "fds" | "replyFds">>;

/**
 * The rows of one channel, with what most requests share: a u64 result as the reply, no fds
 * either way. Each row then states only what is special about it.
 */
function rowsOf(channel: Channel, rows: readonly Row[]): RequestSpec[] {
  return rows.map((row) => ({ reply: "result", fds: NO_FDS, replyFds: NO_FDS, ...row, channel }));
}

const RING_BASE: LayoutRef = { byRing: { split: "vring_state", packed: "vring_base_packed" } };
const MEM_TABLE: LayoutRef = { byXen: { plain: "memory_table", xen: "memory_table_xen" } };
const MEM_REGION: LayoutRef = { byXen: { plain: "mem_region", xen: "mem_region_xen" } };

/** The catalogue: every front-end request (main channel) and back-end request (back-end channel). */
export const REQUESTS: readonly RequestSpec[] = [
  // --- main channel, front-end → back-end (docs/protocol.md §1.5) ---
  ...rowsOf("main", [
    {
      code: 0,
      name: "NONE",
      request: "postcopy_ack",
      replies: "never",
      postcopy: { ack: true },
      summary: "Postcopy: QEMU's final u64 ack after an ADD/REM_MEM_REG batch that changed nothing",
    },
    {
      code: 1,
      name: "GET_FEATURES",
      request: "empty",
      reply: "virtio_features",
      replies: "always",
      summary: "Get the virtio features the back-end offers",
    },
    {
      code: 2,
      name: "SET_FEATURES",
      request: "virtio_features",
      replies: "ack",
      summary: "Set the negotiated virtio features (LOG_ALL starts dirty logging)",
    },
    {
      code: 3,
      name: "SET_OWNER",
      request: "empty",
      replies: "ack",
      summary: "Claim the back-end for this front-end session",
    },
    {
      code: 4,
      name: "RESET_OWNER",
      request: "empty",
      replies: "never",
      summary: "Deprecated: back-ends ignore it or disable all rings",
    },
    {
      code: 5,
      name: "SET_MEM_TABLE",
      request: MEM_TABLE,
      replies: "ack",
      fds: { min: 1, max: 8, from: "regions" },
      postcopy: { ack: true, reply: MEM_TABLE },
      summary: "Set the guest memory regions, one fd per region",
    },
    {
      code: 6,
      name: "SET_LOG_BASE",
      request: "log",
      replies: "ack",
      fds: OPTIONAL_FD,
      alwaysWith: "LOG_SHMFD",
      lenientReply: true,
      summary: "Set the dirty-log shared memory (fd with F_LOG_SHMFD)",
    },
    {
      code: 7,
      name: "SET_LOG_FD",
      request: "empty",
      replies: "never",
      fds: ONE_FD,
      summary: "Set the eventfd signalled on log writes",
    },
    {
      code: 8,
      name: "SET_VRING_NUM",
      request: "vring_state",
      replies: "ack",
      summary: "Set the size of a ring",
    },
    {
      code: 9,
      name: "SET_VRING_ADDR",
      request: "vring_addr",
      replies: "ack",
      summary: "Set the ring addresses and the LOG flag",
    },
    {
      code: 10,
      name: "SET_VRING_BASE",
      request: RING_BASE,
      replies: "ack",
      summary: "Set the next available index (packed: indices and wrap counters)",
    },
    {
      code: 11,
      name: "GET_VRING_BASE",
      request: "vring_state",
      reply: RING_BASE,
      replies: "always",
      checks: ["num_reserved"],
      summary: "Stop a ring and get its next available index",
    },
    {
      code: 12,
      name: "SET_VRING_KICK",
      request: "vring_file",
      replies: "ack",
      fds: NOFD_BIT,
      summary: "Set the ring's kick eventfd (NOFD: poll)",
    },
    {
      code: 13,
      name: "SET_VRING_CALL",
      request: "vring_file",
      replies: "ack",
      fds: NOFD_BIT,
      summary: "Set the ring's call eventfd (NOFD: no interrupt)",
    },
    {
      code: 14,
      name: "SET_VRING_ERR",
      request: "vring_file",
      replies: "ack",
      fds: NOFD_BIT,
      summary: "Set the ring's error eventfd",
    },
    {
      code: 15,
      name: "GET_PROTOCOL_FEATURES",
      request: "empty",
      reply: "protocol_features",
      replies: "always",
      gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
      summary: "Get the protocol features the back-end offers",
    },
    {
      code: 16,
      name: "SET_PROTOCOL_FEATURES",
      request: "protocol_features",
      replies: "ack",
      gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
      summary: "Set the negotiated protocol features",
    },
    {
      code: 17,
      name: "GET_QUEUE_NUM",
      request: "empty",
      reply: "u64",
      replies: "always",
      gate: { protocol: "MQ" },
      summary: "Get the number of queues the back-end supports",
    },
    {
      code: 18,
      name: "SET_VRING_ENABLE",
      request: "vring_state",
      replies: "ack",
      gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
      checks: ["num_is_bool"],
      summary: "Enable (1) or disable (0) a ring",
    },
    {
      code: 19,
      name: "SEND_RARP",
      request: "mac",
      replies: "never",
      gate: { protocol: "RARP" },
      summary: "Ask the back-end to announce the guest MAC after migration",
    },
    {
      code: 20,
      name: "NET_SET_MTU",
      request: "u64",
      replies: "ack",
      gate: { protocol: "MTU" },
      summary: "Set the net device MTU",
    },
    {
      code: 21,
      name: "SET_BACKEND_REQ_FD",
      request: "empty",
      replies: "ack",
      fds: ONE_FD,
      gate: { protocol: "BACKEND_REQ" },
      summary: "Hand the back-end its end of the back-end channel socket",
    },
    {
      code: 22,
      name: "IOTLB_MSG",
      request: "iotlb",
      replies: "always",
      gate: { virtio: "VIRTIO_F_ACCESS_PLATFORM" },
      summary: "IOTLB update or invalidation; the back-end acknowledges it with a u64",
    },
    {
      code: 23,
      name: "SET_VRING_ENDIAN",
      request: "vring_state",
      replies: "never",
      gate: { protocol: "CROSS_ENDIAN" },
      checks: ["num_is_bool"],
      summary: "Set a legacy ring's endianness (0 little, 1 big)",
    },
    {
      code: 24,
      name: "GET_CONFIG",
      request: "config",
      reply: "config",
      replies: "always",
      gate: { protocol: "CONFIG" },
      summary: "Read device config space; the reply has the request's size",
    },
    {
      code: 25,
      name: "SET_CONFIG",
      request: "config",
      replies: "ack",
      gate: { protocol: "CONFIG" },
      summary: "Write device config space",
    },
    {
      code: 26,
      name: "CREATE_CRYPTO_SESSION",
      request: "crypto_session",
      reply: "crypto_session",
      replies: "always",
      gate: { protocol: "CRYPTO_SESSION" },
      summary: "Create a crypto session; the reply carries its id",
    },
    {
      code: 27,
      name: "CLOSE_CRYPTO_SESSION",
      request: "u64",
      replies: "never",
      gate: { protocol: "CRYPTO_SESSION" },
      summary: "Close a crypto session by id",
    },
    {
      code: 28,
      name: "POSTCOPY_ADVISE",
      request: "empty",
      reply: "empty",
      replies: "always",
      replyFds: ONE_FD,
      gate: { protocol: "PAGEFAULT" },
      summary: "Postcopy: get the back-end's userfaultfd",
    },
    {
      code: 29,
      name: "POSTCOPY_LISTEN",
      request: "empty",
      replies: "ack",
      gate: { protocol: "PAGEFAULT" },
      summary: "Postcopy: enter listening mode (QEMU always sets NEED_REPLY)",
    },
    {
      code: 30,
      name: "POSTCOPY_END",
      request: "empty",
      replies: "asked",
      gate: { protocol: "PAGEFAULT" },
      summary: "Postcopy: leave postcopy mode; a u64 answers NEED_REPLY, REPLY_ACK or not",
    },
    {
      code: 31,
      name: "GET_INFLIGHT_FD",
      request: "inflight",
      reply: "inflight",
      replies: "always",
      replyFds: { min: 0, max: 1, from: "mmap_size" },
      gate: { protocol: "INFLIGHT_SHMFD" },
      summary: "Get the inflight I/O tracking buffer (fd when mmap_size ≠ 0)",
    },
    {
      code: 32,
      name: "SET_INFLIGHT_FD",
      request: "inflight",
      replies: "never",
      fds: ONE_FD,
      gate: { protocol: "INFLIGHT_SHMFD" },
      summary: "Hand the back-end the inflight I/O tracking buffer",
    },
    {
      code: 33,
      name: "GPU_SET_SOCKET",
      request: "empty",
      replies: "never",
      fds: ONE_FD,
      summary: "Hand a vhost-user-gpu back-end its display socket",
    },
    {
      code: 34,
      name: "RESET_DEVICE",
      request: "empty",
      replies: "never",
      gate: { protocol: "RESET_DEVICE" },
      summary: "Reset the device to its initial state",
    },
    {
      code: 35,
      name: "VRING_KICK",
      request: "vring_state",
      replies: "never",
      gate: { protocol: "INBAND_NOTIFICATIONS" },
      summary: "In-band kick of a ring",
    },
    {
      code: 36,
      name: "GET_MAX_MEM_SLOTS",
      request: "empty",
      reply: "u64",
      replies: "always",
      gate: { protocol: "CONFIGURE_MEM_SLOTS" },
      summary: "Get the number of memory slots the back-end supports",
    },
    {
      code: 37,
      name: "ADD_MEM_REG",
      request: MEM_REGION,
      replies: "ack",
      fds: ONE_FD,
      gate: { protocol: "CONFIGURE_MEM_SLOTS" },
      postcopy: { ack: true, reply: MEM_REGION },
      summary: "Add one guest memory region with its fd",
    },
    {
      code: 38,
      name: "REM_MEM_REG",
      request: MEM_REGION,
      replies: "ack",
      fds: { min: 0, max: 1, warnAbove: 0 },
      gate: { protocol: "CONFIGURE_MEM_SLOTS" },
      postcopy: { ack: true },
      summary: "Remove one guest memory region (a stray fd must be closed)",
    },
    {
      code: 39,
      name: "SET_STATUS",
      request: "status",
      replies: "never",
      gate: { protocol: "STATUS" },
      summary: "Set the virtio device status byte",
    },
    {
      code: 40,
      name: "GET_STATUS",
      request: "empty",
      reply: "status",
      replies: "always",
      gate: { protocol: "STATUS" },
      summary: "Get the virtio device status byte",
    },
    {
      code: 41,
      name: "GET_SHARED_OBJECT",
      request: "shared_object",
      replies: "always",
      replyFds: OPTIONAL_FD,
      lenientReply: true,
      gate: { protocol: "SHARED_OBJECT" },
      // RFC 2023 used 41 for SET_DEVICE_STATE_FD; shared objects came later.
      dialects: { rfc2023: null },
      summary: "Get the dma-buf fd of a shared object by UUID",
    },
    {
      code: 42,
      name: "SET_DEVICE_STATE_FD",
      request: "device_state_params",
      reply: "device_state_result",
      replies: "always",
      fds: ONE_FD,
      replyFds: NOFD_BIT,
      gate: { protocol: "DEVICE_STATE" },
      dialects: { rfc2023: 41 },
      summary: "Start a device-state transfer over the attached pipe end",
    },
    {
      code: 43,
      name: "CHECK_DEVICE_STATE",
      request: "empty",
      replies: "always",
      gate: { protocol: "DEVICE_STATE" },
      dialects: { rfc2023: 42 },
      summary: "Ask whether the device-state transfer succeeded (0 = yes)",
    },
    {
      code: 44,
      name: "GET_SHMEM_CONFIG",
      request: "empty",
      reply: "shmem_config",
      replies: "always",
      gate: { protocol: "SHMEM" },
      summary: "Get the sizes of the device's shared memory regions",
    },
    {
      code: 45,
      name: "GET_VRING_BASE_SKIP_DRAIN",
      request: "vring_state",
      reply: RING_BASE,
      replies: "always",
      gate: { protocol: "GET_VRING_BASE_SKIP_DRAIN" },
      summary: "Stop a ring without draining in-flight I/O and get its next available index",
    },
  ]),
  // --- back-end channel, back-end → front-end (docs/protocol.md §1.6) ---
  ...rowsOf("backend", [
    {
      code: 1,
      name: "BACKEND_IOTLB_MSG",
      request: "iotlb",
      replies: "ack",
      gate: { virtio: "VIRTIO_F_ACCESS_PLATFORM" },
      summary: "IOTLB miss or access failure",
    },
    {
      code: 2,
      name: "BACKEND_CONFIG_CHANGE_MSG",
      request: "empty",
      replies: "ack",
      gate: { protocol: "CONFIG" },
      summary: "Device config space changed",
    },
    {
      code: 3,
      name: "BACKEND_VRING_HOST_NOTIFIER_MSG",
      request: "vring_area",
      replies: "ack",
      fds: NOFD_BIT,
      gate: { protocol: "HOST_NOTIFIER" },
      summary: "Map (fd) or unmap (NOFD) a ring's host notifier page",
    },
    {
      code: 4,
      name: "BACKEND_VRING_CALL",
      request: "vring_state",
      replies: "ack",
      gate: { protocol: "INBAND_NOTIFICATIONS" },
      summary: "In-band call of a ring (not handled by QEMU)",
    },
    {
      code: 5,
      name: "BACKEND_VRING_ERR",
      request: "vring_state",
      replies: "ack",
      gate: { protocol: "INBAND_NOTIFICATIONS" },
      summary: "In-band error of a ring (not handled by QEMU)",
    },
    {
      code: 6,
      name: "BACKEND_SHARED_OBJECT_ADD",
      request: "shared_object",
      replies: "ack",
      gate: { protocol: "SHARED_OBJECT" },
      summary: "Register the back-end as exporter of a shared object",
    },
    {
      code: 7,
      name: "BACKEND_SHARED_OBJECT_REMOVE",
      request: "shared_object",
      replies: "ack",
      gate: { protocol: "SHARED_OBJECT" },
      summary: "Unregister an exported shared object",
    },
    {
      code: 8,
      name: "BACKEND_SHARED_OBJECT_LOOKUP",
      request: "shared_object",
      replies: "always",
      replyFds: OPTIONAL_FD,
      gate: { protocol: "SHARED_OBJECT" },
      summary: "Look up a shared object's dma-buf fd (fd on success)",
    },
    {
      code: 9,
      name: "BACKEND_SHMEM_MAP",
      request: "shmem_map",
      replies: "ack",
      fds: ONE_FD,
      gate: { protocol: "SHMEM" },
      summary: "Map the attached fd into a shared memory region",
    },
    {
      code: 10,
      name: "BACKEND_SHMEM_UNMAP",
      request: "shmem_map",
      replies: "ack",
      gate: { protocol: "SHMEM" },
      summary: "Unmap part of a shared memory region",
    },
  ]),
];

/** Code of a row in a dialect, or undefined when the request does not exist there. */
export function codeIn(spec: RequestSpec, dialect: Dialect): number | undefined {
  const override = spec.dialects?.[dialect];
  if (override === null) return undefined;
  return override ?? spec.code;
}

function key(channel: Channel, code: number): string {
  return `${channel}:${code}`;
}

/** Per-dialect index from (channel, code) to row, built once from {@link REQUESTS}. */
const BY_CODE: Readonly<Record<Dialect, ReadonlyMap<string, RequestSpec>>> = (() => {
  const out = {} as Record<Dialect, Map<string, RequestSpec>>;
  for (const dialect of DIALECTS) {
    const map = new Map<string, RequestSpec>();
    for (const spec of REQUESTS) {
      const code = codeIn(spec, dialect);
      if (code === undefined) continue;
      const k = key(spec.channel, code);
      const clash = map.get(k);
      if (clash !== undefined) {
        // A table error, caught by the first import (and the catalogue tests).
        throw new TypeError(
          `Cannot index the catalogue: ${spec.name} and ${clash.name} share code ${code} on ${spec.channel} in ${dialect}`,
        );
      }
      map.set(k, spec);
    }
    out[dialect] = map;
  }
  return out;
})();

/**
 * The row for a request code in a dialect, or undefined for an unknown code.
 *
 * @example
 * ```ts
 * findRequest("main", 41, "upstream")?.name; // "GET_SHARED_OBJECT"
 * findRequest("main", 41, "rfc2023")?.name; // "SET_DEVICE_STATE_FD"
 * ```
 */
export function findRequest(
  channel: Channel,
  code: number,
  dialect: Dialect = "upstream",
): RequestSpec | undefined {
  return BY_CODE[dialect].get(key(channel, code));
}

/** The row for a request name on a channel (names are dialect-independent). */
export function findRequestByName(channel: Channel, name: string): RequestSpec | undefined {
  return REQUESTS.find((r) => r.channel === channel && r.name === name);
}

/** Rows of one channel, in code order. */
export function requestsOf(channel: Channel): RequestSpec[] {
  return REQUESTS.filter((r) => r.channel === channel);
}

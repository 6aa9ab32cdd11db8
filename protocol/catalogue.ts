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

/** Common shape of request rows, so each row states only what is special about it. */
function row(
  code: number,
  name: string,
  channel: Channel,
  request: LayoutRef,
  replies: ReplyRule,
  summary: string,
  extra: Partial<RequestSpec> = {},
): RequestSpec {
  return {
    code,
    name,
    channel,
    request,
    reply: "result",
    fds: NO_FDS,
    replyFds: NO_FDS,
    replies,
    summary,
    ...extra,
  };
}

const RING_BASE: LayoutRef = { byRing: { split: "vring_state", packed: "vring_base_packed" } };
const MEM_TABLE: LayoutRef = { byXen: { plain: "memory_table", xen: "memory_table_xen" } };
const MEM_REGION: LayoutRef = { byXen: { plain: "mem_region", xen: "mem_region_xen" } };

/** The catalogue: every front-end request (main channel) and back-end request (back-end channel). */
export const REQUESTS: readonly RequestSpec[] = [
  // --- main channel, front-end → back-end (docs/protocol.md §1.5) ---
  row(
    0,
    "NONE",
    "main",
    "postcopy_ack",
    "never",
    "Postcopy: QEMU's final u64 ack after an ADD/REM_MEM_REG batch that changed nothing",
    {
      postcopy: { ack: true },
    },
  ),
  row(1, "GET_FEATURES", "main", "empty", "always", "Get the virtio features the back-end offers", {
    reply: "virtio_features",
  }),
  row(
    2,
    "SET_FEATURES",
    "main",
    "virtio_features",
    "ack",
    "Set the negotiated virtio features (LOG_ALL starts dirty logging)",
  ),
  row(3, "SET_OWNER", "main", "empty", "ack", "Claim the back-end for this front-end session"),
  row(
    4,
    "RESET_OWNER",
    "main",
    "empty",
    "never",
    "Deprecated: back-ends ignore it or disable all rings",
  ),
  row(
    5,
    "SET_MEM_TABLE",
    "main",
    MEM_TABLE,
    "ack",
    "Set the guest memory regions, one fd per region",
    {
      fds: { min: 1, max: 8, from: "regions" },
      postcopy: { ack: true, reply: MEM_TABLE },
    },
  ),
  row(
    6,
    "SET_LOG_BASE",
    "main",
    "log",
    "ack",
    "Set the dirty-log shared memory (fd with F_LOG_SHMFD)",
    {
      fds: OPTIONAL_FD,
      alwaysWith: "LOG_SHMFD",
      lenientReply: true,
    },
  ),
  row(7, "SET_LOG_FD", "main", "empty", "never", "Set the eventfd signalled on log writes", {
    fds: ONE_FD,
  }),
  row(8, "SET_VRING_NUM", "main", "vring_state", "ack", "Set the size of a ring"),
  row(9, "SET_VRING_ADDR", "main", "vring_addr", "ack", "Set the ring addresses and the LOG flag"),
  row(
    10,
    "SET_VRING_BASE",
    "main",
    RING_BASE,
    "ack",
    "Set the next available index (packed: indices and wrap counters)",
  ),
  row(
    11,
    "GET_VRING_BASE",
    "main",
    "vring_state",
    "always",
    "Stop a ring and get its next available index",
    {
      reply: RING_BASE,
      checks: ["num_reserved"],
    },
  ),
  row(
    12,
    "SET_VRING_KICK",
    "main",
    "vring_file",
    "ack",
    "Set the ring's kick eventfd (NOFD: poll)",
    {
      fds: NOFD_BIT,
    },
  ),
  row(
    13,
    "SET_VRING_CALL",
    "main",
    "vring_file",
    "ack",
    "Set the ring's call eventfd (NOFD: no interrupt)",
    {
      fds: NOFD_BIT,
    },
  ),
  row(14, "SET_VRING_ERR", "main", "vring_file", "ack", "Set the ring's error eventfd", {
    fds: NOFD_BIT,
  }),
  row(
    15,
    "GET_PROTOCOL_FEATURES",
    "main",
    "empty",
    "always",
    "Get the protocol features the back-end offers",
    {
      reply: "protocol_features",
      gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
    },
  ),
  row(
    16,
    "SET_PROTOCOL_FEATURES",
    "main",
    "protocol_features",
    "ack",
    "Set the negotiated protocol features",
    {
      gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
    },
  ),
  row(
    17,
    "GET_QUEUE_NUM",
    "main",
    "empty",
    "always",
    "Get the number of queues the back-end supports",
    {
      reply: "u64",
      gate: { protocol: "MQ" },
    },
  ),
  row(18, "SET_VRING_ENABLE", "main", "vring_state", "ack", "Enable (1) or disable (0) a ring", {
    gate: { virtio: "VHOST_USER_F_PROTOCOL_FEATURES" },
    checks: ["num_is_bool"],
  }),
  row(
    19,
    "SEND_RARP",
    "main",
    "mac",
    "never",
    "Ask the back-end to announce the guest MAC after migration",
    {
      gate: { protocol: "RARP" },
    },
  ),
  row(20, "NET_SET_MTU", "main", "u64", "ack", "Set the net device MTU", {
    gate: { protocol: "MTU" },
  }),
  row(
    21,
    "SET_BACKEND_REQ_FD",
    "main",
    "empty",
    "ack",
    "Hand the back-end its end of the back-end channel socket",
    {
      fds: ONE_FD,
      gate: { protocol: "BACKEND_REQ" },
    },
  ),
  row(
    22,
    "IOTLB_MSG",
    "main",
    "iotlb",
    "always",
    "IOTLB update or invalidation; the back-end acknowledges it with a u64",
    {
      gate: { virtio: "VIRTIO_F_ACCESS_PLATFORM" },
    },
  ),
  row(
    23,
    "SET_VRING_ENDIAN",
    "main",
    "vring_state",
    "never",
    "Set a legacy ring's endianness (0 little, 1 big)",
    {
      gate: { protocol: "CROSS_ENDIAN" },
      checks: ["num_is_bool"],
    },
  ),
  row(
    24,
    "GET_CONFIG",
    "main",
    "config",
    "always",
    "Read device config space; the reply has the request's size",
    {
      reply: "config",
      gate: { protocol: "CONFIG" },
    },
  ),
  row(25, "SET_CONFIG", "main", "config", "ack", "Write device config space", {
    gate: { protocol: "CONFIG" },
  }),
  row(
    26,
    "CREATE_CRYPTO_SESSION",
    "main",
    "crypto_session",
    "always",
    "Create a crypto session; the reply carries its id",
    {
      reply: "crypto_session",
      gate: { protocol: "CRYPTO_SESSION" },
    },
  ),
  row(27, "CLOSE_CRYPTO_SESSION", "main", "u64", "never", "Close a crypto session by id", {
    gate: { protocol: "CRYPTO_SESSION" },
  }),
  row(
    28,
    "POSTCOPY_ADVISE",
    "main",
    "empty",
    "always",
    "Postcopy: get the back-end's userfaultfd",
    {
      reply: "empty",
      replyFds: ONE_FD,
      gate: { protocol: "PAGEFAULT" },
    },
  ),
  row(
    29,
    "POSTCOPY_LISTEN",
    "main",
    "empty",
    "ack",
    "Postcopy: enter listening mode (QEMU always sets NEED_REPLY)",
    {
      gate: { protocol: "PAGEFAULT" },
    },
  ),
  row(
    30,
    "POSTCOPY_END",
    "main",
    "empty",
    "asked",
    "Postcopy: leave postcopy mode; a u64 answers NEED_REPLY, REPLY_ACK or not",
    {
      gate: { protocol: "PAGEFAULT" },
    },
  ),
  row(
    31,
    "GET_INFLIGHT_FD",
    "main",
    "inflight",
    "always",
    "Get the inflight I/O tracking buffer (fd when mmap_size ≠ 0)",
    {
      reply: "inflight",
      replyFds: { min: 0, max: 1, from: "mmap_size" },
      gate: { protocol: "INFLIGHT_SHMFD" },
    },
  ),
  row(
    32,
    "SET_INFLIGHT_FD",
    "main",
    "inflight",
    "never",
    "Hand the back-end the inflight I/O tracking buffer",
    {
      fds: ONE_FD,
      gate: { protocol: "INFLIGHT_SHMFD" },
    },
  ),
  row(
    33,
    "GPU_SET_SOCKET",
    "main",
    "empty",
    "never",
    "Hand a vhost-user-gpu back-end its display socket",
    {
      fds: ONE_FD,
    },
  ),
  row(34, "RESET_DEVICE", "main", "empty", "never", "Reset the device to its initial state", {
    gate: { protocol: "RESET_DEVICE" },
  }),
  row(35, "VRING_KICK", "main", "vring_state", "never", "In-band kick of a ring", {
    gate: { protocol: "INBAND_NOTIFICATIONS" },
  }),
  row(
    36,
    "GET_MAX_MEM_SLOTS",
    "main",
    "empty",
    "always",
    "Get the number of memory slots the back-end supports",
    {
      reply: "u64",
      gate: { protocol: "CONFIGURE_MEM_SLOTS" },
    },
  ),
  row(37, "ADD_MEM_REG", "main", MEM_REGION, "ack", "Add one guest memory region with its fd", {
    fds: ONE_FD,
    gate: { protocol: "CONFIGURE_MEM_SLOTS" },
    postcopy: { ack: true, reply: MEM_REGION },
  }),
  row(
    38,
    "REM_MEM_REG",
    "main",
    MEM_REGION,
    "ack",
    "Remove one guest memory region (a stray fd must be closed)",
    {
      fds: { min: 0, max: 1, warnAbove: 0 },
      gate: { protocol: "CONFIGURE_MEM_SLOTS" },
      postcopy: { ack: true },
    },
  ),
  row(39, "SET_STATUS", "main", "status", "never", "Set the virtio device status byte", {
    gate: { protocol: "STATUS" },
  }),
  row(40, "GET_STATUS", "main", "empty", "always", "Get the virtio device status byte", {
    reply: "status",
    gate: { protocol: "STATUS" },
  }),
  row(
    41,
    "GET_SHARED_OBJECT",
    "main",
    "shared_object",
    "always",
    "Get the dma-buf fd of a shared object by UUID",
    {
      replyFds: OPTIONAL_FD,
      lenientReply: true,
      gate: { protocol: "SHARED_OBJECT" },
      // RFC 2023 used 41 for SET_DEVICE_STATE_FD; shared objects came later.
      dialects: { rfc2023: null },
    },
  ),
  row(
    42,
    "SET_DEVICE_STATE_FD",
    "main",
    "device_state_params",
    "always",
    "Start a device-state transfer over the attached pipe end",
    {
      fds: ONE_FD,
      reply: "device_state_result",
      replyFds: { min: 0, max: 1, from: "nofd" },
      gate: { protocol: "DEVICE_STATE" },
      dialects: { rfc2023: 41 },
    },
  ),
  row(
    43,
    "CHECK_DEVICE_STATE",
    "main",
    "empty",
    "always",
    "Ask whether the device-state transfer succeeded (0 = yes)",
    {
      gate: { protocol: "DEVICE_STATE" },
      dialects: { rfc2023: 42 },
    },
  ),
  row(
    44,
    "GET_SHMEM_CONFIG",
    "main",
    "empty",
    "always",
    "Get the sizes of the device's shared memory regions",
    {
      reply: "shmem_config",
      gate: { protocol: "SHMEM" },
    },
  ),
  row(
    45,
    "GET_VRING_BASE_SKIP_DRAIN",
    "main",
    "vring_state",
    "always",
    "Stop a ring without draining in-flight I/O and get its next available index",
    {
      reply: RING_BASE,
      gate: { protocol: "GET_VRING_BASE_SKIP_DRAIN" },
    },
  ),

  // --- back-end channel, back-end → front-end (docs/protocol.md §1.6) ---
  row(1, "BACKEND_IOTLB_MSG", "backend", "iotlb", "ack", "IOTLB miss or access failure", {
    gate: { virtio: "VIRTIO_F_ACCESS_PLATFORM" },
  }),
  row(2, "BACKEND_CONFIG_CHANGE_MSG", "backend", "empty", "ack", "Device config space changed", {
    gate: { protocol: "CONFIG" },
  }),
  row(
    3,
    "BACKEND_VRING_HOST_NOTIFIER_MSG",
    "backend",
    "vring_area",
    "ack",
    "Map (fd) or unmap (NOFD) a ring's host notifier page",
    {
      fds: NOFD_BIT,
      gate: { protocol: "HOST_NOTIFIER" },
    },
  ),
  row(
    4,
    "BACKEND_VRING_CALL",
    "backend",
    "vring_state",
    "ack",
    "In-band call of a ring (not handled by QEMU)",
    {
      gate: { protocol: "INBAND_NOTIFICATIONS" },
    },
  ),
  row(
    5,
    "BACKEND_VRING_ERR",
    "backend",
    "vring_state",
    "ack",
    "In-band error of a ring (not handled by QEMU)",
    {
      gate: { protocol: "INBAND_NOTIFICATIONS" },
    },
  ),
  row(
    6,
    "BACKEND_SHARED_OBJECT_ADD",
    "backend",
    "shared_object",
    "ack",
    "Register the back-end as exporter of a shared object",
    {
      gate: { protocol: "SHARED_OBJECT" },
    },
  ),
  row(
    7,
    "BACKEND_SHARED_OBJECT_REMOVE",
    "backend",
    "shared_object",
    "ack",
    "Unregister an exported shared object",
    {
      gate: { protocol: "SHARED_OBJECT" },
    },
  ),
  row(
    8,
    "BACKEND_SHARED_OBJECT_LOOKUP",
    "backend",
    "shared_object",
    "always",
    "Look up a shared object's dma-buf fd (fd on success)",
    {
      replyFds: OPTIONAL_FD,
      gate: { protocol: "SHARED_OBJECT" },
    },
  ),
  row(
    9,
    "BACKEND_SHMEM_MAP",
    "backend",
    "shmem_map",
    "ack",
    "Map the attached fd into a shared memory region",
    {
      fds: ONE_FD,
      gate: { protocol: "SHMEM" },
    },
  ),
  row(
    10,
    "BACKEND_SHMEM_UNMAP",
    "backend",
    "shmem_map",
    "ack",
    "Unmap part of a shared memory region",
    {
      gate: { protocol: "SHMEM" },
    },
  ),
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

/**
 * Feature bits of the vhost-user protocol, by name.
 *
 * Two 64-bit masks matter to a vhost-user relay: the virtio feature mask of
 * GET/SET_FEATURES (docs/protocol.md §1.3.1) and the protocol feature mask of
 * GET/SET_PROTOCOL_FEATURES (docs/protocol.md §1.3.2). Protocol feature numbering differs
 * between the merged upstream protocol and the April 2023 RFC for device-state
 * migration (docs/protocol.md §2.6); each row below states its bit in every dialect, so the
 * dialect mapping is derived from this one table.
 *
 * @module
 */

/**
 * Request and feature numbering: `upstream` is the merged protocol (QEMU ≥ 8.2);
 * `rfc2023` is the April 2023 device-state RFC (F_MIGRATORY_STATE = 17,
 * SET_DEVICE_STATE_FD = 41, CHECK_DEVICE_STATE = 42), docs/protocol.md §2.6.
 */
export type Dialect = "upstream" | "rfc2023";

/** One protocol feature: its upstream bit and name plus per-dialect overrides. */
export interface ProtocolFeatureRow {
  /** Bit number in the upstream (merged, QEMU ≥ 8.2) protocol. */
  readonly bit: number;
  /** Spec name without the `VHOST_USER_PROTOCOL_F_` prefix, e.g. `DEVICE_STATE`. */
  readonly name: string;
  /** What negotiating the bit means, one line. */
  readonly summary: string;
  /** Features the spec allows this one only together with (upstream names). */
  readonly requires?: readonly string[];
  /**
   * How other dialects number the feature: `null` when the feature does not
   * exist there, an object when it sits at another bit (and maybe has another
   * name). Absent dialects use the upstream bit and name.
   */
  readonly dialects?: Readonly<
    Partial<Record<Dialect, { readonly bit: number; readonly name?: string } | null>>
  >;
}

/**
 * Every protocol feature bit the newest spec text defines (0..23, docs/protocol.md §1.3.2 and docs/protocol.md §1.10), in
 * bit order. Bits beyond the table read `bit N` and are relayed like any other.
 */
export const PROTOCOL_FEATURES = [
  { bit: 0, name: "MQ", summary: "Multiple queues; the front-end asks GET_QUEUE_NUM" },
  { bit: 1, name: "LOG_SHMFD", summary: "Dirty log passed as a shared memory fd in SET_LOG_BASE" },
  { bit: 2, name: "RARP", summary: "Front-end may send SEND_RARP after migration" },
  { bit: 3, name: "REPLY_ACK", summary: "NEED_REPLY requests get a u64 acknowledgement" },
  { bit: 4, name: "MTU", summary: "Front-end may send NET_SET_MTU" },
  { bit: 5, name: "BACKEND_REQ", summary: "Back-end channel via SET_BACKEND_REQ_FD" },
  { bit: 6, name: "CROSS_ENDIAN", summary: "SET_VRING_ENDIAN for legacy cross-endian rings" },
  { bit: 7, name: "CRYPTO_SESSION", summary: "CREATE/CLOSE_CRYPTO_SESSION" },
  { bit: 8, name: "PAGEFAULT", summary: "Postcopy migration with userfaultfd" },
  { bit: 9, name: "CONFIG", summary: "GET/SET_CONFIG device configuration space access" },
  { bit: 10, name: "BACKEND_SEND_FD", summary: "Back-end channel messages may carry fds" },
  { bit: 11, name: "HOST_NOTIFIER", summary: "Back-end provides host notifier pages" },
  {
    bit: 12,
    name: "INFLIGHT_SHMFD",
    summary: "Inflight I/O tracking buffer (GET/SET_INFLIGHT_FD)",
  },
  { bit: 13, name: "RESET_DEVICE", summary: "RESET_DEVICE request" },
  { bit: 14, name: "INBAND_NOTIFICATIONS", summary: "Kicks and calls as messages" },
  { bit: 15, name: "CONFIGURE_MEM_SLOTS", summary: "ADD/REM_MEM_REG instead of SET_MEM_TABLE" },
  { bit: 16, name: "STATUS", summary: "SET/GET_STATUS virtio device status" },
  {
    bit: 17,
    name: "XEN_MMAP",
    summary: "Xen memory-region flags in memory tables (40-byte regions)",
    // Bit 17 was F_MIGRATORY_STATE in the RFC: the two meanings clash.
    dialects: { rfc2023: null },
  },
  {
    bit: 18,
    name: "SHARED_OBJECT",
    summary: "Virtio shared objects (GET_SHARED_OBJECT, BACKEND_SHARED_OBJECT_*)",
    dialects: { rfc2023: null },
  },
  {
    bit: 19,
    name: "DEVICE_STATE",
    summary: "Back-end state transfer (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE)",
    dialects: { rfc2023: { bit: 17, name: "MIGRATORY_STATE" } },
  },
  {
    bit: 20,
    name: "GET_VRING_BASE_INFLIGHT",
    summary: "GET_VRING_BASE may return with I/O still in flight",
  },
  {
    bit: 21,
    name: "GPA_ADDRESSES",
    summary: "Address fields carry guest-physical addresses (region uaddr = GPA, ring GPAs)",
  },
  {
    // Bit 21 in the earlier series and rust-vmm/vhost 0.16; 22 in the newest text (docs/protocol.md §1.10).
    bit: 22,
    name: "SHMEM",
    summary: "Shared memory regions (GET_SHMEM_CONFIG, BACKEND_SHMEM_MAP/UNMAP)",
  },
  {
    bit: 23,
    name: "GET_VRING_BASE_SKIP_DRAIN",
    summary: "GET_VRING_BASE_SKIP_DRAIN stops a ring without draining (needs bits 20 and 12)",
    requires: ["GET_VRING_BASE_INFLIGHT", "INFLIGHT_SHMFD"],
  },
] as const satisfies readonly ProtocolFeatureRow[];

/** Upstream name of a protocol feature, e.g. `"REPLY_ACK"`. */
export type ProtocolFeatureName = typeof PROTOCOL_FEATURES[number]["name"];

/** One virtio feature bit that matters to vhost-user. */
export interface VirtioFeatureRow {
  /** Bit number in the 64-bit virtio feature mask. */
  readonly bit: number;
  /** Name as used by QEMU and the virtio spec. */
  readonly name: string;
  /** Why a relay cares, one line. */
  readonly summary: string;
}

/**
 * Transport-level virtio feature bits (docs/protocol.md §1.3.1). Bits 0..23 are device-specific
 * and described as `bit N`.
 */
export const VIRTIO_FEATURES = [
  { bit: 24, name: "VIRTIO_F_NOTIFY_ON_EMPTY", summary: "Notify when the ring runs empty" },
  { bit: 26, name: "VHOST_F_LOG_ALL", summary: "Dirty-page logging for migration" },
  { bit: 27, name: "VIRTIO_F_ANY_LAYOUT", summary: "Legacy: any descriptor layout" },
  { bit: 28, name: "VIRTIO_RING_F_INDIRECT_DESC", summary: "Indirect descriptors" },
  { bit: 29, name: "VIRTIO_RING_F_EVENT_IDX", summary: "Used/avail event index suppression" },
  {
    bit: 30,
    name: "VHOST_USER_F_PROTOCOL_FEATURES",
    summary: "GET/SET_PROTOCOL_FEATURES legal; rings start disabled",
  },
  { bit: 32, name: "VIRTIO_F_VERSION_1", summary: "Modern (virtio 1.0) device" },
  { bit: 33, name: "VIRTIO_F_ACCESS_PLATFORM", summary: "Ring addresses are IOVAs (IOTLB)" },
  { bit: 34, name: "VIRTIO_F_RING_PACKED", summary: "Packed rings: vring base encoding changes" },
  { bit: 35, name: "VIRTIO_F_IN_ORDER", summary: "Descriptors used in order" },
  { bit: 36, name: "VIRTIO_F_ORDER_PLATFORM", summary: "Platform memory ordering" },
  { bit: 37, name: "VIRTIO_F_SR_IOV", summary: "Single root I/O virtualization" },
  { bit: 38, name: "VIRTIO_F_NOTIFICATION_DATA", summary: "Extra data in notifications" },
  { bit: 40, name: "VIRTIO_F_RING_RESET", summary: "Individual ring reset" },
] as const satisfies readonly VirtioFeatureRow[];

/** Name of a virtio feature bit listed in {@link VIRTIO_FEATURES}. */
export type VirtioFeatureName = typeof VIRTIO_FEATURES[number]["name"];

/** Virtio device status bits carried by SET_STATUS / GET_STATUS. */
export const VIRTIO_STATUS = [
  { bit: 0, name: "ACKNOWLEDGE" },
  { bit: 1, name: "DRIVER" },
  { bit: 2, name: "DRIVER_OK" },
  { bit: 3, name: "FEATURES_OK" },
  { bit: 6, name: "DEVICE_NEEDS_RESET" },
  { bit: 7, name: "FAILED" },
] as const;

const protocolRows: readonly ProtocolFeatureRow[] = PROTOCOL_FEATURES;

/** Bit and display name of a protocol feature row in a dialect, or undefined if absent. */
export function protocolFeaturePlace(
  row: ProtocolFeatureRow,
  dialect: Dialect,
): { bit: number; name: string } | undefined {
  const override = row.dialects?.[dialect];
  if (override === null) return undefined;
  if (override === undefined) return { bit: row.bit, name: row.name };
  return { bit: override.bit, name: override.name ?? row.name };
}

/**
 * Bit number of a protocol feature in a dialect.
 *
 * @example
 * ```ts
 * protocolFeatureBit("DEVICE_STATE", "upstream"); // 19
 * protocolFeatureBit("DEVICE_STATE", "rfc2023"); // 17
 * protocolFeatureBit("XEN_MMAP", "rfc2023"); // undefined
 * ```
 */
export function protocolFeatureBit(
  name: ProtocolFeatureName,
  dialect: Dialect = "upstream",
): number | undefined {
  const row = protocolRows.find((r) => r.name === name);
  return row === undefined ? undefined : protocolFeaturePlace(row, dialect)?.bit;
}

/** Mask of a protocol feature in a dialect; `0n` when the dialect lacks it. */
export function protocolFeatureMask(
  name: ProtocolFeatureName,
  dialect: Dialect = "upstream",
): bigint {
  const bit = protocolFeatureBit(name, dialect);
  return bit === undefined ? 0n : 1n << BigInt(bit);
}

/** Whether `mask` (numbered in `dialect`) contains the named protocol feature. */
export function hasProtocolFeature(
  mask: bigint,
  name: ProtocolFeatureName,
  dialect: Dialect = "upstream",
): boolean {
  const bit = protocolFeatureMask(name, dialect);
  return bit !== 0n && (mask & bit) !== 0n;
}

/**
 * The protocol feature at `bit` in `dialect`: its upstream row and the name the
 * dialect uses, or undefined when the dialect defines nothing at that bit.
 */
export function protocolFeatureAt(
  bit: number,
  dialect: Dialect = "upstream",
): { row: ProtocolFeatureRow; name: string } | undefined {
  for (const row of protocolRows) {
    const place = protocolFeaturePlace(row, dialect);
    if (place !== undefined && place.bit === bit) return { row, name: place.name };
  }
  return undefined;
}

/** Set bits of a 64-bit mask, ascending. */
export function bitsOf(mask: bigint): number[] {
  const bits: number[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if ((mask >> BigInt(bit)) & 1n) bits.push(bit);
  }
  return bits;
}

/**
 * Names of the protocol features in `mask`; unknown bits read `bit N`.
 *
 * @example
 * ```ts
 * describeProtocolFeatures(0x80009n); // ["MQ", "REPLY_ACK", "DEVICE_STATE"]
 * ```
 */
export function describeProtocolFeatures(mask: bigint, dialect: Dialect = "upstream"): string[] {
  return bitsOf(mask).map((bit) => protocolFeatureAt(bit, dialect)?.name ?? `bit ${bit}`);
}

/**
 * Protocol features set in `mask` without a feature the spec allows them only with
 * (`GET_VRING_BASE_SKIP_DRAIN` needs `GET_VRING_BASE_INFLIGHT` and `INFLIGHT_SHMFD`), one
 * sentence each. The relay warns and forwards: the back-end decides.
 *
 * @example
 * ```ts
 * unmetRequirements(1n << 23n);
 * // ["GET_VRING_BASE_SKIP_DRAIN (bit 23) is set without GET_VRING_BASE_INFLIGHT (bit 20), INFLIGHT_SHMFD (bit 12)"]
 * ```
 */
export function unmetRequirements(mask: bigint, dialect: Dialect = "upstream"): string[] {
  const out: string[] = [];
  for (const row of protocolRows) {
    const place = protocolFeaturePlace(row, dialect);
    if (row.requires === undefined || place === undefined) continue;
    if ((mask & (1n << BigInt(place.bit))) === 0n) continue;
    const missing = row.requires
      .map((name) => ({ name, bit: protocolFeatureBit(name as ProtocolFeatureName, dialect) }))
      .filter((r) => r.bit === undefined || (mask & (1n << BigInt(r.bit))) === 0n);
    if (missing.length === 0) continue;
    out.push(
      `${place.name} (bit ${place.bit}) is set without ${
        missing.map((r) => `${r.name} (bit ${r.bit ?? "none"})`).join(", ")
      }`,
    );
  }
  return out;
}

/** Bit number of a named virtio feature. */
export function virtioFeatureBit(name: VirtioFeatureName): number {
  const row = VIRTIO_FEATURES.find((r) => r.name === name);
  // The name type only admits table names, so the row exists.
  return row === undefined ? -1 : row.bit;
}

/** Mask of a named virtio feature. */
export function virtioFeatureMask(name: VirtioFeatureName): bigint {
  return 1n << BigInt(virtioFeatureBit(name));
}

/** Whether `mask` contains the named virtio feature. */
export function hasVirtioFeature(mask: bigint, name: VirtioFeatureName): boolean {
  return (mask & virtioFeatureMask(name)) !== 0n;
}

/**
 * Names of the virtio features in `mask`; device-specific and unknown bits read `bit N`.
 *
 * @example
 * ```ts
 * describeVirtioFeatures(0x140000000n); // ["VHOST_USER_F_PROTOCOL_FEATURES", "VIRTIO_F_VERSION_1"]
 * ```
 */
export function describeVirtioFeatures(mask: bigint): string[] {
  const rows: readonly VirtioFeatureRow[] = VIRTIO_FEATURES;
  return bitsOf(mask).map((bit) => rows.find((r) => r.bit === bit)?.name ?? `bit ${bit}`);
}

/** Names of the virtio device status bits in `status`; unknown bits read `bit N`. */
export function describeStatus(status: bigint): string[] {
  const rows: readonly { bit: number; name: string }[] = VIRTIO_STATUS;
  return bitsOf(status).map((bit) => rows.find((r) => r.bit === bit)?.name ?? `bit ${bit}`);
}

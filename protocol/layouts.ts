/**
 * Payload layouts of the vhost-user protocol: typed wire structs whose decode,
 * encode, JSON view and one-line summary are driven by field tables.
 *
 * Every struct of docs/protocol.md §1.4 is here. A struct layout is an interface (the typed
 * value) plus a field table keyed by the interface's own property names, so
 * the compiler rejects a table that forgets a field or gives a bigint field a
 * 32-bit wire type. Offsets are written out as in the spec tables and checked
 * by the tests. Integers are little-endian (spec: host order on x86-64/aarch64).
 *
 * Decoding never throws: a layout is only asked to decode a payload whose
 * length its {@link SizeRule} admits, and it reports anything else it finds as
 * {@link LayoutIssue} values (violations and harmless warnings).
 *
 * @module
 */

import {
  describeProtocolFeatures,
  describeStatus,
  describeVirtioFeatures,
  type Dialect,
} from "./features.ts";

// ---------------------------------------------------------------------------
// Field tables

/** How a bigint field reads in the JSON view. */
export type BigJson =
  /** A number when it is a safe integer, else a decimal string (counters, ids). */
  | "number"
  /** A `0x…` string (addresses, sizes, masks). */
  | "hex"
  /** `{ mask, names }` with virtio feature names. */
  | "virtio"
  /** `{ mask, names }` with protocol feature names of the message's dialect. */
  | "protocol"
  /** `{ value, names }` with virtio device status names. */
  | "status";

/** An 8-, 16- or 32-bit unsigned field. */
export interface IntField {
  readonly kind: "u8" | "u16" | "u32";
  /** Byte offset in the struct. */
  readonly at: number;
  /** JSON view: number (default) or `0x…` string. */
  readonly json?: "number" | "hex";
  /** Names of values; the JSON view adds `<field>Name`. */
  readonly names?: Readonly<Record<number, string>>;
  /** Values outside {@link names} are violations. */
  readonly strict?: boolean;
  /**
   * Values outside {@link names} are reserved for later (the spec says more "might be
   * added"): a warning, and the message is relayed.
   */
  readonly later?: boolean;
  /** Padding: non-zero is a warning and the JSON view omits it while zero. */
  readonly reserved?: boolean;
}

/** A 64-bit field, unsigned or signed. */
export interface BigField {
  readonly kind: "u64" | "i64";
  readonly at: number;
  readonly json?: BigJson;
  readonly reserved?: boolean;
}

/** A bit range (≤ 32 bits) of a little-endian word, read as a number. */
export interface BitsField {
  readonly kind: "bits";
  readonly at: number;
  readonly word: "u32" | "u64";
  readonly shift: number;
  readonly width: number;
  readonly json?: "number" | "hex";
}

/** A wide bit range of a u64 word, read as a bigint (reserved high bits). */
export interface BigBitsField {
  readonly kind: "bigbits";
  readonly at: number;
  readonly shift: number;
  readonly width: number;
  readonly reserved?: boolean;
}

/** One bit of a little-endian word, read as a boolean. */
export interface FlagField {
  readonly kind: "flag";
  readonly at: number;
  readonly word: "u32" | "u64";
  readonly bit: number;
}

/** A fixed-length byte string. */
export interface BytesField {
  readonly kind: "bytes";
  readonly at: number;
  readonly length: number;
  /** JSON view: plain hex (default), RFC 4122 UUID text, or a MAC address. */
  readonly json?: "hex" | "uuid" | "mac";
  readonly reserved?: boolean;
}

/** Any field of a table. */
export type Field = IntField | BigField | BitsField | BigBitsField | FlagField | BytesField;

/** The field kinds that can hold a value of type `V`. */
export type FieldFor<V> = [V] extends [bigint] ? BigField | BigBitsField
  : [V] extends [number] ? IntField | BitsField
  : [V] extends [boolean] ? FlagField
  : [V] extends [Uint8Array] ? BytesField
  : never;

/** A field table for the struct `T`: one entry per property, in wire order. */
export type FieldTable<T> = { readonly [K in keyof T]-?: FieldFor<T[K]> };

/** Size in bytes a field occupies (the whole word for bit fields). */
export function fieldSize(field: Field): number {
  switch (field.kind) {
    case "u8":
      return 1;
    case "u16":
      return 2;
    case "u32":
      return 4;
    case "u64":
    case "i64":
    case "bigbits":
      return 8;
    case "bits":
    case "flag":
      return field.word === "u32" ? 4 : 8;
    case "bytes":
      return field.length;
  }
}

/** The entries of a field table, in declaration (= wire) order. */
export function fieldEntries<T>(fields: FieldTable<T>): [string, Field][] {
  // A FieldTable is a record of Field by construction; the mapped type just
  // hides that from Object.entries.
  return Object.entries(fields as Readonly<Record<string, Field>>);
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function readWord(dv: DataView, at: number, word: "u32" | "u64"): bigint {
  return word === "u32" ? BigInt(dv.getUint32(at, true)) : dv.getBigUint64(at, true);
}

function writeWord(dv: DataView, at: number, word: "u32" | "u64", value: bigint): void {
  if (word === "u32") dv.setUint32(at, Number(value), true);
  else dv.setBigUint64(at, value, true);
}

type FieldValue = number | bigint | boolean | Uint8Array;

function readField(field: Field, dv: DataView, base: number): FieldValue {
  const at = base + field.at;
  switch (field.kind) {
    case "u8":
      return dv.getUint8(at);
    case "u16":
      return dv.getUint16(at, true);
    case "u32":
      return dv.getUint32(at, true);
    case "u64":
      return dv.getBigUint64(at, true);
    case "i64":
      return dv.getBigInt64(at, true);
    case "bits":
      return Number(
        (readWord(dv, at, field.word) >> BigInt(field.shift)) & ((1n << BigInt(field.width)) - 1n),
      );
    case "bigbits":
      return (readWord(dv, at, "u64") >> BigInt(field.shift)) &
        ((1n << BigInt(field.width)) - 1n);
    case "flag":
      return ((readWord(dv, at, field.word) >> BigInt(field.bit)) & 1n) === 1n;
    case "bytes":
      // Copy, so a decoded value never aliases the caller's receive buffer.
      return new Uint8Array(dv.buffer.slice(dv.byteOffset + at, dv.byteOffset + at + field.length));
  }
}

function fitError(name: string, value: FieldValue, what: string): RangeError {
  return new RangeError(`Cannot encode field ${name}: "${String(value)}" does not fit in ${what}`);
}

function checkInt(name: string, value: FieldValue, bits: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw fitError(name, value, `${bits} bits`);
  }
  return value;
}

function checkBig(name: string, value: FieldValue, bits: number, signed = false): bigint {
  if (typeof value !== "bigint") throw fitError(name, value, `a ${bits}-bit bigint`);
  const lo = signed ? -(1n << BigInt(bits - 1)) : 0n;
  const hi = signed ? 1n << BigInt(bits - 1) : 1n << BigInt(bits);
  if (value < lo || value >= hi) throw fitError(name, value, `${bits} bits`);
  return value;
}

function writeField(name: string, field: Field, value: FieldValue, dv: DataView, base: number) {
  const at = base + field.at;
  switch (field.kind) {
    case "u8":
      dv.setUint8(at, checkInt(name, value, 8));
      return;
    case "u16":
      dv.setUint16(at, checkInt(name, value, 16), true);
      return;
    case "u32":
      dv.setUint32(at, checkInt(name, value, 32), true);
      return;
    case "u64":
      dv.setBigUint64(at, checkBig(name, value, 64), true);
      return;
    case "i64":
      dv.setBigInt64(at, checkBig(name, value, 64, true), true);
      return;
    case "bits": {
      // Bit fields share a word: OR into what earlier fields already wrote.
      const part = BigInt(checkInt(name, value, field.width)) << BigInt(field.shift);
      writeWord(dv, at, field.word, readWord(dv, at, field.word) | part);
      return;
    }
    case "bigbits": {
      const part = checkBig(name, value, field.width) << BigInt(field.shift);
      writeWord(dv, at, "u64", readWord(dv, at, "u64") | part);
      return;
    }
    case "flag": {
      if (typeof value !== "boolean") throw fitError(name, value, "a boolean");
      const part = value ? 1n << BigInt(field.bit) : 0n;
      writeWord(dv, at, field.word, readWord(dv, at, field.word) | part);
      return;
    }
    case "bytes":
      if (!(value instanceof Uint8Array) || value.length !== field.length) {
        throw fitError(name, value, `${field.length} bytes`);
      }
      new Uint8Array(dv.buffer, dv.byteOffset + at, field.length).set(value);
      return;
  }
}

/** Decodes the struct `T` at `base` of `bytes` (which must be long enough). */
export function decodeStruct<T>(fields: FieldTable<T>, bytes: Uint8Array, base = 0): T {
  const dv = dataView(bytes);
  const out: Record<string, FieldValue> = {};
  for (const [name, field] of fieldEntries(fields)) out[name] = readField(field, dv, base);
  // The table has exactly T's keys, each read with a kind matching its type.
  return out as T;
}

/** Encodes the struct `T` into `into` at `base`; the bytes there must be zero. */
export function encodeStruct<T>(fields: FieldTable<T>, value: T, into: Uint8Array, base = 0): void {
  const dv = dataView(into);
  const record = value as Readonly<Record<string, FieldValue>>;
  for (const [name, field] of fieldEntries(fields)) {
    writeField(name, field, record[name], dv, base);
  }
}

// ---------------------------------------------------------------------------
// JSON and text helpers

/** `0x…` text of an integer. */
export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/** A safe-integer bigint as a number, otherwise its decimal string. */
export function jsonNumber(value: bigint): number | string {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
    ? Number(value)
    : value.toString();
}

/** Hex text of a byte string, without a prefix. */
export function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** UUID text of 16 bytes (first three components are big-endian on the wire, docs/protocol.md §1.4.1). */
export function uuidText(bytes: Uint8Array): string {
  const h = hexBytes(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Colon-separated MAC address text. */
export function macText(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** Human size: `512MiB` when an exact binary multiple, else hex. */
export function sizeText(value: bigint): string {
  for (const [unit, shift] of [["TiB", 40n], ["GiB", 30n], ["MiB", 20n], ["KiB", 10n]] as const) {
    const one = 1n << shift;
    if (value >= one && value % one === 0n) return `${value / one}${unit}`;
  }
  return hex(value);
}

/** Context the JSON view and summaries need: names of protocol features depend on the dialect. */
export interface JsonContext {
  readonly dialect: Dialect;
  /** Fds attached to the message, so summaries can say which regions carry one. */
  readonly fdCount?: number;
}

function isZero(value: FieldValue): boolean {
  if (value instanceof Uint8Array) return value.every((b) => b === 0);
  return value === 0 || value === 0n || value === false;
}

function bigJson(value: bigint, how: BigJson | undefined, ctx: JsonContext): unknown {
  switch (how) {
    case "hex":
      return hex(value);
    case "virtio":
      return { mask: hex(value), names: describeVirtioFeatures(value) };
    case "protocol":
      return { mask: hex(value), names: describeProtocolFeatures(value, ctx.dialect) };
    case "status":
      return { value: jsonNumber(value), names: describeStatus(value) };
    case "number":
    case undefined:
      return jsonNumber(value);
  }
}

/** JSON view of a struct: hex for addresses and masks, names for enums and features. */
export function structJson<T>(
  fields: FieldTable<T>,
  value: T,
  ctx: JsonContext,
): Record<string, unknown> {
  const record = value as Readonly<Record<string, FieldValue>>;
  const out: Record<string, unknown> = {};
  for (const [name, field] of fieldEntries(fields)) {
    const v = record[name];
    if ("reserved" in field && field.reserved && isZero(v)) continue;
    if (typeof v === "bigint") {
      out[name] = bigJson(
        v,
        field.kind === "u64" || field.kind === "i64" ? field.json : "hex",
        ctx,
      );
    } else if (typeof v === "number") {
      const json = "json" in field ? field.json : undefined;
      out[name] = json === "hex" ? hex(v) : v;
      if (field.kind !== "bits" && field.kind !== "flag" && "names" in field && field.names) {
        out[`${name}Name`] = field.names[v] ?? "unknown";
      }
    } else if (v instanceof Uint8Array) {
      const json = field.kind === "bytes" ? field.json : undefined;
      out[name] = json === "uuid" ? uuidText(v) : json === "mac" ? macText(v) : hexBytes(v);
    } else {
      out[name] = v;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Layouts

/** Allowed payload lengths: exact, or an inclusive range checked further by the layout. */
export type SizeRule =
  | { readonly exact: number }
  | { readonly min: number; readonly max: number; readonly shape: string };

/** Whether `length` satisfies a size rule's bounds. */
export function sizeAllowed(rule: SizeRule, length: number): boolean {
  return "exact" in rule ? length === rule.exact : length >= rule.min && length <= rule.max;
}

/** Text of what a size rule expects, for violation sentences. */
export function sizeExpectation(rule: SizeRule): string {
  return "exact" in rule ? `${rule.exact}` : `${rule.shape} (${rule.min} to ${rule.max})`;
}

/** Something a layout found in a payload of admissible length. */
export interface LayoutIssue {
  /** Violations reject the message; warnings ride along with it. */
  readonly severity: "violation" | "warning";
  readonly kind: "size" | "value";
  readonly field?: string;
  /** Text after the colon of the violation sentence, or the warning itself. */
  readonly detail: string;
}

/** A decoded value and what was found while decoding it. */
export interface Decoded<T> {
  readonly value: T;
  readonly issues: readonly LayoutIssue[];
}

/** A payload layout: size rule, codec, JSON view and summary for the value type `T`. */
export interface Layout<T> {
  readonly name: LayoutName;
  /** What the payload is, one line, spec wording. */
  readonly doc: string;
  readonly size: SizeRule;
  /** Decodes a payload whose length satisfies {@link size}; never throws. */
  decode(bytes: Uint8Array): Decoded<T>;
  /** Encodes a value; throws RangeError for values that do not fit their fields. */
  encode(value: T): Uint8Array;
  toJson(value: T, ctx: JsonContext): Record<string, unknown>;
  summary(value: T, ctx: JsonContext): string;
}

function structIssues<T>(fields: FieldTable<T>, value: T): LayoutIssue[] {
  const record = value as Readonly<Record<string, FieldValue>>;
  const issues: LayoutIssue[] = [];
  for (const [name, field] of fieldEntries(fields)) {
    const v = record[name];
    if ("reserved" in field && field.reserved && !isZero(v)) {
      const shown = v instanceof Uint8Array ? hexBytes(v) : hex(v as number | bigint);
      issues.push({
        severity: "warning",
        kind: "value",
        field: name,
        detail: `reserved field ${name} is "${shown}", expected 0`,
      });
    }
    if (
      field.kind !== "bits" && "names" in field && (field.strict || field.later) &&
      typeof v === "number"
    ) {
      const names = field.names ?? {};
      if (!(v in names)) {
        const allowed = Object.entries(names).map(([k, n]) => `${k} (${n})`).join(" or ");
        issues.push(
          field.later
            ? {
              severity: "warning",
              kind: "value",
              field: name,
              detail: `${name} is "${v}", reserved for later (defined: ${allowed}): relayed`,
            }
            : {
              severity: "violation",
              kind: "value",
              field: name,
              detail: `${name} is "${v}", expected ${allowed}`,
            },
        );
      }
    }
  }
  return issues;
}

interface StructOptions<T> {
  readonly summary: (value: T, ctx: JsonContext) => string;
  readonly check?: (value: T) => LayoutIssue[];
}

/** A fixed-size layout driven entirely by a field table. */
function structLayout<T>(
  name: LayoutName,
  doc: string,
  size: number,
  fields: FieldTable<T>,
  options: StructOptions<T>,
): Layout<T> {
  return {
    name,
    doc,
    size: { exact: size },
    decode(bytes) {
      const value = decodeStruct(fields, bytes);
      return { value, issues: [...structIssues(fields, value), ...(options.check?.(value) ?? [])] };
    },
    encode(value) {
      const out = new Uint8Array(size);
      encodeStruct(fields, value, out);
      return out;
    },
    toJson: (value, ctx) => structJson(fields, value, ctx),
    summary: options.summary,
  };
}

// --- the typed wire structs -------------------------------------------------

/** No payload (size 0). */
export type Empty = Record<never, never>;

/** Bytes relayed as-is: unknown requests and lenient replies. */
export interface Raw {
  /** The payload bytes, uninterpreted. */
  readonly bytes: Uint8Array;
}

/** A plain u64 (counters, MTU, session ids, and the generic 0 = success result). */
export interface U64 {
  /** The u64. */
  readonly value: bigint;
}

/** A virtio feature mask (GET/SET_FEATURES). */
export interface VirtioFeatures {
  /** The feature mask; bit names in {@link VIRTIO_FEATURES}. */
  readonly features: bigint;
}

/** A protocol feature mask (GET/SET_PROTOCOL_FEATURES), numbered in the message's dialect. */
export interface ProtocolFeatures {
  /** The feature mask; bit names in {@link PROTOCOL_FEATURES}. */
  readonly features: bigint;
}

/** Virtio device status byte in a u64 (SET/GET_STATUS). */
export interface Status {
  /** The status byte (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK…) widened to a u64. */
  readonly status: bigint;
}

/** SEND_RARP: the guest MAC in the first six bytes of a u64. */
export interface Mac {
  /** The six MAC bytes. */
  readonly mac: Uint8Array;
  /** The u64's two remaining bytes. */
  readonly padding: number;
}

/** `struct vhost_vring_state` (8): ring index and a number. */
export interface VringState {
  /** Ring index. */
  readonly index: number;
  /** The request's number: ring size, base index, enable flag or endianness. */
  readonly num: number;
}

/** SET/GET_VRING_BASE `num` for packed rings (docs/protocol.md §1.4.3), with the ring index. */
export interface VringBasePacked {
  /** Ring index. */
  readonly index: number;
  /** Next available index (bits 0–14). */
  readonly availIndex: number;
  /** Driver (avail) wrap counter (bit 15). */
  readonly availWrap: boolean;
  /** Next used index (bits 16–30). */
  readonly usedIndex: number;
  /** Device (used) wrap counter (bit 31). */
  readonly usedWrap: boolean;
}

/** Vring file index u64 of SET_VRING_KICK/CALL/ERR: index, NOFD bit, reserved bits 9–63. */
export interface VringFile {
  /** Ring index (bits 0–7). */
  readonly index: number;
  /** Bit 8: no fd attached, poll instead. */
  readonly noFd: boolean;
  /** Bits 9–63 (should be 0), kept so re-encoding is exact. */
  readonly reserved: bigint;
}

/** `struct vhost_vring_addr` (40). */
export interface VringAddr {
  /** Ring index. */
  readonly index: number;
  /** Bit 0 `VHOST_VRING_F_LOG`. */
  readonly flags: number;
  /** Descriptor table address, in the front-end's virtual address space (or guest-physical with F_GPA_ADDRESSES). */
  readonly descUserAddr: bigint;
  /** Used ring address. */
  readonly usedUserAddr: bigint;
  /** Available ring address. */
  readonly availUserAddr: bigint;
  /** Guest address of the used ring for dirty logging (with VHOST_VRING_F_LOG). */
  readonly logGuestAddr: bigint;
}

/** One memory region description (32 bytes). */
export interface MemoryRegion {
  /** Guest physical address of the region's start. */
  readonly guestPhysAddr: bigint;
  /** Region size in bytes. */
  readonly memorySize: bigint;
  /** The front-end's virtual address of the region's start. */
  readonly userspaceAddr: bigint;
  /** Offset of the region in the fd that maps it. */
  readonly mmapOffset: bigint;
}

/** A memory region with the F_XEN_MMAP tail (40 bytes). */
export interface XenMemoryRegion extends MemoryRegion {
  /** Bit 0 foreign, bit 1 grant, bit 8 map on demand. */
  readonly xenMmapFlags: number;
  /** Xen domain id owning the memory. */
  readonly domid: number;
}

/** `VhostUserMemory` (8 + 32·n, n ≤ 8); `nregions` on the wire is `regions.length`. */
export interface MemoryTable {
  /** Reserved u32 after `nregions`. */
  readonly padding: number;
  /** The regions, one fd each. */
  readonly regions: readonly MemoryRegion[];
}

/** `VhostUserMemory` with 40-byte Xen regions (8 + 40·n). */
export interface XenMemoryTable {
  /** Reserved u32 after `nregions`. */
  readonly padding: number;
  /** The regions, one fd each. */
  readonly regions: readonly XenMemoryRegion[];
}

/** `VhostUserMemRegMsg` (40): u64 padding then one region (ADD/REM_MEM_REG). */
export interface MemRegion extends MemoryRegion {
  /** Reserved u64 before the region. */
  readonly padding: bigint;
}

/** `VhostUserMemRegMsg` with a Xen region (48). */
export interface XenMemRegion extends XenMemoryRegion {
  /** Reserved u64 before the region. */
  readonly padding: bigint;
}

/** `VhostUserLog` (16). */
export interface Log {
  /** Size of the dirty log area to map. */
  readonly mmapSize: bigint;
  /** Offset of the log area in the fd. */
  readonly mmapOffset: bigint;
}

/** `struct vhost_iotlb_msg` (32). */
export interface Iotlb {
  /** I/O virtual address of the mapping. */
  readonly iova: bigint;
  /** Size of the mapping in bytes. */
  readonly size: bigint;
  /** The front-end's virtual address it maps to. */
  readonly uaddr: bigint;
  /** 0 none, 1 RO, 2 WO, 3 RW. */
  readonly perm: number;
  /** 1 miss, 2 update, 3 invalidate, 4 access-fail. */
  readonly type: number;
  /** Six reserved bytes after `type`. */
  readonly padding: Uint8Array;
}

/** `VhostUserConfig` (12 + size, size ≤ 256); `size` on the wire is `data.length`. */
export interface Config {
  /** Offset in the device configuration space. */
  readonly offset: number;
  /** 0 front-end write of writable fields, 1 live-migration write. */
  readonly flags: number;
  /** The configuration bytes read or written. */
  readonly data: Uint8Array;
}

/** `VhostUserVringArea` (24) of BACKEND_VRING_HOST_NOTIFIER_MSG. */
export interface VringArea {
  /** Ring index (bits 0–7). */
  readonly index: number;
  /** Bit 8: no fd, the host notifier is removed. */
  readonly noFd: boolean;
  /** Bits 9–63 (should be 0), kept so re-encoding is exact. */
  readonly reserved: bigint;
  /** Size of the notifier area. */
  readonly size: bigint;
  /** Offset of the area in the fd. */
  readonly offset: bigint;
}

/** `VhostUserInflight` (24, 4 bytes tail padding). */
export interface Inflight {
  /** Size of the inflight buffer to map. */
  readonly mmapSize: bigint;
  /** Offset of the buffer in the fd. */
  readonly mmapOffset: bigint;
  /** Number of queues the buffer covers. */
  readonly numQueues: number;
  /** Size of each queue. */
  readonly queueSize: number;
  /** Reserved tail padding. */
  readonly padding: number;
}

/** `VhostUserShared` (16): a UUID. */
export interface SharedObject {
  /** The 16-byte UUID of the shared object. */
  readonly uuid: Uint8Array;
}

/** `VhostUserTransferDeviceState` (8). */
export interface DeviceStateParams {
  /** 0 SAVE (back-end → front-end), 1 LOAD (front-end → back-end). */
  readonly direction: number;
  /** 0 STOPPED; nothing else defined. */
  readonly phase: number;
}

/** SET_DEVICE_STATE_FD reply u64: error code, NOFD bit, reserved bits. */
export interface DeviceStateResult {
  /** Bits 0–7; 0 = success. */
  readonly error: number;
  /** Bit 8: set ⇒ no fd in the reply; clear ⇒ one fd the front-end must use. */
  readonly noFd: boolean;
  /** Bits 9–63 (should be 0), kept so re-encoding is exact. */
  readonly reserved: bigint;
}

/** `VhostUserCryptoSession` (1072, QEMU ≥ 8.0): the session union is kept raw. */
export interface CryptoSession {
  /** The crypto operation code (cipher, hash, MAC, AEAD, asym). */
  readonly opCode: bigint;
  /** The 1056-byte sym/asym union, including host pointers; opaque to a relay. */
  readonly session: Uint8Array;
  /** The back-end's id of the session, set in its reply. */
  readonly sessionId: bigint;
}

/**
 * `VhostUserShMemConfig` (2056): `nregions` then 256 u64 sizes. The array index is the region
 * id and `nregions` counts the non-zero sizes (docs/protocol.md §1.10): regions may sit at any ids.
 */
export interface ShmemConfig {
  /** Number of shared-memory regions the device has. */
  readonly nregions: number;
  /** Reserved u32 after `nregions`. */
  readonly padding: number;
  /** All 256 entries; entry `i` is the size of region id `i` (0 = no region). */
  readonly memorySizes: readonly bigint[];
}

/** The regions of a shared-memory config: id and size of every non-zero entry. */
export function shmemRegions(value: ShmemConfig): { id: number; size: bigint }[] {
  const out: { id: number; size: bigint }[] = [];
  value.memorySizes.forEach((size, id) => {
    if (size !== 0n) out.push({ id, size });
  });
  return out;
}

/** `VhostUserMMap` (40, rust-vmm 0.16). */
export interface ShmemMap {
  /** Id of the shared-memory region to map into. */
  readonly shmid: number;
  /** Seven reserved bytes after `shmid`. */
  readonly padding: Uint8Array;
  /** Offset of the mapping in the fd. */
  readonly fdOffset: bigint;
  /** Offset of the mapping in the shared-memory region. */
  readonly shmOffset: bigint;
  /** Size of the mapping in bytes. */
  readonly len: bigint;
  /** Bit 0 writable. */
  readonly flags: bigint;
}

/** Value type of every layout, by layout name. */
export interface LayoutValues {
  /** No payload. */
  empty: Empty;
  /** Bytes relayed as they are (unknown codes, lenient replies). */
  raw: Raw;
  /** A plain u64 (queue count, MTU, crypto session id…). */
  u64: U64;
  /** A u64 result: 0 success, anything else failure (REPLY_ACK acks and similar replies). */
  result: U64;
  /** QEMU's u64 acknowledgement of the back-end's postcopy region reply. */
  postcopy_ack: U64;
  /** GET/SET_FEATURES. */
  virtio_features: VirtioFeatures;
  /** GET/SET_PROTOCOL_FEATURES. */
  protocol_features: ProtocolFeatures;
  /** GET/SET_STATUS. */
  status: Status;
  /** SEND_RARP. */
  mac: Mac;
  /** Ring index and number: SET_VRING_NUM, SET/GET_VRING_BASE on split rings, SET_VRING_ENABLE… */
  vring_state: VringState;
  /** SET/GET_VRING_BASE on packed rings. */
  vring_base_packed: VringBasePacked;
  /** SET_VRING_KICK/CALL/ERR. */
  vring_file: VringFile;
  /** SET_VRING_ADDR. */
  vring_addr: VringAddr;
  /** SET_MEM_TABLE. */
  memory_table: MemoryTable;
  /** SET_MEM_TABLE with F_XEN_MMAP. */
  memory_table_xen: XenMemoryTable;
  /** ADD/REM_MEM_REG. */
  mem_region: MemRegion;
  /** ADD/REM_MEM_REG with F_XEN_MMAP. */
  mem_region_xen: XenMemRegion;
  /** SET_LOG_BASE. */
  log: Log;
  /** IOTLB_MSG, both channels. */
  iotlb: Iotlb;
  /** GET/SET_CONFIG. */
  config: Config;
  /** BACKEND_VRING_HOST_NOTIFIER_MSG. */
  vring_area: VringArea;
  /** GET/SET_INFLIGHT_FD. */
  inflight: Inflight;
  /** The shared-object requests of either channel: a UUID. */
  shared_object: SharedObject;
  /** SET_DEVICE_STATE_FD request. */
  device_state_params: DeviceStateParams;
  /** SET_DEVICE_STATE_FD reply. */
  device_state_result: DeviceStateResult;
  /** CREATE_CRYPTO_SESSION. */
  crypto_session: CryptoSession;
  /** GET_SHMEM_CONFIG reply. */
  shmem_config: ShmemConfig;
  /** BACKEND_SHMEM_MAP/UNMAP. */
  shmem_map: ShmemMap;
}

/** Name of a payload layout. */
export type LayoutName = keyof LayoutValues;

/** A decoded payload: the layout name plus that layout's typed value. */
export type Payload = { [L in LayoutName]: { readonly layout: L } & LayoutValues[L] }[LayoutName];

/** The payload type of one layout. */
export type PayloadOf<L extends LayoutName> = { readonly layout: L } & LayoutValues[L];

// --- field tables ---

/** IOTLB permission names (`perm`). */
export const IOTLB_PERM_NAMES: Readonly<Record<number, string>> = {
  0: "NONE",
  1: "RO",
  2: "WO",
  3: "RW",
};
/** IOTLB message type names (`type`). */
export const IOTLB_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: "MISS",
  2: "UPDATE",
  3: "INVALIDATE",
  4: "ACCESS_FAIL",
};
/** Device-state transfer directions. */
export const DIRECTION_NAMES: Readonly<Record<number, string>> = { 0: "SAVE", 1: "LOAD" };
/** Device-state transfer phases. */
export const PHASE_NAMES: Readonly<Record<number, string>> = { 0: "STOPPED" };

const U64_FIELDS: FieldTable<U64> = { value: { kind: "u64", at: 0, json: "number" } };

const VRING_STATE_FIELDS: FieldTable<VringState> = {
  index: { kind: "u32", at: 0 },
  num: { kind: "u32", at: 4 },
};

const VRING_BASE_PACKED_FIELDS: FieldTable<VringBasePacked> = {
  index: { kind: "u32", at: 0 },
  availIndex: { kind: "bits", at: 4, word: "u32", shift: 0, width: 15 },
  availWrap: { kind: "flag", at: 4, word: "u32", bit: 15 },
  usedIndex: { kind: "bits", at: 4, word: "u32", shift: 16, width: 15 },
  usedWrap: { kind: "flag", at: 4, word: "u32", bit: 31 },
};

const VRING_FILE_FIELDS: FieldTable<VringFile> = {
  index: { kind: "bits", at: 0, word: "u64", shift: 0, width: 8 },
  noFd: { kind: "flag", at: 0, word: "u64", bit: 8 },
  reserved: { kind: "bigbits", at: 0, shift: 9, width: 55, reserved: true },
};

const VRING_ADDR_FIELDS: FieldTable<VringAddr> = {
  index: { kind: "u32", at: 0 },
  flags: { kind: "u32", at: 4, json: "hex" },
  descUserAddr: { kind: "u64", at: 8, json: "hex" },
  usedUserAddr: { kind: "u64", at: 16, json: "hex" },
  availUserAddr: { kind: "u64", at: 24, json: "hex" },
  logGuestAddr: { kind: "u64", at: 32, json: "hex" },
};

const REGION_FIELDS: FieldTable<MemoryRegion> = {
  guestPhysAddr: { kind: "u64", at: 0, json: "hex" },
  memorySize: { kind: "u64", at: 8, json: "hex" },
  userspaceAddr: { kind: "u64", at: 16, json: "hex" },
  mmapOffset: { kind: "u64", at: 24, json: "hex" },
};

const XEN_REGION_FIELDS: FieldTable<XenMemoryRegion> = {
  ...REGION_FIELDS,
  xenMmapFlags: { kind: "u32", at: 32, json: "hex" },
  domid: { kind: "u32", at: 36 },
};

/** Shifts a region table to follow the 8-byte padding of `VhostUserMemRegMsg`. */
function after8<T>(fields: FieldTable<T>): FieldTable<T> {
  const out: Record<string, Field> = {};
  for (const [name, field] of fieldEntries(fields)) out[name] = { ...field, at: field.at + 8 };
  return out as FieldTable<T>;
}

const MEM_REGION_FIELDS: FieldTable<MemRegion> = {
  padding: { kind: "u64", at: 0, reserved: true, json: "hex" },
  ...after8(REGION_FIELDS),
};

const XEN_MEM_REGION_FIELDS: FieldTable<XenMemRegion> = {
  padding: { kind: "u64", at: 0, reserved: true, json: "hex" },
  ...after8(XEN_REGION_FIELDS),
};

const LOG_FIELDS: FieldTable<Log> = {
  mmapSize: { kind: "u64", at: 0, json: "hex" },
  mmapOffset: { kind: "u64", at: 8, json: "hex" },
};

const IOTLB_FIELDS: FieldTable<Iotlb> = {
  iova: { kind: "u64", at: 0, json: "hex" },
  size: { kind: "u64", at: 8, json: "hex" },
  uaddr: { kind: "u64", at: 16, json: "hex" },
  perm: { kind: "u8", at: 24, names: IOTLB_PERM_NAMES, strict: true },
  type: {
    kind: "u8",
    at: 25,
    names: IOTLB_TYPE_NAMES,
    strict: true,
  },
  padding: { kind: "bytes", at: 26, length: 6, reserved: true },
};

const VRING_AREA_FIELDS: FieldTable<VringArea> = {
  index: { kind: "bits", at: 0, word: "u64", shift: 0, width: 8 },
  noFd: { kind: "flag", at: 0, word: "u64", bit: 8 },
  reserved: { kind: "bigbits", at: 0, shift: 9, width: 55, reserved: true },
  size: { kind: "u64", at: 8, json: "hex" },
  offset: { kind: "u64", at: 16, json: "hex" },
};

const INFLIGHT_FIELDS: FieldTable<Inflight> = {
  mmapSize: { kind: "u64", at: 0, json: "hex" },
  mmapOffset: { kind: "u64", at: 8, json: "hex" },
  numQueues: { kind: "u16", at: 16 },
  queueSize: { kind: "u16", at: 18 },
  padding: { kind: "u32", at: 20, reserved: true, json: "hex" },
};

const DEVICE_STATE_PARAMS_FIELDS: FieldTable<DeviceStateParams> = {
  direction: { kind: "u32", at: 0, names: DIRECTION_NAMES, strict: true },
  // Only 0 (STOPPED) is defined "currently"; "additional phases might be added" (docs/protocol.md §1.10).
  phase: { kind: "u32", at: 4, names: PHASE_NAMES, later: true },
};

const DEVICE_STATE_RESULT_FIELDS: FieldTable<DeviceStateResult> = {
  error: { kind: "bits", at: 0, word: "u64", shift: 0, width: 8 },
  noFd: { kind: "flag", at: 0, word: "u64", bit: 8 },
  reserved: { kind: "bigbits", at: 0, shift: 9, width: 55, reserved: true },
};

const CRYPTO_SESSION_FIELDS: FieldTable<CryptoSession> = {
  opCode: { kind: "u64", at: 0, json: "hex" },
  session: { kind: "bytes", at: 8, length: 1056 },
  sessionId: { kind: "i64", at: 1064, json: "number" },
};

const SHMEM_MAP_FIELDS: FieldTable<ShmemMap> = {
  shmid: { kind: "u8", at: 0 },
  padding: { kind: "bytes", at: 1, length: 7, reserved: true },
  fdOffset: { kind: "u64", at: 8, json: "hex" },
  shmOffset: { kind: "u64", at: 16, json: "hex" },
  len: { kind: "u64", at: 24, json: "hex" },
  flags: { kind: "u64", at: 32, json: "hex" },
};

/**
 * Every struct field table by layout name, so tests can check offsets against
 * the spec and that fields tile the struct.
 */
export const FIELD_TABLES = {
  u64: U64_FIELDS,
  vring_state: VRING_STATE_FIELDS,
  vring_base_packed: VRING_BASE_PACKED_FIELDS,
  vring_file: VRING_FILE_FIELDS,
  vring_addr: VRING_ADDR_FIELDS,
  memory_region: REGION_FIELDS,
  memory_region_xen: XEN_REGION_FIELDS,
  mem_region: MEM_REGION_FIELDS,
  mem_region_xen: XEN_MEM_REGION_FIELDS,
  log: LOG_FIELDS,
  iotlb: IOTLB_FIELDS,
  vring_area: VRING_AREA_FIELDS,
  inflight: INFLIGHT_FIELDS,
  device_state_params: DEVICE_STATE_PARAMS_FIELDS,
  device_state_result: DEVICE_STATE_RESULT_FIELDS,
  crypto_session: CRYPTO_SESSION_FIELDS,
  shmem_map: SHMEM_MAP_FIELDS,
} as const;

// --- layouts built from the tables -------------------------------------------

/** A layout whose whole payload is one u64 with its own field name and JSON view. */
function u64Layout<T>(
  name: LayoutName,
  doc: string,
  fields: FieldTable<T>,
  summary: (value: T, ctx: JsonContext) => string,
): Layout<T> {
  return structLayout(name, doc, 8, fields, { summary });
}

/** Highest region count of a memory table (`VHOST_MEMORY_BASELINE_NREGIONS`). */
export const MAX_MEMORY_REGIONS = 8;

/** Largest config space a config payload may carry (`VHOST_USER_MAX_CONFIG_SIZE`). */
export const MAX_CONFIG_SIZE = 256;

/** Header bytes before a config payload's data (`VHOST_USER_CONFIG_HDR_SIZE`). */
export const CONFIG_HEADER_SIZE = 12;

/** Entries in `VhostUserShMemConfig.memory_sizes`. */
export const SHMEM_CONFIG_ENTRIES = 256;

function regionText(r: MemoryRegion, hasFd: boolean | undefined): string {
  const fd = hasFd === undefined ? "" : hasFd ? " fd" : " nofd";
  return `gpa=${hex(r.guestPhysAddr)} size=${sizeText(r.memorySize)} uaddr=${
    hex(r.userspaceAddr)
  } offset=${hex(r.mmapOffset)}${fd}`;
}

/** Layout of a memory table with `regionSize`-byte regions described by `fields`. */
function memoryTableLayout<R extends MemoryRegion>(
  name: LayoutName,
  doc: string,
  regionSize: number,
  fields: FieldTable<R>,
): Layout<{ readonly padding: number; readonly regions: readonly R[] }> {
  return {
    name,
    doc,
    size: {
      min: 8 + regionSize,
      max: 8 + MAX_MEMORY_REGIONS * regionSize,
      shape: `8 + ${regionSize}·n bytes for n regions`,
    },
    decode(bytes) {
      const dv = dataView(bytes);
      const nregions = dv.getUint32(0, true);
      const padding = dv.getUint32(4, true);
      const present = Math.floor((bytes.length - 8) / regionSize);
      const regions: R[] = [];
      for (let i = 0; i < present; i++) {
        regions.push(decodeStruct(fields, bytes, 8 + i * regionSize));
      }
      const issues: LayoutIssue[] = [];
      if ((bytes.length - 8) % regionSize !== 0) {
        issues.push({
          severity: "violation",
          kind: "size",
          field: "size",
          detail: `payload is ${bytes.length} bytes, expected 8 + ${regionSize}·n`,
        });
      } else if (nregions > MAX_MEMORY_REGIONS) {
        issues.push({
          severity: "violation",
          kind: "value",
          field: "nregions",
          detail: `nregions is "${nregions}", expected at most ${MAX_MEMORY_REGIONS}`,
        });
      } else if (nregions !== present) {
        issues.push({
          severity: "violation",
          kind: "value",
          field: "nregions",
          detail: `nregions is "${nregions}" but the payload holds ${present} regions`,
        });
      }
      if (padding !== 0) {
        // rust-vmm refuses a memory table with non-zero padding.
        issues.push(refuse("padding", `padding is "${hex(padding)}", expected 0`));
      }
      regions.forEach((region, i) => {
        issues.push(
          ...structIssues(fields, region).map((x) => ({ ...x, field: `regions.${x.field}` })),
          ...regionIssues(region, `regions[${i}].`),
        );
      });
      return { value: { padding, regions }, issues };
    },
    encode(value) {
      const out = new Uint8Array(8 + value.regions.length * regionSize);
      const dv = dataView(out);
      dv.setUint32(0, value.regions.length, true);
      dv.setUint32(4, checkInt("padding", value.padding, 32), true);
      value.regions.forEach((r, i) => encodeStruct(fields, r, out, 8 + i * regionSize));
      return out;
    },
    toJson: (value, ctx) => ({
      nregions: value.regions.length,
      ...(value.padding !== 0 ? { padding: hex(value.padding) } : {}),
      regions: value.regions.map((r) => structJson(fields, r, ctx)),
    }),
    summary: (value, ctx) =>
      `regions=${value.regions.length} ${
        value.regions.map((r, i) =>
          `[${regionText(r, ctx.fdCount === undefined ? undefined : i < ctx.fdCount)}]`
        ).join(" ")
      }`,
  };
}

const configLayout: Layout<Config> = {
  name: "config",
  doc: "VhostUserConfig: offset, size, flags, then size bytes of config space",
  size: {
    min: CONFIG_HEADER_SIZE,
    max: CONFIG_HEADER_SIZE + MAX_CONFIG_SIZE,
    shape: "12 + size bytes",
  },
  decode(bytes) {
    const dv = dataView(bytes);
    const offset = dv.getUint32(0, true);
    const size = dv.getUint32(4, true);
    const flags = dv.getUint32(8, true);
    const data = bytes.slice(CONFIG_HEADER_SIZE);
    const issues: LayoutIssue[] = [];
    if (size === 0) {
      issues.push(refuse("size", "config size is 0"));
    } else if (size > MAX_CONFIG_SIZE) {
      issues.push({
        severity: "violation",
        kind: "value",
        field: "size",
        detail: `config size is "${size}", expected at most ${MAX_CONFIG_SIZE}`,
      });
    } else if (size !== data.length) {
      issues.push({
        severity: "violation",
        kind: "value",
        field: "size",
        detail: `config size is "${size}" but ${data.length} data bytes follow`,
      });
    }
    if (flags > 1) {
      // QEMU defines 0 and 1; rust-vmm uses a bit mask. Relay either way.
      issues.push({
        severity: "warning",
        kind: "value",
        field: "flags",
        detail: `config flags are "${hex(flags)}", expected 0 or 1`,
      });
    }
    return { value: { offset, flags, data }, issues };
  },
  encode(value) {
    const out = new Uint8Array(CONFIG_HEADER_SIZE + value.data.length);
    const dv = dataView(out);
    dv.setUint32(0, checkInt("offset", value.offset, 32), true);
    dv.setUint32(4, value.data.length, true);
    dv.setUint32(8, checkInt("flags", value.flags, 32), true);
    out.set(value.data, CONFIG_HEADER_SIZE);
    return out;
  },
  toJson: (value) => ({
    offset: value.offset,
    size: value.data.length,
    flags: value.flags,
    flagsName: value.flags === 0 ? "WRITABLE" : value.flags === 1 ? "LIVE_MIGRATION" : "unknown",
    data: hexBytes(value.data),
  }),
  summary: (value) => `offset=${value.offset} size=${value.data.length} flags=${value.flags}`,
};

const shmemConfigLayout: Layout<ShmemConfig> = {
  name: "shmem_config",
  doc: "VhostUserShMemConfig: nregions, padding, 256 u64 region sizes",
  size: { exact: 8 + 8 * SHMEM_CONFIG_ENTRIES },
  decode(bytes) {
    const dv = dataView(bytes);
    const nregions = dv.getUint32(0, true);
    const padding = dv.getUint32(4, true);
    const memorySizes: bigint[] = [];
    for (let i = 0; i < SHMEM_CONFIG_ENTRIES; i++) {
      memorySizes.push(dv.getBigUint64(8 + 8 * i, true));
    }
    const issues: LayoutIssue[] = [];
    if (nregions > SHMEM_CONFIG_ENTRIES) {
      issues.push({
        severity: "violation",
        kind: "value",
        field: "nregions",
        detail: `nregions is "${nregions}", expected at most ${SHMEM_CONFIG_ENTRIES}`,
      });
    }
    if (padding !== 0) {
      issues.push({
        severity: "warning",
        kind: "value",
        field: "padding",
        detail: `reserved field padding is "${hex(padding)}", expected 0`,
      });
    }
    const value = { nregions, padding, memorySizes };
    const present = shmemRegions(value).length;
    if (nregions <= SHMEM_CONFIG_ENTRIES && nregions !== present) {
      issues.push({
        severity: "warning",
        kind: "value",
        field: "nregions",
        detail: `nregions is "${nregions}" but ${present} region sizes are non-zero`,
      });
    }
    return { value, issues };
  },
  encode(value) {
    if (value.memorySizes.length !== SHMEM_CONFIG_ENTRIES) {
      throw new RangeError(
        `Cannot encode field memorySizes: "${value.memorySizes.length}" entries, expected ${SHMEM_CONFIG_ENTRIES}`,
      );
    }
    const out = new Uint8Array(8 + 8 * SHMEM_CONFIG_ENTRIES);
    const dv = dataView(out);
    dv.setUint32(0, checkInt("nregions", value.nregions, 32), true);
    dv.setUint32(4, checkInt("padding", value.padding, 32), true);
    value.memorySizes.forEach((s, i) =>
      dv.setBigUint64(8 + 8 * i, checkBig("memorySizes", s, 64), true)
    );
    return out;
  },
  toJson: (value) => ({
    nregions: value.nregions,
    ...(value.padding !== 0 ? { padding: hex(value.padding) } : {}),
    // The array index is the region id: every non-zero entry is a region, wherever it sits.
    regions: shmemRegions(value).map((r) => ({ id: r.id, size: hex(r.size) })),
  }),
  summary: (value) =>
    `nregions=${value.nregions} ${
      shmemRegions(value).slice(0, 8).map((r) => `${r.id}:${sizeText(r.size)}`).join(" ")
    }`.trimEnd(),
};

const rawLayout: Layout<Raw> = {
  name: "raw",
  doc: "Bytes relayed without interpretation",
  size: { min: 0, max: Number.MAX_SAFE_INTEGER, shape: "any length" },
  decode: (bytes) => ({ value: { bytes: bytes.slice() }, issues: [] }),
  encode: (value) => value.bytes.slice(),
  toJson: (value) => ({ length: value.bytes.length, bytes: hexBytes(value.bytes) }),
  summary: (value) => `${value.bytes.length} bytes`,
};

const emptyLayout: Layout<Empty> = {
  name: "empty",
  doc: "No payload",
  size: { exact: 0 },
  decode: () => ({ value: {}, issues: [] }),
  encode: () => new Uint8Array(0),
  toJson: () => ({}),
  summary: () => "",
};

/** Every layout by name. */
/** A value the strictest real peer (rust-vmm's `is_valid`) refuses. */
function refuse(field: string, detail: string): LayoutIssue {
  return { severity: "violation", kind: "value", field, detail };
}

const U64_MAX = (1n << 64n) - 1n;

/** rust-vmm's region check: a size, and no address range that wraps around. */
function regionIssues(r: MemoryRegion, prefix = ""): LayoutIssue[] {
  if (r.memorySize === 0n) return [refuse(`${prefix}memorySize`, "memory_size is 0")];
  for (
    const [field, base] of [
      ["guestPhysAddr", r.guestPhysAddr],
      ["userspaceAddr", r.userspaceAddr],
      ["mmapOffset", r.mmapOffset],
    ] as const
  ) {
    if (base > U64_MAX - r.memorySize) {
      return [
        refuse(
          `${prefix}${field}`,
          `${field} ${hex(base)} + memory_size ${hex(r.memorySize)} overflows 64 bits`,
        ),
      ];
    }
  }
  return [];
}

/**
 * rust-vmm's ring-address check: descriptor 16-, used 4-, available 2-aligned. Flag bits other
 * than LOG are reserved for later: a warning (rust-vmm refuses them; the back-end decides).
 */
function vringAddrIssues(v: VringAddr): LayoutIssue[] {
  const issues: LayoutIssue[] = [];
  if ((v.flags & ~1) !== 0) {
    issues.push({
      severity: "warning",
      kind: "value",
      field: "flags",
      detail: `flags is "${hex(v.flags)}", only bit 0 (LOG) is defined: relayed`,
    });
  }
  for (
    const [field, addr, align] of [
      ["descUserAddr", v.descUserAddr, 16n],
      ["usedUserAddr", v.usedUserAddr, 4n],
      ["availUserAddr", v.availUserAddr, 2n],
    ] as const
  ) {
    if (addr % align !== 0n) {
      return [refuse(field, `${field} ${hex(addr)} is not ${align}-byte aligned`)];
    }
  }
  return issues;
}

export const LAYOUTS: { readonly [L in LayoutName]: Layout<LayoutValues[L]> } = {
  empty: emptyLayout,
  raw: rawLayout,
  u64: u64Layout("u64", "A u64 number", U64_FIELDS, (v) => `value=${v.value}`),
  result: u64Layout(
    "result",
    "A u64 result: 0 = success, non-zero = failure",
    U64_FIELDS,
    (v) => v.value === 0n ? "ok" : `failed (${v.value})`,
  ),
  postcopy_ack: u64Layout(
    "postcopy_ack",
    "Postcopy: the front-end's u64 acknowledgement of the back-end's region reply",
    U64_FIELDS,
    (v) => `postcopy ack=${v.value}`,
  ),
  virtio_features: u64Layout<VirtioFeatures>(
    "virtio_features",
    "A u64 virtio feature mask",
    { features: { kind: "u64", at: 0, json: "virtio" } },
    (v) => `${hex(v.features)} ${describeVirtioFeatures(v.features).join("|")}`.trimEnd(),
  ),
  protocol_features: u64Layout<ProtocolFeatures>(
    "protocol_features",
    "A u64 protocol feature mask",
    { features: { kind: "u64", at: 0, json: "protocol" } },
    (v, ctx) =>
      `${hex(v.features)} ${describeProtocolFeatures(v.features, ctx.dialect).join("|")}`.trimEnd(),
  ),
  status: u64Layout<Status>(
    "status",
    "A u64 holding the virtio device status byte",
    { status: { kind: "u64", at: 0, json: "status" } },
    (v) => `status=${hex(v.status)} ${describeStatus(v.status).join("|")}`.trimEnd(),
  ),
  mac: structLayout<Mac>("mac", "A u64 whose first 6 bytes are the guest MAC", 8, {
    mac: { kind: "bytes", at: 0, length: 6, json: "mac" },
    padding: { kind: "u16", at: 6, reserved: true, json: "hex" },
  }, { summary: (v) => `mac=${macText(v.mac)}` }),
  vring_state: structLayout(
    "vring_state",
    "struct vhost_vring_state: index, num",
    8,
    VRING_STATE_FIELDS,
    { summary: (v) => `index=${v.index} num=${v.num}` },
  ),
  vring_base_packed: structLayout(
    "vring_base_packed",
    "Packed-ring vring base: index, avail index+wrap, used index+wrap",
    8,
    VRING_BASE_PACKED_FIELDS,
    {
      summary: (v) =>
        `index=${v.index} avail=${v.availIndex} wrap=${
          Number(v.availWrap)
        } used=${v.usedIndex} wrap=${Number(v.usedWrap)}`,
    },
  ),
  vring_file: structLayout(
    "vring_file",
    "u64 vring index (bits 0-7) and NOFD bit 8",
    8,
    VRING_FILE_FIELDS,
    { summary: (v) => `index=${v.index} ${v.noFd ? "nofd" : "fd"}` },
  ),
  vring_addr: structLayout(
    "vring_addr",
    "struct vhost_vring_addr: index, flags, desc/used/avail user addresses, log address",
    40,
    VRING_ADDR_FIELDS,
    {
      summary: (v) =>
        `index=${v.index} flags=${hex(v.flags)}${v.flags & 1 ? " (LOG)" : ""} desc=${
          hex(v.descUserAddr)
        } used=${hex(v.usedUserAddr)} avail=${hex(v.availUserAddr)} log=${hex(v.logGuestAddr)}`,
      check: vringAddrIssues,
    },
  ),
  memory_table: memoryTableLayout(
    "memory_table",
    "VhostUserMemory: nregions, padding, 32-byte regions",
    32,
    REGION_FIELDS,
  ),
  memory_table_xen: memoryTableLayout(
    "memory_table_xen",
    "VhostUserMemory with F_XEN_MMAP: nregions, padding, 40-byte regions",
    40,
    XEN_REGION_FIELDS,
  ),
  mem_region: structLayout(
    "mem_region",
    "VhostUserMemRegMsg: u64 padding, one 32-byte region",
    40,
    MEM_REGION_FIELDS,
    {
      summary: (v, ctx) =>
        `[${regionText(v, ctx.fdCount === undefined ? undefined : ctx.fdCount > 0)}]`,
      check: (v) => regionIssues(v),
    },
  ),
  mem_region_xen: structLayout(
    "mem_region_xen",
    "VhostUserMemRegMsg with F_XEN_MMAP: u64 padding, one 40-byte region",
    48,
    XEN_MEM_REGION_FIELDS,
    {
      summary: (v) =>
        `[${regionText(v, undefined)} xen_flags=${hex(v.xenMmapFlags)} domid=${v.domid}]`,
      check: (v) => regionIssues(v),
    },
  ),
  log: structLayout("log", "VhostUserLog: mmap size, mmap offset", 16, LOG_FIELDS, {
    summary: (v) => `size=${sizeText(v.mmapSize)} offset=${hex(v.mmapOffset)}`,
    check: (v) =>
      v.mmapSize === 0n
        ? [refuse("mmapSize", "mmap_size is 0")]
        : v.mmapOffset > U64_MAX - v.mmapSize
        ? [refuse("mmapOffset", "mmap_offset + mmap_size overflows 64 bits")]
        : [],
  }),
  iotlb: structLayout(
    "iotlb",
    "struct vhost_iotlb_msg: iova, size, uaddr, perm, type",
    32,
    IOTLB_FIELDS,
    {
      summary: (v) =>
        `${IOTLB_TYPE_NAMES[v.type] ?? v.type} iova=${hex(v.iova)} size=${sizeText(v.size)} uaddr=${
          hex(v.uaddr)
        } perm=${IOTLB_PERM_NAMES[v.perm] ?? v.perm}`,
    },
  ),
  config: configLayout,
  vring_area: structLayout(
    "vring_area",
    "VhostUserVringArea: u64 index+NOFD, size, offset",
    24,
    VRING_AREA_FIELDS,
    {
      summary: (v) =>
        `index=${v.index} ${v.noFd ? "nofd" : "fd"} size=${sizeText(v.size)} offset=${
          hex(v.offset)
        }`,
    },
  ),
  inflight: structLayout(
    "inflight",
    "VhostUserInflight: mmap size, mmap offset, num_queues, queue_size",
    24,
    INFLIGHT_FIELDS,
    {
      summary: (v) =>
        `size=${sizeText(v.mmapSize)} offset=${
          hex(v.mmapOffset)
        } queues=${v.numQueues} queue_size=${v.queueSize}`,
      check: (v) =>
        v.numQueues === 0
          ? [refuse("numQueues", "num_queues is 0")]
          : v.queueSize === 0
          ? [refuse("queueSize", "queue_size is 0")]
          : [],
    },
  ),
  shared_object: structLayout<SharedObject>(
    "shared_object",
    "VhostUserShared: a 16-byte UUID",
    16,
    { uuid: { kind: "bytes", at: 0, length: 16, json: "uuid" } },
    {
      summary: (v) => `uuid=${uuidText(v.uuid)}`,
      check: (v) =>
        v.uuid.every((b) => b === 0) || v.uuid.every((b) => b === 0xff)
          ? [refuse("uuid", `uuid ${uuidText(v.uuid)} is the nil or max UUID`)]
          : [],
    },
  ),
  device_state_params: structLayout(
    "device_state_params",
    "VhostUserTransferDeviceState: direction (0 SAVE, 1 LOAD), phase (0 STOPPED)",
    8,
    DEVICE_STATE_PARAMS_FIELDS,
    {
      summary: (v) =>
        `direction=${DIRECTION_NAMES[v.direction] ?? v.direction} phase=${
          PHASE_NAMES[v.phase] ?? v.phase
        }`,
    },
  ),
  device_state_result: structLayout(
    "device_state_result",
    "u64: error code (bits 0-7), NOFD bit 8 (set: no fd returned)",
    8,
    DEVICE_STATE_RESULT_FIELDS,
    {
      summary: (v) => `${v.error === 0 ? "ok" : `error=${v.error}`} ${v.noFd ? "nofd" : "fd"}`,
      check: (v) =>
        v.error !== 0 && !v.noFd
          ? [{
            severity: "violation",
            kind: "value",
            field: "error",
            detail:
              `error is "${v.error}" and the NOFD bit is clear, but a back-end must not both ` +
              "indicate an error and return a file descriptor",
          }]
          : [],
    },
  ),
  crypto_session: structLayout(
    "crypto_session",
    "VhostUserCryptoSession: op_code, 1056-byte session union, session_id",
    1072,
    CRYPTO_SESSION_FIELDS,
    { summary: (v) => `op_code=${hex(v.opCode)} session_id=${v.sessionId}` },
  ),
  shmem_config: shmemConfigLayout,
  shmem_map: structLayout(
    "shmem_map",
    "VhostUserMMap: shmid, fd offset, shm offset, length, flags (bit 0 writable)",
    40,
    SHMEM_MAP_FIELDS,
    {
      summary: (v) =>
        `shmid=${v.shmid} fd_offset=${hex(v.fdOffset)} shm_offset=${hex(v.shmOffset)} len=${
          sizeText(v.len)
        }${v.flags & 1n ? " writable" : ""}`,
    },
  ),
};

/**
 * Layouts whose address fields change meaning with F_GPA_ADDRESSES (docs/protocol.md §1.10): a region's user
 * address duplicates its guest-physical address, ring addresses and the IOTLB `uaddr` of the
 * front-end's IOTLB_MSG are guest-physical.
 */
export const GPA_ADDRESS_LAYOUTS: ReadonlySet<LayoutName> = new Set<LayoutName>([
  "memory_table",
  "memory_table_xen",
  "mem_region",
  "mem_region_xen",
  "vring_addr",
  "iotlb",
]);

/**
 * The largest payload any layout of the spec admits (GET_SHMEM_CONFIG's 2056 bytes, the size of
 * QEMU's `VhostUserPayload` union in the newest text). Longer messages no valid peer sends.
 */
export const LARGEST_PAYLOAD: number = Math.max(
  ...Object.values(LAYOUTS).filter((l) => l.name !== "raw").map((l) =>
    "exact" in l.size ? l.size.exact : l.size.max
  ),
);

/** The layout table viewed uniformly, for code that dispatches on a payload's layout name. */
function uniform(name: LayoutName): Layout<Payload> {
  // Each LAYOUTS entry handles exactly the payload variant tagged with its name,
  // and struct codecs ignore the extra `layout` key; the mapped type cannot
  // express that correlation for a union-typed name.
  return LAYOUTS[name] as unknown as Layout<Payload>;
}

/** Decodes `bytes` with the named layout; the length must satisfy the layout's size rule. */
export function decodePayload(
  name: LayoutName,
  bytes: Uint8Array,
): { payload: Payload; issues: readonly LayoutIssue[] } {
  const { value, issues } = uniform(name).decode(bytes);
  return { payload: { ...value, layout: name } as Payload, issues };
}

/**
 * The typed value of a payload the codec has already accepted, read again from bytes as they
 * were finally sent (after a dialect translation or a rewrite) or from a reply a caller read
 * itself: `bytes` beyond the layout's size are ignored and missing ones read as zeros, so this
 * never throws on a short or long payload.
 *
 * @example
 * ```ts
 * const bytes = new Uint8Array([0x2b, 0xa4, 0x08, 0, 0, 0, 0, 0]);
 * console.assert(readPayload("protocol_features", bytes).features === 0x8a42bn);
 * ```
 */
export function readPayload<L extends LayoutName>(name: L, bytes: Uint8Array): PayloadOf<L> {
  const rule = LAYOUTS[name].size;
  const size = "exact" in rule ? rule.exact : Math.min(Math.max(bytes.length, rule.min), rule.max);
  let fitted = bytes.subarray(0, size);
  if (fitted.length < size) {
    fitted = new Uint8Array(size);
    fitted.set(bytes);
  }
  return decodePayload(name, fitted).payload as PayloadOf<L>;
}

/** Encodes a payload with its own layout. */
export function encodePayload(payload: Payload): Uint8Array {
  return uniform(payload.layout).encode(payload);
}

/** JSON view of a payload (JSON-safe: no bigint, no typed arrays). */
export function payloadToJson(payload: Payload, ctx: JsonContext): Record<string, unknown> {
  return uniform(payload.layout).toJson(payload, ctx);
}

/** One-line summary of a payload's key fields. */
export function summarizePayload(payload: Payload, ctx: JsonContext): string {
  return uniform(payload.layout).summary(payload, ctx);
}

/**
 * The vhost-user protocol as data, with no I/O and no FFI: importing this module needs no
 * permission. Use it to decode, encode, validate or describe vhost-user messages without
 * running the proxy.
 *
 * - the request catalogue ({@link REQUESTS}, {@link findRequest}, {@link findRequestByName}),
 *   one row per request with its channel, payload layouts, fd rule, reply rule, feature gate
 *   and per-dialect codes;
 * - the codec ({@link decodeMessage} returns a value and never throws, {@link encodeMessage},
 *   {@link createMessage}, {@link messageToJson}, {@link summarizeMessage},
 *   {@link replyExpected});
 * - the payload types ({@link Payload}, {@link PayloadOf}, {@link LayoutName});
 * - feature bits by name ({@link PROTOCOL_FEATURES}, {@link VIRTIO_FEATURES});
 * - the upstream ⇄ RFC 2023 dialect mapping ({@link translateMessage},
 *   {@link translateRequestCode});
 * - protocol violations ({@link ProtocolViolation}, {@link ProtocolError}).
 *
 * @example List the catalogue
 * ```ts
 * import { REQUESTS } from "./mod.ts";
 * for (const r of REQUESTS) console.log(r.channel, r.code, r.name, r.replies);
 * ```
 *
 * @example Encode a message by name and decode it back
 * ```ts
 * import {
 *   createMessage,
 *   decodeMessage,
 *   encodeMessage,
 *   HEADER_SIZE,
 *   NOTHING_NEGOTIATED,
 *   readHeader,
 * } from "./mod.ts";
 *
 * const bytes = encodeMessage(createMessage({
 *   channel: "main",
 *   sender: "front-end",
 *   request: "GET_FEATURES",
 *   payload: { layout: "empty" },
 * }));
 * const result = decodeMessage(readHeader(bytes), bytes.subarray(HEADER_SIZE), 0, {
 *   channel: "main",
 *   sender: "front-end",
 *   dialect: "upstream",
 *   negotiated: NOTHING_NEGOTIATED,
 * });
 * if (!result.ok) throw new Error(result.error.message);
 * console.log(result.message.name); // "GET_FEATURES"
 * ```
 *
 * @module
 */

export {
  type Channel,
  codeIn,
  type Dialect,
  DIALECTS,
  type FdRule,
  type FeatureGate,
  findRequest,
  findRequestByName,
  type LayoutRef,
  type PostcopyRule,
  type ReplyRule,
  REQUESTS,
  requestsOf,
  type RequestSpec,
  type RowCheck,
  type Side,
} from "./catalogue.ts";
export {
  createMessage,
  type CreateOptions,
  type DecodeContext,
  decodeMessage,
  type DecodeResult,
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  type Header,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  type Message,
  messageToJson,
  type Negotiated,
  NOTHING_NEGOTIATED,
  readHeader,
  replyExpected,
  summarizeMessage,
  withPayload,
  writeHeader,
} from "./codec.ts";
export * from "./dialect.ts";
export {
  describeProtocolFeatures,
  describeVirtioFeatures,
  PROTOCOL_FEATURES,
  type ProtocolFeatureName,
  type ProtocolFeatureRow,
  VIRTIO_FEATURES,
  type VirtioFeatureName,
  type VirtioFeatureRow,
} from "./features.ts";
export type {
  Config,
  CryptoSession,
  DeviceStateParams,
  DeviceStateResult,
  Empty,
  Inflight,
  Iotlb,
  LayoutName,
  LayoutValues,
  Log,
  Mac,
  MemoryRegion,
  MemoryTable,
  MemRegion,
  Payload,
  PayloadOf,
  ProtocolFeatures,
  Raw,
  SharedObject,
  ShmemConfig,
  ShmemMap,
  Status,
  U64,
  VirtioFeatures,
  VringAddr,
  VringArea,
  VringBasePacked,
  VringFile,
  VringState,
  XenMemoryRegion,
  XenMemoryTable,
  XenMemRegion,
} from "./layouts.ts";
export { readPayload } from "./layouts.ts";
export {
  type Direction,
  ProtocolError,
  type ProtocolViolation,
  type ViolationKind,
} from "./violations.ts";

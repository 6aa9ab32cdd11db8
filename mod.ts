/**
 * vhost-user-proxy: a man-in-the-middle between a vhost-user front-end (QEMU) and back-end
 * (virtiofsd and others) that relays every message with its fds, decodes and logs it, and
 * handles device-state transfer for live migration.
 *
 * The library surface:
 * - the protocol catalogue ({@link REQUESTS}) and codec ({@link decodeMessage},
 *   {@link encodeMessage}, {@link messageToJson}), with dialects ({@link translateRequestCode});
 * - feature bits by name ({@link PROTOCOL_FEATURES}, {@link VIRTIO_FEATURES});
 * - the proxy itself ({@link startProxy}) and its log records ({@link LogRecord}).
 *
 * @example List the catalogue
 * ```ts
 * import { REQUESTS } from "./mod.ts";
 * for (const r of REQUESTS) console.log(r.channel, r.code, r.name);
 * ```
 *
 * @module
 */

export {
  type Channel,
  codeIn,
  type Dialect,
  DIALECTS,
  findRequest,
  findRequestByName,
  type ReplyRule,
  REQUESTS,
  REQUESTS as catalogue,
  requestsOf,
  type RequestSpec,
  type Side,
} from "./proxy/catalogue.ts";
export {
  createMessage,
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
  readHeader,
  replyExpected,
  summarizeMessage,
  writeHeader,
} from "./proxy/codec.ts";
export * from "./proxy/dialect.ts";
export {
  describeProtocolFeatures,
  describeVirtioFeatures,
  PROTOCOL_FEATURES,
  VIRTIO_FEATURES,
} from "./proxy/features.ts";
export { ProtocolError, type ProtocolViolation } from "./proxy/protocol_errors.ts";
export type { DeviceStateConfig, EngineConfig } from "./proxy/engine.ts";
export type * from "./proxy/log_record.ts";
export { formatRecord } from "./proxy/log_format.ts";
export { type RunningProxy, startProxy } from "./proxy/server.ts";

/**
 * vhost-user-proxy: a man-in-the-middle between a vhost-user front-end (QEMU) and back-end
 * (virtiofsd and others) that relays every message with its fds, decodes and logs it, and
 * handles device-state transfer for live migration.
 *
 * This entry is the whole library, and importing it loads libc through FFI (it needs
 * `--allow-ffi`). Two entries need no permission at all:
 * - `protocol/mod.ts` (`@vhost-user-proxy/core/protocol`): the catalogue ({@link REQUESTS}), the
 *   codec ({@link decodeMessage}, {@link encodeMessage}, {@link messageToJson}), dialects
 *   ({@link translateRequestCode}), feature bits by name ({@link PROTOCOL_FEATURES},
 *   {@link VIRTIO_FEATURES});
 * - `log/mod.ts` (`@vhost-user-proxy/core/log`): the log records ({@link LogRecord}),
 *   {@link formatRecord} and the offline log tools.
 *
 * This one adds the proxy itself: {@link startProxy} with a configuration from
 * {@link defaultEngineConfig}.
 *
 * @example List the catalogue
 * ```ts
 * import { REQUESTS } from "./mod.ts";
 * for (const r of REQUESTS) console.log(r.channel, r.code, r.name);
 * ```
 *
 * @module
 */

import { REQUESTS, type RequestSpec } from "./protocol/mod.ts";

export * from "./protocol/mod.ts";
export * from "./log/mod.ts";

/**
 * The request catalogue under its old name.
 *
 * @deprecated Use {@link REQUESTS}, the same array.
 */
export const catalogue: readonly RequestSpec[] = REQUESTS;

export type { ControlRequest, DeviceStateConfig, EngineConfig } from "./relay/engine.ts";
export { FINGERPRINT_ALGORITHMS, type FingerprintAlgorithm } from "./device_state/fingerprint.ts";
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_STUCK_AFTER_MS,
  defaultEngineConfig,
} from "./relay/engine_defaults.ts";
export { DEFAULT_HASH_BACKLOG_MIB } from "./device_state/config.ts";
export { type RunningProxy, startProxy } from "./relay/server.ts";

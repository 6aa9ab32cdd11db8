/**
 * The defaults of the relay engine's settings, the same the CLI uses when a flag is not given,
 * so that a library caller names only what differs.
 *
 * @module
 */

import type { DeviceStateConfig } from "../device_state/config.ts";
import { DEFAULT_HASH_BACKLOG_MIB } from "../device_state/config.ts";
import type { EngineConfig } from "./engine.ts";
import { DEFAULT_FINGERPRINT } from "../device_state/fingerprint.ts";

/** Default of `EngineConfig.stuckAfterMs` (`--stuck-after`): 5 s without a reply is stuck. */
export const DEFAULT_STUCK_AFTER_MS = 5000;

/** Default of `EngineConfig.connectTimeoutMs` (`--connect-timeout`): 10 s to reach the back-end. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * An engine configuration with the CLI's defaults (`vhost-user-proxy run` without options):
 * both peers speak the upstream dialect, stuck requests are reported after 5 s, the back-end
 * connection times out after 10 s, messages are logged, and device state is relayed and
 * fingerprinted with xxh3-128. `listen` is a socket path to create, or the listening socket
 * as {@link EngineConfig.listen} takes it.
 *
 * Returns a fresh object each call: spread it and override what differs.
 *
 * @example Start a proxy with the defaults but emulated device state
 * ```ts
 * import { startProxy } from "./server.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const base = defaultEngineConfig(`${dir}/proxy.sock`, `${dir}/virtiofsd.sock`);
 * const proxy = await startProxy(
 *   { ...base, deviceState: { ...base.deviceState, mode: "emulate" } },
 *   (record) => console.log(JSON.stringify(record)),
 * );
 * // QEMU connects to proxy.sock; each connection is relayed to virtiofsd.sock.
 * await proxy.stop();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function defaultEngineConfig(
  listen: string | EngineConfig["listen"],
  backend: string,
): EngineConfig {
  const deviceState: DeviceStateConfig = {
    mode: "relay",
    buffer: false,
    hash: true,
    hashAlgorithm: DEFAULT_FINGERPRINT,
    hashBacklogMiB: DEFAULT_HASH_BACKLOG_MIB,
    faults: [],
  };
  return {
    listen: typeof listen === "string" ? { path: listen } : listen,
    backend,
    frontDialect: "upstream",
    backDialect: "upstream",
    stuckAfterMs: DEFAULT_STUCK_AFTER_MS,
    connectTimeoutMs: DEFAULT_CONNECT_TIMEOUT_MS,
    logMessages: true,
    deviceState,
  };
}

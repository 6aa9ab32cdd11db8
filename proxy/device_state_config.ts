/**
 * Device-state behaviour selected on the command line (or by a library caller), read by the
 * device-state handler and passed through the engine.
 *
 * @module
 */

/** Device-state behaviour: relay (default), emulate, off; dumps, buffering, faults, commands. */
export interface DeviceStateConfig {
  mode: "relay" | "emulate" | "off";
  dumpDir?: string;
  buffer?: boolean;
  /** SHA-256 every transfer (default true). */
  hash?: boolean;
  /**
   * MiB the SHA-256 may trail a transfer by, on its own thread (default
   * {@linkcode DEFAULT_HASH_BACKLOG_MIB}); 0 hashes inline, before the transfer ends.
   */
  hashBacklogMiB?: number;
  faults?: string[];
  saveCmd?: string;
  loadCmd?: string;
}

/** Default of `DeviceStateConfig.hashBacklogMiB`: a 256 MiB state never waits for its hash. */
export const DEFAULT_HASH_BACKLOG_MIB = 256;

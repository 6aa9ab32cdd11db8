/**
 * Device-state behaviour selected on the command line (or by a library caller), read by the
 * device-state handler and passed through the engine.
 *
 * @module
 */

import type { FingerprintAlgorithm } from "./fingerprint.ts";

/** Device-state behaviour: relay (default), emulate, off; dumps, buffering, faults, commands. */
export interface DeviceStateConfig {
  mode: "relay" | "emulate" | "off";
  dumpDir?: string;
  buffer?: boolean;
  /** Fingerprint every transfer (default true). */
  hash?: boolean;
  /** The fingerprint's algorithm (`--state-hash`; default xxh3-128). */
  hashAlgorithm?: FingerprintAlgorithm;
  /**
   * MiB a SHA-256 or BLAKE3 fingerprint may trail a transfer by, on its own thread (default
   * {@linkcode DEFAULT_HASH_BACKLOG_MIB}); 0 hashes inline, before the transfer ends.
   */
  hashBacklogMiB?: number;
  faults?: string[];
  saveCmd?: string;
  loadCmd?: string;
}

/** Default of `DeviceStateConfig.hashBacklogMiB`: a 256 MiB state never waits for its hash. */
export const DEFAULT_HASH_BACKLOG_MIB = 256;

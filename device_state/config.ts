/**
 * Device-state behaviour selected on the command line (or by a library caller), read by the
 * device-state handler and passed through the engine.
 *
 * @module
 */

import type { FingerprintAlgorithm } from "./fingerprint.ts";

/** Device-state behaviour: relay (default), emulate, off; dumps, buffering, faults, commands. */
export interface DeviceStateConfig {
  /** `relay` streams the back-end's state; `emulate` holds the proxy's own for a back-end without F_DEVICE_STATE; `off` hides F_DEVICE_STATE. */
  mode: "relay" | "emulate" | "off";
  /** Directory to save every state blob into (`--state-dump`). */
  dumpDir?: string;
  /** Read the whole state before delivering it, so it is validated first (`--state-buffer`). */
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
  /** Device-state faults to inject (`--fault`), e.g. `state-truncate:4096`, `check-fail`. */
  faults?: string[];
  /** Emulate only: a command whose stdout travels with the proxy's state at SAVE. */
  saveCmd?: string;
  /** Emulate only: a command given that part on stdin at LOAD; a non-zero exit fails the CHECK. */
  loadCmd?: string;
}

/** Default of `DeviceStateConfig.hashBacklogMiB`: a 256 MiB state never waits for its hash. */
export const DEFAULT_HASH_BACKLOG_MIB = 256;

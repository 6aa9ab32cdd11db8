/**
 * Device-state handling per session. Until the interposing copy lands, every mode relays
 * SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE verbatim (their fds ride like any other).
 *
 * @module
 */

import type { DeviceStateFactory } from "./engine.ts";

/** Builds the hooks for a session; `undefined` means plain relaying. */
export const deviceStateHooks: DeviceStateFactory = () => undefined;

/**
 * Device-state transfer (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE) per session: one unit per
 * `--device-state` mode behind hooks.ts's interface — relay_mode.ts (the default: the proxy's
 * pipe between QEMU and the back-end), emulate_mode.ts (the proxy is the back-end of the
 * transfer), off_mode.ts (the feature hidden from QEMU).
 *
 * @module
 */

import type { DeviceStateFactory } from "./hooks.ts";
import { EmulateMode } from "./emulate_mode.ts";
import { OffMode } from "./off_mode.ts";
import { RelayMode } from "./relay_mode.ts";
import type { DeviceStateShared } from "./transfer_mode.ts";

export type { DeviceStateShared };

/** Builds the per-session handler of the configured mode, with what the engine's share. */
export function deviceStateHooksWith(shared: DeviceStateShared): DeviceStateFactory {
  return (session, config) => {
    switch (config.mode) {
      case "off":
        return new OffMode(session);
      case "emulate":
        return new EmulateMode(session, config, shared);
      default:
        return new RelayMode(session, config, shared);
    }
  };
}

/** Builds the per-session handler; transfers are hashed inline. */
export const deviceStateHooks: DeviceStateFactory = deviceStateHooksWith({});

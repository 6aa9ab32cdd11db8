/**
 * `--device-state off`: F_DEVICE_STATE is hidden from QEMU, as with a back-end that predates it.
 * Nothing else is touched: a front-end that asked for a transfer anyway would be relayed as it is.
 *
 * @module
 */

import type { Message } from "../protocol/codec.ts";
import { protocolFeatureMask } from "../protocol/features.ts";
import { timestamp } from "../log/record.ts";
import type { DeviceStateHooks, StateEndpoint, StateSession, Verdict } from "./hooks.ts";
import { FORWARD, rewritten } from "./transfer_mode.ts";

/** The off mode of one session. */
export class OffMode implements DeviceStateHooks {
  readonly #session: StateSession;

  constructor(session: StateSession) {
    this.#session = session;
  }

  intercept(from: StateEndpoint, message: Message): Verdict {
    const p = message.payload;
    if (
      from.kind !== "main" || message.name !== "GET_PROTOCOL_FEATURES" ||
      p.layout !== "protocol_features"
    ) return FORWARD;
    const bit = protocolFeatureMask("DEVICE_STATE", this.#session.options.backDialect);
    if ((p.features & bit) === 0n) return FORWARD;
    this.#session.emit({
      type: "device-state",
      event: "note",
      ts: timestamp(),
      session: this.#session.id,
      message: "hiding the back-end's F_DEVICE_STATE from the front-end (--device-state off)",
    });
    return {
      action: "forward",
      bytes: rewritten(message, { ...p, features: p.features & ~bit }),
      note: "removed F_DEVICE_STATE (--device-state off)",
    };
  }

  close(): void {}
}

/**
 * Faults to rehearse failed migrations (`--fault`, repeatable): each breaks the device-state
 * transfer in one way a real back-end or transport can.
 *
 * @module
 */

/** The parsed set of faults of one proxy. */
export interface Faults {
  /** `state-corrupt`: flip bytes in the stream. */
  corrupt: boolean;
  /** `state-truncate:<bytes>`: deliver only this many bytes. */
  truncateAt?: number;
  /** `state-delay:<ms>`: hold the stream back this long. */
  delayMs?: number;
  /** `check-fail`: CHECK_DEVICE_STATE reports failure to the front-end. */
  checkFail: boolean;
  /** `state-refuse`: SET_DEVICE_STATE_FD is refused (error reply, nothing transferred). */
  refuse: boolean;
  /** The specs as given, for logs. */
  specs: string[];
}

/** No faults. */
export const NO_FAULTS: Faults = { corrupt: false, checkFail: false, refuse: false, specs: [] };

/** Parse result: a value, with a sentence for the first bad spec. */
export type ParseFaults = { ok: true; faults: Faults } | { ok: false; error: string };

/** Parses `--fault` specs. */
export function parseFaults(specs: readonly string[]): ParseFaults {
  const f: Faults = { corrupt: false, checkFail: false, refuse: false, specs: [...specs] };
  for (const spec of specs) {
    const [name, arg] = spec.split(":", 2);
    const number = (unit: string): number | string => {
      const n = Number(arg);
      if (arg === undefined || arg === "" || !Number.isInteger(n) || n < 0) {
        return `Fault "${spec}" needs a non-negative whole number of ${unit} after the colon`;
      }
      return n;
    };
    switch (name) {
      case "state-corrupt":
        f.corrupt = true;
        break;
      case "state-truncate": {
        const n = number("bytes");
        if (typeof n === "string") return { ok: false, error: n };
        f.truncateAt = n;
        break;
      }
      case "state-delay": {
        const n = number("milliseconds");
        if (typeof n === "string") return { ok: false, error: n };
        f.delayMs = n;
        break;
      }
      case "check-fail":
        f.checkFail = true;
        break;
      case "state-refuse":
        f.refuse = true;
        break;
      default:
        return {
          ok: false,
          error: `Unknown fault "${spec}": expected state-corrupt, state-truncate:<bytes>, ` +
            `state-delay:<ms>, check-fail or state-refuse`,
        };
    }
    if ((name === "state-corrupt" || name === "check-fail" || name === "state-refuse") && arg) {
      return { ok: false, error: `Fault "${name}" takes no argument, got "${spec}"` };
    }
  }
  return { ok: true, faults: f };
}

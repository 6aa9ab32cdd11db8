/**
 * What a device-state blob says, for the log and `state show`: a decoded summary of the formats
 * the proxy knows (its own emulated state, virtiofsd's), and the strict check of `--state-buffer`.
 * Pure (no FFI, no I/O), so that the offline `state show` needs no permission to load it.
 *
 * @module
 */

import { describeProtocolFeatures, describeVirtioFeatures } from "../protocol/features.ts";
import { decodeEmulatedState, isEmulatedState } from "./emulated_state.ts";
import { decodeVirtiofsdState, summarizeVirtiofsdState } from "./virtiofsd_state.ts";

/** A decoded summary of a blob in a known format, for the log and `state show`. */
export function summarizeBlob(blob: Uint8Array): Record<string, unknown> | undefined {
  if (isEmulatedState(blob)) {
    const d = decodeEmulatedState(blob);
    if (!d.ok) return { format: "vhost-user-proxy", error: d.error };
    return {
      format: "vhost-user-proxy",
      version: d.state.version,
      ...d.state.meta,
      virtioFeatureNames: describeVirtioFeatures(BigInt(d.state.meta.virtioFeatures)),
      protocolFeatureNames: describeProtocolFeatures(BigInt(d.state.meta.protocolFeatures)),
      userBytes: d.state.user.length,
    };
  }
  const v = decodeVirtiofsdState(blob);
  if (v.ok) return { ...summarizeVirtiofsdState(v.state) };
  return undefined;
}

/**
 * Validation for `--state-buffer`: formats the proxy knows are checked strictly (the proxy's own
 * state by checksum, virtiofsd's postcard blob by a full decode, recognised by its leading
 * version variant 0 or 1); other formats cannot be checked and pass.
 */
export function validateBlob(blob: Uint8Array): string | undefined {
  if (isEmulatedState(blob)) {
    const d = decodeEmulatedState(blob);
    return d.ok ? undefined : d.error;
  }
  if (blob.length > 0 && blob[0] <= 1) {
    const v = decodeVirtiofsdState(blob);
    return v.ok ? undefined : `not a valid virtiofsd state: ${v.error}`;
  }
  return undefined;
}

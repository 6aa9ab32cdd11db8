/**
 * Live migration between two {@linkcode Vm}s over QMP, reporting what `query-migrate` says.
 *
 * @module
 */

import { settlesWithin } from "./child.ts";
import type { Vm } from "./qemu.ts";
import type { JsonObject } from "./qmp.ts";
import { delay, WaitTimeoutError } from "./wait.ts";

/** Options for {@linkcode migrate}. */
export interface MigrateOptions {
  /** Migration channel; default `unix:<dir of dst's QMP socket>/<dst>.migrate.sock`. */
  uri?: string;
  /** Budget for the whole migration; default 120000 ms. */
  timeoutMs?: number;
  /** Extra capabilities to set on both sides (`return-path` is always on). */
  capabilities?: Record<string, boolean>;
  /**
   * `migrate-set-parameters` for the source; default `{"max-bandwidth": 8 GiB/s}` because
   * QEMU's default cap (128 MiB/s) makes a 512 MiB guest take ~5 s where ~1 s is possible.
   */
  parameters?: JsonObject;
  /** After success, how long to wait for the destination to run; default 15000 ms. */
  destinationRunTimeoutMs?: number;
}

/** Outcome of a migration as the source's `query-migrate` reports it. */
export interface MigrationResult {
  /** `completed`, `failed` or `cancelled` (or the last status seen). */
  status: string;
  /** `error-desc` on failure (QEMU 10 puts only a short summary here; see stderr logs). */
  errorDesc?: string;
  /** `total-time` in ms. */
  totalTimeMs?: number;
  /** `downtime` in ms (only on success). */
  downtimeMs?: number;
  /** `setup-time` in ms. */
  setupTimeMs?: number;
  /** Wall-clock time of the whole helper call, in ms. */
  wallMs: number;
  /** The source's run state afterwards (`postmigrate` on success, `running` if it resumed). */
  sourceState?: string;
  /** The destination's run state afterwards, or `exited (code N)` if it died. */
  destinationState: string;
  /** The last raw `query-migrate` reply of the source. */
  raw: JsonObject;
}

const DEFAULT_PARAMETERS: JsonObject = { "max-bandwidth": 8 * 1024 ** 3 };
const FINAL_STATES = new Set(["completed", "failed", "cancelled"]);

/**
 * Migrates `src` to `dst` (which must have been started with `incomingDefer: true`): turns on
 * `return-path` on both (so a failing destination makes the source fail and resume instead of
 * losing the guest), starts `migrate-incoming` then `migrate`, and polls `query-migrate` until a
 * final state. Never throws for a failed migration: check `status`.
 *
 * @example
 * ```ts
 * const result = await migrate(src, dst);
 * assert.equal(result.status, "completed", result.errorDesc);
 * ```
 */
export async function migrate(
  src: Vm,
  dst: Vm,
  options: MigrateOptions = {},
): Promise<MigrationResult> {
  const startedAt = Date.now();
  const timeoutMs = options.timeoutMs ?? 120_000;
  const uri = options.uri ?? `unix:${dst.paths.qmp.replace(/[^/]*$/, "")}${dst.name}.migrate.sock`;
  const capabilities = Object.entries({ ...options.capabilities, "return-path": true }).map((
    [capability, state],
  ) => ({ capability, state }));
  await src.qmp.execute("migrate-set-parameters", options.parameters ?? DEFAULT_PARAMETERS);
  await src.qmp.execute("migrate-set-capabilities", { capabilities });
  await dst.qmp.execute("migrate-set-capabilities", { capabilities });
  await dst.qmp.execute("migrate-incoming", { uri });
  await src.qmp.execute("migrate", { uri });

  let raw: JsonObject = {};
  while (true) {
    raw = await src.qmp.execute<JsonObject>("query-migrate");
    if (FINAL_STATES.has(String(raw.status))) break;
    if (Date.now() - startedAt > timeoutMs) {
      await src.qmp.execute("migrate_cancel").catch(() => {});
      throw new WaitTimeoutError(
        `migration of "${src.name}" to "${dst.name}"`,
        timeoutMs,
        `last status ${raw.status}`,
      );
    }
    await delay(50);
  }

  const status = String(raw.status);
  let destinationState = await stateOrExit(dst);
  if (status === "completed") {
    // The source completes when it has sent everything; the destination may still be loading.
    const deadline = Date.now() + (options.destinationRunTimeoutMs ?? 15_000);
    while (
      destinationState !== "running" && !destinationState.startsWith("exited") &&
      Date.now() < deadline
    ) {
      await delay(50);
      destinationState = await stateOrExit(dst);
    }
  } else {
    // A destination that failed to load exits on its own; give it a moment so the state is final.
    await settlesWithin(dst.exited, 2000);
    destinationState = await stateOrExit(dst);
  }
  return {
    status,
    errorDesc: typeof raw["error-desc"] === "string" ? raw["error-desc"] : undefined,
    totalTimeMs: numberOrUndefined(raw["total-time"]),
    downtimeMs: numberOrUndefined(raw.downtime),
    setupTimeMs: numberOrUndefined(raw["setup-time"]),
    wallMs: Date.now() - startedAt,
    sourceState: await src.runState().catch(() => undefined),
    destinationState,
    raw,
  };
}

async function stateOrExit(vm: Vm): Promise<string> {
  if (vm.child.status) return `exited (code ${vm.child.status.code})`;
  try {
    return await vm.runState();
  } catch {
    const status = vm.child.status as Deno.CommandStatus | undefined;
    return status ? `exited (code ${status.code})` : "unreachable";
  }
}

function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

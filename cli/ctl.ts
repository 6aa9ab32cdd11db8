/**
 * `vhost-user-proxy ctl <control> status [--json]` and
 * `vhost-user-proxy ctl <control> restart-backend [--session N] [--backend <socket>] [--binary <prog>]`:
 * the client side of the control socket, with its output for a person (one line per fact) or
 * `--json`. Exit codes: 0 done, 1 the proxy answered with a failure (the step and the rollback
 * are printed), 2 usage, 3 the control socket cannot be reached.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { controlRequest } from "../relay/control.ts";

/** The help text of `ctl`. */
export const CTL_HELP = `Usage:
  vhost-user-proxy ctl <control.sock> status [--json]
  vhost-user-proxy ctl <control.sock> restart-backend [--session N] [--backend <socket>]
      [--binary <prog>] [--json]

Talks to a proxy started with --control <control.sock> (JSON Lines on a unix socket, 0600).

status            sessions, negotiated features by name, rings (num, base, enabled), the
                  back-end's socket, transfers, restarts, and whether a restart is possible now
restart-backend   swaps the session's back-end for a new one under the running guest, carrying
                  its state (SAVE from the old, LOAD into the new); the guest's open files stay
  --session N       which session (default: the only one)
  --backend <sock>  run mode: the new back-end listens here (default: the proxy's --backend)
  --binary <prog>   drop-in mode: start this program as the new back-end (default: the same)
  --json            print the proxy's JSON response

Exit codes: 0 done; 1 the proxy reports a failure (the failed step and what was rolled back
are printed); 2 usage; 3 the control socket cannot be reached.`;

function usage(message: string): number {
  console.error(`vhost-user-proxy: ctl: ${message} (see: vhost-user-proxy ctl --help)`);
  return 2;
}

/** Runs `ctl` with the arguments after the word `ctl`; returns the exit code. */
export async function ctlCommand(args: string[]): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(CTL_HELP);
    return 0;
  }
  const [control, verb, ...rest] = args;
  if (control === undefined) return usage("the control socket path is missing");
  if (verb !== "status" && verb !== "restart-backend") {
    return usage(
      verb === undefined
        ? "say status or restart-backend"
        : `unknown command "${verb}": status or restart-backend`,
    );
  }
  let values;
  try {
    values = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: verb === "status" ? { json: { type: "boolean", default: false } } : {
        json: { type: "boolean", default: false },
        session: { type: "string" },
        backend: { type: "string" },
        binary: { type: "string" },
      },
    }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    return usage(e instanceof Error ? e.message : String(e));
  }
  const request: Record<string, unknown> = { cmd: verb };
  if (verb === "restart-backend") {
    if (values.session !== undefined) {
      const n = Number(values.session);
      if (!/^\d+$/.test(String(values.session))) {
        return usage(`--session must be a session number, not "${values.session}"`);
      }
      request.session = n;
    }
    if (values.backend !== undefined) request.backend = values.backend;
    if (values.binary !== undefined) request.binary = values.binary;
  }
  let response: Record<string, unknown>;
  try {
    response = await controlRequest(control, request);
  } catch (e) {
    const cause = e instanceof Deno.errors.NotFound
      ? "no such socket"
      : e instanceof Deno.errors.ConnectionRefused
      ? "nobody is listening (is the proxy running with --control?)"
      : e instanceof Error
      ? e.message
      : String(e);
    console.error(`vhost-user-proxy: ctl: cannot reach the control socket "${control}": ${cause}`);
    return 3;
  }
  if (values.json) console.log(JSON.stringify(response, null, 2));
  else if (verb === "status") {
    for (const l of formatStatus(response)) console.log(l);
  } else console.log(formatRestart(response));
  return response.ok === true ? 0 : 1;
}

/** One line with the pause the guest saw, or the step that failed and what was rolled back. */
export function formatRestart(r: Record<string, unknown>): string {
  if (r.ok !== true) {
    const at = r.failedStep ? ` at step "${r.failedStep}"` : "";
    const back = r.rolledBack ? `; rolled back: ${r.rolledBack}` : "";
    const paused = typeof r.pauseMs === "number" && r.pauseMs > 0
      ? `; the guest paused ${r.pauseMs} ms`
      : "";
    return `restart-backend failed${at}: ${r.error ?? "unknown error"}${back}${paused}`;
  }
  const state = r.withState
    ? `with its state (${r.stateBytes ?? 0} bytes)`
    : "WITHOUT its state (the back-end's state was lost: for virtio-fs the guest's file " +
      "operations fail with EIO until it remounts the share)";
  return `restarted the back-end of session ${r.session} onto ${r.backend} ${state}: the guest ` +
    `paused ${r.pauseMs} ms (${r.totalMs} ms in all)`;
}

/** `ctl status` for a person. */
export function formatStatus(r: Record<string, unknown>): string[] {
  if (r.ok !== true) return [`status failed: ${r.error ?? "unknown error"}`];
  const lines = [
    `proxy pid ${r.pid} on ${r.listen}${r.restartable ? "" : " (not restartable)"}`,
  ];
  const sessions = (r.sessions ?? []) as Record<string, unknown>[];
  if (sessions.length === 0) lines.push("no live session");
  for (const s of sessions) {
    lines.push(`session ${s.session}: back-end ${s.backend}${s.connected ? "" : " (connecting)"}`);
    if (s.virtioFeatures) {
      lines.push(`  virtio features:   ${(s.virtioFeatures as string[]).join(" ")}`);
      lines.push(`  protocol features: ${(s.protocolFeatures as string[]).join(" ")}`);
      lines.push(
        `  memory regions: ${s.memoryRegions}; back-end channel: ${
          s.backendChannel ? "yes" : "no"
        }; transfers: ${s.transfers}`,
      );
      for (const ring of (s.rings ?? []) as Record<string, unknown>[]) {
        lines.push(
          `  ring ${ring.index}: num ${ring.num ?? "-"} base ${ring.base ?? "-"} ${
            ring.enabled ? "enabled" : "disabled"
          }${ring.started ? ", started" : ", stopped"}`,
        );
      }
      const restarts = (s.restarts ?? []) as Record<string, unknown>[];
      for (const x of restarts) {
        lines.push(
          `  restart ${x.ts}: ${
            x.ok ? `ok, paused ${x.pauseMs} ms` : `failed at ${x.failedStep}`
          } → ${x.backend}`,
        );
      }
      lines.push(
        s.notRestartable ? `  restart: not now: ${s.notRestartable}` : "  restart: possible",
      );
    }
  }
  return lines;
}

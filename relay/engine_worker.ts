/**
 * Worker entry: runs the engine's poll loop off the main thread.
 *
 * Protocol with the main thread (structured-clone messages):
 * - in: `{type: "start", config, wakeFd}`, then `{type: "stop"}`; each command is followed by a
 *   write to the wake eventfd, because a loop blocked in poll() cannot see postMessage.
 * - out: `{type: "started"}` or `{type: "failed", error}`, `{type: "records", records}` batches
 *   (one per loop turn, after the relaying is done), `{type: "stopped"}`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  type ControlRequest,
  DEFAULT_HASH_BACKLOG_MIB,
  Engine,
  type EngineConfig,
  WakeUp,
} from "./engine.ts";
import type { LogRecord } from "../log/record.ts";
import { deviceStateHooksWith, type DeviceStateShared } from "../device_state/handler.ts";
import {
  DEFAULT_FINGERPRINT,
  fingerprintsReady,
  hashesInline,
} from "../device_state/fingerprint.ts";
import { TrailingHasher } from "../device_state/stream_hash.ts";
import { warmUpDeviceState } from "./warm_up.ts";
import { timestamp } from "../log/record.ts";
import { warmUpSession } from "./warm_up_session.ts";

/** Switch-overs rehearsed at start: ~50 ms; the handlers are then past V8's first tiers. */
const WARM_UP_ROUNDS = 20;

/** Commands the main thread sends. */
export type EngineCommand =
  | {
    type: "start";
    config: EngineConfig;
    wakeFd: number;
    /** [records posted, records written]: the main thread counts what it has written. */
    progress: SharedArrayBuffer;
  }
  | { type: "stop"; reason?: string }
  | { type: "control"; id: number; request: ControlRequest };

/** Events the worker sends back. */
export type EngineEvent =
  | { type: "started" }
  | { type: "failed"; error: string }
  | { type: "records"; records: LogRecord[] }
  | { type: "stopped" }
  | { type: "control-result"; id: number; response: Record<string, unknown> };

const inbox: EngineCommand[] = [];
let notify: (() => void) | undefined;
self.onmessage = (e: MessageEvent<EngineCommand>) => {
  inbox.push(e.data);
  notify?.();
};

async function nextCommand(): Promise<EngineCommand> {
  while (inbox.length === 0) await new Promise<void>((r) => (notify = r));
  notify = undefined;
  return inbox.shift()!;
}

function post(event: EngineEvent): void {
  self.postMessage(event);
}

/** Records the main thread may lag behind before the relay waits for it. */
const MAX_LOG_LAG = 20_000;

/**
 * Backpressure from the log: if the main thread falls behind (a slow disk, a flood), the relay
 * stops reading sockets until it catches up, so memory stays bounded and no record is dropped.
 */
function waitForLogWriter(progress: Int32Array): void {
  for (let i = 0; i < 1000; i++) {
    const lag = Atomics.load(progress, 0) - Atomics.load(progress, 1);
    if (lag <= MAX_LOG_LAG) return;
    Atomics.wait(progress, 1, Atomics.load(progress, 1), 10);
  }
}

async function main(): Promise<void> {
  const start = await nextCommand();
  if (start.type !== "start") return;
  await fingerprintsReady;
  let batch: LogRecord[] = [];
  const progress = new Int32Array(start.progress);
  const ds = start.config.deviceState;
  const backlogMiB = ds.hashBacklogMiB ?? DEFAULT_HASH_BACKLOG_MIB;
  const shared: DeviceStateShared = {};
  // xxh3-128 (the default) keeps up with the stream inline: no thread, no backlog.
  const trails = !hashesInline(ds.hashAlgorithm ?? DEFAULT_FINGERPRINT);
  if (ds.mode === "relay" && ds.hash !== false && trails && backlogMiB > 0) {
    shared.startHasher = () => {
      shared.hasher ??= new TrailingHasher(engine.reactor, { maxBacklogBytes: backlogMiB << 20 });
    };
  }
  const hooks = deviceStateHooksWith(shared);
  const engine = new Engine(start.config, (r) => batch.push(r), hooks);
  const wake = new WakeUp(start.wakeFd);
  try {
    engine.listen();
  } catch (e) {
    post({ type: "failed", error: e instanceof Error ? e.message : String(e) });
    return;
  }
  engine.reactor.add(wake);
  if (ds.mode === "relay") {
    // Only an optimisation, so it never stops the start; but a rehearsal that went wrong says so
    // (a script that no longer fits the relay is a bug someone should see).
    let problems: string[] = [];
    try {
      warmUpDeviceState(ds.hashAlgorithm);
      problems = warmUpSession(ds, hooks, WARM_UP_ROUNDS).problems;
    } catch (e) {
      problems = [e instanceof Error ? e.message : String(e)];
    }
    for (const p of problems.slice(0, 5)) {
      batch.push({
        type: "warning",
        ts: timestamp(),
        message:
          `the start-up rehearsal of a switch-over went wrong (the relay is not affected): ${p}`,
      });
    }
  }
  post({ type: "started" });
  // The "listening" record must not wait for the first wake-up: supervisors wait for it.
  Atomics.add(progress, 0, batch.length);
  post({ type: "records", records: batch });
  batch = [];
  let stopping = false;
  while (!stopping) {
    engine.reactor.turn(-1);
    if (batch.length > 0) {
      Atomics.add(progress, 0, batch.length);
      post({ type: "records", records: batch });
      batch = [];
      waitForLogWriter(progress);
    }
    for (let n = wake.take(); n > 0; n--) {
      const cmd = await nextCommand();
      if (cmd.type === "stop") {
        engine.stop(cmd.reason);
        stopping = true;
      } else if (cmd.type === "control") {
        let response: Record<string, unknown>;
        try {
          response = engine.control(cmd.request);
        } catch (e) {
          response = { ok: false, error: `internal error: ${e instanceof Error ? e.message : e}` };
        }
        if (batch.length > 0) {
          Atomics.add(progress, 0, batch.length);
          post({ type: "records", records: batch });
          batch = [];
        }
        post({ type: "control-result", id: cmd.id, response });
      }
    }
  }
  if (batch.length > 0) {
    Atomics.add(progress, 0, batch.length);
    post({ type: "records", records: batch });
  }
  shared.hasher?.close();
  post({ type: "stopped" });
}

main().catch((e) => {
  post({ type: "failed", error: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) });
});

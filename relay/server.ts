/**
 * Main-thread handle on a running proxy: starts the engine Worker, receives its log records,
 * stops it. The Worker does all socket I/O; nothing here touches a vhost-user socket.
 *
 * @module
 */

import { createEventFd, signalEventFd } from "../ffi/poll.ts";
import type { ControlRequest, EngineConfig } from "./engine.ts";
import type { EngineCommand, EngineEvent } from "./engine_worker.ts";
import type { LogRecord } from "../log/record.ts";

/** A running proxy. */
export interface RunningProxy {
  /** Stops accepting, ends every session (logging each end), removes the socket file. */
  stop(reason?: string): Promise<void>;
  /** Settles when the engine has stopped. */
  readonly finished: Promise<void>;
  /** Runs a control request (status, restart-backend) on the relay's thread. */
  control(request: ControlRequest): Promise<Record<string, unknown>>;
}

/**
 * Starts a proxy with `config`; every log record is passed to `onRecord` on the main thread.
 * Rejects when the listening socket cannot be created.
 */
export async function startProxy(
  config: EngineConfig,
  onRecord: (record: LogRecord) => void,
): Promise<RunningProxy> {
  const wake = createEventFd();
  const progress = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const send = (cmd: EngineCommand) => {
    worker.postMessage(cmd);
    signalEventFd(wake);
  };
  let startedResolve!: () => void;
  let startedReject!: (e: Error) => void;
  const started = new Promise<void>((res, rej) => {
    startedResolve = res;
    startedReject = rej;
  });
  let finishedResolve!: () => void;
  const finished = new Promise<void>((res) => (finishedResolve = res));
  let done = false;
  let nextControl = 1;
  const controls = new Map<number, (r: Record<string, unknown>) => void>();
  const finish = () => {
    if (done) return;
    done = true;
    for (const answer of controls.values()) answer({ ok: false, error: "the proxy stopped" });
    controls.clear();
    worker.terminate();
    wake.close();
    finishedResolve();
  };
  worker.onmessage = (e: MessageEvent<EngineEvent>) => {
    const ev = e.data;
    switch (ev.type) {
      case "started":
        startedResolve();
        break;
      case "failed":
        startedReject(new Error(ev.error));
        finish();
        break;
      case "records":
        for (const r of ev.records) onRecord(r);
        Atomics.add(progress, 1, ev.records.length);
        Atomics.notify(progress, 1);
        break;
      case "stopped":
        finish();
        break;
      case "control-result":
        controls.get(ev.id)?.(ev.response);
        controls.delete(ev.id);
        break;
    }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    startedReject(new Error(e.message));
    onRecord({
      type: "error",
      ts: new Date().toISOString(),
      message: `engine crashed: ${e.message}`,
    });
    finish();
  };
  // The wake fd's number is valid in the Worker too: threads share the fd table.
  worker.postMessage(
    { type: "start", config, wakeFd: wake.fd, progress: progress.buffer } satisfies EngineCommand,
  );
  await started;
  return {
    finished,
    stop: async (reason?: string) => {
      if (!done) send({ type: "stop", reason });
      await finished;
    },
    control: (request) => {
      if (done) return Promise.resolve({ ok: false, error: "the proxy stopped" });
      const id = nextControl++;
      const answer = new Promise<Record<string, unknown>>((res) => controls.set(id, res));
      send({ type: "control", id, request });
      return answer;
    },
  };
}

/**
 * Calls `onStop` on SIGINT and SIGTERM, and `onHangUp` on SIGHUP, until the returned function is
 * called. Install it before {@linkcode startProxy}: the Worker serves sessions as soon as it has
 * bound, and a signal before the listener exists would kill the process with the default action.
 *
 * SIGHUP never stops the proxy: it sits in a running VM's I/O path, and a closed terminal or a
 * logrotate `postrotate` must not end the guest's device. Without `onHangUp` it is ignored.
 */
export function listenForStopSignals(onStop: () => void, onHangUp?: () => void): () => void {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onStop);
  const hangUp = onHangUp ?? (() => {});
  Deno.addSignalListener("SIGHUP", hangUp);
  return () => {
    for (const s of signals) Deno.removeSignalListener(s, onStop);
    Deno.removeSignalListener("SIGHUP", hangUp);
  };
}

/**
 * An in-process proxy (its engine Worker) between two scripted peers, for unit tests.
 *
 * @module
 */

import type { DeviceStateConfig, EngineConfig } from "../../relay/engine.ts";
import type { LogRecord, MessageRecord } from "../../log/record.ts";
import { type RunningProxy, startProxy } from "../../relay/server.ts";
import { ScriptedListener, ScriptedPeer } from "./scripted_peer.ts";

/** A proxy with one front-end and one back-end connected. */
export interface Rig {
  dir: string;
  proxy: RunningProxy;
  backend: ScriptedListener;
  records: LogRecord[];
  front: ScriptedPeer;
  back: ScriptedPeer;
  /** Waits (bounded) until the records satisfy `pred`. */
  until(pred: (rs: LogRecord[]) => boolean, ms?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Options: anything of the engine config, device-state options merged. */
export type RigOptions = Partial<Omit<EngineConfig, "deviceState">> & {
  deviceState?: Partial<DeviceStateConfig>;
};

/** Starts a proxy and connects a scripted front-end and back-end through it. */
export async function rig(options: RigOptions = {}): Promise<Rig> {
  const dir = Deno.makeTempDirSync({ prefix: "vup-rig-" });
  const backend = new ScriptedListener(`${dir}/back.sock`);
  const records: LogRecord[] = [];
  const { deviceState, ...rest } = options;
  const proxy = await startProxy({
    listen: { path: `${dir}/front.sock` },
    backend: backend.path,
    frontDialect: "upstream",
    backDialect: "upstream",
    stuckAfterMs: 0,
    connectTimeoutMs: 2000,
    logMessages: true,
    ...rest,
    deviceState: { mode: "relay", ...deviceState },
  }, (r) => records.push(r));
  const front = ScriptedPeer.connect(`${dir}/front.sock`);
  const back = backend.accept();
  const until = async (pred: (rs: LogRecord[]) => boolean, ms = 3000) => {
    const deadline = performance.now() + ms;
    while (!pred(records) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return {
    dir,
    proxy,
    backend,
    records,
    front,
    back,
    until,
    stop: async () => {
      front.close();
      back.close();
      await proxy.stop();
      backend.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** The message records only. */
export function messages(records: LogRecord[]): MessageRecord[] {
  return records.filter((r): r is MessageRecord => r.type === "message");
}

/**
 * Restarting a session's back-end under a running guest, with its state (issue 13): the proxy
 * does to the back-ends what QEMU does around a live migration, while QEMU, which cannot
 * reconnect a vhost-user-fs device, keeps its one connection to the proxy.
 *
 * 1. prepare (the guest runs on): connect the new back-end and replay the negotiation from the
 *    session model — features, protocol features, owner, a new back-end channel, the memory
 *    table from the proxy's own fd dups;
 * 2. pause: stop the old back-end's rings as QEMU does before a migration (SET_VRING_ENABLE 0,
 *    GET_VRING_BASE, keeping each base); SAVE its state through a pipe and CHECK it;
 * 3. LOAD the state into the new back-end and CHECK it; start its rings (num, addr, the saved
 *    base, kick/call/err fds, enable) and kick each once: the pause ends;
 * 4. swap: QEMU's messages go to the new back-end from now on; the old one is let go (virtiofsd
 *    exits when its connection closes).
 *
 * A step that fails returns the session to the old back-end, which is alive and still holds its
 * state: its rings are started again from the saved bases. Runs synchronously on the relay's
 * thread: QEMU's requests wait in its socket meanwhile (held, in order), and so do other
 * sessions' — the pause is measured and logged.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { createPipe, readFd, writeFd } from "../ffi/pipe.ts";
import { POLLIN, POLLOUT, PollSet, signalEventFd } from "../ffi/poll.ts";
import { connectUnix, socketPair } from "../ffi/socket.ts";
import { HEADER_SIZE } from "../protocol/codec.ts";
import { readPayload } from "../protocol/layouts.ts";
import { readU16At } from "../ffi/memory.ts";
import { SystemError } from "../ffi/errors.ts";
import { timestamp } from "../log/record.ts";
import type { RestartRecord, RestartStepRecord } from "../log/record.ts";
import type { Session } from "./session.ts";
import { RING_STEPS, type RingModel, type SessionModel } from "./session_model.ts";
import { LinkError, SyncLink, waitReady } from "./sync_link.ts";

/** What `ctl restart-backend` asks for. */
export interface RestartOptions {
  /** The new back-end's listening socket. */
  backend: string;
  /** Per-step bound (default 5000 ms). */
  stepTimeoutMs?: number;
  /**
   * How long to retry connecting while the new back-end's socket appears (default
   * {@linkcode CONNECT_RETRY_MS}): the retry runs on the relay's thread, where QEMU's messages and
   * the other sessions wait meanwhile, so it is short; start the new back-end first.
   */
  connectTimeoutMs?: number;
  /** Restart even without F_DEVICE_STATE, losing the back-end's state (emulation only). */
  allowStateless?: boolean;
}

/** What happened, for the caller and the log. */
export interface RestartResult {
  ok: boolean;
  session: number;
  backend: string;
  withState: boolean;
  /** From stopping the old back-end's rings to the new one's started: what the guest saw. */
  pauseMs: number;
  totalMs: number;
  stateBytes?: number;
  steps: { step: string; ms: number; ok: boolean; detail?: string }[];
  failedStep?: string;
  error?: string;
  /** What the failure left: "the old back-end serves on" or why it could not. */
  rolledBack?: string;
}

/** Default retry of the connect step (see `RestartOptions.connectTimeoutMs`). */
export const CONNECT_RETRY_MS = 250;
const STATE_LIMIT = 64 << 20;

/** Why a restart of this session cannot be done now, or undefined. */
export function restartBlocker(session: Session, allowStateless: boolean): string | undefined {
  const model = session.model;
  if (!model.keepsFds) {
    return "the proxy keeps no dups of the session's fds (start it with --control)";
  }
  if (session.ended) return "the session has ended";
  if (session.back === undefined) return "the back-end is not connected yet";
  if (!model.owner) return "the front-end has not set up the device yet (no SET_OWNER)";
  if (model.unsupported.size > 0) {
    return `the session uses what a restart cannot carry: ${[...model.unsupported].join(", ")}`;
  }
  const owed = session.owedReplies();
  if (owed.length > 0) return `QEMU awaits a reply to ${owed.join(", ")}; try again`;
  if (!model.hasProtocol("DEVICE_STATE") && !allowStateless) {
    return "the back-end did not negotiate F_DEVICE_STATE, so its state cannot be carried over " +
      "(with --device-state emulate the proxy restarts it without state: the guest's open files " +
      "then fail with EIO until it remounts)";
  }
  return undefined;
}

/** Restarts `session`'s back-end onto the one listening at `options.backend`. */
export function restartBackend(session: Session, options: RestartOptions): RestartResult {
  const t0 = performance.now();
  const model = session.model!;
  const stepTimeoutMs = options.stepTimeoutMs ?? 5000;
  const result: RestartResult = {
    ok: false,
    session: session.id,
    backend: options.backend,
    withState: model.hasProtocol("DEVICE_STATE"),
    pauseMs: 0,
    totalMs: 0,
    steps: [],
  };
  const blocker = restartBlocker(session, options.allowStateless ?? false);
  if (blocker !== undefined) {
    result.failedStep = "check";
    result.error = blocker;
    result.rolledBack = "nothing was changed";
    // Listed like any other attempt: an operator's refused restart shows in `ctl status` too.
    remember(model, result);
    return finish(session, result, t0);
  }

  const steps = stepper(session, result);
  const step = steps.run;

  let fresh: OwnedFd | undefined;
  let channelOurs: OwnedFd | undefined;
  let pauseStart: number | undefined;
  const oldSocket = session.back!.channel.socket;
  const old = new SyncLink(oldSocket, { dialect: model.dialect, timeoutMs: stepTimeoutMs });
  const ack = model.hasProtocol("REPLY_ACK");
  let blob: Uint8Array | undefined;
  /** A stop request reached the old back-end: the rollback must start it again. */
  let oldTouched = false;
  /** The old back-end's rings whose base it reported (stopped), in order. */
  const stopped: RingModel[] = [];
  let started: RingModel[] = [];
  let link: SyncLink | undefined;
  /** What the new back-end was told to start: it must stop before the old one resumes. */
  const startedNew: RingProgress = { kicked: [], enabled: [] };
  try {
    fresh = step(
      "connect",
      () => connectWithin(options.backend, options.connectTimeoutMs ?? CONNECT_RETRY_MS),
    );
    link = new SyncLink(fresh, { dialect: model.dialect, timeoutMs: stepTimeoutMs });
    channelOurs = step("negotiate", () => negotiate(link!, model, ack));
    step("memory table", () => replayMemory(link!, model, ack));

    // The old back-end must have nothing half-done in its socket: the relay reads whole frames.
    if (session.back!.channel.partialBytes > 0 || session.back!.channel.pendingOutput > 0) {
      throw new LinkError("check", "a message to or from the old back-end is in transit");
    }
    pauseStart = performance.now();
    started = model.orderedRings().filter((r) => r.started);
    step("stop old rings", () => {
      oldTouched = true;
      stopRings(old, model, started, ack, stopped);
    });
    if (result.withState) {
      blob = step("save", () => save(old, stepTimeoutMs));
      result.stateBytes = blob.length;
      step("load", () => load(link!, blob!, stepTimeoutMs));
    }
    step("start new rings", () => startRings(link!, model, started, ack, startedNew));
    const status = model.setup.get("SET_STATUS");
    if (status) step("status", () => link!.tell(status.bytes, status.fds, ack));
    result.pauseMs = round(performance.now() - pauseStart);
    step("swap", () => {
      session.swapBackend(fresh!, channelOurs);
      fresh = undefined;
      channelOurs = undefined;
    });
    kickAgainLater(session, started);
    result.ok = true;
    remember(model, result);
  } catch (e) {
    result.failedStep = steps.current;
    result.error = describe(e);
    if (pauseStart !== undefined) result.pauseMs = round(performance.now() - pauseStart);
    // Rings started on the new back-end may be running: stop them there before the old one
    // serves them again, and resume the old one where the new one stopped.
    const stoppedNew = link && startedNew.kicked.length + startedNew.enabled.length > 0
      ? stopNewRings(link, startedNew)
      : "";
    fresh?.close();
    channelOurs?.close();
    if (!oldTouched) {
      result.rolledBack = "the old back-end serves on (its rings were never stopped)";
    } else {
      try {
        // Only the rings that stopped are started again; every ring QEMU enabled is enabled
        // again (a stop that failed half-way may have disabled some).
        startRings(old, model, stopped, ack);
        result.rolledBack = stopped.length > 0
          ? "the old back-end serves on: its rings were started again from the saved bases"
          : "the old back-end serves on: its rings were enabled again (none had stopped)";
      } catch (r) {
        result.rolledBack = `rolling back to the old back-end failed too: ${describe(r)}`;
      }
      result.rolledBack += stoppedNew;
      if (pauseStart !== undefined) result.pauseMs = round(performance.now() - pauseStart);
    }
    remember(model, result);
  }
  return finish(session, result, t0);
}

/**
 * The back-end is gone (crashed, killed): connects the new one listening at `options.backend`
 * and replays the negotiation without state (`--restart-on-exit`). Each ring starts at the used
 * index the guest's memory holds, so requests the old back-end never completed are served again
 * by the new one. Its state is lost: for virtio-fs the guest's file operations fail (EIO) until
 * it remounts the share. If this fails too, the session ends: nothing is left to roll back to.
 */
export function reconnectBackend(session: Session, options: RestartOptions): RestartResult {
  const t0 = performance.now();
  const model = session.model;
  const result: RestartResult = {
    ok: false,
    session: session.id,
    backend: options.backend,
    withState: false,
    pauseMs: 0,
    totalMs: 0,
    steps: [],
  };
  if (!model.keepsFds || session.ended) {
    result.failedStep = "check";
    result.error = session.ended
      ? "the session has ended"
      : "the proxy keeps no dups of the session's fds (start it with --control)";
    return finish(session, result, t0);
  }
  if (!session.backendLost) session.dropBackend("the back-end process exited");
  const stepTimeoutMs = options.stepTimeoutMs ?? 5000;
  const ack = model.hasProtocol("REPLY_ACK");
  const steps = stepper(session, result);
  const step = steps.run;
  let fresh: OwnedFd | undefined;
  let channelOurs: OwnedFd | undefined;
  try {
    const started = model.orderedRings().filter((r) => r.started);
    step("ring bases from guest memory", () => {
      if (model.hasVirtio("VIRTIO_F_RING_PACKED")) {
        throw new LinkError("check", "packed rings: their position cannot be read back");
      }
      for (const r of started) r.base = usedIndex(model, r);
    });
    fresh = step(
      "connect",
      () => connectWithin(options.backend, options.connectTimeoutMs ?? CONNECT_RETRY_MS),
    );
    const link = new SyncLink(fresh, { dialect: model.dialect, timeoutMs: stepTimeoutMs });
    channelOurs = step("negotiate", () => negotiate(link, model, ack));
    step("memory table", () => replayMemory(link, model, ack));
    step("start new rings", () => startRings(link, model, started, ack));
    const status = model.setup.get("SET_STATUS");
    if (status) step("status", () => link.tell(status.bytes, status.fds, ack));
    step("swap", () => {
      session.swapBackend(fresh!, channelOurs);
      fresh = undefined;
      channelOurs = undefined;
    });
    kickAgainLater(session, started);
    result.ok = true;
    remember(model, result);
    session.emit({
      type: "warning",
      ts: timestamp(),
      session: session.id,
      message: "the back-end was replaced after it went away, WITHOUT its state: for virtio-fs " +
        "the guest's file operations fail (EIO) until it remounts the share",
    });
  } catch (e) {
    result.failedStep = steps.current;
    result.error = describe(e);
    fresh?.close();
    channelOurs?.close();
    result.rolledBack = "nothing to roll back to (the old back-end is gone): the session ends";
    finish(session, result, t0);
    session.end(
      `the back-end is gone and a new one could not be connected (${steps.current}: ${result.error})`,
      "back-end",
      "error",
    );
    return result;
  }
  return finish(session, result, t0);
}

/** The used index of a split ring, read from the guest's memory through the proxy's fd dup. */
function usedIndex(model: SessionModel, ring: RingModel): number {
  const addr = ring.frames.SET_VRING_ADDR;
  if (!addr) throw new LinkError("check", `ring ${ring.index} has no SET_VRING_ADDR`);
  const used = readPayload("vring_addr", addr.bytes.subarray(HEADER_SIZE)).usedUserAddr;
  const region = model.regionOf(used);
  if (!region) {
    throw new LinkError("check", `ring ${ring.index}'s used ring is in no known memory region`);
  }
  // struct vring_used { le16 flags; le16 idx; … }
  return readU16At(region.fd.fd, region.offset + 2n);
}

function finish(session: Session, result: RestartResult, t0: number): RestartResult {
  result.totalMs = round(performance.now() - t0);
  const r: RestartRecord = {
    type: "restart",
    event: "done",
    ts: timestamp(),
    session: session.id,
    ok: result.ok,
    backend: result.backend,
    withState: result.withState,
    pauseMs: result.pauseMs,
    totalMs: result.totalMs,
    ...(result.stateBytes === undefined ? {} : { stateBytes: result.stateBytes }),
    ...(result.failedStep === undefined ? {} : { failedStep: result.failedStep }),
    ...(result.error === undefined ? {} : { error: result.error }),
    ...(result.rolledBack === undefined ? {} : { rolledBack: result.rolledBack }),
  };
  session.emit(r);
  if (!result.ok) {
    session.emit({
      type: "error",
      ts: timestamp(),
      session: session.id,
      message: `restart-backend failed at "${result.failedStep}": ${result.error}; ${
        result.rolledBack ?? ""
      }`,
    });
  }
  return result;
}

/**
 * Runs the named steps of one restart: each is logged with its time (and why it failed), and
 * `current` names the step that is running, or was when one threw.
 */
function stepper(session: Session, result: RestartResult) {
  const steps = {
    current: "connect",
    run<T>(name: string, fn: () => T): T {
      steps.current = name;
      const since = performance.now();
      try {
        const v = fn();
        record(session, result, name, since, true);
        return v;
      } catch (e) {
        record(session, result, name, since, false, describe(e));
        throw e;
      }
    },
  };
  return steps;
}

/** Adds the restart `result` describes to the session's list (`ctl status`). */
function remember(model: SessionModel, result: RestartResult): void {
  model.restarts.push({
    ts: timestamp(),
    ok: result.ok,
    pauseMs: result.pauseMs,
    backend: result.backend,
    withState: result.withState,
    ...(result.failedStep === undefined ? {} : { failedStep: result.failedStep }),
  });
}

function record(
  session: Session,
  result: RestartResult,
  step: string,
  since: number,
  ok: boolean,
  detail?: string,
): void {
  const ms = round(performance.now() - since);
  result.steps.push({ step, ms, ok, ...(detail === undefined ? {} : { detail }) });
  const r: RestartStepRecord = {
    type: "restart",
    event: "step",
    ts: timestamp(),
    session: session.id,
    step,
    ms,
    ok,
    ...(detail === undefined ? {} : { detail }),
  };
  session.emit(r);
}

function connectWithin(path: string, timeoutMs: number): OwnedFd {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      const s = connectUnix(path);
      s.setNonBlocking(true);
      return s;
    } catch (e) {
      const retry = e instanceof SystemError &&
        (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EAGAIN");
      if (!retry || performance.now() > deadline) {
        throw new LinkError("connect", `cannot connect to "${path}": ${describe(e)}`);
      }
      new PollSet().wait(20);
    }
  }
}

/**
 * The negotiation QEMU did, replayed: GET_FEATURES and GET_PROTOCOL_FEATURES (the new back-end
 * must offer at least what was acked), SET_PROTOCOL_FEATURES, SET_OWNER, a new back-end channel
 * (its other end is returned), SET_FEATURES.
 */
function negotiate(link: SyncLink, model: SessionModel, ack: boolean): OwnedFd | undefined {
  const offered = readPayload("virtio_features", link.ask(link.frame("GET_FEATURES")).payload)
    .features;
  const missing = model.virtioAcked & ~offered;
  if (missing !== 0n) {
    throw new LinkError(
      "GET_FEATURES",
      `the new back-end lacks acked features 0x${missing.toString(16)}`,
    );
  }
  const protocolFrame = model.setup.get("SET_PROTOCOL_FEATURES");
  if (protocolFrame) {
    const p = readPayload(
      "protocol_features",
      link.ask(link.frame("GET_PROTOCOL_FEATURES")).payload,
    ).features;
    const lacking = model.protocolAcked & ~p;
    if (lacking !== 0n) {
      throw new LinkError(
        "GET_PROTOCOL_FEATURES",
        `the new back-end lacks acked protocol features 0x${lacking.toString(16)}`,
      );
    }
    link.send(protocolFrame.bytes);
  }
  link.tell(link.frame("SET_OWNER"), [], ack);
  let ours: OwnedFd | undefined;
  if (model.backendChannel) {
    const [mine, theirs] = socketPair();
    try {
      link.tell(link.frame("SET_BACKEND_REQ_FD"), [theirs], ack);
    } catch (e) {
      mine.close();
      throw e;
    } finally {
      theirs.close();
    }
    ours = mine;
  }
  const features = model.setup.get("SET_FEATURES");
  try {
    if (features) link.tell(features.bytes, [], ack);
  } catch (e) {
    ours?.close();
    throw e;
  }
  return ours;
}

function replayMemory(link: SyncLink, model: SessionModel, ack: boolean): void {
  if (model.memTable) link.tell(model.memTable.bytes, model.memTable.fds, ack);
  if (model.addedRegions.size > 0) {
    // QEMU asks before adding regions; the back-end may size its table from it.
    closeAll(link.ask(link.frame("GET_MAX_MEM_SLOTS")).fds);
    for (const r of model.addedRegions.values()) link.tell(r.bytes, r.fds, ack);
  }
}

/**
 * As QEMU's vhost_dev_stop: disable every enabled ring, then stop each started one; each ring
 * whose base the back-end reported is added to `stopped`.
 */
function stopRings(
  link: SyncLink,
  model: SessionModel,
  started: RingModel[],
  ack: boolean,
  stopped: RingModel[],
) {
  for (const r of model.orderedRings()) {
    if (!r.enabled) continue;
    link.tell(
      link.frame("SET_VRING_ENABLE", { layout: "vring_state", index: r.index, num: 0 }),
      [],
      ack,
    );
  }
  for (const r of started) {
    const reply = link.ask(
      link.frame("GET_VRING_BASE", { layout: "vring_state", index: r.index, num: 0 }),
    );
    closeAll(reply.fds);
    const state = readPayload("vring_state", reply.payload);
    if (state.index !== r.index) {
      throw new LinkError("GET_VRING_BASE", `answered for ring ${state.index}`);
    }
    r.base = state.num;
    stopped.push(r);
  }
}

/**
 * Starts `rings` as QEMU's vhost_dev_start does: num, addr, the saved base, kick, call, err,
 * then enable; then kicks each once, so requests the guest queued meanwhile are seen.
 */
function startRings(
  link: SyncLink,
  model: SessionModel,
  rings: RingModel[],
  ack: boolean,
  progress?: RingProgress,
): void {
  for (const r of rings) {
    for (const name of RING_STEPS) {
      // A kick fd sent starts the ring, even if the back-end then answers a failure.
      if (name === "SET_VRING_KICK" && r.frames[name]) progress?.kicked.push(r);
      if (name === "SET_VRING_BASE") {
        if (r.base === undefined) continue;
        link.tell(
          link.frame("SET_VRING_BASE", { layout: "vring_state", index: r.index, num: r.base }),
          [],
          ack,
        );
        continue;
      }
      const f = r.frames[name];
      if (f) link.tell(f.bytes, f.fds, ack);
    }
  }
  for (const r of model.orderedRings()) {
    if (!r.enabled) continue;
    progress?.enabled.push(r);
    link.tell(
      link.frame("SET_VRING_ENABLE", { layout: "vring_state", index: r.index, num: 1 }),
      [],
      ack,
    );
  }
  for (const r of rings) {
    const kick = r.frames.SET_VRING_KICK?.fds[0];
    if (kick) signalEventFd(kick);
    r.started = true;
  }
}

/** The rings a back-end was told to start (kick fd sent) and to enable, in order. */
interface RingProgress {
  kicked: RingModel[];
  enabled: RingModel[];
}

/**
 * A rollback after the new back-end's rings were started: disables and stops them there, as
 * QEMU's vhost_dev_stop would, so that it processes nothing more while the old one resumes.
 * Where the new one got further than the saved base it had taken requests from the guest:
 * the old one resumes at its base (so that none is served twice) and the note says so.
 * Returns that note for the rollback line ("" when nothing moved). The disables ask for no
 * ack: a back-end that refused to enable a ring may refuse this too, and GET_VRING_BASE is what
 * stops a ring.
 */
function stopNewRings(link: SyncLink, progress: RingProgress): string {
  const moved: string[] = [];
  try {
    for (const r of progress.enabled) {
      link.send(link.frame("SET_VRING_ENABLE", { layout: "vring_state", index: r.index, num: 0 }));
    }
    for (const r of progress.kicked) {
      const reply = link.ask(
        link.frame("GET_VRING_BASE", { layout: "vring_state", index: r.index, num: 0 }),
      );
      closeAll(reply.fds);
      const state = readPayload("vring_state", reply.payload);
      if (state.index !== r.index) {
        throw new LinkError("GET_VRING_BASE", `answered for ring ${state.index}`);
      }
      const base = state.num;
      if (base !== r.base) moved.push(`ring ${r.index} from ${r.base} to ${base}`);
      r.base = base;
    }
  } catch (e) {
    return `; the new back-end's rings could not be stopped before it was let go: ${describe(e)}`;
  }
  return moved.length === 0
    ? ""
    : `; the new back-end had served requests (${
      moved.join(", ")
    }): the old one resumes there without the state they changed`;
}

/** After a swap, when the rings are kicked again (ms): until the old back-end is surely gone. */
const LATE_KICKS_MS = [20, 100, 500, 2000];

/**
 * Kicks the new back-end's rings again a few times after the swap. The old back-end holds the
 * same kick eventfds until its process has exited; a kick the guest gave in that window may be
 * read (consumed) by it and never seen by the new one, and with EVENT_IDX the guest does not kick
 * again until that request completes: an idle guest's next file operation hung (seen once in 5
 * runs of the drop-in restart). A spurious kick only makes the back-end look at the ring.
 */
function kickAgainLater(session: Session, rings: RingModel[]): void {
  for (const ms of LATE_KICKS_MS) {
    session.reactor.setTimer(ms, () => {
      if (session.ended) return;
      for (const r of rings) {
        const kick = r.frames.SET_VRING_KICK?.fds[0];
        if (kick?.isOpen) signalEventFd(kick);
      }
    });
  }
}

/**
 * SET_DEVICE_STATE_FD(`direction`) with one end of a proxy pipe; returns the fd the proxy then
 * reads (SAVE) or writes (LOAD): the pipe's other end, or the back-end's own fd when it answers
 * with one. A refusal throws with the back-end's error code.
 */
function openStateChannel(link: SyncLink, direction: "SAVE" | "LOAD"): OwnedFd {
  const [r, w] = createPipe();
  const [theirs, ours] = direction === "SAVE" ? [w, r] : [r, w];
  try {
    const reply = link.ask(
      link.frame("SET_DEVICE_STATE_FD", {
        layout: "device_state_params",
        direction: direction === "SAVE" ? 0 : 1,
        phase: 0,
      }),
      [theirs],
    );
    const result = readPayload("device_state_result", reply.payload);
    if (result.error !== 0) {
      closeAll(reply.fds);
      throw new LinkError(
        "SET_DEVICE_STATE_FD",
        `the back-end refused ${direction} (error ${result.error})`,
      );
    }
    if (!result.noFd && reply.fds.length === 1) {
      ours.close();
      return reply.fds[0];
    }
    closeAll(reply.fds);
    return ours;
  } catch (e) {
    ours.close();
    throw e;
  } finally {
    theirs.close();
  }
}

/** SAVE through a proxy pipe (or the back-end's own fd), to EOF, then CHECK. */
function save(link: SyncLink, timeoutMs: number): Uint8Array {
  const reader = openStateChannel(link, "SAVE");
  try {
    const blob = readToEnd(reader, timeoutMs);
    check(link);
    return blob;
  } finally {
    reader.close();
  }
}

/** LOAD through a proxy pipe (or the back-end's own fd), then CHECK. */
function load(link: SyncLink, blob: Uint8Array, timeoutMs: number): void {
  const writer = openStateChannel(link, "LOAD");
  try {
    writeAllWithin(writer, blob, timeoutMs);
  } finally {
    writer.close();
  }
  check(link);
}

function check(link: SyncLink): void {
  const result = readPayload("result", link.ask(link.frame("CHECK_DEVICE_STATE")).payload).value;
  if (result !== 0n) {
    throw new LinkError("CHECK_DEVICE_STATE", `the back-end reports failure (${result})`);
  }
}

function readToEnd(fd: OwnedFd, timeoutMs: number): Uint8Array {
  fd.setNonBlocking(true);
  const deadline = performance.now() + timeoutMs;
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(new ArrayBuffer(1 << 16));
  for (;;) {
    const n = readFd(fd, buf);
    if (n === 0) break;
    if (n > 0) {
      chunks.push(buf.slice(0, n));
      total += n;
      if (total > STATE_LIMIT) {
        throw new LinkError("SAVE", `the state exceeds ${STATE_LIMIT} bytes`);
      }
      continue;
    }
    if (!waitReady(fd, POLLIN, deadline)) {
      throw new LinkError("SAVE", `the state did not end within ${timeoutMs} ms`);
    }
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function writeAllWithin(fd: OwnedFd, data: Uint8Array, timeoutMs: number): void {
  fd.setNonBlocking(true);
  const deadline = performance.now() + timeoutMs;
  let off = 0;
  while (off < data.length) {
    const n = writeFd(fd, data, off);
    if (n > 0) {
      off += n;
      continue;
    }
    if (!waitReady(fd, POLLOUT, deadline)) {
      throw new LinkError("LOAD", `the back-end did not take the state in ${timeoutMs} ms`);
    }
  }
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

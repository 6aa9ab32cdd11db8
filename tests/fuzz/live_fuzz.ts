/**
 * A time-bounded fuzz of the live relay: random well-formed traffic from all four sockets of a
 * session (QEMU and the back-end, main and back-end channel), a share of it mutated, through
 * the proxy run as a subprocess. After every message the outcome is judged:
 *
 * - relayed: it must arrive byte for byte with its fds, and the strict oracle (`_oracle.ts`)
 *   must accept it — nothing a strict peer rejects may be forwarded;
 * - rejected: only a mutated message may end a session, within 2 s, both sides closed, with
 *   an error record naming the sender's side;
 * - neither within 2 s: a hang;
 *
 * and after every case: the proxy alive, its fds back to the baseline, a canary session opened
 * at the start still served, its memory bounded. Each case has its own seed, derived from the
 * run's seed and the case index, so `--seed S --case N` replays one case.
 *
 * @module
 */

import { closeAll } from "../../ffi/fd.ts";
import { SystemError } from "../../ffi/errors.ts";
import type { LogRecord, ProblemRecord, SessionEndRecord } from "../../log/record.ts";
import type { ScriptedPeer } from "../support/scripted_peer.ts";
import { drain, ProxyProcess, type Session, tryRecv } from "../hostile/_rig.ts";
import { frame, makeFds, PF, Prng, sendmsgFds, sleepSync } from "../hostile/_wire.ts";
import {
  backendRequest,
  frontRequest,
  type Msg,
  mutate,
  type Mutation,
  MUTATIONS,
  replyTo,
  type Wire,
  wireOf,
} from "./_gen.ts";
import { type Channel, judge, Model } from "./_oracle.ts";

/** Options of a run. */
export interface FuzzOptions {
  /** Stop starting cases after this long. */
  seconds: number;
  seed: number;
  /** Replay only this case index. */
  only?: number;
  /** Share of messages mutated. */
  mutationRate?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A failure with what reproduces it. */
export interface Failure {
  caseIndex: number;
  what: string;
  /** The case's actions up to the failure. */
  script: string[];
}

/** What a run did. */
export interface FuzzReport {
  seed: number;
  cases: number;
  messages: number;
  mutated: number;
  /** Per mutation: relayed (legal after all, or relayed by policy) / rejected (session ended). */
  outcomes: Record<string, { relayed: number; rejected: number }>;
  truncations: number;
  failures: Failure[];
  peakRssKiB: number;
  elapsedMs: number;
}

type PeerName = "front" | "back" | "qemuCh" | "backCh";
const SIDE = {
  front: "front-end",
  back: "back-end",
  qemuCh: "front-end",
  backCh: "back-end",
} as const;
const OPPOSITE = { front: "back", back: "front", qemuCh: "backCh", backCh: "qemuCh" } as const;
const CHANNEL: Record<PeerName, Channel> = {
  front: "main",
  back: "main",
  qemuCh: "backend",
  backCh: "backend",
};
/** Whether the peer sends requests on its channel. */
const REQUESTER: Record<PeerName, boolean> = {
  front: true,
  back: false,
  qemuCh: false,
  backCh: true,
};

const RSS_LIMIT_KIB = 200 * 1024;
const CLOSE_WITHIN_MS = 2000;

/** A case-level failure: stops the case, gets recorded. */
class CaseFailure extends Error {}

/** The seed of case `index` in a run seeded `seed`. */
export function caseSeed(seed: number, index: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(index + 1, 0x85ebca6b)) >>> 0;
}

function peer(s: Session, name: PeerName): ScriptedPeer {
  return { front: s.front, back: s.back, qemuCh: s.qemuCh!, backCh: s.backCh! }[name];
}

/** Puts a wire form on a socket; a hung-up proxy just ends the sending. */
function send(p: ScriptedPeer, w: Wire): void {
  const fds = makeFds(w.fds, w.fdKind);
  const raw = fds.map((f) => f.fd);
  const write = (bytes: Uint8Array, withFds: number[]) => {
    let off = 0;
    while (off < bytes.length) {
      off += sendmsgFds(p.fd, bytes.subarray(off), off === 0 ? withFds : []);
    }
  };
  try {
    if (w.split !== undefined) {
      write(w.bytes.subarray(0, w.split), w.lateFds ? [] : raw);
      sleepSync(1);
      write(w.bytes.subarray(w.split), w.lateFds ? raw : []);
    } else {
      write(w.bytes, raw);
    }
  } catch (e) {
    if (!(e instanceof SystemError && e.isDisconnect)) throw e;
  } finally {
    closeAll(fds);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** One fuzz run against a fresh proxy subprocess. */
export async function runLiveFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const log = options.log ?? (() => {});
  const rate = options.mutationRate ?? 0.2;
  const report: FuzzReport = {
    seed: options.seed,
    cases: 0,
    messages: 0,
    mutated: 0,
    outcomes: Object.fromEntries(MUTATIONS.map((m) => [m, { relayed: 0, rejected: 0 }])),
    truncations: 0,
    failures: [],
    peakRssKiB: 0,
    elapsedMs: 0,
  };
  const t0 = performance.now();
  const proxy = await ProxyProcess.start();
  try {
    proxy.proveServing();
    // A session that stays open through the whole run: violations elsewhere must not touch it.
    const canary = proxy.open();
    canary.roundTrip();
    const baseline = proxy.settleFds(0, 300);
    const deadline = t0 + options.seconds * 1000;
    const first = options.only ?? 0;
    for (
      let index = first;
      options.only === undefined ? performance.now() < deadline : index === first;
      index++
    ) {
      const script: string[] = [];
      try {
        runCase(proxy, new Prng(caseSeed(options.seed, index)), rate, report, script);
      } catch (e) {
        const what = e instanceof CaseFailure
          ? e.message
          : `test error: ${e instanceof Error ? e.stack : e}`;
        report.failures.push({ caseIndex: index, what, script });
        log(`FAIL case ${index}: ${what}\n  ${script.join("\n  ")}`);
      }
      report.cases++;
      // The proxy's health after each case.
      const health = checkHealth(proxy, baseline, canary, index);
      if (health) {
        report.failures.push({ caseIndex: index, what: health, script });
        log(`FAIL after case ${index}: ${health}`);
        if (!proxy.alive) break;
      }
      if (index % 20 === 0) {
        report.peakRssKiB = Math.max(report.peakRssKiB, proxy.memory().rssKiB);
        if (index % 200 === 0) {
          log(
            `${report.cases} cases, ${report.messages} messages, ${report.failures.length} failures`,
          );
        }
      }
    }
    report.peakRssKiB = Math.max(report.peakRssKiB, proxy.memory().hwmKiB);
    if (report.peakRssKiB > RSS_LIMIT_KIB) {
      report.failures.push({
        caseIndex: -1,
        what: `proxy VmHWM ${report.peakRssKiB} KiB`,
        script: [],
      });
    }
    canary.close();
  } finally {
    await proxy.stop();
  }
  report.elapsedMs = Math.round(performance.now() - t0);
  return report;
}

function checkHealth(
  proxy: ProxyProcess,
  baseline: number,
  canary: Session,
  index: number,
): string | undefined {
  if (!proxy.alive) return `the proxy died: ${proxy.stderr}`;
  const fds = proxy.settleFds(baseline);
  if (fds > baseline) {
    return `fd count ${fds} > baseline ${baseline}:\n${proxy.fdList().join("\n")}`;
  }
  if (index % 10 === 0) {
    try {
      canary.roundTrip();
    } catch (e) {
      return `the canary session stopped working: ${e instanceof Error ? e.message : e}`;
    }
  }
  return undefined;
}

/** One session: set-up, then random actions until a rejection, a close, or the step budget. */
function runCase(
  proxy: ProxyProcess,
  rng: Prng,
  rate: number,
  report: FuzzReport,
  script: string[],
): void {
  const logFrom = proxy.log.records.length;
  const s = proxy.open();
  try {
    const setup = rng.pick(["fresh", "ack", "channel", "channel"] as const);
    const replyAck = setup !== "fresh";
    if (setup === "ack") s.negotiate(PF.REPLY_ACK | PF.MQ | PF.STATUS | PF.CONFIGURE_MEM_SLOTS);
    if (setup === "channel") s.withChannel(PF.MQ | PF.STATUS | PF.CONFIGURE_MEM_SLOTS);
    script.push(`session ${s.id}, set-up ${setup}`);
    const model = new Model(replyAck);
    const steps = rng.int(1, 30);
    for (let step = 0; step < steps; step++) {
      const done = act(proxy, s, rng, rate, model, report, script, logFrom);
      if (done) return;
    }
  } finally {
    s.close();
  }
}

/** Chooses and performs one action; returns true when the session is over. */
function act(
  proxy: ProxyProcess,
  s: Session,
  rng: Prng,
  rate: number,
  model: Model,
  report: FuzzReport,
  script: string[],
  logFrom: number,
): boolean {
  // Who acts: requesters any time, repliers when something awaits their reply.
  const choices: PeerName[] = ["front", "front", "front"];
  if (model.owed("main").length > 0) choices.push("back", "back", "back");
  if (s.backCh) {
    choices.push("backCh", "backCh");
    if (model.owed("backend").length > 0) choices.push("qemuCh", "qemuCh");
  }
  const by = rng.pick(choices);
  const channel = CHANNEL[by];

  if (rng.chance(0.01)) {
    return vanish(
      proxy,
      s,
      by,
      { bytes: new Uint8Array(0), fds: 0, fdKind: "eventfd" },
      report,
      script,
      logFrom,
      "vanishes",
    );
  }

  let m: Msg;
  if (by === "front") m = frontRequest(rng, model.replyAck);
  else if (by === "backCh") m = backendRequest(rng);
  else m = replyTo(rng, channel, model.owed(channel)[0]);

  const mutation: Mutation | undefined = rng.chance(rate) ? rng.pick(MUTATIONS) : undefined;
  const wire = mutation ? mutate(rng, channel, m, mutation) : wireOf(rng, m);
  report.messages++;
  if (mutation) report.mutated++;
  script.push(
    `${by}: request ${m.request} flags 0x${
      m.flags.toString(16)
    } size ${m.payload.length} fds ${wire.fds}` +
      (mutation ? ` [${mutation}]` : "") +
      (wire.split !== undefined ? ` split@${wire.split}${wire.lateFds ? " late fds" : ""}` : ""),
  );

  if (wire.truncated) return vanish(proxy, s, by, wire, report, script, logFrom, mutation!);

  send(peer(s, by), wire);
  const to = peer(s, OPPOSITE[by]);
  const got = tryRecv(to, CLOSE_WITHIN_MS);
  if (got === undefined) {
    throw new CaseFailure(
      `${by}'s message was neither relayed nor rejected within ${CLOSE_WITHIN_MS} ms`,
    );
  }
  if (got !== "eof") {
    closeAll(got.fds);
    if (
      !sameBytes(frame(got.request, got.flags, got.payload), wire.bytes) ||
      got.fds.length !== wire.fds
    ) {
      throw new CaseFailure(
        `${by}'s message was altered on the way (${got.fds.length} fds arrived)`,
      );
    }
    const seen = {
      request: got.request,
      flags: got.flags,
      payload: got.payload,
      fdCount: got.fds.length,
    };
    const fault = judge(model, channel, seen, REQUESTER[by]);
    if (fault) throw new CaseFailure(`the proxy forwarded what a strict peer rejects: ${fault}`);
    model.delivered(channel, seen, !REQUESTER[by]);
    if (mutation) report.outcomes[mutation].relayed++;
    return false;
  }
  // The proxy ended the session: only a mutated message may do that, and it must say why.
  const err = proxy.log.waitFor(
    (r: LogRecord): r is ProblemRecord => r.type === "error" && r.session === s.id,
    CLOSE_WITHIN_MS,
    logFrom,
  );
  if (!mutation) {
    throw new CaseFailure(
      `a well-formed message ended the session: ${err?.message ?? "no error logged"}`,
    );
  }
  if (!err || err.side !== SIDE[by]) {
    throw new CaseFailure(
      `session closed without an error naming the ${SIDE[by]}: ${JSON.stringify(err)}`,
    );
  }
  allClosed(s, by);
  report.outcomes[mutation].rejected++;
  return true;
}

/** Every other socket of the session sees EOF within the bound. */
function allClosed(s: Session, except: PeerName): void {
  const t0 = performance.now();
  for (const name of ["front", "back", "qemuCh", "backCh"] as const) {
    if (name === except || (name !== "front" && name !== "back" && !s.backCh)) continue;
    const left = Math.max(0, CLOSE_WITHIN_MS - (performance.now() - t0));
    if (!drain(peer(s, name), left).eof) {
      throw new CaseFailure(`the proxy did not close ${name} within ${CLOSE_WITHIN_MS} ms`);
    }
  }
}

/**
 * A peer sends a prefix (maybe nothing, maybe garbage) and closes. A main-channel peer takes
 * the session with it, the other side closed promptly and the log naming who closed; a
 * back-end-channel peer loses the channel (or, if its prefix already broke a rule, the
 * session).
 */
function vanish(
  proxy: ProxyProcess,
  s: Session,
  by: PeerName,
  wire: Wire,
  report: FuzzReport,
  script: string[],
  logFrom: number,
  label: string,
): boolean {
  report.truncations++;
  script.push(`${by} sends ${wire.bytes.length} bytes and closes (${label})`);
  const p = peer(s, by);
  send(p, wire);
  p.close();
  if (CHANNEL[by] === "main") {
    allClosed(s, by);
    const end = proxy.log.waitFor(
      (r: LogRecord): r is SessionEndRecord => r.type === "session-end" && r.session === s.id,
      CLOSE_WITHIN_MS,
      logFrom,
    );
    if (!end || (end.violationBy ?? end.closedBy) !== SIDE[by]) {
      throw new CaseFailure(
        `session-end does not say the ${SIDE[by]} closed: ${JSON.stringify(end)}`,
      );
    }
  } else if (!drain(peer(s, OPPOSITE[by]), CLOSE_WITHIN_MS).eof) {
    throw new CaseFailure(`the other end of the back-end channel was not closed`);
  }
  if (label in report.outcomes) report.outcomes[label].rejected++;
  return true;
}

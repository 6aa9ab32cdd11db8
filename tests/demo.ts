/**
 * `deno task demo` (what `bash scripts/demo.sh` runs): the proxy's main job, end to end, with
 * the real QEMU 10, virtiofsd 1.13 and a Linux guest.
 *
 * - default: a live migration of a guest with open files through two proxies, its device state
 *   decoded, then a failed migration rehearsed with `--fault state-corrupt` and explained from
 *   the logs (`tests/demo/migration.ts`);
 * - `--single`: one guest on virtio-fs through one proxy and its decoded conversation
 *   (`tests/demo/single_guest.ts`).
 *
 * Every step is checked. Exit status: 0 on success, 1 with a `demo FAILED: …` line (and where
 * the logs are) on any failure, 2 on a usage error, 130 on Ctrl-C. Every process it started is
 * stopped in all cases; the logs stay in out/demo/.
 *
 * @module
 */

import { tail } from "./harness/mod.ts";
import { type DemoContext, OUT_DIR } from "./demo/_output.ts";
import { migrationDemo } from "./demo/migration.ts";
import { singleGuestDemo } from "./demo/single_guest.ts";

const USAGE = "usage: bash scripts/demo.sh [--single]";

/**
 * SIGKILLs any child process still alive (one spawned a moment before Ctrl-C, not yet
 * registered for cleanup). Only this process's own children, by pid.
 */
function killLeftoverChildren(): void {
  for (const task of Deno.readDirSync("/proc/self/task")) {
    const children = Deno.readTextFileSync(`/proc/self/task/${task.name}/children`);
    for (const pid of children.trim().split(/\s+/).filter(Boolean)) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // exited meanwhile
      }
    }
  }
}

if (import.meta.main) {
  const args = Deno.args.filter((arg) => arg !== "--");
  if (args.length > 1 || (args.length === 1 && args[0] !== "--single")) {
    console.error(`demo: unknown arguments ${JSON.stringify(args.join(" "))}\n${USAGE}`);
    Deno.exit(2);
  }
  const demo = args[0] === "--single" ? singleGuestDemo : migrationDemo;
  const failureContext: (() => Promise<string>)[] = [];
  const ctx: DemoContext = {
    stack: new AsyncDisposableStack(),
    onFailure: (describe) => failureContext.push(describe),
  };
  // One clean-up for both ways out (the end of the demo and Ctrl-C), awaited by both: exiting
  // while the other one is still stopping processes would leave them behind.
  let cleaning: Promise<void> | undefined;
  const cleanUp = () => cleaning ??= ctx.stack.disposeAsync().finally(killLeftoverChildren);
  let interrupted = false;
  Deno.addSignalListener("SIGINT", async () => {
    interrupted = true;
    console.error("\ninterrupted: stopping QEMU, the proxies and virtiofsd …");
    await cleanUp();
    Deno.exit(130);
  });
  const startedAt = Date.now();
  const seconds = () => ((Date.now() - startedAt) / 1000).toFixed(1);
  let code = 0;
  try {
    // A fresh directory: the peers' logs are appended to, and old runs would mix in.
    await Deno.remove(OUT_DIR, { recursive: true }).catch(() => {});
    await Deno.mkdir(OUT_DIR, { recursive: true });
    await demo(ctx);
  } catch (error) {
    code = 1;
    if (!interrupted) {
      const message = error instanceof Error ? error.message : String(error);
      const failedAt = seconds();
      // The peers' side of the story first, so that the verdict is the last thing on screen.
      const contexts = [];
      for (const describe of failureContext) contexts.push(await describe().catch(() => ""));
      const context = contexts.filter((text) => text.trim()).join("\n");
      if (context) console.error(`\nwhat the peers logged:\n${tail(context, 60)}`);
      console.error(`\ndemo FAILED after ${failedAt} s: ${message}`);
    }
  } finally {
    await cleanUp();
  }
  if (code === 0) console.log(`\ndemo: OK in ${seconds()} s (logs in ${OUT_DIR})`);
  else if (!interrupted) console.error(`logs: ${OUT_DIR}`);
  Deno.exit(interrupted ? 130 : code);
}

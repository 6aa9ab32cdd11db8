/**
 * The hostile-peer case table (`_cases.ts`) against the proxy run as a subprocess: one proxy
 * serves every case in turn, which is the point — each hostile session must end alone while
 * the proxy keeps serving, with its fds back to the baseline.
 */

import { CASES, type Group } from "./_cases.ts";
import { type CaseResult, runCase } from "./_run_case.ts";
import { ProxyProcess } from "./_rig.ts";

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };

Deno.test({
  name: "hostile peers: every case of the table, against one proxy subprocess",
  ...NO_SANITIZERS,
  fn: async (t) => {
    const proxy = await ProxyProcess.start();
    const results: { name: string; policy: string; ok: boolean; r?: CaseResult }[] = [];
    try {
      // Warm up (lazily opened files, code caches) before taking the fd baseline.
      proxy.proveServing();
      const baseline = proxy.settleFds(0, 300);
      const groups = [...new Set(CASES.map((c) => c.group))] as Group[];
      for (const group of groups) {
        await t.step({
          name: group,
          ...NO_SANITIZERS,
          fn: async (tg) => {
            for (const c of CASES.filter((x) => x.group === group)) {
              let r: CaseResult | undefined;
              const ok = await tg.step({
                name: c.name,
                ...NO_SANITIZERS,
                fn: () => void (r = runCase(proxy, c, baseline)),
              });
              results.push({ name: c.name, policy: c.expect.policy, ok, r });
            }
          },
        });
      }
    } finally {
      if (Deno.env.get("HOSTILE_SUMMARY")) {
        for (const x of results) {
          console.log(
            `${x.ok ? "PASS" : "FAIL"}\t${x.policy}\t${x.r?.closeMs ?? ""}\t${x.name}\t${
              x.r?.note ?? ""
            }`,
          );
        }
      }
      await proxy.stop();
    }
  },
});

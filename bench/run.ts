/**
 * Runs every benchmark in sequence, each in its own process, then prints one
 * summary of every target (PASS/MISS) from their JSON results, as a
 * Markdown table ready for docs/performance.md.
 *
 *     npm run bench                      # full run (about 15 minutes on 2 cores)
 *     npm run bench -- --smoke           # a few seconds each: proves they still work (CI)
 *     npm run bench -- --only=router     # some of them
 *     npm run bench -- --strict          # exit 1 when a target is missed
 *
 * Flags other than --only are passed on to every benchmark.
 *
 * @module
 */

import { fork } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  BENCH_DIR,
  fmt,
  listFlag,
  machineInfo,
  parseFlags,
  RESULTS_DIR,
  sourceInfo,
  type TargetResult,
} from "./lib/common.js";

/** The benchmarks, in the order they run. */
const BENCHMARKS = [
  "router",
  "http-overhead",
  "call-footprint",
  "proxy-hop",
  "failover",
  "consul",
  "kubernetes",
  "tls",
  "grpc",
] as const;

async function runOne(name: string, args: readonly string[]): Promise<number> {
  const child = fork(join(BENCH_DIR, `${name}.ts`), [...args], { stdio: "inherit" });
  const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
  return code ?? (signal ? 1 : 0);
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const only = listFlag(flags, "only", BENCHMARKS);
  const args = process.argv.slice(2).filter((a) => !a.startsWith("--only="));
  const started = Date.now();
  const failed: string[] = [];
  for (const name of BENCHMARKS) {
    if (!only.includes(name)) continue;
    console.log(`\n===== bench/${name}.ts ${args.join(" ")}`);
    // A benchmark that fails must not leave an older result to be summarised.
    rmSync(join(RESULTS_DIR, `${name}.json`), { force: true });
    const code = await runOne(name, args);
    if (code !== 0) failed.push(`${name} (exit ${code})`);
  }

  const m = machineInfo();
  console.log(
    `\n===== summary (${((Date.now() - started) / 1000).toFixed(0)} s${flags.smoke ? ", smoke pass" : ""})`,
  );
  const src = sourceInfo();
  console.log(
    `machine: ${m.nproc} × ${m.cpu}, ${m.memoryGiB} GiB, node ${m.node} (its bundled undici ${m.nodeUndici}), undici ${m.undici}`,
  );
  console.log(`source: ${src.commit}${src.srcDirty ? " with uncommitted changes in src/" : ""}\n`);
  if (flags.smoke)
    console.log("smoke pass: runs too short to judge; PASS/MISS means something only on a full run\n");
  console.log("| target | measured | limit | result |");
  console.log("| --- | ---: | ---: | --- |");
  for (const name of BENCHMARKS) {
    if (!only.includes(name)) continue;
    const file = join(RESULTS_DIR, `${name}.json`);
    if (!existsSync(file)) continue;
    const data = JSON.parse(readFileSync(file, "utf8")) as { targets?: TargetResult[]; skipped?: string };
    if (data.skipped) console.log(`| ${name}: skipped — ${data.skipped} | | | SKIP |`);
    for (const t of data.targets ?? []) {
      const decimals = t.unit === "x" ? 2 : t.unit === "µs" && Math.abs(t.value) < 10 ? 2 : 1;
      console.log(
        `| ${t.description} | ${fmt(t.value, decimals)} ${t.unit} | ${t.op} ${t.limit} ${t.unit} | ${t.pass ? "PASS" : "**MISS**"} |`,
      );
    }
  }
  if (failed.length > 0) {
    console.error(`\nfailed: ${failed.join(", ")}`);
    process.exitCode = 1;
  }
}

await main();

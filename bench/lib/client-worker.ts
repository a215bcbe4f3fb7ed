/**
 * A client process of the HTTP benchmarks: sets up one path (see
 * `paths.ts`), then, on request from the parent, drives it at a given
 * concurrency for a given time and reports requests per second, latency
 * percentiles and its own CPU per request (`process.cpuUsage`, every thread
 * of the process). Run by `procs.ts` with `fork`; speaks IPC only.
 *
 * @module
 */

import { gcFunction } from "./common.js";
import { type ClientSpec, type PathSetup, setupPath } from "./paths.js";
import { profile, summarize } from "./profile.js";

const gc = gcFunction();

/** One measured run. */
export interface RunStats {
  readonly requests: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly elapsedMs: number;
  readonly rps: number;
  /** Client CPU (user + system, every thread) per request, µs. */
  readonly cpuUs: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly meanUs: number;
}

/** What the parent asks for. */
export type ClientRequest =
  | { id: number; type: "setup"; spec: ClientSpec }
  | { id: number; type: "run"; concurrency: number; warmupMs: number; durationMs: number }
  | { id: number; type: "profile"; concurrency: number; durationMs: number; file: string; intervalUs: number }
  | { id: number; type: "close" };

const MAX_SAMPLES = 4_000_000;
const latencies = new Float64Array(MAX_SAMPLES);
let setup: PathSetup | undefined;

async function load(concurrency: number, durationMs: number, record: boolean) {
  const call = setup!.call;
  let count = 0;
  let errors = 0;
  let firstError: string | undefined;
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        await call();
      } catch (err) {
        errors++;
        firstError ??= String((err as Error)?.stack ?? err);
      }
      if (record && count < MAX_SAMPLES) latencies[count] = performance.now() - t0;
      count++;
    }
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { count, errors, firstError, elapsedMs, cpu };
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function run(concurrency: number, warmupMs: number, durationMs: number): Promise<RunStats> {
  // Warm up (connections, JIT), then start the window with an empty heap.
  if (warmupMs > 0) await load(concurrency, warmupMs, false);
  gc();
  const { count, errors, firstError, elapsedMs, cpu } = await load(concurrency, durationMs, true);
  const n = Math.min(count, MAX_SAMPLES);
  const sorted = latencies.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return {
    requests: count,
    errors,
    firstError,
    elapsedMs,
    rps: (count / elapsedMs) * 1000,
    cpuUs: count > 0 ? (cpu.user + cpu.system) / count : Number.NaN,
    p50Us: percentile(sorted, 0.5) * 1000,
    p90Us: percentile(sorted, 0.9) * 1000,
    p99Us: percentile(sorted, 0.99) * 1000,
    meanUs: n > 0 ? (sum / n) * 1000 : Number.NaN,
  };
}

async function handle(msg: ClientRequest): Promise<unknown> {
  switch (msg.type) {
    case "setup":
      setup = await setupPath(msg.spec);
      await setup.call(); // fail fast: the path works before anything is measured
      return { ok: true };
    case "run":
      return run(msg.concurrency, msg.warmupMs, msg.durationMs);
    case "profile": {
      await load(msg.concurrency, 500, false);
      gc();
      const { result, profile: p } = await profile(msg.file, msg.intervalUs, () =>
        load(msg.concurrency, msg.durationMs, false),
      );
      return summarize(p, result.count, msg.file);
    }
    case "close":
      await setup?.close();
      setImmediate(() => process.exit(0));
      return { ok: true };
  }
}

process.on("message", (msg: ClientRequest) => {
  handle(msg).then(
    (result) => process.send?.({ id: msg.id, result }),
    (err: unknown) => process.send?.({ id: msg.id, error: String((err as Error)?.stack ?? err) }),
  );
});
process.on("disconnect", () => process.exit(0));

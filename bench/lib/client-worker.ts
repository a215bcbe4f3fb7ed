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
  | { id: number; type: "series-start" }
  | { id: number; type: "block"; concurrency: number; durationMs: number; record: boolean }
  | { id: number; type: "series-end" }
  | { id: number; type: "profile"; concurrency: number; durationMs: number; file: string; intervalUs: number }
  | { id: number; type: "close" };

/** One block of a series, as the parent sees it. */
export interface BlockStats {
  readonly requests: number;
  readonly elapsedMs: number;
  /** Client CPU over the block, µs. */
  readonly cpuUs: number;
}

const MAX_SAMPLES = 4_000_000;
const latencies = new Float64Array(MAX_SAMPLES);
let setup: PathSetup | undefined;
/** Latency samples recorded so far: from 0 in a plain run, accumulated over a series' blocks. */
let recorded = 0;

/** A series of short blocks: totals accumulated over its measured blocks. */
const series = {
  requests: 0,
  errors: 0,
  firstError: undefined as string | undefined,
  elapsedMs: 0,
  cpuUs: 0,
};

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
      if (record && recorded < MAX_SAMPLES) latencies[recorded++] = performance.now() - t0;
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

function stats(
  count: number,
  errors: number,
  firstError: string | undefined,
  elapsedMs: number,
  cpuUs: number,
): RunStats {
  const n = recorded;
  const sorted = latencies.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return {
    requests: count,
    errors,
    firstError,
    elapsedMs,
    rps: (count / elapsedMs) * 1000,
    cpuUs: count > 0 ? cpuUs / count : Number.NaN,
    p50Us: percentile(sorted, 0.5) * 1000,
    p90Us: percentile(sorted, 0.9) * 1000,
    p99Us: percentile(sorted, 0.99) * 1000,
    meanUs: n > 0 ? (sum / n) * 1000 : Number.NaN,
  };
}

async function run(concurrency: number, warmupMs: number, durationMs: number): Promise<RunStats> {
  // Warm up (connections, JIT), then start the window with an empty heap.
  if (warmupMs > 0) await load(concurrency, warmupMs, false);
  gc();
  recorded = 0;
  const { count, errors, firstError, elapsedMs, cpu } = await load(concurrency, durationMs, true);
  return stats(count, errors, firstError, elapsedMs, cpu.user + cpu.system);
}

/**
 * One block of a series. No forced GC between blocks: the garbage a path
 * makes is paid for in its own blocks, as it would be in an application.
 */
async function block(concurrency: number, durationMs: number, record: boolean): Promise<BlockStats> {
  const { count, errors, firstError, elapsedMs, cpu } = await load(concurrency, durationMs, record);
  const cpuUs = cpu.user + cpu.system;
  if (record) {
    series.requests += count;
    series.errors += errors;
    series.firstError ??= firstError;
    series.elapsedMs += elapsedMs;
    series.cpuUs += cpuUs;
  } else if (errors > 0) {
    series.errors += errors;
    series.firstError ??= firstError;
  }
  return { requests: count, elapsedMs, cpuUs };
}

async function handle(msg: ClientRequest): Promise<unknown> {
  switch (msg.type) {
    case "setup":
      setup = await setupPath(msg.spec);
      await setup.call(); // fail fast: the path works before anything is measured
      return { ok: true };
    case "run":
      return run(msg.concurrency, msg.warmupMs, msg.durationMs);
    case "series-start":
      gc();
      recorded = 0;
      Object.assign(series, { requests: 0, errors: 0, firstError: undefined, elapsedMs: 0, cpuUs: 0 });
      return { ok: true };
    case "block":
      return block(msg.concurrency, msg.durationMs, msg.record);
    case "series-end":
      return stats(series.requests, series.errors, series.firstError, series.elapsedMs, series.cpuUs);
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

/**
 * A client process of the HTTP benchmarks: sets up one path (see
 * `paths.ts`), then, on request from the parent, drives it at a given
 * concurrency for a given time and reports requests per second, latency
 * percentiles and its own CPU per request (`process.cpuUsage`, every thread
 * of the process), with the main thread's share and the GC pauses apart.
 * Run by `procs.ts` with `fork`; speaks IPC only.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { GCProfiler } from "node:v8";
import { gcFunction } from "./common.js";
import { type ClientSpec, type PathSetup, setupPath } from "./paths.js";
import { Profiling, summarize } from "./profile.js";

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
  /** The main thread's share of it (JavaScript, the event loop), µs; NaN without /proc. */
  readonly mainCpuUs: number;
  /** GC pauses of the main thread per request, µs (scavenges, mark-compact finalisation). */
  readonly gcPauseUs: number;
  /** Scavenges per 1 000 requests. */
  readonly minorGcs: number;
  /** Mark-compacts per 1 000 requests. */
  readonly majorGcs: number;
  /**
   * Bytes per request that scavenges moved to the old generation: about 0.1
   * to 0.3 KB for `undici.request` when a request's objects die young, ten
   * times that when they are kept alive from the old generation (see
   * docs/performance.md, "The fetch path, fifth pass").
   */
  readonly promotedBytes: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly meanUs: number;
}

/** The main thread's CPU time so far, µs, from the scheduler's nanosecond account; NaN without /proc. */
function mainThreadCpuUs(): number {
  try {
    return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, "latin1").split(" ")[0]) / 1000;
  } catch {
    return Number.NaN;
  }
}

/** GC pauses so far (ms) and counts by kind, from the `gc` performance entries. */
const gcs = { pauseMs: 0, minor: 0, major: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcs.pauseMs += e.duration;
    const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
    else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
  }
}).observe({ entryTypes: ["gc"] });

/** What V8's GC profiler reports of one collection (the fields read here). */
interface GcStatistics {
  readonly gcType: string;
  readonly beforeGC: { readonly heapSpaceStatistics: readonly SpaceStatistics[] };
  readonly afterGC: { readonly heapSpaceStatistics: readonly SpaceStatistics[] };
}
interface SpaceStatistics {
  readonly spaceName: string;
  readonly spaceUsedSize: number;
}

/**
 * Bytes the scavenges moved out of the young generation: what every space
 * but the young ones gained over each minor GC, from V8's GC profiler (heap
 * statistics before and after each collection; nothing is read between
 * collections).
 */
const promotion = {
  profiler: new GCProfiler(),
  bytes: 0,
  /** Bytes promoted so far. */
  total(): number {
    const stats = (this.profiler.stop() as { statistics?: readonly GcStatistics[] } | undefined)?.statistics;
    this.profiler.start();
    for (const s of stats ?? []) {
      if (s.gcType !== "Scavenge" && s.gcType !== "MinorMarkSweep") continue;
      const before = new Map(s.beforeGC.heapSpaceStatistics.map((x) => [x.spaceName, x.spaceUsedSize]));
      for (const x of s.afterGC.heapSpaceStatistics) {
        if (x.spaceName.startsWith("new_")) continue;
        this.bytes += Math.max(0, x.spaceUsedSize - (before.get(x.spaceName) ?? 0));
      }
    }
    return this.bytes;
  },
};
promotion.profiler.start();

/** What the parent asks for. */
export type ClientRequest =
  | { id: number; type: "setup"; spec: ClientSpec }
  | { id: number; type: "run"; concurrency: number; warmupMs: number; durationMs: number }
  | { id: number; type: "series-start" }
  | { id: number; type: "block"; concurrency: number; durationMs: number; record: boolean }
  | { id: number; type: "series-end" }
  | { id: number; type: "profile-start"; intervalUs: number }
  | { id: number; type: "profile-stop"; file: string }
  | { id: number; type: "close" };

/** One block of a series, as the parent sees it. */
export interface BlockStats {
  readonly requests: number;
  readonly elapsedMs: number;
  /** Client CPU over the block, µs. */
  readonly cpuUs: number;
  /** The main thread's CPU over the block, µs. */
  readonly mainCpuUs: number;
}

const MAX_SAMPLES = 4_000_000;
const latencies = new Float64Array(MAX_SAMPLES);
let setup: PathSetup | undefined;
/** The profile in progress, and the requests made since it started. */
let profiling: Profiling | undefined;
let profiledRequests = 0;
/** Latency samples recorded so far: from 0 in a plain run, accumulated over a series' blocks. */
let recorded = 0;

/** A series of short blocks: totals accumulated over its measured blocks. */
const series = {
  requests: 0,
  errors: 0,
  firstError: undefined as string | undefined,
  elapsedMs: 0,
  cpuUs: 0,
  mainCpuUs: 0,
  gcPauseMs: 0,
  minor: 0,
  major: 0,
  promoted: 0,
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
  // Read outside the measured CPU: the GC profiler's report is not the path's work.
  const promoted0 = promotion.total();
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuUs();
  const { pauseMs, minor, major } = gcs;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  if (profiling !== undefined) profiledRequests += count;
  const mainCpuUs = mainThreadCpuUs() - main0;
  const gc = {
    pauseMs: gcs.pauseMs - pauseMs,
    minor: gcs.minor - minor,
    major: gcs.major - major,
    promoted: promotion.total() - promoted0,
  };
  return { count, errors, firstError, elapsedMs, cpu, mainCpuUs, gc };
}

type Load = Awaited<ReturnType<typeof load>>;

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
  mainCpuUs: number,
  gc: Load["gc"],
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
    mainCpuUs: count > 0 ? mainCpuUs / count : Number.NaN,
    gcPauseUs: count > 0 ? (gc.pauseMs * 1000) / count : Number.NaN,
    minorGcs: count > 0 ? (gc.minor * 1000) / count : Number.NaN,
    majorGcs: count > 0 ? (gc.major * 1000) / count : Number.NaN,
    promotedBytes: count > 0 ? gc.promoted / count : Number.NaN,
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
  const r = await load(concurrency, durationMs, true);
  return stats(r.count, r.errors, r.firstError, r.elapsedMs, r.cpu.user + r.cpu.system, r.mainCpuUs, r.gc);
}

/**
 * One block of a series. No forced GC between blocks: the garbage a path
 * makes is paid for in its own blocks, as it would be in an application.
 */
async function block(concurrency: number, durationMs: number, record: boolean): Promise<BlockStats> {
  const r = await load(concurrency, durationMs, record);
  const cpuUs = r.cpu.user + r.cpu.system;
  if (record) {
    series.requests += r.count;
    series.elapsedMs += r.elapsedMs;
    series.cpuUs += cpuUs;
    series.mainCpuUs += r.mainCpuUs;
    series.gcPauseMs += r.gc.pauseMs;
    series.minor += r.gc.minor;
    series.major += r.gc.major;
    series.promoted += r.gc.promoted;
  }
  series.errors += r.errors;
  series.firstError ??= r.firstError;
  return { requests: r.count, elapsedMs: r.elapsedMs, cpuUs, mainCpuUs: r.mainCpuUs };
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
      // No forced GC here: on Node 20, a full collection through `gc()` right
      // before the measured blocks left every process of `fetch` 20–30 µs per
      // request dearer for the whole series, and one that carries meshlink some
      // 6 µs more than its twin (docs/performance.md, "The fetch path, sixth
      // pass"). Services never call it.
      recorded = 0;
      Object.assign(series, {
        requests: 0,
        errors: 0,
        firstError: undefined,
        elapsedMs: 0,
        cpuUs: 0,
        mainCpuUs: 0,
        gcPauseMs: 0,
        minor: 0,
        major: 0,
        promoted: 0,
      });
      return { ok: true };
    case "block":
      return block(msg.concurrency, msg.durationMs, msg.record);
    case "series-end":
      return stats(
        series.requests,
        series.errors,
        series.firstError,
        series.elapsedMs,
        series.cpuUs,
        series.mainCpuUs,
        { pauseMs: series.gcPauseMs, minor: series.minor, major: series.major, promoted: series.promoted },
      );
    case "profile-start":
      profiling = new Profiling();
      profiledRequests = 0;
      await profiling.start(msg.intervalUs);
      return { ok: true };
    case "profile-stop": {
      const p = await profiling!.stop(msg.file);
      profiling = undefined;
      return summarize(p, profiledRequests, msg.file);
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

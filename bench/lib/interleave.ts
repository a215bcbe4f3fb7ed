/**
 * Interleaved short blocks of client processes against one server process,
 * and the paired statistics over them.
 *
 * A **run** starts a fresh process for every client. Then, at each
 * concurrency and for each group of clients compared with each other, a
 * **series**: the members take turns in short blocks (250 ms by default),
 * a pair's order flipped every cycle (A B, B A, A B, …; more members rotate,
 * see {@link cycleOrder}), and each
 * member's requests, time, CPU and latency samples are summed over its
 * blocks. A ratio or a difference between two members is taken between
 * those totals, within the series. Runs are repeated, and the spread of the
 * per-run figures (median and interquartile range) is what is reported.
 *
 * Why: on a shared 2-core machine, and with Node's `fetch` drifting by
 * itself (GC debt, JIT state) over seconds, long rounds of one path then
 * the other gave ratios from 0.82 × to 0.95 × for the same code. Blocks a
 * quarter of a second long, alternating, expose both members to the same
 * load; fresh processes per run average one process's luck (JIT decisions,
 * heap layout) over runs.
 *
 * @module
 */

import type { RunStats } from "./client-worker.js";
import { quantile } from "./common.js";
import type { ClientSpec } from "./paths.js";
import { type ClientProcess, type ServerProcess, startClient } from "./procs.js";

/** A small seeded PRNG (mulberry32), so that a run's order can be reproduced. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A shuffled copy. */
export function shuffle<T>(list: readonly T[], random: () => number): T[] {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** One client's series: its totals over the measured blocks of one run, group and concurrency. */
export interface Series extends RunStats {
  readonly run: number;
  /** Measured blocks. */
  readonly blocks: number;
  /** Server CPU per request over its blocks, µs. */
  readonly serverCpuUs: number;
  /** Share of one core the server used during its blocks, %. */
  readonly serverBusy: number;
  /** A proxy's CPU per request over its blocks, µs, when one is in the path. */
  readonly proxyCpuUs: number | undefined;
  /** Requests each server listener answered during its blocks. */
  readonly byListener: Readonly<Record<string, number>>;
  /** req/s and client CPU µs per request of each measured block, in order (to see drift). */
  readonly perBlock: readonly { readonly rps: number; readonly cpuUs: number }[];
}

/** A group's series: by concurrency, then client name, one per run. */
export type GroupSeries = Record<number, Record<string, Series[]>>;

/** Every group's series, in the order of {@link BlockOptions.groups}. */
export interface Runs {
  readonly groups: readonly (readonly string[])[];
  readonly series: readonly GroupSeries[];
}

/** Options of {@link interleaveBlocks}. */
export interface BlockOptions {
  /** The clients, by name: each run starts a fresh process for each. */
  readonly specs: ReadonlyMap<string, ClientSpec>;
  readonly server: ServerProcess;
  /** Clients compared with each other: they take turns block by block. A client may be in several. */
  readonly groups: readonly (readonly string[])[];
  readonly concurrencies: readonly number[];
  readonly runs: number;
  /** Measured blocks per member in a series. */
  readonly blocks: number;
  /** Length of a block, ms. */
  readonly blockMs: number;
  /** Unmeasured cycles of blocks at the start of a series (connections, JIT at this concurrency). */
  readonly warmupCycles: number;
  /** JIT warm-up of each fresh client process (at concurrency 16), ms. */
  readonly jitWarmupMs: number;
  readonly seed: number;
  /** A proxy's CPU so far, µs, for clients whose name is in `proxied`. */
  readonly proxyCpu?: () => number;
  readonly proxied?: ReadonlySet<string>;
  /** Runs with the last run's clients before they close (profiles). */
  readonly afterLastRun?: (clients: ReadonlyMap<string, ClientProcess>) => Promise<void>;
  /** Called after each run. */
  readonly onRun?: (run: number) => void;
}

interface Totals {
  serverUs: number;
  served: number;
  wallMs: number;
  proxyUs: number;
  byListener: Record<string, number>;
  perBlock: { rps: number; cpuUs: number }[];
}

/**
 * Runs every group at every concurrency in every run, in interleaved
 * blocks; the order of concurrencies and groups is drawn from a seeded PRNG
 * per run. Throws when a client saw errors.
 */
export async function interleaveBlocks(o: BlockOptions): Promise<Runs> {
  const random = prng(o.seed);
  const series: GroupSeries[] = o.groups.map(() => {
    const g: GroupSeries = {};
    for (const c of o.concurrencies) g[c] = {};
    return g;
  });
  const used = new Set(o.groups.flat());
  for (let r = 0; r < o.runs; r++) {
    const clients = new Map<string, ClientProcess>();
    try {
      const started = await Promise.all(
        [...o.specs]
          .filter(([name]) => used.has(name))
          .map(async ([name, spec]) => [name, await startClient(spec)] as const),
      );
      for (const [name, client] of started) clients.set(name, client);
      for (const name of shuffle([...clients.keys()], random))
        await clients.get(name)!.run(16, 0, o.jitWarmupMs);
      for (const c of shuffle(o.concurrencies, random)) {
        for (const gi of shuffle(
          o.groups.map((_, i) => i),
          random,
        )) {
          const members = shuffle(o.groups[gi]!, random);
          const out = await runSeries(o, clients, members, c, r);
          for (const [name, s] of out) (series[gi]![c]![name] ??= []).push(s);
        }
      }
      if (r === o.runs - 1) await o.afterLastRun?.(clients);
    } finally {
      await Promise.all([...clients.values()].map((c) => c.close()));
    }
    o.onRun?.(r);
  }
  return { groups: o.groups, series };
}

/**
 * The order of a series' cycle: a pair alternates (A B, B A, A B, …: each
 * runs two blocks in a row as often as the other); three or more rotate
 * (A B C, B C A, C A B, …), so that every member waits as long between its
 * blocks and none runs twice in a row. Reversing a longer list instead put
 * the members at its ends twice in a row at every turn and the middle one
 * never: on this machine that alone moved a member's CPU per request by
 * about 3 µs against the others.
 */
export function cycleOrder<T>(members: readonly T[], cycle: number): T[] {
  if (members.length === 2) return cycle % 2 === 0 ? [...members] : [members[1]!, members[0]!];
  const k = cycle % Math.max(1, members.length);
  return [...members.slice(k), ...members.slice(0, k)];
}

async function runSeries(
  o: BlockOptions,
  clients: ReadonlyMap<string, ClientProcess>,
  members: readonly string[],
  concurrency: number,
  run: number,
): Promise<Map<string, Series>> {
  const totals = new Map<string, Totals>();
  for (const name of members) {
    await clients.get(name)!.seriesStart();
    totals.set(name, { serverUs: 0, served: 0, wallMs: 0, proxyUs: 0, byListener: {}, perBlock: [] });
  }
  let s0 = await o.server.cpu();
  for (let cycle = 0; cycle < o.warmupCycles + o.blocks; cycle++) {
    const record = cycle >= o.warmupCycles;
    for (const name of cycleOrder(members, cycle)) {
      const client = clients.get(name)!;
      const proxied = o.proxied?.has(name) === true && o.proxyCpu !== undefined;
      const p0 = proxied ? o.proxyCpu!() : 0;
      const t0 = performance.now();
      const b = await client.block(concurrency, o.blockMs, record);
      const wallMs = performance.now() - t0;
      const p1 = proxied ? o.proxyCpu!() : 0;
      const s1 = await o.server.cpu();
      if (record) {
        const t = totals.get(name)!;
        t.serverUs += s1.us - s0.us;
        t.served += s1.requests - s0.requests;
        t.wallMs += wallMs;
        t.proxyUs += p1 - p0;
        for (const [k, v] of Object.entries(s1.byName))
          t.byListener[k] = (t.byListener[k] ?? 0) + v - (s0.byName[k] ?? 0);
        t.perBlock.push({ rps: (b.requests / b.elapsedMs) * 1000, cpuUs: b.cpuUs / b.requests });
      }
      s0 = s1;
    }
  }
  const out = new Map<string, Series>();
  for (const name of members) {
    const stats = await clients.get(name)!.seriesEnd();
    if (stats.errors > 0) throw new Error(`${name}: ${stats.errors} errors; first: ${stats.firstError}`);
    const t = totals.get(name)!;
    const proxied = o.proxied?.has(name) === true && o.proxyCpu !== undefined;
    out.set(name, {
      ...stats,
      run,
      blocks: o.blocks,
      serverCpuUs: t.serverUs / t.served,
      serverBusy: (t.serverUs / 1000 / t.wallMs) * 100,
      proxyCpuUs: proxied ? t.proxyUs / t.served : undefined,
      byListener: t.byListener,
      perBlock: t.perBlock,
    });
  }
  return out;
}

/** The spread of a figure over runs. */
export interface Spread {
  readonly median: number;
  /** First quartile. */
  readonly q1: number;
  /** Third quartile. */
  readonly q3: number;
  /** Every run's value, in run order. */
  readonly values: readonly number[];
}

/** Median and quartiles of a list. */
export function spread(values: readonly number[]): Spread {
  return { median: quantile(values, 0.5), q1: quantile(values, 0.25), q3: quantile(values, 0.75), values };
}

/** One client at one concurrency, over runs (from the first group it is in). */
export interface Aggregate {
  readonly concurrency: number;
  readonly path: string;
  readonly rps: Spread;
  readonly p50Us: Spread;
  readonly p99Us: Spread;
  /** Client CPU per request, µs. */
  readonly cpuUs: Spread;
  /** The client's main thread alone, µs per request. */
  readonly mainCpuUs: Spread;
  /** GC pauses per request, µs. */
  readonly gcPauseUs: Spread;
  /** Scavenges and mark-compacts per 1 000 requests. */
  readonly minorGcs: Spread;
  readonly majorGcs: Spread;
  /** Bytes per request the scavenges promoted (a run whose process kept requests alive shows here). */
  readonly promotedBytes: Spread;
  readonly serverCpuUs: Spread;
  readonly serverBusy: Spread;
  readonly proxyCpuUs: Spread | undefined;
  readonly errors: number;
}

/** Every client at every concurrency, over runs. */
export function aggregate(runs: Runs): Aggregate[] {
  const out: Aggregate[] = [];
  const seen = new Set<string>();
  runs.series.forEach((g) => {
    for (const [c, byName] of Object.entries(g)) {
      for (const [path, rs] of Object.entries(byName)) {
        if (seen.has(`${c}\0${path}`)) continue;
        seen.add(`${c}\0${path}`);
        const proxy = rs.map((x) => x.proxyCpuUs).filter((x): x is number => x !== undefined);
        out.push({
          concurrency: Number(c),
          path,
          rps: spread(rs.map((x) => x.rps)),
          p50Us: spread(rs.map((x) => x.p50Us)),
          p99Us: spread(rs.map((x) => x.p99Us)),
          cpuUs: spread(rs.map((x) => x.cpuUs)),
          mainCpuUs: spread(rs.map((x) => x.mainCpuUs)),
          gcPauseUs: spread(rs.map((x) => x.gcPauseUs)),
          minorGcs: spread(rs.map((x) => x.minorGcs)),
          majorGcs: spread(rs.map((x) => x.majorGcs)),
          promotedBytes: spread(rs.map((x) => x.promotedBytes)),
          serverCpuUs: spread(rs.map((x) => x.serverCpuUs)),
          serverBusy: spread(rs.map((x) => x.serverBusy)),
          proxyCpuUs: proxy.length > 0 ? spread(proxy) : undefined,
          errors: rs.reduce((s, x) => s + x.errors, 0),
        });
      }
    }
  });
  return out.sort((a, b) => a.concurrency - b.concurrency);
}

/** A client against its twin, paired within each run's series. */
export interface Comparison {
  readonly concurrency: number;
  readonly path: string;
  readonly twin: string;
  readonly why: string;
  /** rps(path) / rps(twin), per run. */
  readonly rpsRatio: Spread;
  /** p50(path) − p50(twin), µs, per run. */
  readonly addedP50Us: Spread;
  /** p99(path) − p99(twin), µs, per run. */
  readonly addedP99Us: Spread;
  /** cpu(path) − cpu(twin), µs per request (client process), per run. */
  readonly addedCpuUs: Spread;
  /** The same for the client's main thread alone. */
  readonly addedMainCpuUs: Spread;
  /** GC pauses per request, path − twin, µs. */
  readonly addedGcPauseUs: Spread;
  /** (client + proxy CPU of path) − (the same of twin), µs per request, per run. */
  readonly addedTotalCpuUs: Spread;
}

/** Pairs `path` with `twin` in the first group that has both, at every concurrency. */
export function compare(
  runs: Runs,
  pairs: readonly { path: string; twin: string; why: string }[],
): Comparison[] {
  const out: Comparison[] = [];
  for (const { path, twin, why } of pairs) {
    const gi = runs.groups.findIndex((g) => g.includes(path) && g.includes(twin));
    if (gi < 0) continue;
    for (const [c, byName] of Object.entries(runs.series[gi]!)) {
      const a = byName[path];
      const b = byName[twin];
      if (a === undefined || b === undefined) continue;
      const paired = (f: (x: Series, y: Series) => number) => spread(a.map((x, i) => f(x, b[i]!)));
      out.push({
        concurrency: Number(c),
        path,
        twin,
        why,
        rpsRatio: paired((x, y) => x.rps / y.rps),
        addedP50Us: paired((x, y) => x.p50Us - y.p50Us),
        addedP99Us: paired((x, y) => x.p99Us - y.p99Us),
        addedCpuUs: paired((x, y) => x.cpuUs - y.cpuUs),
        addedMainCpuUs: paired((x, y) => x.mainCpuUs - y.mainCpuUs),
        addedGcPauseUs: paired((x, y) => x.gcPauseUs - y.gcPauseUs),
        addedTotalCpuUs: paired((x, y) => x.cpuUs + (x.proxyCpuUs ?? 0) - y.cpuUs - (y.proxyCpuUs ?? 0)),
      });
    }
  }
  return out.sort((a, b) => a.concurrency - b.concurrency);
}

/** `median [q1, q3]` with `decimals`, for tables. */
export function fmtSpread(s: Spread | undefined, decimals = 1): string {
  if (s === undefined || !Number.isFinite(s.median)) return "-";
  if (s.values.length < 3) return s.median.toFixed(decimals);
  return `${s.median.toFixed(decimals)} [${s.q1.toFixed(decimals)}, ${s.q3.toFixed(decimals)}]`;
}

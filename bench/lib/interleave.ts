/**
 * Interleaved runs of client processes against one server process, and the
 * paired statistics over them: each round starts a fresh process per client
 * and runs every client once per concurrency, in an order drawn from a
 * seeded PRNG, so that slow drifts of a shared 2-core
 * machine hit every path alike; a ratio or a difference between two paths
 * is taken inside each round and the median over rounds is reported.
 *
 * @module
 */

import type { RunStats } from "./client-worker.js";
import { median } from "./common.js";
import type { ClientSpec } from "./paths.js";
import { type ClientProcess, type ServerProcess, startClient } from "./procs.js";

/** One client's run in one round, with the server's (and a proxy's) side. */
export interface Round extends RunStats {
  readonly round: number;
  /** Server CPU per request, µs (the warm-up included: a fair average). */
  readonly serverCpuUs: number;
  /** Share of one core the server used over warm-up and run, %. */
  readonly serverBusy: number;
  /** A proxy's CPU per request, µs, when one is in the path. */
  readonly proxyCpuUs: number | undefined;
  /** Requests each server listener answered, warm-up included. */
  readonly byListener: Readonly<Record<string, number>>;
}

/** Rounds by concurrency, then by client name. */
export type Rounds = Record<number, Record<string, Round[]>>;

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

/**
 * The order of one round: groups in a random order, the members of each
 * group back to back in a random order, so that a path and its twin run
 * seconds apart and no path always follows the same one.
 */
export function groupedOrder(groups: readonly (readonly string[])[], random: () => number): string[] {
  return shuffle(groups, random).flatMap((g) => shuffle(g, random));
}

/** Options of {@link interleave}. */
export interface InterleaveOptions {
  /** The clients, by name: each round starts a fresh process for each. */
  readonly specs: ReadonlyMap<string, ClientSpec>;
  readonly server: ServerProcess;
  /** Clients that run back to back in a round. */
  readonly groups: readonly (readonly string[])[];
  readonly concurrencies: readonly number[];
  readonly rounds: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  /** JIT warm-up of each fresh client process (at concurrency 16), ms. */
  readonly jitWarmupMs: number;
  readonly seed: number;
  /** A proxy's CPU so far, µs, for clients whose name is in `proxied`. */
  readonly proxyCpu?: () => number;
  readonly proxied?: ReadonlySet<string>;
  /** Runs with the last round's clients before they close (profiles). */
  readonly afterLastRound?: (clients: ReadonlyMap<string, ClientProcess>) => Promise<void>;
}

/**
 * Runs every client once per round at every concurrency. Each round starts
 * fresh client processes, so that one process's luck (JIT decisions, heap
 * layout) is averaged over rounds instead of biasing a path for the whole
 * run. Throws when a run saw errors.
 */
export async function interleave(o: InterleaveOptions): Promise<Rounds> {
  const random = prng(o.seed);
  const out: Rounds = {};
  for (const c of o.concurrencies) out[c] = {};
  for (let r = 0; r < o.rounds; r++) {
    const clients = new Map<string, ClientProcess>();
    try {
      const started = await Promise.all(
        [...o.specs].map(async ([name, spec]) => [name, await startClient(spec)] as const),
      );
      for (const [name, client] of started) clients.set(name, client);
      for (const name of groupedOrder(o.groups, random)) await clients.get(name)?.run(16, 0, o.jitWarmupMs);
      for (const c of o.concurrencies) {
        const byName = out[c]!;
        for (const name of groupedOrder(o.groups, random)) {
          const client = clients.get(name);
          if (client === undefined) continue;
          const proxied = o.proxied?.has(name) === true && o.proxyCpu !== undefined;
          const s0 = await o.server.cpu();
          const p0 = proxied ? o.proxyCpu!() : 0;
          const stats = await client.run(c, o.warmupMs, o.durationMs);
          const s1 = await o.server.cpu();
          const p1 = proxied ? o.proxyCpu!() : 0;
          if (stats.errors > 0)
            throw new Error(`${name}: ${stats.errors} errors; first: ${stats.firstError}`);
          const served = s1.requests - s0.requests;
          const byListener: Record<string, number> = {};
          for (const [k, v] of Object.entries(s1.byName)) byListener[k] = v - (s0.byName[k] ?? 0);
          (byName[name] ??= []).push({
            ...stats,
            round: r,
            serverCpuUs: (s1.us - s0.us) / served,
            serverBusy: ((s1.us - s0.us) / 1000 / (o.durationMs + o.warmupMs)) * 100,
            proxyCpuUs: proxied ? (p1 - p0) / served : undefined,
            byListener,
          });
        }
      }
      if (r === o.rounds - 1) await o.afterLastRound?.(clients);
    } finally {
      await Promise.all([...clients.values()].map((c) => c.close()));
    }
    console.log(`  round ${r + 1}/${o.rounds} done`);
  }
  return out;
}

/** Medians over rounds for one client at one concurrency. */
export interface Aggregate {
  readonly concurrency: number;
  readonly path: string;
  readonly rps: number;
  readonly p50Us: number;
  readonly p99Us: number;
  /** Client CPU per request, µs. */
  readonly cpuUs: number;
  readonly serverCpuUs: number;
  readonly serverBusy: number;
  readonly proxyCpuUs: number | undefined;
  readonly errors: number;
}

/** Medians over rounds of every client at every concurrency. */
export function aggregate(rounds: Rounds): Aggregate[] {
  const out: Aggregate[] = [];
  for (const [c, byName] of Object.entries(rounds)) {
    for (const [path, rs] of Object.entries(byName)) {
      const proxy = rs.map((x) => x.proxyCpuUs).filter((x): x is number => x !== undefined);
      out.push({
        concurrency: Number(c),
        path,
        rps: median(rs.map((x) => x.rps)),
        p50Us: median(rs.map((x) => x.p50Us)),
        p99Us: median(rs.map((x) => x.p99Us)),
        cpuUs: median(rs.map((x) => x.cpuUs)),
        serverCpuUs: median(rs.map((x) => x.serverCpuUs)),
        serverBusy: median(rs.map((x) => x.serverBusy)),
        proxyCpuUs: proxy.length > 0 ? median(proxy) : undefined,
        errors: rs.reduce((s, x) => s + x.errors, 0),
      });
    }
  }
  return out;
}

/** A client against its twin, paired within rounds. */
export interface Comparison {
  readonly concurrency: number;
  readonly path: string;
  readonly twin: string;
  readonly why: string;
  /** Median over rounds of rps(path) / rps(twin). */
  readonly rpsRatio: number;
  /** Median over rounds of p50(path) − p50(twin), µs. */
  readonly addedP50Us: number;
  /** Median over rounds of p99(path) − p99(twin), µs. */
  readonly addedP99Us: number;
  /** Median over rounds of cpu(path) − cpu(twin), µs per request (client process). */
  readonly addedCpuUs: number;
}

/** Pairs `path` with `twin` at every concurrency where both ran. */
export function compare(
  rounds: Rounds,
  pairs: readonly { path: string; twin: string; why: string }[],
): Comparison[] {
  const out: Comparison[] = [];
  for (const [c, byName] of Object.entries(rounds)) {
    for (const { path, twin, why } of pairs) {
      const a = byName[path];
      const b = byName[twin];
      if (a === undefined || b === undefined) continue;
      const paired = (f: (x: Round, y: Round) => number) => median(a.map((x, i) => f(x, b[i]!)));
      out.push({
        concurrency: Number(c),
        path,
        twin,
        why,
        rpsRatio: paired((x, y) => x.rps / y.rps),
        addedP50Us: paired((x, y) => x.p50Us - y.p50Us),
        addedP99Us: paired((x, y) => x.p99Us - y.p99Us),
        addedCpuUs: paired((x, y) => x.cpuUs - y.cpuUs),
      });
    }
  }
  return out;
}

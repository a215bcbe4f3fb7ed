/**
 * The router's cost: `Balancer.pick()` at 10, 1 000 and 10 000 endpoints
 * over up to 50 clusters (static discovery, a realistic locality spread, the
 * caller in one region with a failover list); the retry pick (with
 * constraints); the first pick after one endpoint's ejection (which
 * re-splits the traffic); the time from `StaticBackend.update` to the next
 * pick (a discovery update, changed and unchanged); and the heap the mesh
 * keeps for the endpoints.
 *
 *     npx tsx bench/router.ts [--smoke] [--strict] [--sizes=10,1000,10000]
 *
 * @module
 */

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseServiceName } from "../src/discovery/names.js";
import { Registry } from "../src/discovery/registry.js";
import { type StaticBackend, type StaticEndpoint, staticDiscovery } from "../src/discovery/static.js";
import { HealthTracker } from "../src/routing/health.js";
import { Balancer } from "../src/routing/router.js";
import { TierMap } from "../src/routing/tiers.js";
import {
  finish,
  fmt,
  gcFunction,
  listFlag,
  median,
  parseFlags,
  printTable,
  printTargets,
  quantile,
  RESULTS_DIR,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";
import { type ProfileSummary, profile, summarize } from "./lib/profile.js";

const NAME = "router";
const SERVICE = "bench-svc.bench";
const gc = gcFunction();

/** Five regions of three zones; the caller sits in the first, failing over to the next two. */
const REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1", "sa-east-1"] as const;
const CALLER = { region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2", "eu-west-1"] };
const MAX_CLUSTERS = 50;

/**
 * `n` endpoints over min(n, 50) clusters, 10 clusters a region spread over
 * its three zones; weights 1–3, 2 % backups, 1 % not ready, 0.5 % terminating.
 * `bump` changes one endpoint's weight (a discovery update that changes something).
 */
function endpoints(n: number, bump = -1): StaticEndpoint[] {
  const clusters = Math.min(n, MAX_CLUSTERS);
  const out: StaticEndpoint[] = [];
  for (let j = 0; j < n; j++) {
    const c = j % clusters;
    const region = REGIONS[c % REGIONS.length]!;
    const zone = `${region}${"abc"[Math.floor(c / REGIONS.length) % 3]}`;
    out.push({
      address: `10.${(j >> 16) & 255}.${(j >> 8) & 255}.${j & 255}`,
      port: 8080,
      cluster: `cluster-${c}`,
      region,
      zone,
      weight: j === bump ? 7 : 1 + (j % 3),
      backup: j % 50 === 49,
      ready: j % 100 !== 17,
      terminating: j % 200 === 3,
    });
  }
  return out;
}

interface Setup {
  backend: StaticBackend;
  registry: Registry;
  health: HealthTracker;
  balancer: Balancer;
}

async function setup(list: StaticEndpoint[]): Promise<Setup> {
  const backend = staticDiscovery({ services: { [SERVICE]: list } });
  const registry = new Registry([backend]);
  const health = new HealthTracker();
  const watch = registry.watch(parseServiceName(SERVICE, 8080));
  await watch.settled();
  const balancer = new Balancer(watch, new TierMap(CALLER), health);
  if (balancer.pick() === undefined) throw new Error("no endpoint picked");
  return { backend, registry, health, balancer };
}

let sink = 0;

/** Per-call timings of `fn` in ns (performance.now around each call; the timer's own cost included). */
function perCall(fn: () => { port: number } | undefined, calls: number): Float64Array {
  const out = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    const e = fn();
    out[i] = (performance.now() - t0) * 1e6;
    sink += e?.port ?? 0;
  }
  return out;
}

/** Mean ns per call over batches, median of the batch means. */
function batched(fn: () => { port: number } | undefined, calls: number, batches: number): number {
  const means: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) sink += fn()?.port ?? 0;
    means.push(((performance.now() - t0) * 1e6) / calls);
  }
  return median(means);
}

interface SizeResult {
  n: number;
  clusters: number;
  tiers: Record<string, number>;
  heapMB: number;
  heapBytesPerEndpoint: number;
  inputMB: number;
  pickMedianNs: number;
  pickP99Ns: number;
  pickBatchMeanNs: number;
  timerNs: number;
  retryPickMedianNs: number;
  retryPickP99Ns: number;
  /** The first pick() after one endpoint's ejection: median and worst over endpoints spread across the tiers. */
  pickAfterEjectionUs: { median: number; max: number };
  rebuildChangedMs: { total: number; update: number; delivery: number; firstPick: number };
  rebuildUnchangedMs: { total: number; update: number; delivery: number; firstPick: number };
}

async function rebuild(
  s: Setup,
  next: () => StaticEndpoint[],
  times: number,
): Promise<{ total: number; update: number; delivery: number; firstPick: number }> {
  const total: number[] = [];
  const update: number[] = [];
  const delivery: number[] = [];
  const firstPick: number[] = [];
  const watch = s.balancer.watch;
  for (let i = 0; i < times; i++) {
    const list = next();
    const delivered = new Promise<void>((resolve) => {
      const sub = watch.onUpdate(() => {
        sub.dispose();
        resolve();
      });
    });
    const t0 = performance.now();
    s.backend.update({ [SERVICE]: list });
    const t1 = performance.now();
    await delivered;
    const t2 = performance.now();
    sink += s.balancer.pick()?.port ?? 0;
    const t3 = performance.now();
    total.push(t3 - t0);
    update.push(t1 - t0);
    delivery.push(t2 - t1);
    firstPick.push(t3 - t2);
  }
  return {
    total: median(total),
    update: median(update),
    delivery: median(delivery),
    firstPick: median(firstPick),
  };
}

async function measureSize(n: number, smoke: boolean): Promise<SizeResult> {
  const calls = smoke ? 20_000 : 400_000;
  // Heap: what the mesh keeps for n endpoints (the caller's input list excluded).
  const list = endpoints(n);
  gc();
  const h0 = process.memoryUsage().heapUsed;
  const s = await setup(list);
  gc();
  const h1 = process.memoryUsage().heapUsed;
  const heapBytes = h1 - h0;
  const inputBefore = process.memoryUsage().heapUsed;
  let copy: StaticEndpoint[] | undefined = endpoints(n);
  gc();
  const inputBytes = process.memoryUsage().heapUsed - inputBefore;
  sink += copy.length;
  copy = undefined;

  const tiers: Record<string, number> = {};
  for (const r of s.balancer.order()) tiers[r.tier.label] = (tiers[r.tier.label] ?? 0) + 1;

  // Warm the pick path up, then time it.
  const pick = () => s.balancer.pick();
  batched(pick, calls, 3);
  const timer = perCall(() => undefined, calls);
  const one = perCall(pick, calls);
  const batchMean = batched(pick, calls, smoke ? 3 : 11);

  // The retry pick: exclude the endpoint just tried, avoid its cluster (after a connect failure).
  const first = s.balancer.pick()!;
  const constraints = { exclude: [first.id], avoidCluster: first.cluster };
  const retryCalls = Math.max(1000, Math.floor(calls / Math.max(1, n / 100)));
  const retryPick = () => s.balancer.pick(constraints);
  perCall(retryPick, Math.min(retryCalls, 2000));
  const retry = perCall(retryPick, retryCalls);

  // The first pick after an ejection re-splits the traffic for the new health.
  // Distinct endpoints that take traffic, spread over every tier but the
  // backups (from the small own-zone group to the large "other" one): one
  // already ejected, or one the router does not use, would not change the plan.
  const eligible = s.balancer.order().filter((r) => r.available && r.tier.label !== "backup");
  const changes = Math.min(smoke ? 3 : 21, eligible.length);
  const afterChange: number[] = [];
  for (let i = 0; i < changes; i++) {
    const h = s.balancer.healthOf(eligible[Math.floor(((i + 0.5) * eligible.length) / changes)]!.endpoint);
    const version = s.health.version;
    for (let k = 0; k < 5; k++) {
      s.health.start(h);
      s.health.failure(h, "bench");
    }
    if (s.health.version === version) throw new Error("five failures did not change the endpoint's health");
    const t0 = performance.now();
    sink += s.balancer.pick()?.port ?? 0;
    afterChange.push((performance.now() - t0) * 1000);
  }

  const times = smoke ? 2 : 15;
  let k = 0;
  const changed = await rebuild(s, () => endpoints(n, k++ % n), times);
  const unchanged = await rebuild(s, () => endpoints(n, (k - 1) % n), times);
  await s.registry.close();

  return {
    n,
    clusters: Math.min(n, MAX_CLUSTERS),
    tiers,
    heapMB: heapBytes / 2 ** 20,
    heapBytesPerEndpoint: heapBytes / n,
    inputMB: inputBytes / 2 ** 20,
    pickMedianNs: quantile(one, 0.5),
    pickP99Ns: quantile(one, 0.99),
    pickBatchMeanNs: batchMean,
    timerNs: quantile(timer, 0.5),
    retryPickMedianNs: quantile(retry, 0.5),
    retryPickP99Ns: quantile(retry, 0.99),
    pickAfterEjectionUs: { median: median(afterChange), max: Math.max(...afterChange) },
    rebuildChangedMs: changed,
    rebuildUnchangedMs: unchanged,
  };
}

/** Profiles discovery update → next pick at n endpoints. */
async function profileRebuild(n: number, times: number): Promise<ProfileSummary> {
  const s = await setup(endpoints(n));
  let k = 0;
  await rebuild(s, () => endpoints(n, k++ % n), 3);
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${NAME}.rebuild-${n}.cpuprofile`);
  const { profile: p } = await profile(file, 100, () => rebuild(s, () => endpoints(n, k++ % n), times));
  await s.registry.close();
  return summarize(p, times, file);
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const sizes = listFlag(flags, "sizes", ["10", "1000", "10000"]).map(Number);
  console.log(
    `${NAME}: pick, rebuild and heap at ${sizes.join(", ")} endpoints${smoke ? " — smoke pass" : ""}`,
  );
  console.log(
    `  caller ${CALLER.region}/${CALLER.zone}, failover ${CALLER.failover.join(" → ")}; ` +
      `${REGIONS.length} regions × 3 zones, up to ${MAX_CLUSTERS} clusters`,
  );
  const results: SizeResult[] = [];
  for (const n of sizes) results.push(await measureSize(n, smoke));

  printTable(
    "pick() (ns; per call = performance.now() around each call, timer included)",
    [
      "endpoints",
      "clusters",
      "median",
      "p99",
      "batch mean",
      "timer alone",
      "retry pick median",
      "retry pick p99",
    ],
    results.map((r) => [
      String(r.n),
      String(r.clusters),
      fmt(r.pickMedianNs, 0),
      fmt(r.pickP99Ns, 0),
      fmt(r.pickBatchMeanNs, 0),
      fmt(r.timerNs, 0),
      fmt(r.retryPickMedianNs, 0),
      fmt(r.retryPickP99Ns, 0),
    ]),
  );
  printTable(
    "rebuilds (ms; median) and heap",
    [
      "endpoints",
      "update→pick changed",
      "of which update()",
      "delivery",
      "first pick",
      "update→pick unchanged",
      "of which first pick",
      "first pick after an ejection µs",
      "(max)",
      "heap MB",
      "bytes/endpoint",
      "input list MB",
    ],
    results.map((r) => [
      String(r.n),
      fmt(r.rebuildChangedMs.total, 2),
      fmt(r.rebuildChangedMs.update, 2),
      fmt(r.rebuildChangedMs.delivery, 2),
      fmt(r.rebuildChangedMs.firstPick, 2),
      fmt(r.rebuildUnchangedMs.total, 2),
      fmt(r.rebuildUnchangedMs.firstPick, 3),
      fmt(r.pickAfterEjectionUs.median, 1),
      fmt(r.pickAfterEjectionUs.max, 1),
      fmt(r.heapMB, 2),
      fmt(r.heapBytesPerEndpoint, 0),
      fmt(r.inputMB, 2),
    ]),
  );
  for (const r of results) {
    console.log(
      `  tiers at ${r.n}: ${Object.entries(r.tiers)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}`,
    );
  }

  const big = Math.max(...sizes);
  const rebuildProfile = await profileRebuild(big, smoke ? 2 : 10);
  printTable(
    `update→pick at ${big} endpoints: top frames by self time (µs per update)`,
    ["frame", "location", "category", "self µs", "total µs"],
    rebuildProfile.topSelf
      .slice(0, 15)
      .map((f) => [f.name, f.location, f.category, fmt(f.selfUs, 0), fmt(f.totalUs, 0)]),
  );
  printTable(
    `update→pick at ${big} endpoints: meshlink's frames (µs per update)`,
    ["frame", "location", "self µs", "total µs"],
    rebuildProfile.meshlink
      .slice(0, 12)
      .map((f) => [f.name, f.location, fmt(f.selfUs, 0), fmt(f.totalUs, 0)]),
  );

  const at = results.find((r) => r.n === 10_000);
  const targets: TargetResult[] = [];
  if (at) {
    targets.push(
      target(
        "pick-median-10k",
        "pick() median at 10 000 endpoints",
        at.pickMedianNs / 1000,
        "<=",
        2,
        "µs",
        "median of per-call timings (performance.now() around each call, timer included)",
      ),
      target(
        "rebuild-10k",
        "StaticBackend.update → next pick at 10 000 endpoints (one endpoint changed)",
        at.rebuildChangedMs.total,
        "<=",
        20,
        "ms",
        "median of repeated updates; validation, delivery, snapshot merge and the table rebuild in the first pick",
      ),
      target(
        "pick-after-ejection-10k",
        "first pick() after one endpoint's ejection at 10 000 endpoints",
        at.pickAfterEjectionUs.median,
        "<=",
        5000,
        "µs",
        "median over endpoints spread across the tiers; five failures eject one, then one pick() re-splits the traffic",
      ),
      target(
        "heap-10k",
        "heap kept for 10 000 endpoints",
        at.heapMB,
        "<=",
        30,
        "MB",
        "heapUsed after a full GC with the mesh's backend, registry, balancer and health records, minus before",
      ),
    );
  }
  printTargets(targets, smoke);
  const file = writeResults(NAME, {
    smoke,
    caller: CALLER,
    sizes,
    results,
    rebuildProfile,
    targets,
    sink,
  });
  finish(flags, targets, file);
}

await main();

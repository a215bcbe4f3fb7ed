/**
 * The router: from a service snapshot, the caller's locality and endpoint
 * health, picks an endpoint.
 *
 * Endpoints are sorted into priority tiers ({@link TierMap}). Traffic is
 * split between tiers by their health as Envoy's priority levels split it
 * ({@link priorityLoad}: gradual spill-over, panic threshold); backups take
 * traffic only when no other tier has a healthy endpoint. Inside a tier a
 * pick is the power of two choices over load — requests in flight times
 * peak-EWMA latency, divided by weight (Finagle, Linkerd) — or round-robin
 * or random. A balancer keeps an immutable plan (grpc-js's picker), so
 * `pick()` is synchronous, O(1) and allocates nothing: the tier table is
 * rebuilt only when the snapshot's endpoint array changes, and the traffic
 * split when health changes, in O(endpoints), with new sampling tables only
 * for the groups whose healthy set changed.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceWatch } from "../discovery/registry.js";
import type { EndpointHealth, HealthTracker, HealthView } from "./health.js";
import { priorityLoad, type TierHealth } from "./load.js";
import type { LocalityGroup, TierInfo, TierMap } from "./tiers.js";

export { type PriorityLoad, priorityLoad, type TierHealth } from "./load.js";
export {
  type DistributeRule,
  type LocalityGroup,
  matchLocality,
  type PriorityLabel,
  type RouterOptions,
  type TierInfo,
  TierMap,
} from "./tiers.js";

/** How a tier picks among its endpoints. */
export type BalancerPolicy = "p2c" | "round-robin" | "random";

/** Slow start: a new or recovered endpoint's weight ramps up over a window (Envoy's `slow_start_config`). */
export interface SlowStartOptions {
  /** The ramp's length in ms; 0 turns slow start off. */
  window: number;
  /** The ramp's shape: weight × (elapsed / window)^(1 / aggression); default 1 (linear). */
  aggression?: number;
  /** The least share of its weight an endpoint gets while ramping, in (0, 1]; default 0.1 (Envoy's 10 %). */
  minWeight?: number;
}

/** Options of a {@link Balancer}. */
export interface BalancerOptions {
  /** How a tier picks among its endpoints; default `p2c`. */
  policy?: BalancerPolicy;
  /** Envoy's overprovisioning factor: a tier keeps all its traffic while healthy share × factor ≥ 1; default 1.4. */
  overprovisioningFactor?: number;
  /** Healthy share under which a tier ignores health, when the tiers together fall short; default 0.5; 0 turns panic off. */
  panicThreshold?: number;
  /** Slow start for endpoints added after the first snapshot and endpoints back from ejection; default off. */
  slowStart?: SlowStartOptions;
  /** Most requests in flight to one endpoint (a bulkhead); default unlimited. */
  maxRequestsPerEndpoint?: number;
  /** Random numbers in [0, 1); default `Math.random`. Tests inject their own. */
  random?: () => number;
}

/** One endpoint in the router's order, for `mesh.resolve`. */
export interface RoutedEndpoint {
  /** The endpoint. */
  readonly endpoint: Endpoint;
  /** Its tier for this caller. */
  readonly tier: TierInfo;
  /** True when the router may send a call to it now. */
  readonly available: boolean;
  /** Why it is not available: `ejected`, `probing`, `not-ready`, `terminating`. */
  readonly unavailableReason: string | undefined;
  /** Its health. */
  readonly health: HealthView;
}

/** The endpoints a call may not use again, and a cluster it would rather avoid. */
export interface PickConstraints {
  /**
   * Ids of endpoints already tried by this call (Envoy's previous_hosts):
   * avoided, but picked again when nothing else is available, unless `hard`.
   */
  readonly exclude?: readonly string[] | undefined;
  /** Never return an excluded endpoint (a hedge to the same host is pointless). */
  readonly hard?: boolean | undefined;
  /** After a connection failure: prefer any other cluster over this one. */
  readonly avoidCluster?: string | undefined;
  /** After connection failures in several clusters: prefer any cluster not listed. */
  readonly avoidClusters?: readonly string[] | undefined;
}

/** How a tier currently stands, for `describe()` and tests. */
export interface TierState {
  /** The tier. */
  readonly tier: TierInfo;
  /** Endpoints in it. */
  readonly total: number;
  /** Endpoints that may take traffic now. */
  readonly healthy: number;
  /** Its share of the traffic, in [0, 1]. */
  readonly load: number;
  /** True when it ignores health (panic). */
  readonly panic: boolean;
}

/**
 * The endpoints of one locality group (a whole tier, or one `distribute`
 * target) that a pick chooses among, with what weighted picks need.
 * Immutable but for its round-robin state.
 */
class Group {
  /** True when every endpoint has the same weight. */
  readonly uniform: boolean;
  /** Vose alias tables, when weights differ and the policy samples (P2C, random). */
  readonly prob: Float64Array | undefined;
  readonly alias: Int32Array | undefined;
  /** Smooth weighted round-robin, when weights differ; made on the group's first round-robin pick. */
  smooth: SmoothRoundRobin | undefined;
  /** Round-robin position, when weights are equal. */
  cursor = 0;

  constructor(
    readonly endpoints: readonly Endpoint[],
    readonly health: readonly EndpointHealth[],
    readonly weights: readonly number[],
    sampled: boolean,
  ) {
    let uniform = true;
    for (let i = 1; i < weights.length && uniform; i++) uniform = weights[i] === weights[0];
    this.uniform = uniform;
    const alias = uniform || !sampled ? undefined : aliasTable(weights);
    this.prob = alias?.prob;
    this.alias = alias?.alias;
  }
}

/** A pick in a tier that has nothing to pick from. */
const EMPTY_GROUP = new Group([], [], [], false);

interface Plan {
  readonly tier: TierInfo;
  /** Cumulative share of traffic up to and including this tier. */
  readonly upTo: number;
  readonly load: number;
  readonly panic: boolean;
  readonly groups: Group[];
  /** Cumulative effective group weights. */
  readonly groupUpTo: number[];
  readonly total: number;
  readonly healthy: number;
}

/** A group of the tier table: every usable endpoint of it, healthy or not. */
interface TableGroup {
  readonly key: string;
  readonly weight: number;
  readonly endpoints: Endpoint[];
  readonly health: EndpointHealth[];
  readonly weights: number[];
  /**
   * The group with every endpoint, for plans in which all of them may take
   * traffic (or the tier panics): made on first need and kept for as long
   * as the table, so that a health change elsewhere costs this group
   * nothing and its round-robin position survives.
   */
  all: Group | undefined;
  /** Per endpoint, 1 when it could take traffic at the last plan: a group whose flags stay put keeps `part`. */
  readonly available: Uint8Array;
  /** The group of the endpoints that could take traffic at the last plan, when some could not; made on first need. */
  part: Group | undefined;
}

interface TableTier {
  readonly tier: TierInfo;
  readonly groups: TableGroup[];
  readonly total: number;
}

/** Usable for traffic: serving, and ready unless its cluster has no ready endpoint (kube-proxy's rule). */
function usable(endpoints: readonly Endpoint[]): Endpoint[] {
  const readyClusters = new Set<string>();
  for (const e of endpoints) if (e.ready && !e.terminating) readyClusters.add(e.cluster);
  return endpoints.filter(
    (e) => (e.ready && !e.terminating) || (e.serving && e.terminating && !readyClusters.has(e.cluster)),
  );
}

const NO_PLANS: readonly Plan[] = [];

/**
 * The balancer of one service: keeps the tier table for the current
 * snapshot and the traffic plan for the current health, and picks.
 */
export class Balancer {
  readonly #watch: ServiceWatch;
  readonly #tiers: TierMap;
  readonly #health: HealthTracker;
  readonly #policy: BalancerPolicy;
  readonly #factor: number;
  readonly #panicThreshold: number;
  readonly #slowWindow: number;
  readonly #slowAggression: number;
  readonly #slowMin: number;
  readonly #maxPerEndpoint: number;
  readonly #random: () => number;
  /** The snapshot's endpoint array the table was built from (the registry keeps it while nothing changes). */
  #endpoints: readonly Endpoint[] | undefined;
  #table: readonly TableTier[] = [];
  #known: Set<string> | undefined;
  #healthVersion = -1;
  #nextExpiry = Number.POSITIVE_INFINITY;
  #plans: readonly Plan[] = NO_PLANS;
  #view: readonly Plan[] = NO_PLANS;
  #saturated = false;

  constructor(watch: ServiceWatch, tiers: TierMap, health: HealthTracker, options: BalancerOptions = {}) {
    this.#watch = watch;
    this.#tiers = tiers;
    this.#health = health;
    this.#policy = options.policy ?? "p2c";
    this.#factor = options.overprovisioningFactor ?? 1.4;
    this.#panicThreshold = options.panicThreshold ?? 0.5;
    this.#slowWindow = options.slowStart?.window ?? 0;
    this.#slowAggression = options.slowStart?.aggression ?? 1;
    this.#slowMin = options.slowStart?.minWeight ?? 0.1;
    this.#maxPerEndpoint = options.maxRequestsPerEndpoint ?? Number.POSITIVE_INFINITY;
    this.#random = options.random ?? Math.random;
  }

  /** The service's watch. */
  get watch(): ServiceWatch {
    return this.#watch;
  }

  /** The health tracker shared by every balancer. */
  get health(): HealthTracker {
    return this.#health;
  }

  /**
   * True when the last `pick()` returned `undefined` because every
   * candidate was at its `maxRequestsPerEndpoint` (a full bulkhead), not
   * because none was healthy.
   */
  get saturated(): boolean {
    return this.#saturated;
  }

  /**
   * Picks an endpoint, or `undefined` when none is available. Synchronous;
   * allocates nothing unless constraints force a scan.
   */
  pick(constraints?: PickConstraints): Endpoint | undefined {
    const plans = this.#current();
    this.#saturated = false;
    if (plans.length === 0) return undefined;
    const exclude = constraints?.exclude;
    const one = constraints?.avoidCluster;
    const many = constraints?.avoidClusters;
    const avoid = one === undefined ? many : many === undefined ? [one] : [...many, one];
    if (exclude === undefined && avoid === undefined) {
      const e = this.#pickOnce(plans);
      return e === undefined || this.#fits(e) ? e : this.#scan(plans, undefined, undefined);
    }
    // A retry: a few ordinary picks usually find an allowed endpoint in O(1).
    for (let i = 0; i < 4; i++) {
      const e = this.#pickOnce(plans);
      if (e !== undefined && !avoid?.includes(e.cluster) && !exclude?.includes(e.id) && this.#fits(e))
        return e;
    }
    if (avoid !== undefined) {
      const other = this.#scan(plans, exclude, avoid);
      if (other !== undefined) return other;
    }
    const any = this.#scan(plans, exclude, undefined);
    if (any !== undefined || exclude === undefined || constraints?.hard === true) return any;
    // Only endpoints already tried are left: the same one again (Envoy's previous_hosts falls back too).
    return (
      (avoid !== undefined ? this.#scan(plans, undefined, avoid) : undefined) ??
      this.#scan(plans, undefined, undefined)
    );
  }

  /** The health record the transport reports to for an endpoint. */
  healthOf(endpoint: Endpoint): EndpointHealth {
    return this.#health.get(endpoint.id);
  }

  /** The tier of an endpoint for this caller. */
  tierOf(endpoint: Endpoint): TierInfo {
    return this.#tiers.of(endpoint);
  }

  /** The tiers as they stand: size, health, share of traffic, panic. */
  tiers(): TierState[] {
    this.#current();
    return this.#view.map((p) => ({
      tier: p.tier,
      total: p.total,
      healthy: p.healthy,
      load: p.load,
      panic: p.panic,
    }));
  }

  /** Every known endpoint in the router's order (tier, then available first), ejected ones too. */
  order(): RoutedEndpoint[] {
    const snapshot = this.#watch.snapshot;
    const usableSet = new Set(usable(snapshot.endpoints));
    const now = this.#health.now();
    const rows = snapshot.endpoints.map((endpoint) => {
      const h = this.#health.peek(endpoint.id);
      let reason: string | undefined;
      if (!usableSet.has(endpoint)) reason = endpoint.terminating ? "terminating" : "not-ready";
      else if (h !== undefined && !this.#health.available(h, now)) reason = h.state;
      return {
        endpoint,
        tier: this.#tiers.of(endpoint),
        available: reason === undefined,
        unavailableReason: reason,
        health: this.#health.view(endpoint.id),
      };
    });
    return rows.sort((a, b) => a.tier.rank - b.tier.rank || Number(b.available) - Number(a.available));
  }

  #fits(e: Endpoint): boolean {
    return (
      this.#maxPerEndpoint === Number.POSITIVE_INFINITY ||
      this.#health.get(e.id).outstanding < this.#maxPerEndpoint
    );
  }

  #pickOnce(plans: readonly Plan[]): Endpoint | undefined {
    let plan = plans[0]!;
    if (plans.length > 1) {
      const r = this.#random();
      for (let i = 0; i < plans.length; i++) {
        plan = plans[i]!;
        if (r < plan.upTo) break;
      }
    }
    const groups = plan.groups;
    let group = groups[0]!;
    if (groups.length > 1) {
      const upTo = plan.groupUpTo;
      const r = this.#random() * upTo[upTo.length - 1]!;
      for (let i = 0; i < groups.length; i++) {
        group = groups[i]!;
        if (r < upTo[i]!) break;
      }
    }
    return this.#inGroup(group);
  }

  #inGroup(g: Group): Endpoint | undefined {
    const n = g.endpoints.length;
    if (n === 0) return undefined;
    if (n === 1) return g.endpoints[0];
    switch (this.#policy) {
      case "round-robin": {
        if (g.uniform) {
          const i = g.cursor;
          g.cursor = i + 1 >= n ? 0 : i + 1;
          return g.endpoints[i];
        }
        // Only round-robin needs this state, so only it pays for it.
        return g.endpoints[(g.smooth ??= new SmoothRoundRobin(g.weights)).next()];
      }
      case "random":
        return g.endpoints[this.#sample(g)];
      default: {
        const a = this.#sample(g);
        let b = this.#sample(g);
        if (b === a) b = a + 1 >= n ? 0 : a + 1;
        const now = this.#health.now();
        const ca = this.#score(g, a, now);
        const cb = this.#score(g, b, now);
        return g.endpoints[cb < ca ? b : a];
      }
    }
  }

  /** Load per unit of weight: the lower, the better. */
  #score(g: Group, i: number, now: number): number {
    const h = g.health[i]!;
    const cost = this.#health.cost(h, now);
    let w = g.weights[i]!;
    if (h.warmingSince !== 0) w *= this.#warmFactor(h, now);
    return cost / w;
  }

  /** Slow start: the share of its weight a warming endpoint takes now. */
  #warmFactor(h: EndpointHealth, now: number): number {
    const window = this.#slowWindow;
    const elapsed = now - h.warmingSince;
    if (window <= 0 || elapsed >= window) {
      h.warmingSince = 0;
      return 1;
    }
    const f = (Math.max(elapsed, 1) / window) ** (1 / this.#slowAggression);
    return Math.max(this.#slowMin, f);
  }

  /** A weighted random index in O(1) (Vose's alias method; uniform when weights are equal). */
  #sample(g: Group): number {
    const n = g.endpoints.length;
    const x = this.#random() * n;
    const i = x | 0;
    const prob = g.prob;
    if (prob === undefined) return i;
    return x - i < prob[i]! ? i : g.alias![i]!;
  }

  /** The slow path: every allowed endpoint, tiers in rank order, weighted random among them. */
  #scan(
    plans: readonly Plan[],
    exclude: readonly string[] | undefined,
    avoid: readonly string[] | undefined,
  ): Endpoint | undefined {
    let full = false;
    for (const p of plans) {
      if (p.load === 0) continue;
      const candidates: Endpoint[] = [];
      let total = 0;
      for (const g of p.groups) {
        for (const e of g.endpoints) {
          if (avoid?.includes(e.cluster) || exclude?.includes(e.id)) continue;
          if (!this.#fits(e)) {
            full = true;
            continue;
          }
          candidates.push(e);
          total += e.weight;
        }
      }
      if (candidates.length === 0) continue;
      let r = this.#random() * total;
      for (const e of candidates) {
        r -= e.weight;
        if (r < 0) return e;
      }
      return candidates[candidates.length - 1];
    }
    // Tiers that take no traffic now (load 0) are still fine for a retry.
    for (const p of plans) {
      if (p.load > 0) continue;
      for (const g of p.groups) {
        for (const e of g.endpoints) {
          if (avoid?.includes(e.cluster) || exclude?.includes(e.id)) continue;
          if (this.#fits(e)) return e;
          full = true;
        }
      }
    }
    this.#saturated = full;
    return undefined;
  }

  #current(): readonly Plan[] {
    // The table follows the endpoint array, not the snapshot's version: a
    // refresh that changes nothing (or changes only a source's state) keeps
    // the array, and with it the table and the plans.
    const endpoints = this.#watch.snapshot.endpoints;
    if (endpoints !== this.#endpoints) {
      this.#buildTable(endpoints);
      this.#endpoints = endpoints;
      this.#healthVersion = -1;
    }
    const health = this.#health;
    // The clock is read only while some endpoint is ejected.
    if (
      health.version !== this.#healthVersion ||
      (this.#nextExpiry !== Number.POSITIVE_INFINITY && health.now() >= this.#nextExpiry)
    ) {
      this.#rebuildPlans();
    }
    return this.#plans;
  }

  /** Sorts the usable endpoints into tiers and groups; health decides nothing here. */
  #buildTable(snapshot: readonly Endpoint[]): void {
    const tiers = this.#tiers;
    const health = this.#health;
    const endpoints = usable(snapshot);
    // Slow start ramps endpoints that join after the first snapshot with endpoints.
    const slow = this.#slowWindow > 0;
    const known = this.#known;
    const now = slow ? health.now() : 0;
    type Building = Pick<TableGroup, "key" | "weight" | "endpoints" | "health" | "weights">;
    const byRank = new Map<number, { tier: TierInfo; groups: Building[] }>();
    for (const e of endpoints) {
      const tier = tiers.of(e);
      let t = byRank.get(tier.rank);
      if (t === undefined) {
        t = { tier, groups: [] };
        byRank.set(tier.rank, t);
      }
      const group = tier.label === "distribute" ? tiers.groupOf(e)! : WHOLE_TIER;
      let g: Building | undefined;
      for (const x of t.groups) {
        if (x.key === group.key) {
          g = x;
          break;
        }
      }
      if (g === undefined) {
        g = { key: group.key, weight: group.weight, endpoints: [], health: [], weights: [] };
        t.groups.push(g);
      }
      const h = health.get(e.id);
      if (slow && known !== undefined && !known.has(e.id)) h.warmingSince = now;
      g.endpoints.push(e);
      g.health.push(h);
      g.weights.push(e.weight);
    }
    if (slow && endpoints.length > 0) this.#known = new Set(endpoints.map((e) => e.id));
    const table: TableTier[] = [];
    for (const t of byRank.values()) {
      let total = 0;
      const groups = t.groups.map((g) => {
        total += g.endpoints.length;
        const available = new Uint8Array(g.endpoints.length).fill(1);
        return { ...g, all: undefined, available, part: undefined };
      });
      table.push({ tier: t.tier, groups, total });
    }
    this.#table = table.sort((a, b) => a.tier.rank - b.tier.rank);
  }

  /**
   * Splits traffic for the current health: O(endpoints) to see who may take
   * traffic, and new sampling tables only for the groups in which that
   * changed; the others keep their groups as they are.
   */
  #rebuildPlans(): void {
    const health = this.#health;
    const now = health.now();
    const factor = this.#factor;
    const table = this.#table;
    const sampled = this.#policy !== "round-robin";
    let nextExpiry = Number.POSITIVE_INFINITY;
    // Per group, in table order: how many endpoints may take traffic now.
    const healthyIn: number[] = [];
    const counts: TierHealth[] = [];
    for (const t of table) {
      let tierHealthy = 0;
      for (const g of t.groups) {
        const records = g.health;
        const flags = g.available;
        let healthy = 0;
        let changed = false;
        for (let j = 0; j < records.length; j++) {
          const h = records[j]!;
          const ok = health.available(h, now) ? 1 : 0;
          if (ok === 1) healthy++;
          else if (h.state === "ejected" && h.ejectedUntil < nextExpiry) nextExpiry = h.ejectedUntil;
          if (flags[j] !== ok) {
            flags[j] = ok;
            changed = true;
          }
        }
        if (changed) g.part = undefined;
        healthyIn.push(healthy);
        tierHealthy += healthy;
      }
      counts.push({ healthy: tierHealthy, total: t.total });
    }
    // Backups take traffic only when no other tier has a healthy endpoint.
    const backupAt = table.findIndex((t) => this.#tiers.isBackup(t.tier.rank));
    const primaryHealthy = counts.some((c, i) => i !== backupAt && c.healthy > 0);
    const considered = table.map((_, i) => backupAt < 0 || (i === backupAt) !== primaryHealthy);
    const subset = counts.filter((_, i) => considered[i]);
    const { load, panic } = priorityLoad(subset, factor, this.#panicThreshold);
    const plans: Plan[] = [];
    let upTo = 0;
    let k = 0;
    let at = 0;
    for (let i = 0; i < table.length; i++) {
      const t = table[i]!;
      const c = counts[i]!;
      const l = considered[i] ? load[k]! : 0;
      const p = considered[i] ? panic[k]! : false;
      if (considered[i]) k++;
      upTo += l;
      const groups: Group[] = [];
      const groupUpTo: number[] = [];
      let gw = 0;
      for (const tg of t.groups) {
        const healthy = healthyIn[at++]!;
        const total = tg.endpoints.length;
        // A locality's effective weight shrinks with its health (Envoy's locality-weighted LB).
        const eff = p ? tg.weight : tg.weight * Math.min(1, (factor * healthy) / Math.max(1, total));
        if (eff > 0 && (p ? total : healthy) > 0) {
          gw += eff;
          // A panicking tier ignores health: it picks among all of its endpoints.
          groups.push(
            p || healthy === total
              ? (tg.all ??= new Group(tg.endpoints, tg.health, tg.weights, sampled))
              : (tg.part ??= availablePart(tg, sampled)),
          );
          groupUpTo.push(gw);
        }
      }
      if (groups.length === 0) {
        groups.push(EMPTY_GROUP);
        groupUpTo.push(1);
      }
      plans.push({
        tier: t.tier,
        upTo,
        load: l,
        panic: p,
        groups,
        groupUpTo,
        total: c.total,
        healthy: c.healthy,
      });
    }
    // The last tier that takes traffic also takes any rounding leftover of the random draw.
    for (let i = plans.length - 1; i >= 0; i--) {
      if (plans[i]!.load > 0) {
        plans[i] = { ...plans[i]!, upTo: Number.POSITIVE_INFINITY };
        break;
      }
    }
    // Nothing can take traffic: no plan, so that pick() says so at once.
    this.#plans = upTo > 0 ? plans : NO_PLANS;
    this.#view = plans;
    this.#healthVersion = health.version;
    this.#nextExpiry = nextExpiry;
  }
}

/** The endpoints of a table group that could take traffic at the last plan, as a group of their own. */
function availablePart(tg: TableGroup, sampled: boolean): Group {
  const flags = tg.available;
  const endpoints: Endpoint[] = [];
  const records: EndpointHealth[] = [];
  const weights: number[] = [];
  for (let j = 0; j < flags.length; j++) {
    if (flags[j] === 0) continue;
    endpoints.push(tg.endpoints[j]!);
    records.push(tg.health[j]!);
    weights.push(tg.weights[j]!);
  }
  return new Group(endpoints, records, weights, sampled);
}

/** The one group of a tier without `distribute` groups. */
const WHOLE_TIER: LocalityGroup = Object.freeze({ key: "", weight: 1 });

/** Vose's alias tables for O(1) weighted sampling (a uniform draw needs none). */
function aliasTable(w: readonly number[]): { prob: Float64Array; alias: Int32Array } {
  const n = w.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i]!;
  const prob = new Float64Array(n);
  const alias = new Int32Array(n);
  const scaled = new Float64Array(n);
  // Two stacks of indices: below and at-or-above the average.
  const small = new Int32Array(n);
  const large = new Int32Array(n);
  let ns = 0;
  let nl = 0;
  for (let i = 0; i < n; i++) {
    const x = (w[i]! * n) / sum;
    scaled[i] = x;
    if (x < 1) small[ns++] = i;
    else large[nl++] = i;
  }
  while (ns > 0 && nl > 0) {
    const s = small[--ns]!;
    const l = large[--nl]!;
    prob[s] = scaled[s]!;
    alias[s] = l;
    scaled[l] = scaled[l]! + scaled[s]! - 1;
    if (scaled[l]! < 1) small[ns++] = l;
    else large[nl++] = l;
  }
  for (let i = 0; i < nl; i++) prob[large[i]!] = 1;
  for (let i = 0; i < ns; i++) prob[small[i]!] = 1;
  return { prob, alias };
}

/**
 * nginx's smooth weighted round-robin, one step per pick, over weights
 * scaled so that the largest is at most 64 (a cycle of at most 64 × n picks).
 *
 * nginx adds every weight to its endpoint's current value at each step and
 * picks the largest (the first on ties): O(n) a pick. Endpoints of equal
 * weight, though, differ only in how often they were picked, so among
 * themselves they take turns in index order, and it is enough to compare
 * the endpoint whose turn it is in each distinct weight: the same order,
 * step for step, in O(distinct weights) a pick — at most 64 after scaling,
 * usually one to three — with no schedule to build or hold.
 */
class SmoothRoundRobin {
  /** Per distinct scaled weight (a class): the weight, and its endpoints in index order. */
  readonly #weight: number[] = [];
  readonly #members: number[][] = [];
  /** Per class: the member whose turn it is, and how often each member from it on has been picked this cycle. */
  readonly #turn: Int32Array;
  readonly #picked: Float64Array;
  /** Picks in a cycle (the sum of the scaled weights), after which every current value is 0 again. */
  readonly #cycle: number;
  #step = 0;

  constructor(weights: readonly number[]) {
    let max = 0;
    for (const w of weights) if (w > max) max = w;
    const scale = Math.min(1, 64 / max);
    const classOf = new Map<number, number>();
    let cycle = 0;
    for (let i = 0; i < weights.length; i++) {
      const w = Math.max(1, Math.round(weights[i]! * scale));
      cycle += w;
      let c = classOf.get(w);
      if (c === undefined) {
        c = this.#weight.length;
        classOf.set(w, c);
        this.#weight.push(w);
        this.#members.push([]);
      }
      this.#members[c]!.push(i);
    }
    this.#turn = new Int32Array(this.#weight.length);
    this.#picked = new Float64Array(this.#weight.length);
    this.#cycle = cycle;
  }

  /** The index of the next endpoint. */
  next(): number {
    const weight = this.#weight;
    const members = this.#members;
    const turn = this.#turn;
    const picked = this.#picked;
    let step = this.#step + 1;
    if (step > this.#cycle) {
      // Each endpoint has been picked its weight's times: every current value is back to 0.
      step = 1;
      turn.fill(0);
      picked.fill(0);
    }
    this.#step = step;
    // An endpoint's current value after `step` additions is step × weight − cycle × (times picked).
    let best = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    let bestIndex = 0;
    for (let c = 0; c < weight.length; c++) {
      const value = step * weight[c]! - this.#cycle * picked[c]!;
      const index = members[c]![turn[c]!]!;
      if (value > bestValue || (value === bestValue && index < bestIndex)) {
        best = c;
        bestValue = value;
        bestIndex = index;
      }
    }
    const t = turn[best]! + 1;
    if (t === members[best]!.length) {
      turn[best] = 0;
      picked[best]!++;
    } else {
      turn[best] = t;
    }
    return bestIndex;
  }
}

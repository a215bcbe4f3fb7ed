/**
 * The tier table and the traffic plan of one service.
 *
 * The table sorts a snapshot's usable endpoints into priority tiers and,
 * inside a `distribute` tier, locality groups; health decides nothing
 * there, so it is rebuilt only when the endpoints change. The plan splits
 * traffic for the current health: each tier's share ({@link priorityLoad}:
 * spill-over, panic), backups only when no other tier is healthy, and each
 * group's effective weight, with new pickers only for the groups whose set
 * of available endpoints changed.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import { EMPTY_GROUP, Group, type GroupNeeds } from "./group.js";
import type { EndpointHealth, HealthTracker } from "./health.js";
import { priorityLoad, type TierHealth } from "./load.js";
import type { LocalityGroup, TierInfo, TierMap } from "./tiers.js";

/** One tier of a plan: its share of traffic and the groups a pick chooses among. */
export interface Plan {
  readonly tier: TierInfo;
  /** Cumulative share of traffic up to and including this tier (the last that takes traffic: ∞). */
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
export interface TableGroup {
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

/** A tier of the tier table. */
export interface TableTier {
  readonly tier: TierInfo;
  readonly groups: TableGroup[];
  readonly total: number;
}

/** A plan for the current health, with what the balancer needs to know when to make the next. */
export interface Planned {
  /** The tiers that a pick draws from; empty when nothing can take traffic. */
  readonly plans: readonly Plan[];
  /** Every tier, for `tiers()`, also when nothing can take traffic. */
  readonly view: readonly Plan[];
  /** When the first ejection of an endpoint in the table ends (∞ when none is ejected). */
  readonly nextExpiry: number;
}

/** The one group of a tier without `distribute` groups. */
const WHOLE_TIER: LocalityGroup = Object.freeze({ key: "", weight: 1 });

const NO_PLANS: readonly Plan[] = [];

/** Usable for traffic: serving, and ready unless its cluster has no ready endpoint (kube-proxy's rule). */
export function usable(endpoints: readonly Endpoint[]): Endpoint[] {
  const readyClusters = new Set<string>();
  for (const e of endpoints) if (e.ready && !e.terminating) readyClusters.add(e.cluster);
  return endpoints.filter(
    (e) => (e.ready && !e.terminating) || (e.serving && e.terminating && !readyClusters.has(e.cluster)),
  );
}

/** Sorts usable endpoints into tiers and groups, each endpoint with its health record. */
export function buildTable(
  endpoints: readonly Endpoint[],
  tiers: TierMap,
  record: (e: Endpoint) => EndpointHealth,
): TableTier[] {
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
    g.endpoints.push(e);
    g.health.push(record(e));
    g.weights.push(e.weight);
  }
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
  return table.sort((a, b) => a.tier.rank - b.tier.rank);
}

/** How a plan is made: the spill-over and panic knobs, and what each policy's groups must hold. */
export interface PlanOptions {
  readonly overprovisioningFactor: number;
  readonly panicThreshold: number;
  readonly needs: GroupNeeds;
}

/**
 * Splits traffic for the health at `now`: O(endpoints) to see who may take
 * traffic, and new pickers only for the groups in which that changed; the
 * others keep their groups as they are.
 */
export function planTraffic(
  table: readonly TableTier[],
  tiers: TierMap,
  health: HealthTracker,
  now: number,
  options: PlanOptions,
): Planned {
  const factor = options.overprovisioningFactor;
  const needs = options.needs;
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
  const backupAt = table.findIndex((t) => tiers.isBackup(t.tier.rank));
  const primaryHealthy = counts.some((c, i) => i !== backupAt && c.healthy > 0);
  const considered = table.map((_, i) => backupAt < 0 || (i === backupAt) !== primaryHealthy);
  const subset = counts.filter((_, i) => considered[i]);
  const { load, panic } = priorityLoad(subset, factor, options.panicThreshold);
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
            ? (tg.all ??= new Group(tg.endpoints, tg.health, tg.weights, needs))
            : (tg.part ??= availablePart(tg, needs)),
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
  return { plans: upTo > 0 ? plans : NO_PLANS, view: plans, nextExpiry };
}

/** The endpoints of a table group that could take traffic at the last plan, as a group of their own. */
function availablePart(tg: TableGroup, needs: GroupNeeds): Group {
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
  return new Group(endpoints, records, weights, needs);
}

/**
 * The slow path of a constrained pick: in tier order, every endpoint not
 * excluded (by id), not in an avoided cluster and under the request limit;
 * weighted random among those of the first tier that takes traffic, else
 * the first found in a tier that takes none (still fine for a retry).
 * `full` says whether an endpoint was skipped for its request limit.
 */
export function scanPlans(
  plans: readonly Plan[],
  exclude: readonly string[] | undefined,
  avoid: readonly string[] | undefined,
  maxPerEndpoint: number,
  random: () => number,
): { endpoint: Endpoint | undefined; full: boolean } {
  let full = false;
  for (const p of plans) {
    if (p.load === 0) continue;
    const candidates: Endpoint[] = [];
    let total = 0;
    for (const g of p.groups) {
      for (let j = 0; j < g.endpoints.length; j++) {
        const e = g.endpoints[j]!;
        if (avoid?.includes(e.cluster) || exclude?.includes(e.id)) continue;
        if (g.health[j]!.outstanding >= maxPerEndpoint) {
          full = true;
          continue;
        }
        candidates.push(e);
        total += e.weight;
      }
    }
    if (candidates.length === 0) continue;
    let r = random() * total;
    for (const e of candidates) {
      r -= e.weight;
      if (r < 0) return { endpoint: e, full };
    }
    return { endpoint: candidates[candidates.length - 1], full };
  }
  for (const p of plans) {
    if (p.load > 0) continue;
    for (const g of p.groups) {
      for (let j = 0; j < g.endpoints.length; j++) {
        const e = g.endpoints[j]!;
        if (avoid?.includes(e.cluster) || exclude?.includes(e.id)) continue;
        if (g.health[j]!.outstanding < maxPerEndpoint) return { endpoint: e, full };
        full = true;
      }
    }
  }
  return { endpoint: undefined, full };
}

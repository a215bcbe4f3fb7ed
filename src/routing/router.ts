/**
 * The router: from a service snapshot, the caller's locality and endpoint
 * health, picks an endpoint.
 *
 * Endpoints are sorted into priority tiers — own zone, own region, the
 * failover regions in order, the rest, backups — and a pick takes the first
 * tier with an available endpoint, weighted inside it. A balancer keeps an
 * immutable per-tier table, rebuilt only when the snapshot or health
 * changes (grpc-js's picker), so `pick()` is synchronous and allocates
 * nothing.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceSnapshot, ServiceWatch } from "../discovery/registry.js";
import type { EndpointHealth, HealthTracker, HealthView } from "../resilience/health.js";

/** The caller's place and its failover order. */
export interface RouterOptions {
  /** The caller's region (`MESHLINK_REGION`); empty when unknown. */
  readonly region: string;
  /** The caller's zone (`MESHLINK_ZONE`); empty when unknown. */
  readonly zone: string;
  /** Regions to fail over to, in order (`MESHLINK_FAILOVER`). */
  readonly failover: readonly string[];
}

/** Where an endpoint stands for this caller. Lower ranks are preferred. */
export interface TierInfo {
  /** The rank: 0 own zone, 1 own region, 2… failover regions, then the rest, then backups. */
  readonly rank: number;
  /** A label for traces and `describe()`: `zone`, `region`, `failover:<region>`, `other`, `backup`. */
  readonly label: string;
}

const ZONE: TierInfo = Object.freeze({ rank: 0, label: "zone" });
const REGION: TierInfo = Object.freeze({ rank: 1, label: "region" });

/** Computes the tiers for a caller; one instance serves every service. */
export class TierMap {
  readonly #options: RouterOptions;
  readonly #failover: readonly TierInfo[];
  readonly #other: TierInfo;
  readonly #backup: TierInfo;

  constructor(options: RouterOptions) {
    this.#options = options;
    this.#failover = options.failover.map((region, i) =>
      Object.freeze({ rank: 2 + i, label: `failover:${region}` }),
    );
    this.#other = Object.freeze({ rank: 2 + options.failover.length, label: "other" });
    this.#backup = Object.freeze({ rank: 3 + options.failover.length, label: "backup" });
  }

  /** The tier of an endpoint. */
  of(endpoint: Endpoint): TierInfo {
    if (endpoint.backup) return this.#backup;
    const { region, zone } = this.#options;
    const loc = endpoint.locality;
    if (region !== "" && loc.region === region) {
      return zone !== "" && loc.zone === zone ? ZONE : REGION;
    }
    if (region === "" && zone !== "" && loc.zone === zone) return ZONE;
    const i = loc.region === "" ? -1 : this.#options.failover.indexOf(loc.region);
    return i >= 0 ? this.#failover[i]! : this.#other;
  }
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

interface TierTable {
  readonly tier: TierInfo;
  readonly endpoints: readonly Endpoint[];
  readonly health: readonly EndpointHealth[];
}

interface AvailableTier {
  readonly tier: TierInfo;
  readonly endpoints: Endpoint[];
  readonly health: EndpointHealth[];
  /** Cumulative weights, for a weighted pick by binary search. */
  readonly cumulative: number[];
  total: number;
}

/** The endpoints a call may not use again, and a cluster it would rather avoid. */
export interface PickConstraints {
  /** Endpoints already tried by this call (Envoy's previous_hosts). */
  readonly exclude?: readonly Endpoint[] | undefined;
  /** After a connection failure: prefer any other cluster over this one. */
  readonly avoidCluster?: string | undefined;
}

/** Usable for traffic: serving, and ready unless its cluster has no ready endpoint (kube-proxy's rule). */
function usable(endpoints: readonly Endpoint[]): Endpoint[] {
  const readyClusters = new Set<string>();
  for (const e of endpoints) if (e.ready && !e.terminating) readyClusters.add(e.cluster);
  return endpoints.filter(
    (e) => (e.ready && !e.terminating) || (e.serving && e.terminating && !readyClusters.has(e.cluster)),
  );
}

/**
 * The balancer of one service: keeps the tier table for the current
 * snapshot and the available subset for the current health, and picks.
 */
export class Balancer {
  readonly #watch: ServiceWatch;
  readonly #tiers: TierMap;
  readonly #health: HealthTracker;
  #snapshotVersion = -1;
  #table: readonly TierTable[] = [];
  #healthVersion = -1;
  #nextExpiry = Number.POSITIVE_INFINITY;
  #available: readonly AvailableTier[] = [];

  constructor(watch: ServiceWatch, tiers: TierMap, health: HealthTracker) {
    this.#watch = watch;
    this.#tiers = tiers;
    this.#health = health;
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
   * Picks an endpoint, or `undefined` when none is available. Synchronous;
   * allocates nothing unless constraints force a scan.
   */
  pick(constraints?: PickConstraints): Endpoint | undefined {
    const tiers = this.#current();
    const exclude = constraints?.exclude;
    const avoid = constraints?.avoidCluster;
    if (exclude === undefined && avoid === undefined) {
      for (const t of tiers) {
        if (t.total > 0) return weighted(t);
      }
      return undefined;
    }
    if (avoid !== undefined) {
      const other = this.#scan(tiers, exclude, avoid);
      if (other !== undefined) return other;
    }
    return this.#scan(tiers, exclude, undefined);
  }

  /** The health record the transport reports to for an endpoint. */
  healthOf(endpoint: Endpoint): EndpointHealth {
    return this.#health.get(endpoint.id);
  }

  /** The tier of an endpoint for this caller. */
  tierOf(endpoint: Endpoint): TierInfo {
    return this.#tiers.of(endpoint);
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

  #scan(
    tiers: readonly AvailableTier[],
    exclude: readonly Endpoint[] | undefined,
    avoid: string | undefined,
  ) {
    for (const t of tiers) {
      if (t.total === 0) continue;
      const candidates: number[] = [];
      let total = 0;
      for (let i = 0; i < t.endpoints.length; i++) {
        const e = t.endpoints[i]!;
        if (e.cluster === avoid || exclude?.includes(e)) continue;
        candidates.push(i);
        total += e.weight;
      }
      if (candidates.length === 0) continue;
      let r = Math.random() * total;
      for (const i of candidates) {
        r -= t.endpoints[i]!.weight;
        if (r < 0) return t.endpoints[i];
      }
      return t.endpoints[candidates[candidates.length - 1]!];
    }
    return undefined;
  }

  #current(): readonly AvailableTier[] {
    const snapshot = this.#watch.snapshot;
    const health = this.#health;
    if (snapshot.version !== this.#snapshotVersion) {
      this.#table = buildTable(snapshot, this.#tiers, health);
      this.#snapshotVersion = snapshot.version;
      this.#healthVersion = -1;
    }
    if (health.version !== this.#healthVersion || health.now() >= this.#nextExpiry) {
      this.#rebuildAvailable();
    }
    return this.#available;
  }

  #rebuildAvailable(): void {
    const health = this.#health;
    const now = health.now();
    let nextExpiry = Number.POSITIVE_INFINITY;
    this.#available = this.#table.map((t) => {
      const out: AvailableTier = { tier: t.tier, endpoints: [], health: [], cumulative: [], total: 0 };
      for (let i = 0; i < t.endpoints.length; i++) {
        const h = t.health[i]!;
        if (health.available(h, now)) {
          const e = t.endpoints[i]!;
          out.total += e.weight;
          out.endpoints.push(e);
          out.health.push(h);
          out.cumulative.push(out.total);
        } else if (h.state === "ejected" && h.ejectedUntil < nextExpiry) {
          nextExpiry = h.ejectedUntil;
        }
      }
      return out;
    });
    this.#healthVersion = health.version;
    this.#nextExpiry = nextExpiry;
  }
}

function buildTable(snapshot: ServiceSnapshot, tiers: TierMap, health: HealthTracker): TierTable[] {
  const byRank = new Map<number, { tier: TierInfo; endpoints: Endpoint[]; health: EndpointHealth[] }>();
  for (const e of usable(snapshot.endpoints)) {
    const tier = tiers.of(e);
    let t = byRank.get(tier.rank);
    if (t === undefined) {
      t = { tier, endpoints: [], health: [] };
      byRank.set(tier.rank, t);
    }
    t.endpoints.push(e);
    t.health.push(health.get(e.id));
  }
  return [...byRank.values()].sort((a, b) => a.tier.rank - b.tier.rank);
}

function weighted(t: AvailableTier): Endpoint {
  const n = t.endpoints.length;
  if (n === 1) return t.endpoints[0]!;
  const r = Math.random() * t.total;
  const cum = t.cumulative;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cum[mid]! > r) hi = mid;
    else lo = mid + 1;
  }
  return t.endpoints[lo]!;
}

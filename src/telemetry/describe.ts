/**
 * What `mesh.describe()` returns (the types below), and how one service's
 * part of it is made: where its endpoints came from and how fresh
 * they are, every endpoint with its health in the router's order, each
 * tier's share of the traffic as the router computes it (spill-over,
 * panic), and each cluster's count of available endpoints. An endpoint's
 * `available` and its health's `state` come from one view at one time, so
 * that they never contradict each other.
 *
 * @module
 */

import type { ClusterStatus } from "../discovery/discovery.js";
import type { ServiceState } from "../discovery/registry.js";
import type { HealthView } from "../routing/health.js";
import type { Balancer } from "../routing/router.js";
import type { TlsDescription } from "../tls/tls.js";
import { bestRank } from "./reasons.js";

/** One backend's view of a service, in `describe()`. */
export interface SourceDescription {
  /** The backend. */
  readonly backend: string;
  /** Its last outcome. */
  readonly state: ServiceState;
  /** How many endpoints it contributes. */
  readonly endpoints: number;
  /** True when its endpoints are last-known-good from before a failure. */
  readonly stale: boolean;
  /** When it last answered (ISO time). */
  readonly updatedAt: string | undefined;
  /** Milliseconds since it last answered. */
  readonly ageMs: number | undefined;
  /** Its last error, while failing. */
  readonly error: string | undefined;
  /** The code of its last error, while failing (`MESHLINK_ERR_DISCOVERY`). */
  readonly errorCode: string | undefined;
  /** Per-cluster freshness, for backends that ask several clusters. */
  readonly clusters: readonly ClusterStatus[] | undefined;
}

/** One service in `describe()`. */
export interface ServiceDescription {
  /** The canonical name, with the port when one was asked. */
  readonly service: string;
  /** The merged state. */
  readonly state: ServiceState;
  /** Milliseconds since the freshest answer of any backend; undefined before the first. */
  readonly ageMs: number | undefined;
  /** True when the best tier the service has does not take all of its traffic (spill-over or failover). */
  readonly failover: boolean;
  /** True when a tier that takes traffic is in panic (picks ignore health). */
  readonly panic: boolean;
  /** Each tier's size, health and share of the traffic, as the router computes them. */
  readonly tiers: readonly TierDescription[];
  /** Each cluster's endpoints and how many are available. */
  readonly clusters: readonly ClusterDescription[];
  /** Where the endpoints came from. */
  readonly sources: readonly SourceDescription[];
  /** Every endpoint, in the router's order. */
  readonly endpoints: readonly EndpointDescription[];
}

/** One endpoint in `describe()`. */
export interface EndpointDescription {
  /** `cluster/address:port`. */
  readonly id: string;
  /** Its address. */
  readonly address: string;
  /** Its port. */
  readonly port: number;
  /** Its cluster. */
  readonly cluster: string;
  /** Its region. */
  readonly region: string;
  /** Its zone. */
  readonly zone: string;
  /** Its tier for this caller. */
  readonly tier: string;
  /** Its weight. */
  readonly weight: number;
  /** True for a backup endpoint. */
  readonly backup: boolean;
  /** Ready for traffic, as discovery says. */
  readonly ready: boolean;
  /** True when the router may send a call to it now. */
  readonly available: boolean;
  /** Why not, when not available: `ejected`, `probing`, `not-ready`, `terminating`. */
  readonly unavailableReason: string | undefined;
  /** Its health (state, ejections, EWMA latency, requests in flight), at the same time as `available`. */
  readonly health: HealthView;
}

/** The JSON snapshot `mesh.describe()` returns. */
export interface MeshDescription {
  /** The caller's locality and failover order. */
  readonly locality: {
    /** The caller's region. */
    readonly region: string;
    /** The caller's zone. */
    readonly zone: string;
    /** Failover regions, in order. */
    readonly failover: readonly string[];
  };
  /** When the snapshot was taken (ISO time). */
  readonly time: string;
  /** The discovery backends, by name. */
  readonly backends: readonly string[];
  /** Every service the mesh has resolved so far. */
  readonly services: readonly ServiceDescription[];
  /** Mutual TLS: the mode, each certificate with its not-after, the last refused rotation. */
  readonly tls: TlsDescription;
  /** The egress rules in force, in the order they apply. */
  readonly egress: readonly string[];
}

/** One tier of a service in `describe()`: size, health and share of traffic. */
export interface TierDescription {
  /** The tier: `zone`, `region`, `failover:<region>`, `other`, `backup`, … */
  readonly tier: string;
  /** Its rank for this caller: 0 is tried first. */
  readonly rank: number;
  /** Endpoints in it that discovery lists as usable (ready, or serving while terminating). */
  readonly total: number;
  /** Those that may take traffic now (not ejected, not probing). */
  readonly healthy: number;
  /** Its share of the traffic, in [0, 1]: less than 1 in the best tier is a failover (spill-over). */
  readonly load: number;
  /** True when it is in panic: its picks ignore health. */
  readonly panic: boolean;
}

/** One cluster of a service in `describe()`. */
export interface ClusterDescription {
  /** The cluster. */
  readonly cluster: string;
  /** The regions of its endpoints. */
  readonly regions: readonly string[];
  /** The zones of its endpoints. */
  readonly zones: readonly string[];
  /** Its endpoints. */
  readonly endpoints: number;
  /** Those the router may send a call to now. */
  readonly available: number;
}

/** The description of the service a balancer follows, at `now` (epoch ms). */
export function describeService(b: Balancer, now: number = Date.now()): ServiceDescription {
  const snapshot = b.watch.snapshot;
  let freshest: number | undefined;
  for (const s of snapshot.sources) {
    if (s.updatedAt !== undefined && (freshest === undefined || s.updatedAt > freshest))
      freshest = s.updatedAt;
  }
  const rows = b.order();
  const clusters = new Map<
    string,
    { regions: Set<string>; zones: Set<string>; endpoints: number; available: number }
  >();
  for (const r of rows) {
    const e = r.endpoint;
    let c = clusters.get(e.cluster);
    if (c === undefined) {
      c = { regions: new Set(), zones: new Set(), endpoints: 0, available: 0 };
      clusters.set(e.cluster, c);
    }
    if (e.locality.region !== "") c.regions.add(e.locality.region);
    if (e.locality.zone !== "") c.zones.add(e.locality.zone);
    c.endpoints++;
    if (r.available) c.available++;
  }
  const tiers = b.tiers().map(
    (t): TierDescription => ({
      tier: t.tier.label,
      rank: t.tier.rank,
      total: t.total,
      healthy: t.healthy,
      load: t.load,
      panic: t.panic,
    }),
  );
  const best = bestRank(b);
  const first = tiers.find((t) => t.rank === best);
  const serving = tiers.some((t) => t.load > 0);
  return {
    service: snapshot.service.id,
    state: snapshot.state,
    ageMs: freshest === undefined ? undefined : now - freshest,
    failover: serving && (first === undefined || first.load < 1 - 1e-9),
    panic: tiers.some((t) => t.panic && t.load > 0),
    tiers,
    clusters: [...clusters].map(([cluster, c]) => ({
      cluster,
      regions: [...c.regions],
      zones: [...c.zones],
      endpoints: c.endpoints,
      available: c.available,
    })),
    sources: snapshot.sources.map((s) => ({
      backend: s.backend,
      state: s.state,
      endpoints: s.endpoints.length,
      stale: s.stale,
      updatedAt: s.updatedAt === undefined ? undefined : new Date(s.updatedAt).toISOString(),
      ageMs: s.updatedAt === undefined ? undefined : now - s.updatedAt,
      error: s.error?.message,
      errorCode: s.error?.code,
      clusters: s.clusters,
    })),
    endpoints: rows.map((r) => ({
      id: r.endpoint.id,
      address: r.endpoint.address,
      port: r.endpoint.port,
      cluster: r.endpoint.cluster,
      region: r.endpoint.locality.region,
      zone: r.endpoint.locality.zone,
      tier: r.tier.label,
      weight: r.endpoint.weight,
      backup: r.endpoint.backup,
      ready: r.endpoint.ready,
      available: r.available,
      unavailableReason: r.unavailableReason,
      health: r.health,
    })),
  };
}

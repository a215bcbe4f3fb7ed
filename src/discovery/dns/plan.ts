/**
 * What the DNS backend asks for each form of service name (A/AAAA or SRV,
 * and under which name), and how one cluster's answers become endpoints
 * with the TTL that decides the next refresh.
 *
 * @module
 */

import { isIP } from "node:net";
import { createEndpoint, type Endpoint } from "../endpoint.js";
import type { ServiceName } from "../names.js";
import type { DnsSettings, ResolvedCluster } from "./options.js";
import { ABSENT_CODES, type AddressRecord, DnsQueryError, type DnsTransport } from "./transport.js";

/** What one watch asks one cluster for a service. */
export type DnsQueryPlan =
  | {
      /** SRV lookup, then A/AAAA of each target. */
      readonly type: "srv";
      /** The SRV name. */
      readonly name: string;
    }
  | {
      /** A/AAAA lookup; every address is an endpoint on `port`. */
      readonly type: "address";
      /** The host name. */
      readonly name: string;
      /** The port every address gets. */
      readonly port: number;
    };

/**
 * The DNS question for a service in a cluster with domain `domain`:
 *
 * - Kubernetes (`<svc>.<ns>.svc.<domain>`) and Multi-Cluster Services
 *   (`<svc>.<ns>.svc.clusterset.local`) names: a numeric port → A/AAAA, every
 *   address on that port; a named port → SRV `_<port>._<proto>.<host>`; no
 *   port → A/AAAA on `defaultPort`.
 * - Consul names (`<svc>.service[.<dc>].consul`): always SRV, since instances
 *   register their own ports (which may differ per instance); a named port is
 *   a tag (`<tag>.<svc>.service.consul`); a numeric port from the URL is not
 *   used, as with the static backend.
 *
 * @internal
 */
export function dnsQueryPlan(
  service: ServiceName,
  domain: string,
  protocol: "tcp" | "udp",
  defaultPort: number,
): DnsQueryPlan {
  let host: string;
  switch (service.kind) {
    case "kubernetes":
      host = `${service.service}.${service.namespace}.svc.${domain}`;
      break;
    case "clusterset":
      host = `${service.service}.${service.namespace}.svc.clusterset.local`;
      break;
    case "consul":
      host =
        service.datacenter === undefined
          ? `${service.service}.service.consul`
          : `${service.service}.service.${service.datacenter}.consul`;
      break;
  }
  if (service.kind === "consul") {
    return { type: "srv", name: service.portName === undefined ? host : `${service.portName}.${host}` };
  }
  if (service.portName !== undefined)
    return { type: "srv", name: `_${service.portName}._${protocol}.${host}` };
  return { type: "address", name: host, port: service.port ?? defaultPort };
}

/** A resolved cluster: its endpoints (sorted) and how long the answer holds, ms. */
export interface ClusterAnswer {
  readonly endpoints: readonly Endpoint[];
  readonly ttlMs: number;
}

/** Is the address family asked? */
const wants = (family: 0 | 4 | 6, f: 4 | 6) => family === 0 || family === f;

/**
 * A and/or AAAA of one name. NXDOMAIN on either means the name does not
 * exist; NODATA on both means it has no address; any other failure fails
 * the whole lookup (so that a flaky AAAA cannot drop the IPv6 endpoints
 * from a set that is otherwise fine).
 */
async function addresses(
  transport: DnsTransport,
  name: string,
  family: 0 | 4 | 6,
  signal: AbortSignal | undefined,
): Promise<AddressRecord[]> {
  const asks: Promise<AddressRecord[]>[] = [];
  if (wants(family, 4)) asks.push(transport.a(name, signal));
  if (wants(family, 6)) asks.push(transport.aaaa(name, signal));
  const results = await Promise.allSettled(asks);
  const errors = results
    .filter((r): r is PromiseRejectedResult => r.status === "rejected")
    .map((r) => r.reason as DnsQueryError);
  const notFound = errors.find((e) => e?.code === "ENOTFOUND");
  if (notFound) throw notFound;
  const failure = errors.find((e) => !ABSENT_CODES.has(e?.code));
  if (failure) throw failure;
  const out = results.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
  if (out.length === 0) throw errors[0] ?? new DnsQueryError("ENODATA", `querying addresses of ${name}`);
  return out;
}

function compareEndpoints(a: Endpoint, b: Endpoint): number {
  return a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port;
}

/**
 * Asks one cluster what `plan` says and turns the answers into endpoints.
 * The answer holds for the smallest TTL of the records used; a TTL the
 * client cannot see counts as `defaultTtl`.
 *
 * @throws {@link DnsQueryError}
 */
export async function resolvePlan(
  settings: DnsSettings,
  cluster: ResolvedCluster,
  transport: DnsTransport,
  plan: DnsQueryPlan,
  signal?: AbortSignal,
): Promise<ClusterAnswer> {
  const make = (address: string, port: number, weight: number, backup: boolean) =>
    createEndpoint({
      address,
      port,
      cluster: cluster.name,
      region: cluster.region,
      zone: cluster.zone,
      weight,
      backup,
      backend: settings.name,
    });
  let ttlMs = Number.POSITIVE_INFINITY;
  const seen = (ttl: number | undefined) => {
    ttlMs = Math.min(ttlMs, ttl === undefined ? settings.defaultTtl : ttl * 1000);
  };
  const byId = new Map<string, Endpoint>();

  if (plan.type === "address") {
    for (const r of await addresses(transport, plan.name, settings.family, signal)) {
      seen(r.ttl);
      const e = make(r.address, plan.port, 1, false);
      byId.set(e.id, e);
    }
  } else {
    // RFC 2782: a lone record with target "." says the service is
    // decidedly not available here; port 0 cannot be connected to.
    const records = (await transport.srv(plan.name, signal))
      .filter((r) => r.target !== "" && r.target !== "." && r.port > 0)
      .sort((a, b) => a.priority - b.priority);
    for (const r of records) seen(r.ttl);
    const primary = records[0]?.priority;
    // The server may have sent the targets' addresses along (the additional
    // section): a target with any address of a family asked is taken as
    // listed in full, as servers add every address they hold for it.
    const glue = new Map<string, AddressRecord[]>();
    for (const r of records) {
      const usable = r.addresses?.filter((a) => wants(settings.family, isIP(a.address) === 6 ? 6 : 4));
      if (usable !== undefined && usable.length > 0 && !glue.has(r.target)) glue.set(r.target, usable);
    }
    const targets = [...new Set(records.map((r) => r.target))];
    const found = await Promise.all(
      targets.map(async (target): Promise<[string, readonly AddressRecord[]]> => {
        // An address as target has no TTL of its own: the SRV record's counts.
        if (isIP(target) !== 0) return [target, [{ address: target, ttl: Number.POSITIVE_INFINITY }]];
        const listed = glue.get(target);
        if (listed !== undefined) return [target, listed];
        try {
          return [target, await addresses(transport, target, settings.family, signal)];
        } catch (err) {
          // A target without addresses is a dangling record: skip it. Any
          // other failure fails the cluster (its last good set is kept).
          if (err instanceof DnsQueryError && ABSENT_CODES.has(err.code)) return [target, []];
          throw err;
        }
      }),
    );
    const byTarget = new Map(found);
    for (const r of records) {
      for (const a of byTarget.get(r.target) ?? []) {
        if (Number.isFinite(a.ttl)) seen(a.ttl);
        // Weight 0 (RFC 2782: "very small chance") becomes 1, the router's
        // smallest weight; the same address and port listed twice keeps its
        // most preferred record (records are sorted by priority).
        const e = make(a.address, r.port, Math.max(1, r.weight), r.priority !== primary);
        if (!byId.has(e.id)) byId.set(e.id, e);
      }
    }
  }
  const endpoints = [...byId.values()].sort(compareEndpoints);
  return { endpoints, ttlMs: Number.isFinite(ttlMs) ? ttlMs : settings.defaultTtl };
}

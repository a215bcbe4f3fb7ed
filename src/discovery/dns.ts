/**
 * The DNS backend: A/AAAA and SRV lookups against each cluster's own DNS
 * server (CoreDNS, kube-dns, a Consul agent's DNS interface), refreshed as
 * the answers' TTLs run out, merged into one endpoint set across clusters.
 *
 * The parts live in `dns/`: the options (`options.ts`), what is asked for
 * each name form (`plan.ts`), the per-cluster refresh loop (`refresh.ts`),
 * the clients shared by every watch (`pool.ts`) and the clients themselves
 * (`transport.ts`, `tcp.ts`). This file merges the clusters of one watch
 * into snapshots.
 *
 * @module
 */

import { setMaxListeners } from "node:events";
import { parseOptions } from "../config/validate.js";
import type { DiscoveryBackend, DiscoveryUpdate, WatchOptions } from "./discovery.js";
import {
  type DnsDiscoveryOptions,
  dnsDiscoverySchema,
  dnsSettings,
  type ParsedDnsOptions,
} from "./dns/options.js";
import { dnsQueryPlan } from "./dns/plan.js";
import { DnsClientPool } from "./dns/pool.js";
import {
  type ClusterState,
  describeError,
  pendingState,
  type RefreshContext,
  refreshCluster,
  statusOf,
} from "./dns/refresh.js";
import { tcpTransport } from "./dns/tcp.js";
import {
  DnsQueryError,
  type DnsTransport,
  type DnsTransportOptions,
  nativeTransport,
} from "./dns/transport.js";
import type { Endpoint } from "./endpoint.js";
import { AbortFanout, ClaimSet, ClusterAnnouncer, Wakeup } from "./merge.js";
import type { ServiceName } from "./names.js";

export type { DnsCluster, DnsDiscoveryOptions } from "./dns/options.js";
export { dnsDiscoverySchema } from "./dns/options.js";
export { type DnsQueryPlan, dnsQueryPlan } from "./dns/plan.js";

/** @internal Replaceable parts, for tests. */
export interface DnsDependencies {
  /** Builds a cluster's client; default: TCP when `tcp`, else `node:dns`. */
  transport?: (options: DnsTransportOptions & { tcp: boolean; cluster: string }) => DnsTransport;
  /** Clock, ms; default `Date.now`. */
  now?: () => number;
  /** Uniform in [0, 1); default `Math.random`. */
  random?: () => number;
}

/** @internal What a DNS backend holds right now: each is 0 once every watch has ended. */
export interface DnsBackendStats {
  /** Watches running. */
  readonly watches: number;
  /** Clients open (one per cluster with a watch). */
  readonly clients: number;
  /** Refresh timers pending. */
  readonly timers: number;
  /** Cluster lookups in flight. */
  readonly lookups: number;
}

/** @internal A DNS backend, with its state counted for tests. */
export interface DnsBackend extends DiscoveryBackend {
  /** Counts what the backend holds. */
  stats(): DnsBackendStats;
}

function defaultTransport(options: DnsTransportOptions & { tcp: boolean }): DnsTransport {
  return options.tcp ? tcpTransport(options) : nativeTransport(options);
}

/** A key that changes when the endpoint set changes; answer order (DNS round-robin) does not count. */
function setKey(endpoints: readonly Endpoint[]): string {
  let key = "";
  for (const e of endpoints) key += `${e.id}|${e.weight}|${e.backup ? 1 : 0}\n`;
  return key;
}

/**
 * @internal Builds the backend from parsed options; {@link dnsDiscovery} is
 * the public entry. Tests pass fake transports, clocks and randomness.
 */
export function createDnsBackend(options: ParsedDnsOptions, deps: DnsDependencies = {}): DnsBackend {
  const settings = dnsSettings(options);
  const makeTransport = deps.transport ?? defaultTransport;
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const pool = new DnsClientPool((cluster) =>
    makeTransport({
      servers: cluster.servers,
      timeout: settings.timeout,
      tries: settings.tries,
      tcp: cluster.tcp,
      cluster: cluster.name,
    }),
  );
  const counters = { timers: 0, lookups: 0 };
  const aborts = new AbortFanout();
  /** Each running watch's end(); close() calls them (no listener on a shared signal per watch). */
  const sessions = new Set<() => void>();
  /** Names some cluster answered with records, oldest first. */
  const claimed = new ClaimSet();
  let closed = false;

  return {
    name: settings.name,
    claims: (service) => claimed.has(service.key),
    stats: () => ({
      watches: sessions.size,
      clients: pool.size,
      timers: counters.timers,
      lookups: counters.lookups,
    }),
    close() {
      closed = true;
      for (const end of [...sessions]) end();
      pool.close();
    },
    async *watch(service: ServiceName, { signal }: WatchOptions): AsyncGenerator<DiscoveryUpdate> {
      if (signal.aborted || closed) return;
      // Every lookup of the watch listens on this signal for as long as it runs.
      const stop = new AbortController();
      setMaxListeners(0, stop.signal);
      const leased: ClusterState["cluster"][] = [];
      // The watch ends on its signal alone, even while its consumer pulls no
      // further: lookups, timers and clients are released at once.
      const end = () => {
        if (!sessions.delete(end)) return;
        aborts.delete(signal, end);
        stop.abort();
        for (const cluster of leased.splice(0)) pool.release(cluster);
      };
      sessions.add(end);
      aborts.add(signal, end);

      const wakeup = new Wakeup();
      const wakeUp = wakeup.notify;
      stop.signal.addEventListener("abort", wakeUp, { once: true });
      const ctx: RefreshContext = {
        settings,
        now,
        random,
        signal: stop.signal,
        counters,
        notify: (state) => {
          if (state.status === "bound") claimed.remember(service.key);
          wakeUp();
        },
      };
      const states = settings.clusters.map(pendingState);

      try {
        for (const state of states) {
          const cluster = state.cluster;
          let client: DnsTransport;
          try {
            client = pool.acquire(cluster);
          } catch (err) {
            state.status = "failed";
            state.error = new DnsQueryError("EUNKNOWN", `creating a DNS client: ${(err as Error)?.message}`, {
              cause: err,
            });
            wakeUp();
            continue;
          }
          leased.push(cluster);
          const plan = dnsQueryPlan(service, cluster.domain, settings.protocol, settings.defaultPort);
          // The loop records every failure in its state; this guard only
          // keeps an unforeseen throw from becoming an unhandled rejection.
          refreshCluster(ctx, state, client, plan).catch((err: unknown) => {
            state.status = "failed";
            state.error = new DnsQueryError("EUNKNOWN", `refresh loop: ${(err as Error)?.message}`, {
              cause: err,
            });
            wakeUp();
          });
        }
        // Only an A/AAAA answer says whether the service exists; an SRV
        // NXDOMAIN may only mean that the port name does not.
        const decidesClaim = service.kind !== "consul" && service.portName === undefined;
        const announcer = new ClusterAnnouncer<string>(settings.name, service);
        while (!stop.signal.aborted) {
          await wakeup.changed();
          if (stop.signal.aborted) return;

          // The first snapshot waits for every cluster to answer or fail (a
          // lookup is bounded by timeout × tries): a remote cluster that
          // answers first must not take the first calls away from a local one
          // a moment behind it, nor one quick NXDOMAIN announce "not found".
          if (states.some((s) => s.status === "pending")) continue;
          const endpoints = states.flatMap((s) => s.endpoints);
          const failing = states.filter((s) => s.status === "failed");
          const round = {
            endpoints,
            key: setKey(endpoints),
            failure: failing.map(describeError).join("; "),
            cause: failing[0]?.error,
            clusters: Object.freeze(states.map(statusOf)),
          };
          for (const update of announcer.updates(round)) {
            if (update.kind === "not-found" && round.failure === "" && decidesClaim)
              claimed.forget(service.key);
            yield update;
            if (stop.signal.aborted) return;
          }
        }
      } finally {
        end();
      }
    },
  };
}

/**
 * Creates a DNS discovery backend: each cluster's DNS server is asked for
 * A/AAAA records (a numeric port was named) or SRV records (a named port,
 * or a Consul name without port), again as each answer's TTL runs out
 * (clamped to `[minTtl, maxTtl]`), and the clusters' endpoints merge into
 * one set. A cluster that fails (SERVFAIL, REFUSED, timeout) keeps its last
 * good endpoints, marked stale; NXDOMAIN means the service is gone there.
 * Every watch of a cluster shares one client. The backend claims a short
 * `svc.ns` name once a cluster has answered it with records.
 * See `docs/discovery/dns.md`.
 *
 * @param prefix Where the options were written, for error messages (`<file>: discovery[0].dns`).
 * @throws {@link ConfigError} for a malformed option, naming the option path and the value.
 * @example
 * ```ts
 * const backend = dnsDiscovery({ clusters: [
 *   { name: "cluster-east", region: "us-east-1", servers: ["10.96.0.10:53"] },
 *   { name: "cluster-west", region: "us-west-2", servers: ["10.112.0.10:53"], tcp: true },
 * ] });
 * const mesh = createMesh({ region: "us-east-1", discovery: [backend] });
 * ```
 */
export function dnsDiscovery(options: DnsDiscoveryOptions = {}, prefix = ""): DiscoveryBackend {
  return createDnsBackend(parseOptions(dnsDiscoverySchema, options, prefix), {});
}

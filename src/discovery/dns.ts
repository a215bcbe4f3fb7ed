/**
 * The DNS backend: A/AAAA and SRV lookups against each cluster's own DNS
 * server (CoreDNS, kube-dns, a Consul agent's DNS interface), refreshed as
 * the answers' TTLs run out, merged into one endpoint set across clusters.
 *
 * @module
 */

import { isIP } from "node:net";
import { z } from "zod";
import { parseOptions } from "../config/validate.js";
import { DiscoveryError } from "../errors.js";
import type { ClusterStatus, DiscoveryBackend, DiscoveryUpdate, WatchOptions } from "./discovery.js";
import { tcpTransport } from "./dns/tcp.js";
import {
  ABSENT_CODES,
  type AddressRecord,
  DnsQueryError,
  type DnsServer,
  type DnsTransport,
  type DnsTransportOptions,
  formatDnsServer,
  nativeTransport,
  parseDnsServer,
} from "./dns/transport.js";
import { createEndpoint, type Endpoint } from "./endpoint.js";
import type { ServiceName } from "./names.js";

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;

const DEFAULTS = {
  name: "dns",
  timeout: 1_000,
  tries: 2,
  minTtl: 1_000,
  maxTtl: 30_000,
  negativeTtl: 5_000,
  jitter: 0.1,
  defaultPort: 80,
  protocol: "tcp",
  family: 0,
  domain: "cluster.local",
} as const;

const durationMs = z.number().int().min(0).max(86_400_000);

const clusterSchema = z.strictObject({
  name: z.string().min(1, "cluster name must not be empty"),
  region: z.string(),
  zone: z.string().optional(),
  servers: z
    .array(
      z
        .string()
        .refine(
          (s) => parseDnsServer(s) !== undefined,
          "expected an IP address with an optional port: 10.96.0.10:53, [fd00::10]:53",
        ),
    )
    .min(1, "list at least one server, or leave servers out for the system resolver")
    .optional(),
  domain: z.string().regex(DNS_NAME, "expected a DNS domain such as cluster.local").optional(),
  tcp: z.boolean().optional(),
});

/** @internal The zod schema of {@link DnsDiscoveryOptions}, shared with the config loader. */
export const dnsDiscoverySchema = z
  .strictObject({
    name: z.string().min(1).optional(),
    clusters: z.array(clusterSchema).min(1).optional(),
    timeout: z.number().int().min(1).max(60_000).optional(),
    tries: z.number().int().min(1).max(10).optional(),
    // A floor, so that TTL 0 or a failing server cannot make a watch spin.
    minTtl: z.number().int().min(10).max(86_400_000).optional(),
    maxTtl: durationMs.optional(),
    negativeTtl: durationMs.optional(),
    jitter: z.number().min(0).max(1).optional(),
    defaultPort: z.number().int().min(1).max(65535).optional(),
    protocol: z.enum(["tcp", "udp"]).optional(),
    family: z.union([z.literal(0), z.literal(4), z.literal(6)]).optional(),
  })
  .superRefine((o, ctx) => {
    const seen = new Set<string>();
    o.clusters?.forEach((c, i) => {
      if (seen.has(c.name)) {
        ctx.addIssue({ code: "custom", message: "cluster name listed twice", path: ["clusters", i, "name"] });
      }
      seen.add(c.name);
    });
    if ((o.minTtl ?? DEFAULTS.minTtl) > (o.maxTtl ?? DEFAULTS.maxTtl)) {
      ctx.addIssue({ code: "custom", message: "minTtl must not exceed maxTtl", path: ["minTtl"] });
    }
  });

/** One cluster: its DNS servers and its locality. */
export interface DnsCluster {
  /** The cluster's name; every endpoint found through it carries it. */
  name: string;
  /** The cluster's region (`""` when unknown). */
  region: string;
  /** The cluster's zone. */
  zone?: string;
  /**
   * The cluster's DNS servers as `address[:port]` (`10.96.0.10:53`,
   * `[fd00::10]:53`); addresses, not host names. Default: the system
   * resolver's servers.
   */
  servers?: string[];
  /** The cluster's DNS domain for `svc.ns` names; default `cluster.local`. */
  domain?: string;
  /** Ask over TCP only (for CoreDNS `force_tcp` setups); default false: UDP, with TCP on truncation. */
  tcp?: boolean;
}

/**
 * Options of {@link dnsDiscovery}. Durations are in milliseconds.
 */
export interface DnsDiscoveryOptions {
  /** Instance name shown in `describe()` and errors; default `dns`. */
  name?: string;
  /** The clusters to ask; default one cluster named `local` on the system resolver. */
  clusters?: DnsCluster[];
  /** Per-try timeout of a lookup, ms; default 1 000. */
  timeout?: number;
  /** Tries per server before a lookup fails; default 2. */
  tries?: number;
  /** The shortest time between two refreshes, whatever the TTL; default 1 000 ms. */
  minTtl?: number;
  /** The longest time between two refreshes, whatever the TTL; also the longest retry backoff; default 30 000 ms. */
  maxTtl?: number;
  /**
   * How long an NXDOMAIN (or an answer with no records) is believed before
   * the name is asked again; default 5 000 ms. A shorter negative TTL from the
   * server's SOA (TCP mode) wins.
   */
  negativeTtl?: number;
  /** Each refresh comes up to this fraction of its delay early, so that watches spread out; default 0.1. */
  jitter?: number;
  /** The port of A/AAAA endpoints when the caller named none (e.g. `mesh.resolve("svc.ns")`); default 80. */
  defaultPort?: number;
  /** The protocol label of SRV names (`_http._tcp.…`); default `tcp`. */
  protocol?: "tcp" | "udp";
  /** Address families to ask: 4 (A), 6 (AAAA) or 0 (both); default 0. */
  family?: 0 | 4 | 6;
}

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

/** A resolved cluster: its endpoints (sorted) and the TTL of the answer, seconds. */
interface ClusterAnswer {
  readonly endpoints: readonly Endpoint[];
  readonly ttl: number;
}

/** The parsed options plus one cluster, as the resolving code needs them. */
interface ResolvedCluster {
  readonly name: string;
  readonly region: string;
  readonly zone: string;
  readonly servers: readonly DnsServer[];
  readonly domain: string;
  readonly tcp: boolean;
  /** For messages: the servers, or "system resolver". */
  readonly where: string;
}

/** What the watch code needs; tests replace the transport, clock and randomness. */
interface Settings {
  readonly name: string;
  readonly clusters: readonly ResolvedCluster[];
  readonly timeout: number;
  readonly tries: number;
  readonly minTtl: number;
  readonly maxTtl: number;
  readonly negativeTtl: number;
  readonly jitter: number;
  readonly defaultPort: number;
  readonly protocol: "tcp" | "udp";
  readonly family: 0 | 4 | 6;
}

/** @internal Replaceable parts, for tests. */
export interface DnsDependencies {
  /** Builds a cluster's transport; default: TCP when `tcp`, else `node:dns`. */
  transport?: (options: DnsTransportOptions & { tcp: boolean; cluster: string }) => DnsTransport;
  /** Clock, ms; default `Date.now`. */
  now?: () => number;
  /** Uniform in [0, 1); default `Math.random`. */
  random?: () => number;
}

function defaultTransport(options: DnsTransportOptions & { tcp: boolean }): DnsTransport {
  return options.tcp ? tcpTransport(options) : nativeTransport(options);
}

/** Is the address family asked? */
const wants = (family: 0 | 4 | 6, f: 4 | 6) => family === 0 || family === f;

/**
 * A and/or AAAA of one name. NXDOMAIN on either means the name does not
 * exist; NODATA on both means it has no address; any other failure fails
 * the whole lookup (so that a flaky AAAA cannot drop the IPv6 endpoints
 * from a set that is otherwise fine).
 */
async function addresses(transport: DnsTransport, name: string, family: 0 | 4 | 6): Promise<AddressRecord[]> {
  const asks: Promise<AddressRecord[]>[] = [];
  if (wants(family, 4)) asks.push(transport.a(name));
  if (wants(family, 6)) asks.push(transport.aaaa(name));
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

/** Resolves one service in one cluster. Throws a {@link DnsQueryError}. */
async function resolveCluster(
  settings: Settings,
  cluster: ResolvedCluster,
  transport: DnsTransport,
  plan: DnsQueryPlan,
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
  let ttl = Number.POSITIVE_INFINITY;
  const byId = new Map<string, Endpoint>();

  if (plan.type === "address") {
    for (const r of await addresses(transport, plan.name, settings.family)) {
      ttl = Math.min(ttl, r.ttl);
      const e = make(r.address, plan.port, 1, false);
      byId.set(e.id, e);
    }
  } else {
    // RFC 2782: a lone record with target "." says the service is
    // decidedly not available here; port 0 cannot be connected to.
    const records = (await transport.srv(plan.name))
      .filter((r) => r.target !== "" && r.target !== "." && r.port > 0)
      .sort((a, b) => a.priority - b.priority);
    for (const r of records) if (r.ttl !== undefined) ttl = Math.min(ttl, r.ttl);
    const primary = records[0]?.priority;
    const targets = [...new Set(records.map((r) => r.target))];
    const found = await Promise.all(
      targets.map(async (target): Promise<[string, AddressRecord[]]> => {
        if (isIP(target) !== 0) return [target, [{ address: target, ttl }]];
        try {
          return [target, await addresses(transport, target, settings.family)];
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
        if (Number.isFinite(a.ttl)) ttl = Math.min(ttl, a.ttl);
        // Weight 0 (RFC 2782: "very small chance") becomes 1, the router's
        // smallest weight; the same address and port listed twice keeps its
        // most preferred record (records are sorted by priority).
        const e = make(a.address, r.port, Math.max(1, r.weight), r.priority !== primary);
        if (!byId.has(e.id)) byId.set(e.id, e);
      }
    }
  }
  const endpoints = [...byId.values()].sort(compareEndpoints);
  return { endpoints, ttl: Number.isFinite(ttl) ? ttl : 0 };
}

/** One cluster's state inside one watch. */
interface ClusterState {
  readonly cluster: ResolvedCluster;
  status: "pending" | "bound" | "not-found" | "failed";
  /** The last good endpoints (kept while failing). */
  endpoints: readonly Endpoint[];
  updatedAt: number | undefined;
  error: DnsQueryError | undefined;
  failures: number;
}

function describeError(state: ClusterState): string {
  return `${state.error?.message ?? "unknown error"} (cluster ${state.cluster.name}, ${state.cluster.where})`;
}

function statusOf(s: ClusterState): ClusterStatus {
  return Object.freeze({
    cluster: s.cluster.name,
    fresh: s.status === "bound" || s.status === "not-found",
    updatedAt: s.updatedAt,
    error: s.status === "failed" ? describeError(s) : undefined,
  });
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
export function createDnsBackend(
  options: z.output<typeof dnsDiscoverySchema>,
  deps: DnsDependencies = {},
): DiscoveryBackend {
  const clusters = (options.clusters ?? [{ name: "local", region: "" }]).map((c): ResolvedCluster => {
    const servers = (c.servers ?? []).map((s) => parseDnsServer(s)!);
    return {
      name: c.name,
      region: c.region,
      zone: c.zone ?? "",
      servers,
      domain: c.domain ?? DEFAULTS.domain,
      tcp: c.tcp ?? false,
      where:
        servers.length === 0
          ? `system resolver${c.tcp ? " over TCP" : ""}`
          : `${servers.map(formatDnsServer).join(", ")}${c.tcp ? " over TCP" : ""}`,
    };
  });
  const settings: Settings = {
    name: options.name ?? DEFAULTS.name,
    clusters,
    timeout: options.timeout ?? DEFAULTS.timeout,
    tries: options.tries ?? DEFAULTS.tries,
    minTtl: options.minTtl ?? DEFAULTS.minTtl,
    maxTtl: options.maxTtl ?? DEFAULTS.maxTtl,
    negativeTtl: options.negativeTtl ?? DEFAULTS.negativeTtl,
    jitter: options.jitter ?? DEFAULTS.jitter,
    defaultPort: options.defaultPort ?? DEFAULTS.defaultPort,
    protocol: options.protocol ?? DEFAULTS.protocol,
    family: options.family ?? DEFAULTS.family,
  };
  const makeTransport = deps.transport ?? defaultTransport;
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const closed = new AbortController();

  const clamp = (ms: number) => Math.min(settings.maxTtl, Math.max(settings.minTtl, ms));
  const jittered = (ms: number) => Math.round(ms * (1 - settings.jitter * random()));

  /** How long until the next lookup of a cluster, after its latest outcome. */
  const delayAfter = (state: ClusterState, answerTtl: number | undefined): number => {
    switch (state.status) {
      case "bound":
        return jittered(clamp((answerTtl ?? 0) * 1000));
      case "not-found": {
        const server = answerTtl === undefined ? settings.negativeTtl : answerTtl * 1000;
        return jittered(Math.max(settings.minTtl, Math.min(settings.negativeTtl, server)));
      }
      default:
        // Back off from minTtl, doubling up to maxTtl, while the cluster fails.
        return jittered(clamp(settings.minTtl * 2 ** Math.min(state.failures - 1, 20)));
    }
  };

  return {
    name: settings.name,
    close() {
      closed.abort();
    },
    async *watch(service: ServiceName, { signal }: WatchOptions): AsyncGenerator<DiscoveryUpdate> {
      if (signal.aborted || closed.signal.aborted) return;
      const stop = new AbortController();
      const onAbort = () => stop.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      closed.signal.addEventListener("abort", onAbort, { once: true });

      let dirty = false;
      let wake: (() => void) | undefined;
      const notify = () => {
        dirty = true;
        const w = wake;
        wake = undefined;
        w?.();
      };
      stop.signal.addEventListener("abort", notify, { once: true });

      const timers = new Set<NodeJS.Timeout>();
      const transports: DnsTransport[] = [];
      const states: ClusterState[] = settings.clusters.map((cluster) => ({
        cluster,
        status: "pending",
        endpoints: [],
        updatedAt: undefined,
        error: undefined,
        failures: 0,
      }));

      const sleep = (ms: number) =>
        new Promise<void>((resolve) => {
          if (stop.signal.aborted) return resolve();
          const timer = setTimeout(() => {
            timers.delete(timer);
            stop.signal.removeEventListener("abort", done);
            resolve();
          }, ms);
          // A background refresh should not keep a process alive by itself.
          timer.unref?.();
          timers.add(timer);
          const done = () => {
            clearTimeout(timer);
            timers.delete(timer);
            resolve();
          };
          stop.signal.addEventListener("abort", done, { once: true });
        });

      const loop = async (state: ClusterState) => {
        const cluster = state.cluster;
        let transport: DnsTransport;
        try {
          transport = makeTransport({
            servers: cluster.servers,
            timeout: settings.timeout,
            tries: settings.tries,
            tcp: cluster.tcp,
            cluster: cluster.name,
          });
        } catch (err) {
          // Nothing may escape a loop nobody awaits: it would be an unhandled rejection.
          state.status = "failed";
          state.error = new DnsQueryError("EUNKNOWN", `creating a DNS client: ${(err as Error)?.message}`, {
            cause: err,
          });
          notify();
          return;
        }
        transports.push(transport);
        const plan = dnsQueryPlan(service, cluster.domain, settings.protocol, settings.defaultPort);
        while (!stop.signal.aborted) {
          let answerTtl: number | undefined;
          try {
            const answer = await resolveCluster(settings, cluster, transport, plan);
            if (stop.signal.aborted) return;
            answerTtl = answer.ttl;
            state.status = answer.endpoints.length > 0 ? "bound" : "not-found";
            state.endpoints = answer.endpoints;
            state.updatedAt = now();
            state.error = undefined;
            state.failures = 0;
          } catch (err) {
            if (stop.signal.aborted) return;
            const e =
              err instanceof DnsQueryError
                ? err
                : new DnsQueryError("EUNKNOWN", (err as Error)?.message ?? String(err), { cause: err });
            if (ABSENT_CODES.has(e.code)) {
              answerTtl = e.ttl;
              state.status = "not-found";
              state.endpoints = [];
              state.updatedAt = now();
              state.error = undefined;
              state.failures = 0;
            } else {
              state.status = "failed";
              state.error = e;
              state.failures++;
            }
          }
          notify();
          await sleep(delayAfter(state, answerTtl));
        }
      };

      const failedUpdate = (failing: readonly ClusterState[], clusters: readonly ClusterStatus[]) =>
        ({
          kind: "failed",
          error: new DiscoveryError(settings.name, service.key, failing.map(describeError).join("; "), {
            cause: failing[0]?.error,
          }),
          clusters,
        }) as const;

      try {
        for (const state of states) void loop(state);
        let lastKey: string | undefined;
        let lastFailure = "";
        while (!stop.signal.aborted) {
          if (!dirty) await new Promise<void>((resolve) => (wake = resolve));
          if (stop.signal.aborted) return;
          dirty = false;

          // The first snapshot waits for every cluster to answer or fail (a
          // lookup is bounded by timeout × tries): a remote cluster that
          // answers first must not take the first calls away from a local one
          // a moment behind it, nor one quick NXDOMAIN announce "not found".
          if (states.some((s) => s.status === "pending")) continue;
          const endpoints = states.flatMap((s) => s.endpoints);
          const failing = states.filter((s) => s.status === "failed");
          const failure = failing.map(describeError).join("; ");
          const key = setKey(endpoints);
          const clusters = Object.freeze(states.map(statusOf));
          // A set-change update goes out when the set changed, or when the
          // last failure has cleared (the registry then drops its stale mark).
          // A first answer that is empty because clusters failed is only a
          // failure: saying "not found" would be a guess.
          const announce =
            lastKey === undefined
              ? endpoints.length > 0 || failing.length === 0
              : key !== lastKey || (lastFailure !== "" && failing.length === 0);
          if (announce) {
            lastKey = key;
            lastFailure = "";
            yield endpoints.length > 0
              ? { kind: "bound", endpoints: Object.freeze(endpoints), clusters }
              : { kind: "not-found", clusters };
            if (stop.signal.aborted) return;
          }
          // A bound update clears the registry's stale mark, so a failure
          // still going on is said again after it.
          if (failing.length > 0 && failure !== lastFailure) {
            lastFailure = failure;
            yield failedUpdate(failing, clusters);
            if (stop.signal.aborted) return;
          }
        }
      } finally {
        stop.abort();
        signal.removeEventListener("abort", onAbort);
        closed.signal.removeEventListener("abort", onAbort);
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        for (const transport of transports) transport.cancel();
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

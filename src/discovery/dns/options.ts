/**
 * The DNS backend's options: their types, defaults and zod schema (shared
 * with the config loader), and the settings the rest of the backend reads
 * once they are parsed.
 *
 * @module
 */

import { z } from "zod";
import { type DnsServer, formatDnsServer, parseDnsServer } from "./transport.js";

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;

/** @internal The defaults of {@link DnsDiscoveryOptions}. */
export const DNS_DEFAULTS = {
  name: "dns",
  timeout: 1_000,
  tries: 2,
  minTtl: 1_000,
  maxTtl: 30_000,
  negativeTtl: 5_000,
  // CoreDNS's default TTL for Kubernetes records.
  defaultTtl: 5_000,
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
    defaultTtl: durationMs.optional(),
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
      if (c.tcp === true && c.servers === undefined) {
        ctx.addIssue({
          code: "custom",
          message:
            "tcp needs the cluster's servers listed: the system resolver (node:dns) cannot ask over TCP",
          path: ["clusters", i, "tcp"],
        });
      }
    });
    if ((o.minTtl ?? DNS_DEFAULTS.minTtl) > (o.maxTtl ?? DNS_DEFAULTS.maxTtl)) {
      ctx.addIssue({ code: "custom", message: "minTtl must not exceed maxTtl", path: ["minTtl"] });
    }
  });

/** The parsed form of {@link DnsDiscoveryOptions}. */
export type ParsedDnsOptions = z.output<typeof dnsDiscoverySchema>;

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
  /**
   * Ask over TCP only (for CoreDNS `force_tcp` setups), on one pipelined
   * connection per server; needs `servers`. Default false: UDP, with TCP on
   * truncation.
   */
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
  /**
   * The TTL of a record whose TTL the client cannot see (`node:dns` reports
   * none for SRV records), clamped to `[minTtl, maxTtl]`; default 5 000 ms.
   */
  defaultTtl?: number;
  /** Each refresh comes up to this fraction of its delay early, so that watches spread out; default 0.1. */
  jitter?: number;
  /** The port of A/AAAA endpoints when the caller named none (e.g. `mesh.resolve("svc.ns")`); default 80. */
  defaultPort?: number;
  /** The protocol label of SRV names (`_http._tcp.…`); default `tcp`. */
  protocol?: "tcp" | "udp";
  /** Address families to ask: 4 (A), 6 (AAAA) or 0 (both); default 0. */
  family?: 0 | 4 | 6;
}

/** @internal One cluster, parsed, as the resolving code needs it. */
export interface ResolvedCluster {
  readonly name: string;
  readonly region: string;
  readonly zone: string;
  readonly servers: readonly DnsServer[];
  readonly domain: string;
  readonly tcp: boolean;
  /** For messages: the servers, or "system resolver". */
  readonly where: string;
}

/** @internal The parsed options with every default filled in. */
export interface DnsSettings {
  readonly name: string;
  readonly clusters: readonly ResolvedCluster[];
  readonly timeout: number;
  readonly tries: number;
  readonly minTtl: number;
  readonly maxTtl: number;
  readonly negativeTtl: number;
  readonly defaultTtl: number;
  readonly jitter: number;
  readonly defaultPort: number;
  readonly protocol: "tcp" | "udp";
  readonly family: 0 | 4 | 6;
}

/** @internal Fills in the defaults of parsed options. */
export function dnsSettings(options: ParsedDnsOptions): DnsSettings {
  const clusters = (options.clusters ?? [{ name: "local", region: "" }]).map((c): ResolvedCluster => {
    const servers = (c.servers ?? []).map((s) => parseDnsServer(s)!);
    const tcp = c.tcp ?? false;
    return {
      name: c.name,
      region: c.region,
      zone: c.zone ?? "",
      servers,
      domain: c.domain ?? DNS_DEFAULTS.domain,
      tcp,
      where:
        servers.length === 0
          ? "system resolver"
          : `${servers.map(formatDnsServer).join(", ")}${tcp ? " over TCP" : ""}`,
    };
  });
  return {
    name: options.name ?? DNS_DEFAULTS.name,
    clusters,
    timeout: options.timeout ?? DNS_DEFAULTS.timeout,
    tries: options.tries ?? DNS_DEFAULTS.tries,
    minTtl: options.minTtl ?? DNS_DEFAULTS.minTtl,
    maxTtl: options.maxTtl ?? DNS_DEFAULTS.maxTtl,
    negativeTtl: options.negativeTtl ?? DNS_DEFAULTS.negativeTtl,
    defaultTtl: options.defaultTtl ?? DNS_DEFAULTS.defaultTtl,
    jitter: options.jitter ?? DNS_DEFAULTS.jitter,
    defaultPort: options.defaultPort ?? DNS_DEFAULTS.defaultPort,
    protocol: options.protocol ?? DNS_DEFAULTS.protocol,
    family: options.family ?? DNS_DEFAULTS.family,
  };
}

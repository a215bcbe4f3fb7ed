/**
 * The static backend: endpoints listed in options or the config file. For
 * development, tests, the demo, and fixed external services.
 *
 * @module
 */

import { isIP } from "node:net";
import { z } from "zod";
import { parseOptions } from "../config/validate.js";
import { ConfigError } from "../errors.js";
import type { DiscoveryBackend, DiscoveryUpdate, WatchOptions } from "./discovery.js";
import { addressProblem, createEndpoint, type Endpoint, hostPort } from "./endpoint.js";
import { parseServiceName, type ServiceName } from "./names.js";

const portSchema = z.number().int().min(1).max(65535);

/** The zod schema of one static endpoint. */
const staticEndpointSchema = z.strictObject({
  address: z.string().superRefine((address, ctx) => {
    const problem = addressProblem(address);
    if (problem !== undefined) ctx.addIssue({ code: "custom", message: `address ${problem}` });
  }),
  port: portSchema,
  cluster: z.string().min(1, "cluster must not be empty"),
  region: z.string().optional(),
  zone: z.string().optional(),
  subzone: z.string().optional(),
  weight: z.number().int().min(1).max(1_000_000).optional(),
  backup: z.boolean().optional(),
  ready: z.boolean().optional(),
  terminating: z.boolean().optional(),
  identity: z.string().optional(),
});

/** @internal The zod schema of {@link StaticDiscoveryOptions}, shared with the config loader. */
export const staticDiscoverySchema = z.strictObject({
  name: z.string().min(1).optional(),
  services: z.record(z.string(), z.array(staticEndpointSchema)),
});

/** One endpoint of a static service. */
export interface StaticEndpoint {
  /** An IPv4 or IPv6 address (no brackets), or an RFC 1123 host name; no port, path or URL. */
  address: string;
  /** The port to connect to, whatever port the URL names. */
  port: number;
  /** The cluster this endpoint belongs to. */
  cluster: string;
  /** Region of the cluster. */
  region?: string;
  /** Zone inside the region. */
  zone?: string;
  /** Sub-zone. */
  subzone?: string;
  /** Relative weight inside its tier; default 1. */
  weight?: number;
  /** Used only when no other tier has a healthy endpoint; default false. */
  backup?: boolean;
  /** Ready for traffic; default true. */
  ready?: boolean;
  /** Shutting down; default false. */
  terminating?: boolean;
  /** Expected TLS identity (SPIFFE ID). */
  identity?: string;
}

/** Options of {@link staticDiscovery}. */
export interface StaticDiscoveryOptions {
  /** Instance name shown in `describe()`; default `static`. */
  name?: string;
  /**
   * Endpoints by service name, in any form {@link parseServiceName} accepts.
   * Entries of one service with the same address and port are merged into
   * one endpoint: the first entry's fields, the greatest weight.
   */
  services: Record<string, StaticEndpoint[]>;
}

/** A static backend; its endpoint list can be replaced at run time with {@link StaticBackend.update}. */
export interface StaticBackend extends DiscoveryBackend {
  /**
   * Replaces the endpoints of the given services (others are kept); every
   * watcher of a changed service receives the new set. An empty list removes
   * the service (watchers see not-found).
   */
  update(services: Record<string, StaticEndpoint[]>): void;
}

/**
 * The address and port an entry connects to, as one key: IPv6 in its
 * canonical form, host names in lower case without a final dot.
 */
function socketKey(entry: StaticEndpoint): string {
  const a = entry.address;
  const address =
    isIP(a) === 6
      ? new URL(`http://[${a}]/`).hostname
      : isIP(a) === 4
        ? a
        : a.toLowerCase().replace(/\.$/, "");
  return `${address}:${entry.port}`;
}

/**
 * The entries of a list with duplicates merged: an entry for an address and
 * port already listed (whatever its cluster) is one endpoint, not two —
 * two would split one server's health between two records and double its
 * share of the traffic. The first entry's fields are kept, with the
 * greatest weight of its duplicates: listing a server twice is a slip (or
 * two lists pasted together), not a way to weigh it — `weight` says that.
 * Returns `list` itself when it has no duplicate.
 */
function mergeDuplicates(list: readonly StaticEndpoint[]): readonly StaticEndpoint[] {
  if (list.length < 2) return list;
  const first = new Map<string, number>();
  let out: StaticEndpoint[] | undefined;
  for (let i = 0; i < list.length; i++) {
    const entry = list[i]!;
    const key = socketKey(entry);
    const at = first.get(key);
    if (at === undefined) {
      first.set(key, out ? out.length : i);
      out?.push(entry);
      continue;
    }
    out ??= list.slice(0, i);
    const kept = out[at]!;
    const weight = Math.max(kept.weight ?? 1, entry.weight ?? 1);
    if (weight !== (kept.weight ?? 1)) out[at] = { ...kept, weight };
  }
  return out ?? list;
}

/** True when `endpoint` is what {@link createEndpoint} makes of `entry`: the entry has not changed. */
function matches(endpoint: Endpoint, entry: StaticEndpoint, backend: string): boolean {
  const loc = endpoint.locality;
  const ready = entry.ready ?? true;
  return (
    endpoint.address === entry.address &&
    endpoint.port === entry.port &&
    endpoint.cluster === entry.cluster &&
    loc.region === (entry.region ?? "") &&
    loc.zone === (entry.zone ?? "") &&
    loc.subzone === (entry.subzone ?? "") &&
    endpoint.weight === (entry.weight ?? 1) &&
    endpoint.backup === (entry.backup ?? false) &&
    endpoint.ready === ready &&
    endpoint.serving === ready &&
    endpoint.terminating === (entry.terminating ?? false) &&
    endpoint.identity === entry.identity &&
    endpoint.backend === backend
  );
}

/**
 * The endpoints of a list, keeping the previous object of every entry that
 * has not changed: building an endpoint costs far more than comparing one
 * (its id, its locality key, a frozen copy), and with the same objects the
 * registry recognises an identical set at once, so that a refresh that
 * changes nothing changes nothing downstream. An entry is looked for where
 * it was first, then by id (the list may have been reordered). Ids are
 * unique in `list` and in `previous` (duplicates are merged), so no
 * previous object can serve two entries.
 */
function endpointsOf(
  list: readonly StaticEndpoint[],
  previous: readonly Endpoint[] | undefined,
  backend: string,
): Endpoint[] {
  const out: Endpoint[] = [];
  // The previous endpoints by id: built on the first entry that is not where it was.
  let byId: Map<string, Endpoint> | undefined;
  for (let i = 0; i < list.length; i++) {
    const entry = list[i]!;
    const same = previous?.[i];
    if (same !== undefined && matches(same, entry, backend)) {
      out.push(same);
      continue;
    }
    if (previous !== undefined) {
      byId ??= new Map(previous.map((e) => [e.id, e]));
      const moved = byId.get(`${entry.cluster}/${hostPort(entry.address, entry.port)}`);
      if (moved !== undefined && matches(moved, entry, backend)) {
        out.push(moved);
        continue;
      }
    }
    out.push(createEndpoint({ ...entry, backend }));
  }
  return out;
}

function build(
  backend: string,
  services: Record<string, StaticEndpoint[]>,
  prefix: string,
  previous?: ReadonlyMap<string, readonly Endpoint[]>,
): Map<string, readonly Endpoint[]> {
  const out = new Map<string, readonly Endpoint[]>();
  for (const [raw, list] of Object.entries(services)) {
    let name: ServiceName;
    try {
      name = parseServiceName(raw);
    } catch (err) {
      throw new ConfigError(`${prefix}services[${JSON.stringify(raw)}]`, raw, (err as Error).message, {
        cause: err,
      });
    }
    out.set(name.key, Object.freeze(endpointsOf(mergeDuplicates(list), previous?.get(name.key), backend)));
  }
  return out;
}

/**
 * Creates a static discovery backend.
 *
 * @throws {@link ConfigError} for a malformed option, naming the option path and the value.
 * @example
 * ```ts
 * const backend = staticDiscovery({ services: { "my-service.default": [
 *   { address: "10.0.1.7", port: 8080, cluster: "cluster-east", region: "us-east-1", zone: "us-east-1a" },
 * ] } });
 * ```
 */
export function staticDiscovery(options: StaticDiscoveryOptions, prefix = ""): StaticBackend {
  const opts = parseOptions(staticDiscoverySchema, options, prefix);
  const name = opts.name ?? "static";
  const table = build(name, opts.services, prefix ? `${prefix}.` : "");
  const waiters = new Set<() => void>();

  const current = (key: string): DiscoveryUpdate => {
    const endpoints = table.get(key);
    return endpoints === undefined || endpoints.length === 0
      ? { kind: "not-found" }
      : { kind: "bound", endpoints };
  };

  return {
    name,
    claims: (service) => (table.get(service.key)?.length ?? 0) > 0,
    update(services) {
      const parsed = parseOptions(staticDiscoverySchema.shape.services, services, "update");
      for (const [key, endpoints] of build(name, parsed, "update.", table)) table.set(key, endpoints);
      for (const wake of [...waiters]) wake();
    },
    async *watch(service, { signal }: WatchOptions) {
      let last: readonly Endpoint[] | undefined | null = null;
      while (!signal.aborted) {
        const endpoints = table.get(service.key);
        if (endpoints !== last) {
          last = endpoints;
          yield current(service.key);
        }
        await new Promise<void>((resolve) => {
          const wake = () => {
            waiters.delete(wake);
            signal.removeEventListener("abort", wake);
            resolve();
          };
          waiters.add(wake);
          signal.addEventListener("abort", wake, { once: true });
        });
      }
    },
  };
}

/**
 * What `/v1/health/service/<name>` answers — a JSON array of Consul's
 * `ServiceEntry` (`Node`, `Service`, `Checks`), as Consul's Go API client
 * (`api/health.go`, `api/agent.go`, `api/catalog.go`) decodes it — validated
 * with zod, and how an entry becomes an {@link Endpoint}.
 *
 * Only the fields the backend reads are checked and kept: Consul adds
 * fields from version to version, and copying what nobody reads (check
 * output, proxy and connect blocks) would double the garbage of every
 * answer. Go encodes a nil slice or map as `null`, so lists and maps may be
 * `null`.
 *
 * @module
 */

import { z } from "zod";
import { describeIssue } from "../../config/validate.js";
import { createEndpoint, type Endpoint } from "../endpoint.js";
import type { ResolvedDatacenter } from "./settings.js";

const stringMap = z.record(z.string(), z.string()).nullish();
const port = z.number().int().min(0).max(65535);

/**
 * A service's tagged address (`api.ServiceAddress`). Consul sends
 * `Address`/`Port`; its API docs show `address`/`port`, and Go's decoder
 * takes either, so this does too.
 */
const serviceAddress = z.object({
  Address: z.string().optional(),
  Port: port.optional(),
  address: z.string().optional(),
  port: port.optional(),
});

const locality = z.object({ Region: z.string().optional(), Zone: z.string().optional() }).nullish();

const node = z.object({
  ID: z.string().optional(),
  Node: z.string(),
  Address: z.string(),
  Datacenter: z.string().optional(),
  TaggedAddresses: stringMap,
  Meta: stringMap,
  Locality: locality,
});

const service = z.object({
  ID: z.string(),
  Service: z.string(),
  Tags: z.array(z.string()).nullish(),
  Address: z.string().optional(),
  TaggedAddresses: z.record(z.string(), serviceAddress).nullish(),
  Meta: stringMap,
  Port: port,
  Weights: z.object({ Passing: z.number().int(), Warning: z.number().int() }).nullish(),
  Locality: locality,
});

const check = z.object({
  CheckID: z.string().optional(),
  Status: z.string(),
  ServiceID: z.string().optional(),
});

const entry = z.object({ Node: node, Service: service, Checks: z.array(check).nullish() });

/** One `ServiceEntry` of a health answer, as validated. */
export type ServiceEntry = z.output<typeof entry>;

const entries = z.array(entry);

/**
 * Validates a parsed JSON body. Returns the entries, or a short description
 * of the first problem (`[3].Service.Port: expected number, received string`).
 *
 * @internal
 */
export function parseServiceEntries(json: unknown): ServiceEntry[] | string {
  const result = entries.safeParse(json);
  if (result.success) return result.data;
  return describeIssue(result.error, "body");
}

/** Consul's check states, as `api.HealthChecks.AggregatedStatus` ranks them. */
export type AggregatedStatus = "passing" | "warning" | "critical" | "maintenance" | "unknown";

const NODE_MAINTENANCE = "_node_maintenance";
const SERVICE_MAINTENANCE = "_service_maintenance:";

/**
 * The worst state of an entry's checks: maintenance > critical > warning >
 * passing (no checks: passing), as Consul's own `AggregatedStatus`; a status
 * Consul does not define makes the entry `unknown` (Consul returns "").
 *
 * @internal
 */
export function aggregatedStatus(checks: ServiceEntry["Checks"]): AggregatedStatus {
  let warning = false;
  let critical = false;
  for (const c of checks ?? []) {
    const id = c.CheckID ?? "";
    if (id === NODE_MAINTENANCE || id.startsWith(SERVICE_MAINTENANCE)) return "maintenance";
    if (c.Status === "critical") critical = true;
    else if (c.Status === "warning") warning = true;
    else if (c.Status !== "passing") return "unknown";
  }
  return critical ? "critical" : warning ? "warning" : "passing";
}

/** How entries of one datacenter become endpoints. */
export interface ConversionContext {
  /** The datacenter asked. */
  readonly datacenter: ResolvedDatacenter;
  /** Use only instances whose checks all pass (else passing or warning). */
  readonly passingOnly: boolean;
  /** Meta keys naming the zone. */
  readonly zoneKeys: readonly string[];
  /** The agent already translated addresses (`X-Consul-Translate-Addresses`). */
  readonly translated: boolean;
  /** The backend's name. */
  readonly backend: string;
}

const WAN_KEYS = ["wan", "wan_ipv4", "wan_ipv6"] as const;

/**
 * Where to connect, following Consul's `CheckServiceNode.BestAddress`: the
 * service's address (its WAN tagged address first when `wan`), else the
 * node's (its `wan` tagged address first when `wan`); the port of the
 * service, or of the WAN tagged address when it names one.
 *
 * @internal
 */
export function bestAddress(e: ServiceEntry, wan: boolean): { address: string; port: number } {
  const svc = e.Service;
  let address = svc.Address ?? "";
  let p = svc.Port;
  if (wan) {
    for (const k of WAN_KEYS) {
      const t = svc.TaggedAddresses?.[k];
      const a = t?.Address ?? t?.address;
      if (t !== undefined && a !== undefined && a !== "") {
        address = a;
        const tp = t.Port ?? t.port ?? 0;
        if (tp !== 0) p = tp;
        break;
      }
    }
  }
  if (address === "") {
    const tagged = e.Node.TaggedAddresses;
    const nodeWan = wan ? (tagged?.wan ?? tagged?.wan_ipv4 ?? tagged?.wan_ipv6) : undefined;
    address = nodeWan !== undefined && nodeWan !== "" ? nodeWan : e.Node.Address;
  }
  return { address, port: p };
}

/** The zone: the first of `keys` in service meta, then in node meta, then Consul's `Locality.Zone`, else the datacenter's. */
function zoneOf(e: ServiceEntry, keys: readonly string[], fallback: string): string {
  for (const k of keys) {
    const v = e.Service.Meta?.[k];
    if (v !== undefined && v !== "") return v;
  }
  for (const k of keys) {
    const v = e.Node.Meta?.[k];
    if (v !== undefined && v !== "") return v;
  }
  return e.Service.Locality?.Zone || e.Node.Locality?.Zone || fallback;
}

/**
 * The endpoints of one datacenter's answer, sorted by address and port,
 * one per `cluster/address:port`. An instance is left out when it is not
 * healthy enough (`passingOnly`: every check passing; else no critical or
 * maintenance check), when its weight for its state is below 1 (Consul's
 * own proxies treat a 0 `Weights.Warning` as "no traffic while warning"),
 * or when it has no address or port.
 *
 * @internal
 */
export function toEndpoints(list: readonly ServiceEntry[], ctx: ConversionContext): Endpoint[] {
  const dc = ctx.datacenter;
  const byId = new Map<string, Endpoint>();
  for (const e of list) {
    const status = aggregatedStatus(e.Checks);
    if (status !== "passing" && (ctx.passingOnly || status !== "warning")) continue;
    const weights = e.Service.Weights;
    const weight = status === "passing" ? (weights?.Passing ?? 1) : (weights?.Warning ?? 1);
    if (weight < 1) continue;
    const { address, port: p } = bestAddress(e, dc.wan && !ctx.translated);
    if (address === "" || p === 0) continue;
    const endpoint = createEndpoint({
      address,
      port: p,
      cluster: dc.cluster ?? (e.Node.Datacenter || dc.label),
      region: dc.region,
      zone: zoneOf(e, ctx.zoneKeys, dc.zone),
      weight,
      backend: ctx.backend,
    });
    if (!byId.has(endpoint.id)) byId.set(endpoint.id, endpoint);
  }
  return [...byId.values()].sort((a, b) =>
    a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port,
  );
}

/** A key that changes when an endpoint set changes in anything the router reads. */
export function endpointSetKey(endpoints: readonly Endpoint[]): string {
  let key = "";
  for (const e of endpoints) key += `${e.id}|${e.weight}|${e.locality.zone}\n`;
  return key;
}

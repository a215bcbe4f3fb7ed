/**
 * From one cluster's EndpointSlices (and its Service) to endpoints: which
 * port to connect to, each endpoint's state and locality.
 *
 * Ports: a URL names the Service port; the endpoint listens on the target
 * port. The Service's port with that number gives a port name, and each
 * slice lists the target port under the same name (the EndpointSlice
 * controller resolves named container ports per pod, so two slices may
 * differ). A slice with only one port needs no Service: that port is used
 * whatever the URL says. A named port (`mesh.resolve("web.default", "http")`)
 * is looked up in the slices directly.
 *
 * States: `ready` (nil means true) → ready; `serving` (nil: as ready) and
 * `terminating` (nil: false) are kept, and the router applies kube-proxy's
 * rule (a serving, terminating endpoint only when its cluster has no ready one).
 *
 * @module
 */

import { createEndpoint, type Endpoint, hostPort } from "../endpoint.js";
import type { EndpointSlice, Service } from "./schemas.js";

/** The port a watch asks for: the Service port from the URL, a port name, or neither. */
export interface PortRequest {
  /** The Service port the URL names. */
  readonly port: number | undefined;
  /** A port name. */
  readonly portName: string | undefined;
}

/** The cluster-wide parts of every endpoint of a cluster. */
export interface MappingContext {
  /** The cluster's name. */
  readonly cluster: string;
  /** Its region. */
  readonly region: string;
  /** The zone of endpoints whose slice names none. */
  readonly zone: string;
  /** The backend's name. */
  readonly backend: string;
  /** Honour `hints.forZones` (kube-proxy's all-or-nothing rule). */
  readonly topologyHints: boolean;
  /** Sub-zone = the endpoint's `nodeName`. */
  readonly nodeSubzone: boolean;
}

/** What the Service reflector knows: the Service, known absent, or not known yet. */
export type ServiceKnowledge =
  | { readonly state: "known"; readonly service: Service }
  | { readonly state: "absent" }
  | { readonly state: "unknown" };

/** The endpoints of one cluster, and why some could not be mapped. */
export interface MappingResult {
  /** Sorted by address, then port. */
  readonly endpoints: readonly Endpoint[];
  /** Set when a slice with endpoints had no port to map to (a `port` error for the cluster). */
  readonly problem: string | undefined;
  /** True when the Service is needed to choose a port and is not known yet. */
  readonly waiting: boolean;
}

const ADDRESS_TYPES = new Set(["IPv4", "IPv6", "FQDN"]);

function describePorts(ports: readonly { name?: string | null | undefined; port: number }[]): string {
  return ports.map((p) => (p.name ? `${p.port}/${p.name}` : String(p.port))).join(", ");
}

type PortChoice = { port: number } | { problem: string } | { waiting: true };

/** The port to connect to on the endpoints of `slice`. */
export function choosePort(
  slice: EndpointSlice,
  service: ServiceKnowledge,
  request: PortRequest,
): PortChoice {
  const ports = slice.ports ?? [];
  if (request.portName !== undefined) {
    const p = ports.find((x) => (x.name ?? "") === request.portName);
    if (p?.port != null) return { port: p.port };
    return {
      problem: `no port named ${JSON.stringify(request.portName)} (slice ${slice.metadata.name} lists ${ports.map((x) => x.name || "(unnamed)").join(", ") || "none"})`,
    };
  }
  if (ports.length === 0) {
    // A slice without ports (a headless Service without ports): the URL's port is the endpoints' port.
    if (request.port !== undefined) return { port: request.port };
    return { problem: `slice ${slice.metadata.name} lists no port, and none was asked for` };
  }
  const only = ports.length === 1 ? ports[0]!.port : undefined;
  if (request.port === undefined) {
    if (only != null) return { port: only };
    return {
      problem: `the service has several ports (${ports.map((x) => x.name || "(unnamed)").join(", ")}): name one`,
    };
  }
  if (service.state === "known") {
    const servicePorts = service.service.spec?.ports ?? [];
    const sp = servicePorts.find((x) => x.port === request.port);
    if (sp !== undefined) {
      const name = sp.name ?? "";
      const p = ports.find((x) => (x.name ?? "") === name);
      if (p?.port != null) return { port: p.port };
      if (only != null) return { port: only };
      return {
        problem: `slice ${slice.metadata.name} has no port named ${JSON.stringify(name)} for service port ${request.port}`,
      };
    }
    if (only != null) return { port: only };
    return {
      problem: `the Service has no port ${request.port} (ports: ${describePorts(servicePorts) || "none"})`,
    };
  }
  if (only != null) return { port: only };
  if (service.state === "absent") {
    // Slices without a Service (managed by something else): match the number itself.
    const same = ports.find((x) => x.port === request.port);
    if (same?.port != null) return { port: same.port };
    return {
      problem: `no Service maps port ${request.port}, and slice ${slice.metadata.name} has no such port`,
    };
  }
  return { waiting: true };
}

/** The zone an endpoint is routed as: its hinted zone, when hints apply (see {@link mapEndpoints}). */
function hintedZone(own: string, hints: readonly { name: string }[]): string {
  if (hints.some((h) => h.name === own)) return own;
  return hints[0]?.name ?? own;
}

/**
 * Maps a cluster's slices to endpoints. `previous` (the last result's
 * endpoints) lets unchanged endpoints keep their objects, so that an
 * unchanged set compares equal cheaply downstream.
 *
 * Topology hints: when every ready endpoint has `hints.forZones` (and the
 * option is on), each endpoint is placed in the zone it is hinted for —
 * its own zone when listed, else the first — so that the router's zone tier
 * keeps to the controller's allocation, as kube-proxy does. When any ready
 * endpoint lacks hints, none apply (kube-proxy's rule too).
 */
export function mapEndpoints(
  ctx: MappingContext,
  slices: readonly EndpointSlice[],
  service: ServiceKnowledge,
  request: PortRequest,
  previous: readonly Endpoint[] = [],
): MappingResult {
  interface Raw {
    address: string;
    port: number;
    ready: boolean;
    serving: boolean;
    terminating: boolean;
    zone: string;
    node: string;
    hints: readonly { name: string }[] | undefined;
  }
  const raws: Raw[] = [];
  let problem: string | undefined;
  let waiting = false;
  for (const slice of slices) {
    if (!ADDRESS_TYPES.has(slice.addressType)) continue;
    const endpoints = slice.endpoints ?? [];
    if (endpoints.length === 0) continue;
    const choice = choosePort(slice, service, request);
    if ("waiting" in choice) {
      waiting = true;
      continue;
    }
    if ("problem" in choice) {
      problem ??= choice.problem;
      continue;
    }
    for (const ep of endpoints) {
      // The controller writes one address; kube-proxy, and we, use only the first.
      const address = ep.addresses?.[0];
      if (!address) continue;
      const c = ep.conditions ?? {};
      const ready = c.ready ?? true;
      raws.push({
        address: slice.addressType === "FQDN" ? address.toLowerCase().replace(/\.$/, "") : address,
        port: choice.port,
        ready,
        serving: c.serving ?? ready,
        terminating: c.terminating ?? false,
        zone: ep.zone ?? ctx.zone,
        node: ep.nodeName ?? "",
        hints: ep.hints?.forZones ?? undefined,
      });
    }
  }
  const useHints =
    ctx.topologyHints &&
    raws.some((r) => r.ready) &&
    raws.every((r) => !r.ready || (r.hints !== undefined && r.hints.length > 0));

  const reuse = new Map<string, Endpoint>();
  for (const e of previous) reuse.set(e.id, e);
  const byId = new Map<string, Endpoint>();
  for (const r of raws) {
    const zone =
      useHints && r.hints !== undefined && r.hints.length > 0 ? hintedZone(r.zone, r.hints) : r.zone;
    const subzone = ctx.nodeSubzone ? r.node : "";
    // An unchanged endpoint keeps its object, and costs no allocation.
    const old = reuse.get(`${ctx.cluster}/${hostPort(r.address, r.port)}`);
    const e =
      old !== undefined &&
      old.ready === r.ready &&
      old.serving === r.serving &&
      old.terminating === r.terminating &&
      old.locality.zone === zone &&
      old.locality.subzone === subzone &&
      old.locality.region === ctx.region
        ? old
        : createEndpoint({
            address: r.address,
            port: r.port,
            cluster: ctx.cluster,
            region: ctx.region,
            zone,
            subzone,
            ready: r.ready,
            serving: r.serving,
            terminating: r.terminating,
            backend: ctx.backend,
          });
    // The same address in two slices (while the controller moves it): keep the readier one.
    const seen = byId.get(e.id);
    if (seen === undefined || rank(e) > rank(seen)) byId.set(e.id, e);
  }
  const endpoints = [...byId.values()].sort(compareEndpoints);
  return { endpoints, problem, waiting };
}

function rank(e: Endpoint): number {
  return (e.ready ? 4 : 0) + (e.serving ? 2 : 0) + (e.terminating ? 0 : 1);
}

function compareEndpoints(a: Endpoint, b: Endpoint): number {
  return a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port;
}

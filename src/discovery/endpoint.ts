/**
 * Endpoints: immutable values a discovery backend produces and the router
 * picks from.
 *
 * @module
 */

/** Where an endpoint runs. Empty strings stand for "unknown". */
export interface Locality {
  /** Region, e.g. `us-east-1`. */
  readonly region: string;
  /** Zone, e.g. `us-east-1a`. */
  readonly zone: string;
  /** Sub-zone (rack, node pool), rarely used. */
  readonly subzone: string;
}

/** One address of a service. Immutable; built with {@link createEndpoint}. */
export interface Endpoint {
  /** Stable identity: `cluster/address:port`. Health is keyed by it, whichever backend or protocol saw it. */
  readonly id: string;
  /** An IPv4 or IPv6 address, or a host name. */
  readonly address: string;
  /** The port to connect to. */
  readonly port: number;
  /** The cluster (or Consul datacenter) the endpoint belongs to. */
  readonly cluster: string;
  /** Where the endpoint runs. */
  readonly locality: Locality;
  /** Relative weight inside its tier (≥ 1). */
  readonly weight: number;
  /** A backup endpoint is used only when no other tier has a healthy endpoint. */
  readonly backup: boolean;
  /** Ready to take new traffic (Kubernetes `ready`). */
  readonly ready: boolean;
  /** Still serving (Kubernetes `serving`); a terminating endpoint may serve while it drains. */
  readonly serving: boolean;
  /** Being shut down (Kubernetes `terminating`); used only when its cluster has no ready endpoint. */
  readonly terminating: boolean;
  /** The TLS identity the server is expected to present (a SPIFFE ID), if known. */
  readonly identity: string | undefined;
  /** The discovery backend that reported it. */
  readonly backend: string;
}

/** The fields a backend supplies to {@link createEndpoint}; the rest have defaults. */
export interface EndpointInit {
  /** An IPv4 or IPv6 address, or a host name. */
  address: string;
  /** The port to connect to. */
  port: number;
  /** The cluster name. */
  cluster: string;
  /** Region; default `""` (unknown). */
  region?: string | undefined;
  /** Zone; default `""` (unknown). */
  zone?: string | undefined;
  /** Sub-zone; default `""`. */
  subzone?: string | undefined;
  /** Weight; default 1. */
  weight?: number | undefined;
  /** Backup flag; default false. */
  backup?: boolean | undefined;
  /** Default true. */
  ready?: boolean | undefined;
  /** Default: same as `ready`. */
  serving?: boolean | undefined;
  /** Default false. */
  terminating?: boolean | undefined;
  /** Expected TLS identity (SPIFFE ID). */
  identity?: string | undefined;
  /** The reporting backend's name. */
  backend: string;
}

const localities = new Map<string, Locality>();

/** Interns locality objects so that thousands of endpoints share a handful. */
function locality(region: string, zone: string, subzone: string): Locality {
  const key = `${region}\0${zone}\0${subzone}`;
  let loc = localities.get(key);
  if (loc === undefined) {
    loc = Object.freeze({ region, zone, subzone });
    localities.set(key, loc);
  }
  return loc;
}

/** Formats `address:port`, bracketing IPv6 addresses. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Builds a frozen {@link Endpoint}, filling defaults.
 *
 * @example
 * ```ts
 * createEndpoint({ address: "10.0.1.7", port: 8080, cluster: "east", region: "us-east-1", backend: "static" })
 * ```
 */
export function createEndpoint(init: EndpointInit): Endpoint {
  const ready = init.ready ?? true;
  return Object.freeze({
    id: `${init.cluster}/${hostPort(init.address, init.port)}`,
    address: init.address,
    port: init.port,
    cluster: init.cluster,
    locality: locality(init.region ?? "", init.zone ?? "", init.subzone ?? ""),
    weight: init.weight ?? 1,
    backup: init.backup ?? false,
    ready,
    serving: init.serving ?? ready,
    terminating: init.terminating ?? false,
    identity: init.identity,
    backend: init.backend,
  });
}

/**
 * Endpoints: immutable values a discovery backend produces and the router
 * picks from.
 *
 * @module
 */

import { isIP } from "node:net";
import { InvalidEndpointError } from "../errors.js";

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

/** One RFC 1123 label: letters, digits and inner hyphens, 1–63 characters. */
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const NUMERIC = /^[0-9]+$/;

/**
 * Why `address` cannot be an endpoint's address, or undefined when it can:
 * an IPv4 or IPv6 literal (no brackets, no zone index: neither fits in a
 * URL's host), or an RFC 1123 host name whose last label is not all digits
 * (`999.1.1.1` and `10.1` are broken IPv4 addresses, not names). A host
 * name may end with a dot. Costs well under a microsecond: backends call it
 * for every address they report.
 *
 * @example
 * ```ts
 * addressProblem("10.0.1.7")       // undefined
 * addressProblem("10.0.1.7:8080")  // "has a port: give the port separately"
 * ```
 */
export function addressProblem(address: string): string | undefined {
  const ip = isIP(address);
  if (ip === 4) return undefined;
  if (ip === 6) return address.includes("%") ? "IPv6 zone indexes are not supported" : undefined;
  if (address === "") return "empty";
  if (address.includes("://")) return "is a URL: give the host name or IP address only";
  if (address.startsWith("/") || address.startsWith("./") || address.startsWith("../"))
    return "is a path: give a host name or IP address";
  if (address.startsWith("[")) return "give an IPv6 address without brackets";
  if (/^[^:]+:[0-9]*$/.test(address)) return "has a port: give the port separately";
  const name = address.endsWith(".") ? address.slice(0, -1) : address;
  if (name.length > 253) return "host name longer than 253 characters";
  const labels = name.split(".");
  for (const label of labels) {
    if (!LABEL.test(label)) return "not an IP address or host name (RFC 1123: letters, digits, '-' and '.')";
  }
  if (NUMERIC.test(labels[labels.length - 1]!)) return "not a valid IPv4 address";
  return undefined;
}

/**
 * Builds a frozen {@link Endpoint}, filling defaults. The address must be
 * an IP address or a host name and the port an integer in 1–65535: a bad
 * one fails here, where it is made, rather than at call time.
 *
 * @throws `InvalidEndpointError` (code `MESHLINK_ERR_INVALID_ENDPOINT`) naming the field and the value.
 * @example
 * ```ts
 * createEndpoint({ address: "10.0.1.7", port: 8080, cluster: "east", region: "us-east-1", backend: "static" })
 * ```
 */
export function createEndpoint(init: EndpointInit): Endpoint {
  const problem = typeof init.address === "string" ? addressProblem(init.address) : "not a string";
  if (problem !== undefined) throw new InvalidEndpointError("address", init.address, problem);
  if (!Number.isInteger(init.port) || init.port < 1 || init.port > 65535) {
    throw new InvalidEndpointError("port", init.port, "not an integer in 1-65535");
  }
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

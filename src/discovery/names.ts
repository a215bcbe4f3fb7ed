/**
 * Logical service names: the forms a caller may write in a URL or in
 * `mesh.resolve`, parsed into one canonical identity so that
 * `my-service.default`, `my-service.default.svc.cluster.local` and a static
 * backend's `my-service.default` entry all mean the same service.
 *
 * @module
 */

import { ServiceNameError } from "../errors.js";

/** Which naming system a {@link ServiceName} belongs to. */
export type ServiceNameKind = "kubernetes" | "clusterset" | "consul";

/** A parsed, canonical service name. Immutable. */
export interface ServiceName {
  /** The naming system: a Kubernetes service, a Multi-Cluster Services clusterset name, or Consul. */
  readonly kind: ServiceNameKind;
  /** The service's own name (`my-service`). */
  readonly service: string;
  /** The Kubernetes namespace, for `kubernetes` and `clusterset` names. */
  readonly namespace: string | undefined;
  /** The Consul datacenter, when the name carries one (`svc.service.dc-east.consul`). */
  readonly datacenter: string | undefined;
  /**
   * The canonical name: `svc.ns` for every Kubernetes form,
   * `svc.ns.svc.clusterset.local`, `svc.service.consul` or `svc.service.dc.consul`.
   */
  readonly key: string;
  /** The host as written (lower-cased, without a trailing dot). */
  readonly host: string;
  /** The numeric port asked for (from the URL), if any. */
  readonly port: number | undefined;
  /** A named port (`http`, `grpc`) asked for, if any; backends that know named ports (SRV, EndpointSlice) use it. */
  readonly portName: string | undefined;
  /** `key` plus the port: the identity the registry watches by. */
  readonly id: string;
}

/** The forms {@link parseServiceName} accepts, for error messages and docs. */
export const SERVICE_NAME_FORMS: readonly string[] = [
  "<svc>.<ns>",
  "<svc>.<ns>.svc.cluster.local",
  "<svc>.<ns>.svc.clusterset.local",
  "<svc>.service.consul",
  "<svc>.service.<dc>.consul",
];

const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const CONSUL_LABEL = /^[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;

function reject(input: string, problem: string): never {
  throw new ServiceNameError(input, `${problem}; accepted forms: ${SERVICE_NAME_FORMS.join(", ")}`);
}

/**
 * Parses a service name in any accepted form. `port` is the port the caller
 * asked for: a number (from a URL) or a port name.
 *
 * @throws {@link ServiceNameError} when the name is in no accepted form.
 * @example
 * ```ts
 * parseServiceName("my-service.default.svc.cluster.local", 8080).key // "my-service.default"
 * ```
 */
export function parseServiceName(input: string, port?: number | string): ServiceName {
  const name = tryParseServiceName(input, port);
  if (name === undefined) {
    const labels = String(input).toLowerCase().replace(/\.$/, "").split(".");
    const bad = labels.find((l) => !CONSUL_LABEL.test(l));
    reject(input, bad === undefined ? "not a service name" : `invalid label ${JSON.stringify(bad)}`);
  }
  if (name.port === undefined && port !== undefined && typeof port === "number") {
    reject(input, `invalid port ${port}`);
  }
  return name;
}

/**
 * Like {@link parseServiceName} but returns `undefined` instead of throwing;
 * used on the request path, where a host that is not a mesh name passes through.
 */
export function tryParseServiceName(input: string, port?: number | string): ServiceName | undefined {
  if (typeof input !== "string" || input.length === 0 || input.length > 253) return undefined;
  const host = (input.endsWith(".") ? input.slice(0, -1) : input).toLowerCase();
  const labels = host.split(".");
  let numericPort: number | undefined;
  let portName: string | undefined;
  if (typeof port === "number") {
    if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
    numericPort = port;
  } else if (typeof port === "string" && port !== "") {
    if (/^\d+$/.test(port)) {
      const n = Number(port);
      if (n < 1 || n > 65535) return undefined;
      numericPort = n;
    } else if (PORT_NAME.test(port.toLowerCase())) {
      portName = port.toLowerCase();
    } else {
      return undefined;
    }
  }
  const n = labels.length;
  let kind: ServiceNameKind;
  let service: string;
  let namespace: string | undefined;
  let datacenter: string | undefined;
  let key: string;
  if (n === 2 && LABEL.test(labels[0]!) && LABEL.test(labels[1]!)) {
    kind = "kubernetes";
    [service, namespace] = labels as [string, string];
    key = host;
  } else if (n === 5 && labels[2] === "svc" && labels[4] === "local" && labels[3] === "cluster") {
    if (!LABEL.test(labels[0]!) || !LABEL.test(labels[1]!)) return undefined;
    kind = "kubernetes";
    [service, namespace] = labels as [string, string];
    key = `${service}.${namespace}`;
  } else if (n === 5 && labels[2] === "svc" && labels[4] === "local" && labels[3] === "clusterset") {
    if (!LABEL.test(labels[0]!) || !LABEL.test(labels[1]!)) return undefined;
    kind = "clusterset";
    [service, namespace] = labels as [string, string];
    key = host;
  } else if (n === 3 && labels[1] === "service" && labels[2] === "consul") {
    if (!CONSUL_LABEL.test(labels[0]!)) return undefined;
    kind = "consul";
    service = labels[0]!;
    key = host;
  } else if (n === 4 && labels[1] === "service" && labels[3] === "consul") {
    if (!CONSUL_LABEL.test(labels[0]!) || !LABEL.test(labels[2]!)) return undefined;
    kind = "consul";
    service = labels[0]!;
    datacenter = labels[2];
    key = host;
  } else {
    return undefined;
  }
  const suffix = portName ?? (numericPort === undefined ? "" : String(numericPort));
  return Object.freeze({
    kind,
    service,
    namespace,
    datacenter,
    key,
    host,
    port: numericPort,
    portName,
    id: suffix ? `${key}:${suffix}` : key,
  });
}

/**
 * True for the fully qualified forms (`….svc.cluster.local`,
 * `….svc.clusterset.local`, `….consul`), which are mesh names whatever the
 * backends say. The short `svc.ns` form is also a valid public host name
 * (`example.com`), so the global dispatcher routes it only when a backend
 * claims it.
 */
export function isQualifiedServiceName(name: ServiceName): boolean {
  return name.host !== name.key || name.kind !== "kubernetes";
}

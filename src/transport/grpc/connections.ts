/**
 * What the gRPC transport's credentials and load balancer share about a
 * connection: which endpoint a subchannel is for (the load balancer puts it
 * in the subchannel's options; grpc-js hands them to the credentials'
 * connector), and why the last connection to an endpoint failed — grpc-js
 * passes the picker only a message, while the engine needs the error
 * itself to tell a TLS rejection (never retried on the same endpoint) or
 * an egress denial from a refused connection.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";

/** The subchannel option that carries the endpoint a subchannel connects to. */
export const ENDPOINT_OPTION = "meshlink.endpoint";

/** The last connection error per endpoint (the object in the subchannel's options), until a connection succeeds. */
const failures = new WeakMap<Endpoint, Error>();

/** Records why a connection to `endpoint` failed; `undefined` clears it (a connection succeeded). */
export function recordConnectError(endpoint: Endpoint, err: Error | undefined): void {
  if (err === undefined) failures.delete(endpoint);
  else failures.set(endpoint, err);
}

/** Why the last connection to `endpoint` failed, if meshlink's connector saw it. */
export function lastConnectError(endpoint: Endpoint): Error | undefined {
  return failures.get(endpoint);
}

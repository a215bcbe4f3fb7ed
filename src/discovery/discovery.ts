/**
 * The discovery backend family: the interface every backend implements and
 * the four outcomes of a name lookup (Finagle's `Addr`).
 *
 * @module
 */

import type { DiscoveryError } from "../errors.js";
import type { Endpoint } from "./endpoint.js";
import type { ServiceName } from "./names.js";

/** The state of one cluster (or datacenter) a backend asks, for `describe()`. */
export interface ClusterStatus {
  /** The cluster's name. */
  readonly cluster: string;
  /** False when the cluster's last answer is older than its last failed try. */
  readonly fresh: boolean;
  /** When the cluster last answered (epoch ms), if ever. */
  readonly updatedAt: number | undefined;
  /** The last error from this cluster, if its last try failed. */
  readonly error: string | undefined;
}

/** The lookup found the service: the full endpoint set (never a delta). */
export interface BoundUpdate {
  /** Discriminant. */
  readonly kind: "bound";
  /** Every endpoint the backend knows for the service, across its clusters. */
  readonly endpoints: readonly Endpoint[];
  /** Per-cluster freshness, for backends that ask several clusters. */
  readonly clusters?: readonly ClusterStatus[] | undefined;
}

/** The lookup failed; the registry keeps the backend's last good set. */
export interface FailedUpdate {
  /** Discriminant. */
  readonly kind: "failed";
  /** Why. */
  readonly error: DiscoveryError;
  /** Per-cluster state, when the backend asks several clusters. */
  readonly clusters?: readonly ClusterStatus[] | undefined;
}

/** The backend has not answered yet. */
export interface PendingUpdate {
  /** Discriminant. */
  readonly kind: "pending";
}

/** The backend is sure the service does not exist (NXDOMAIN, 404, unknown name). */
export interface NotFoundUpdate {
  /** Discriminant. */
  readonly kind: "not-found";
  /** Per-cluster state, when the backend asks several clusters. */
  readonly clusters?: readonly ClusterStatus[] | undefined;
}

/** One snapshot of a watch: bound, failed, pending or not-found. */
export type DiscoveryUpdate = BoundUpdate | FailedUpdate | PendingUpdate | NotFoundUpdate;

/** Options for {@link DiscoveryBackend.watch}. */
export interface WatchOptions {
  /** Aborted when the registry no longer needs the watch; the iterable must end promptly after. */
  readonly signal: AbortSignal;
}

/**
 * A discovery backend turns a service name into a stream of endpoint sets.
 *
 * The contract, which the registry relies on:
 * - `watch` returns an async iterable of **full snapshots**, never deltas.
 * - Nothing is yielded after `signal` aborts; the iteration then ends
 *   (returning, not throwing) and every timer, socket and request it holds is released.
 * - A failure is yielded as a `failed` update, not thrown; the registry keeps
 *   the backend's last bound set (stale-on-error). A throw from the iterator is
 *   treated as a `failed` update and ends that watch.
 * - Bad payloads from a server become `failed` updates naming the backend, the
 *   service and what was wrong; they never crash the host process.
 * - `watch` does no I/O synchronously; the first update may come whenever.
 */
export interface DiscoveryBackend {
  /** The backend's kind and instance name, e.g. `static` or `dns`; shown in `describe()` and errors. */
  readonly name: string;
  /** Starts watching a service. See the interface's contract. */
  watch(service: ServiceName, options: WatchOptions): AsyncIterable<DiscoveryUpdate>;
  /**
   * True when the backend knows the name without asking a server. The
   * global dispatcher routes a short `svc.ns` host (which could also be a
   * public domain) only when some backend claims it.
   */
  claims?(service: ServiceName): boolean;
  /** Releases what the backend holds beyond its watches (connection pools, clients). */
  close?(): Promise<void> | void;
}

/**
 * The registry: one watch per (service, backend), the last-known-good set of
 * each, merged into immutable snapshots that the router reads.
 *
 * @module
 */

import { DiscoveryError, formatValue } from "../errors.js";
import type { Subscription } from "../subscription.js";
import type { ClusterStatus, DiscoveryBackend, DiscoveryUpdate } from "./discovery.js";
import type { Endpoint } from "./endpoint.js";
import { isQualifiedServiceName, type ServiceName } from "./names.js";

/** The merged state of a service: bound when any backend has endpoints. */
export type ServiceState = "pending" | "bound" | "not-found" | "failed";

/** What one backend last said about a service. */
export interface SourceState {
  /** The backend's name. */
  readonly backend: string;
  /** Its last outcome. A `failed` backend still contributes its last good endpoints. */
  readonly state: ServiceState;
  /** The backend's last good endpoints (kept when it fails). */
  readonly endpoints: readonly Endpoint[];
  /** When the backend last gave a bound or not-found answer (epoch ms). */
  readonly updatedAt: number | undefined;
  /** True when the last try failed and `endpoints` are the last-known-good set. */
  readonly stale: boolean;
  /** The last error, while the backend is failing. */
  readonly error: DiscoveryError | undefined;
  /** Per-cluster freshness, for backends that ask several clusters. */
  readonly clusters: readonly ClusterStatus[] | undefined;
}

/** An immutable view of a service: the merged endpoints and where they came from. */
export interface ServiceSnapshot {
  /** The service. */
  readonly service: ServiceName;
  /** The merged state. */
  readonly state: ServiceState;
  /** Every endpoint from every backend, deduplicated by id (first backend wins). */
  readonly endpoints: readonly Endpoint[];
  /** Each backend's own view. */
  readonly sources: readonly SourceState[];
  /** Increases with every change. */
  readonly version: number;
}

/** Options of {@link Registry}. */
export interface RegistryOptions {
  /**
   * How long a first call waits for backends that have not answered yet
   * before it goes ahead with what the others gave; default 5 000 ms.
   */
  settleTimeout?: number;
  /** Clock in ms; default `Date.now`. */
  now?: () => number;
}

/** A listener of snapshot changes. */
export type SnapshotListener = (snapshot: ServiceSnapshot) => void;

const PENDING_SOURCE = (backend: string): SourceState => ({
  backend,
  state: "pending",
  endpoints: [],
  updatedAt: undefined,
  stale: false,
  error: undefined,
  clusters: undefined,
});

/**
 * One service's watches. Created by {@link Registry.watch}; lives until the
 * registry closes.
 */
export class ServiceWatch {
  /** The service. */
  readonly service: ServiceName;
  #snapshot: ServiceSnapshot;
  readonly #listeners = new Set<SnapshotListener>();
  /** No backend pending: kept by `apply()`, as every call reads it. */
  #isSettled: boolean;
  #settled: Promise<ServiceSnapshot> | undefined;
  #wakeSettled: (() => void) | undefined;
  readonly #settleTimeout: number;
  readonly #now: () => number;

  /** @internal */
  constructor(
    service: ServiceName,
    backends: readonly DiscoveryBackend[],
    options: Required<RegistryOptions>,
  ) {
    this.service = service;
    this.#settleTimeout = options.settleTimeout;
    this.#now = options.now;
    this.#snapshot = Object.freeze({
      service,
      state: backends.length === 0 ? "not-found" : "pending",
      endpoints: [],
      sources: backends.map((b) => PENDING_SOURCE(b.name)),
      version: 0,
    });
    this.#isSettled = backends.length === 0;
  }

  /** The current snapshot. */
  get snapshot(): ServiceSnapshot {
    return this.#snapshot;
  }

  /** True once no backend is pending any more. */
  get isSettled(): boolean {
    return this.#isSettled;
  }

  /**
   * Resolves when every backend has answered at least once, or when the
   * settle timeout passes (with whatever is known by then).
   */
  settled(): Promise<ServiceSnapshot> {
    if (this.isSettled) return Promise.resolve(this.#snapshot);
    this.#settled ??= new Promise<ServiceSnapshot>((resolve) => {
      const timer = setTimeout(() => this.#wakeSettled?.(), this.#settleTimeout);
      timer.unref?.();
      this.#wakeSettled = () => {
        clearTimeout(timer);
        this.#wakeSettled = undefined;
        this.#settled = undefined;
        resolve(this.#snapshot);
      };
    });
    return this.#settled;
  }

  /** Subscribes to snapshot changes; returns a disposable. */
  onUpdate(listener: SnapshotListener): Subscription {
    this.#listeners.add(listener);
    return { dispose: () => this.#listeners.delete(listener) };
  }

  /** @internal Applies one backend update. */
  apply(index: number, update: DiscoveryUpdate): void {
    const prev = this.#snapshot.sources[index]!;
    const next = nextSource(prev, update, this.service, this.#now());
    if (next === prev) return;
    const sources = this.#snapshot.sources.slice();
    sources[index] = next;
    const endpointsChanged = next.endpoints !== prev.endpoints;
    const endpoints = endpointsChanged ? merge(sources) : this.#snapshot.endpoints;
    this.#snapshot = Object.freeze({
      service: this.service,
      state: mergedState(sources, endpoints),
      endpoints,
      sources: Object.freeze(sources),
      version: this.#snapshot.version + 1,
    });
    this.#isSettled = !sources.some((s) => s.state === "pending");
    if (this.#isSettled) this.#wakeSettled?.();
    for (const listener of this.#listeners) listener(this.#snapshot);
  }
}

function nextSource(
  prev: SourceState,
  update: DiscoveryUpdate,
  service: ServiceName,
  now: number,
): SourceState {
  switch (update?.kind) {
    case "bound":
      if (!Array.isArray(update.endpoints)) break;
      return Object.freeze({
        backend: prev.backend,
        state: update.endpoints.length > 0 ? "bound" : "not-found",
        endpoints: sameEndpoints(prev.endpoints, update.endpoints)
          ? prev.endpoints
          : Object.freeze(update.endpoints),
        updatedAt: now,
        stale: false,
        error: undefined,
        clusters: update.clusters,
      });
    case "not-found":
      return Object.freeze({
        backend: prev.backend,
        state: "not-found",
        endpoints: prev.endpoints.length === 0 ? prev.endpoints : Object.freeze([]),
        updatedAt: now,
        stale: false,
        error: undefined,
        clusters: update.clusters,
      });
    case "pending":
      return prev;
    case "failed":
      return Object.freeze({
        ...prev,
        // A failure before any answer settles the backend as failed; after a
        // good answer it keeps the last good set and is marked stale.
        state: prev.state === "pending" ? "failed" : prev.state,
        stale: prev.endpoints.length > 0,
        error: update.error,
        clusters: update.clusters ?? prev.clusters,
      });
  }
  return nextSource(
    prev,
    {
      kind: "failed",
      error: new DiscoveryError(prev.backend, service.key, `invalid update ${formatValue(update)}`),
    },
    service,
    now,
  );
}

function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (
      x.id !== y.id ||
      x.weight !== y.weight ||
      x.backup !== y.backup ||
      x.ready !== y.ready ||
      x.serving !== y.serving ||
      x.terminating !== y.terminating ||
      x.locality !== y.locality ||
      x.identity !== y.identity
    ) {
      return false;
    }
  }
  return true;
}

function merge(sources: readonly SourceState[]): readonly Endpoint[] {
  const nonEmpty = sources.filter((s) => s.endpoints.length > 0);
  if (nonEmpty.length === 1) return nonEmpty[0]!.endpoints;
  const seen = new Set<string>();
  const out: Endpoint[] = [];
  for (const s of nonEmpty) {
    for (const e of s.endpoints) {
      if (!seen.has(e.id)) {
        seen.add(e.id);
        out.push(e);
      }
    }
  }
  return Object.freeze(out);
}

function mergedState(sources: readonly SourceState[], endpoints: readonly Endpoint[]): ServiceState {
  if (endpoints.length > 0) return "bound";
  if (sources.some((s) => s.state === "pending")) return "pending";
  if (sources.every((s) => s.state === "not-found")) return "not-found";
  return "failed";
}

/**
 * Owns every watch. `watch(name)` starts one watch per backend the first time
 * a service is asked for; `close()` stops them all.
 *
 * @example
 * ```ts
 * const registry = new Registry([staticDiscovery({ services })]);
 * const watch = registry.watch(parseServiceName("my-service.default"));
 * const snapshot = await watch.settled();
 * ```
 */
export class Registry {
  readonly #backends: readonly DiscoveryBackend[];
  readonly #watches = new Map<string, ServiceWatch>();
  readonly #abort = new AbortController();
  readonly #running = new Set<Promise<void>>();
  readonly #options: Required<RegistryOptions>;

  constructor(backends: readonly DiscoveryBackend[], options: RegistryOptions = {}) {
    this.#backends = backends;
    this.#options = { settleTimeout: options.settleTimeout ?? 5_000, now: options.now ?? Date.now };
  }

  /** The backends, in the order given. */
  get backends(): readonly DiscoveryBackend[] {
    return this.#backends;
  }

  /** True once {@link Registry.close} was called. */
  get closed(): boolean {
    return this.#abort.signal.aborted;
  }

  /** Every service watched so far. */
  services(): IterableIterator<ServiceWatch> {
    return this.#watches.values();
  }

  /**
   * True when the name is a mesh name for the global dispatcher: a fully
   * qualified form, or a short `svc.ns` that a backend claims or that is
   * already watched.
   */
  claims(service: ServiceName): boolean {
    return (
      isQualifiedServiceName(service) ||
      this.#watches.has(service.id) ||
      this.#backends.some((b) => b.claims?.(service) === true)
    );
  }

  /** The watch of a service, started on first use. */
  watch(service: ServiceName): ServiceWatch {
    let w = this.#watches.get(service.id);
    if (w === undefined) {
      w = new ServiceWatch(service, this.#backends, this.#options);
      this.#watches.set(service.id, w);
      if (!this.closed) {
        for (let i = 0; i < this.#backends.length; i++) this.#run(w, this.#backends[i]!, i);
      }
    }
    return w;
  }

  #run(watch: ServiceWatch, backend: DiscoveryBackend, index: number): void {
    const signal = this.#abort.signal;
    const task = (async () => {
      try {
        for await (const update of backend.watch(watch.service, { signal })) {
          if (signal.aborted) break;
          watch.apply(index, update);
        }
      } catch (err) {
        if (!signal.aborted) {
          watch.apply(index, {
            kind: "failed",
            error:
              err instanceof DiscoveryError
                ? err
                : new DiscoveryError(
                    backend.name,
                    watch.service.key,
                    (err as Error)?.message ?? String(err),
                    {
                      cause: err,
                    },
                  ),
          });
        }
      }
    })();
    this.#running.add(task);
    void task.finally(() => this.#running.delete(task));
  }

  /** Stops every watch and closes every backend. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.#abort.abort();
    await Promise.allSettled([...this.#running]);
    await Promise.allSettled(this.#backends.map((b) => b.close?.()));
  }
}

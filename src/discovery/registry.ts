/**
 * The registry: one watch per (service, backend), the last-known-good set of
 * each, merged into immutable snapshots that the router reads.
 *
 * @module
 */

import { sleep } from "../clock.js";
import { reportInternalError } from "../diagnostics.js";
import { DiscoveryError } from "../errors.js";
import type { Subscription } from "../subscription.js";
import { formatValue } from "../values.js";
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
  /**
   * A service nobody has used (called or resolved) for this long, in ms, is
   * forgotten: its watches stop and {@link Registry.onForget} listeners drop
   * what they hold for it. Default 600 000 (10 min); 0 keeps every service.
   */
  idleTimeout?: number;
  /** Back-off before a watch whose iterator threw or ended is restarted: first ceiling and cap, ms; default 1 000 and 30 000. */
  restartBackoff?: { base?: number; max?: number };
  /** True while a service must not be forgotten (calls in flight); default never. */
  busy?: (watch: ServiceWatch) => boolean;
  /** Clock in ms; default `Date.now`. */
  now?: () => number;
  /** Random numbers in [0, 1) for restart jitter; default `Math.random`. */
  random?: () => number;
}

type ResolvedRegistryOptions = Required<Omit<RegistryOptions, "busy" | "restartBackoff">> & {
  readonly busy: ((watch: ServiceWatch) => boolean) | undefined;
  readonly restartBase: number;
  readonly restartMax: number;
};

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
 * registry forgets the service or closes.
 */
export class ServiceWatch {
  /** The service. */
  readonly service: ServiceName;
  /** Set by every use (a call, a resolve); the idle sweep clears it. One store per call, no clock read. */
  used = true;
  /** @internal When the idle sweep last saw it used. */
  idleSince = 0;
  /** @internal Aborted when the watch stops (forgotten, or the registry closed). */
  readonly controller = new AbortController();
  #snapshot: ServiceSnapshot;
  readonly #listeners = new Set<SnapshotListener>();
  /** No backend pending: kept by `apply()`, as every call reads it. */
  #isSettled: boolean;
  /** Stopped: a plain field, as every call reads it (an AbortSignal's `aborted` is a checked getter). */
  #closed = false;
  #settled: Promise<ServiceSnapshot> | undefined;
  #wakeSettled: (() => void) | undefined;
  readonly #settleTimeout: number;
  readonly #now: () => number;

  /** @internal */
  constructor(
    service: ServiceName,
    backends: readonly DiscoveryBackend[],
    options: { readonly settleTimeout: number; readonly now: () => number },
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

  /** True once the registry forgot the service or closed: no update comes any more. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Resolves when every backend has answered at least once, or when the
   * settle timeout passes (with whatever is known by then).
   */
  settled(): Promise<ServiceSnapshot> {
    if (this.isSettled) return Promise.resolve(this.#snapshot);
    this.#settled ??= new Promise<ServiceSnapshot>((resolve) => {
      // Referenced: a call waiting for discovery keeps the process alive until it settles.
      const timer = setTimeout(() => this.#wakeSettled?.(), this.#settleTimeout);
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
    for (const listener of this.#listeners) {
      try {
        listener(this.#snapshot);
      } catch (err) {
        // A listener's exception must not stop the others, the backend's loop or the process.
        reportInternalError("discovery update listener", err);
      }
    }
  }

  /** @internal Stops the watch and wakes whoever waits for it to settle. */
  stop(): void {
    this.#closed = true;
    this.controller.abort();
    this.#wakeSettled?.();
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
 * a service is asked for; a watch whose iterator throws or ends is restarted
 * with jittered back-off (its last set kept, marked stale); a service nobody
 * used for `idleTimeout` is forgotten; `close()` stops them all.
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
  readonly #running = new Set<Promise<void>>();
  readonly #options: ResolvedRegistryOptions;
  readonly #forgetListeners = new Set<(watch: ServiceWatch) => void>();
  #sweep: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(backends: readonly DiscoveryBackend[], options: RegistryOptions = {}) {
    this.#backends = backends;
    this.#options = {
      settleTimeout: options.settleTimeout ?? 5_000,
      idleTimeout: options.idleTimeout ?? 600_000,
      restartBase: options.restartBackoff?.base ?? 1_000,
      restartMax: options.restartBackoff?.max ?? 30_000,
      busy: options.busy,
      now: options.now ?? Date.now,
      random: options.random ?? Math.random,
    };
  }

  /** The backends, in the order given. */
  get backends(): readonly DiscoveryBackend[] {
    return this.#backends;
  }

  /** True once {@link Registry.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Every service watched now. */
  services(): IterableIterator<ServiceWatch> {
    return this.#watches.values();
  }

  /**
   * True when the name is a mesh name for the global dispatcher: a fully
   * qualified form, or a short `svc.ns` that a backend claims — that a
   * backend knows, never merely because someone asked for it.
   */
  claims(service: ServiceName): boolean {
    if (isQualifiedServiceName(service)) return true;
    for (const b of this.#backends) {
      try {
        if (b.claims?.(service) === true) return true;
      } catch (err) {
        reportInternalError(`${b.name} claims()`, err);
      }
    }
    return false;
  }

  /** The watch of a service, started on first use. */
  watch(service: ServiceName): ServiceWatch {
    let w = this.#watches.get(service.id);
    if (w === undefined) {
      w = new ServiceWatch(service, this.#backends, this.#options);
      w.idleSince = this.#options.now();
      if (this.#closed) {
        w.stop();
        return w;
      }
      this.#watches.set(service.id, w);
      for (let i = 0; i < this.#backends.length; i++) this.#run(w, this.#backends[i]!, i);
      if (this.#sweep === undefined && this.#options.idleTimeout > 0) this.#startSweep();
    }
    return w;
  }

  /** Subscribes to forgotten services: drop what is held for the watch. Returns a disposable. */
  onForget(listener: (watch: ServiceWatch) => void): Subscription {
    this.#forgetListeners.add(listener);
    return { dispose: () => this.#forgetListeners.delete(listener) };
  }

  /** Forgets a service now: its watches stop and {@link Registry.onForget} listeners run. */
  forget(watch: ServiceWatch): void {
    if (this.#watches.get(watch.service.id) !== watch) return;
    this.#watches.delete(watch.service.id);
    watch.stop();
    for (const listener of this.#forgetListeners) {
      try {
        listener(watch);
      } catch (err) {
        reportInternalError("registry forget listener", err);
      }
    }
  }

  /** Runs one idle sweep now (the sweep timer calls it; tests may too). */
  sweep(): void {
    const { idleTimeout, now, busy } = this.#options;
    if (idleTimeout <= 0) return;
    const t = now();
    for (const w of [...this.#watches.values()]) {
      if (w.used || busy?.(w) === true) {
        w.used = false;
        w.idleSince = t;
      } else if (t - w.idleSince >= idleTimeout) {
        this.forget(w);
      }
    }
    if (this.#watches.size === 0) this.#stopSweep();
  }

  #startSweep(): void {
    const every = Math.max(1_000, Math.min(60_000, Math.floor(this.#options.idleTimeout / 2)));
    this.#sweep = setInterval(() => this.sweep(), every);
    this.#sweep.unref?.();
  }

  #stopSweep(): void {
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  /**
   * Runs one backend's watch of a service, restarting it with jittered
   * exponential back-off when its iterator throws or ends; the backend's
   * last set stays, marked stale, meanwhile.
   */
  #run(watch: ServiceWatch, backend: DiscoveryBackend, index: number): void {
    const signal = watch.controller.signal;
    const { restartBase, restartMax, random } = this.#options;
    const task = (async () => {
      let failures = 0;
      while (!signal.aborted) {
        let error: DiscoveryError;
        try {
          for await (const update of backend.watch(watch.service, { signal })) {
            if (signal.aborted) break;
            watch.apply(index, update);
            if (update?.kind === "bound" || update?.kind === "not-found") failures = 0;
          }
          if (signal.aborted) break;
          error = new DiscoveryError(backend.name, watch.service.key, "the watch ended; restarting it");
        } catch (err) {
          if (signal.aborted) break;
          error =
            err instanceof DiscoveryError
              ? err
              : new DiscoveryError(backend.name, watch.service.key, (err as Error)?.message ?? String(err), {
                  cause: err,
                });
        }
        watch.apply(index, { kind: "failed", error });
        failures++;
        const ceiling = Math.min(restartMax, restartBase * 2 ** Math.min(failures - 1, 16));
        await sleep(ceiling / 2 + (random() * ceiling) / 2, signal);
      }
    })();
    this.#running.add(task);
    void task.finally(() => this.#running.delete(task));
  }

  /** Stops every watch and closes every backend. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopSweep();
    for (const w of this.#watches.values()) w.stop();
    await Promise.allSettled([...this.#running]);
    await Promise.allSettled(this.#backends.map((b) => b.close?.()));
  }
}

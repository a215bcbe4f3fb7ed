/**
 * What every multi-cluster backend's watch does with its clusters' states
 * (DNS servers, Consul datacenters, Kubernetes API servers): wake when any
 * cluster changes, merge them into one set, and decide which full snapshots
 * to yield — a set when it changed or when the last failure cleared, a
 * failure when one starts or changes — so that the registry's stale marks
 * and last-known-good sets mean the same for every backend.
 *
 * @module
 */

import { DiscoveryError } from "../errors.js";
import type { ClusterStatus, DiscoveryUpdate } from "./discovery.js";
import type { Endpoint } from "./endpoint.js";
import type { ServiceName } from "./names.js";

/**
 * A watch loop's wake-up: any cluster calls {@link Wakeup.notify}; the loop
 * awaits {@link Wakeup.changed}, which returns at once when something
 * changed since the last time it returned.
 */
export class Wakeup {
  #dirty = true;
  #wake: (() => void) | undefined;

  /** Something changed (an answer, a failure, an abort): wake the loop. */
  readonly notify = (): void => {
    this.#dirty = true;
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  };

  /** Resolves once something changed since it last resolved. */
  async changed(): Promise<void> {
    if (!this.#dirty) await new Promise<void>((resolve) => (this.#wake = resolve));
    this.#dirty = false;
  }
}

/**
 * The names a backend has found, for its `claims()`. A claim outlives its
 * watch (the registry forgets idle services, and the name must still route
 * into the mesh when it is called again), so the memory is bounded: the
 * most recently found `max` names, the oldest forgotten first.
 */
export class ClaimSet {
  readonly #names = new Set<string>();
  readonly #max: number;

  constructor(max = 10_000) {
    this.#max = max;
  }

  /** The backend found `key` (again): it is claimed, and the newest. */
  remember(key: string): void {
    const names = this.#names;
    names.delete(key);
    names.add(key);
    if (names.size > this.#max) names.delete(names.values().next().value!);
  }

  /** The backend found `key` gone. */
  forget(key: string): void {
    this.#names.delete(key);
  }

  /** True while `key` is claimed. */
  has(key: string): boolean {
    return this.#names.has(key);
  }
}

/**
 * Calls each registered function when its signal aborts, with one listener
 * per signal however many watches share it (a caller may hand every watch
 * the same signal: one listener each would pass Node's limit of 10 and warn).
 */
export class AbortFanout {
  readonly #bySignal = new Map<
    AbortSignal,
    { readonly listener: () => void; readonly ends: Set<() => void> }
  >();

  add(signal: AbortSignal, end: () => void): void {
    let entry = this.#bySignal.get(signal);
    if (entry === undefined) {
      const ends = new Set<() => void>();
      const listener = () => {
        this.#bySignal.delete(signal);
        for (const e of [...ends]) e();
      };
      entry = { listener, ends };
      this.#bySignal.set(signal, entry);
      signal.addEventListener("abort", listener, { once: true });
    }
    entry.ends.add(end);
  }

  delete(signal: AbortSignal, end: () => void): void {
    const entry = this.#bySignal.get(signal);
    if (entry === undefined || !entry.ends.delete(end) || entry.ends.size > 0) return;
    this.#bySignal.delete(signal);
    signal.removeEventListener("abort", entry.listener);
  }
}

/**
 * The watches of one multi-cluster backend (Consul, Kubernetes): each
 * {@link WatchScope} stops when its own signal aborts or the backend
 * closes, without a listener per watch on any shared signal.
 */
export class WatchScopes {
  readonly #open = new Set<WatchScope>();
  readonly #aborts = new AbortFanout();
  #closed = false;

  /** True once {@link WatchScopes.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The scope of a new watch, stopped when `signal` aborts, the backend closes, or it ends. */
  open(signal: AbortSignal): WatchScope {
    const scope = new WatchScope(() => {
      this.#open.delete(scope);
      this.#aborts.delete(signal, end);
    });
    const end = () => scope.end();
    this.#open.add(scope);
    this.#aborts.add(signal, end);
    return scope;
  }

  /** Stops every watch. */
  close(): void {
    this.#closed = true;
    for (const scope of [...this.#open]) scope.end();
  }
}

/** The lifetime of one watch: its stop, what wakes its loop, and the loop. Made by {@link WatchScopes.open}. */
export class WatchScope {
  readonly #stop = new AbortController();
  readonly #release: () => void;
  /** What wakes the loop: an answer, a failure, the stop. */
  readonly wakeup = new Wakeup();

  /** @internal `release` lets go of the scope's registrations when it ends. */
  constructor(release: () => void) {
    this.#release = release;
    this.#stop.signal.addEventListener("abort", this.wakeup.notify, { once: true });
  }

  /** Aborts when the watch stops (for timers and requests of the watch). */
  get signal(): AbortSignal {
    return this.#stop.signal;
  }

  /** True once the watch stopped. */
  get stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Each time something changed, until the watch stops. */
  async *changes(): AsyncGenerator<void> {
    while (!this.stopped) {
      await this.wakeup.changed();
      if (this.stopped) return;
      yield;
    }
  }

  /**
   * Waits until the watch stops: for a name the backend does not serve,
   * held open because a watch that ended would only be started again.
   */
  async idle(): Promise<void> {
    while (!this.stopped) await this.wakeup.changed();
  }

  /** Stops the watch and lets go of its registrations (once). */
  end(): void {
    if (this.stopped) return;
    this.#stop.abort();
    this.#release();
  }
}

/** What every cluster says in one round of a watch loop. */
export interface ClusterRound<K> {
  /** Every cluster's endpoints together. */
  readonly endpoints: readonly Endpoint[];
  /** What identifies the set: a round whose key is the same (by the announcer's `same`) changed nothing. */
  readonly key: K;
  /** What is failing, for the error message; `""` when no cluster fails. */
  readonly failure: string;
  /** The first failing cluster's error, as the cause. */
  readonly cause?: unknown;
  /** Each cluster's state, for `describe()`. */
  readonly clusters: readonly ClusterStatus[];
  /** Some cluster has not answered yet: an empty set is then not yet "not found". */
  readonly pending?: boolean;
}

/**
 * Decides which snapshots a multi-cluster watch yields, round by round. A
 * set goes out when it changed, or when the last failure has cleared (the
 * registry then drops its stale mark); a first answer that is empty because
 * clusters failed, or have not answered, is not "not found" — saying so would
 * be a guess. A failure goes out when it starts or changes, and again after a
 * set (which clears the registry's stale mark while the failure goes on).
 */
export class ClusterAnnouncer<K> {
  readonly #backend: string;
  readonly #service: ServiceName;
  readonly #same: (a: K, b: K) => boolean;
  #announced = false;
  #lastKey: K | undefined;
  #lastFailure = "";

  /** `same` compares two rounds' keys; default `===`. */
  constructor(backend: string, service: ServiceName, same: (a: K, b: K) => boolean = (a, b) => a === b) {
    this.#backend = backend;
    this.#service = service;
    this.#same = same;
  }

  /** True once a set (bound or not-found) has gone out. */
  get announced(): boolean {
    return this.#announced;
  }

  /** The updates this round calls for, in order: none, a set, a failure, or both. */
  updates(round: ClusterRound<K>): DiscoveryUpdate[] {
    const out: DiscoveryUpdate[] = [];
    const failing = round.failure !== "";
    const empty = round.endpoints.length === 0;
    const announce = !this.#announced
      ? !empty || (!failing && round.pending !== true)
      : !this.#same(round.key, this.#lastKey as K) || (this.#lastFailure !== "" && !failing);
    if (announce) {
      this.#announced = true;
      this.#lastKey = round.key;
      this.#lastFailure = "";
      out.push(
        empty
          ? { kind: "not-found", clusters: round.clusters }
          : {
              kind: "bound",
              endpoints: Object.freeze(round.endpoints as Endpoint[]),
              clusters: round.clusters,
            },
      );
    }
    if (failing && round.failure !== this.#lastFailure) {
      this.#lastFailure = round.failure;
      out.push({
        kind: "failed",
        error: new DiscoveryError(this.#backend, this.#service.key, round.failure, { cause: round.cause }),
        clusters: round.clusters,
      });
    }
    return out;
  }
}

/**
 * Passive health: outlier detection per endpoint, shared by every transport
 * (one endpoint's health is one fact, whichever protocol saw it).
 *
 * Each endpoint has a cockatiel breaker deciding *when* to open (by default
 * {@link ConsecutiveBreaker}: N consecutive failures). The open → half-open →
 * closed timeline is kept here, synchronously, rather than in cockatiel's
 * `CircuitBreakerPolicy`: that policy is promise-based (`execute`) and makes
 * concurrent callers wait behind the half-open test call, whereas a load
 * balancer needs a synchronous answer to "may I pick this host now?" and
 * must send the other calls elsewhere while one probe decides.
 *
 * @module
 */

import { CircuitState, ConsecutiveBreaker, type IBreaker } from "cockatiel";

/** An endpoint's health state. */
export type HealthState = "healthy" | "ejected" | "probing";

/** Options of {@link HealthTracker}. */
export interface HealthOptions {
  /** Consecutive failures that eject an endpoint; default 5 (Envoy's `consecutive_5xx`). */
  consecutiveFailures?: number;
  /** Base ejection time in ms, multiplied by the times ejected; default 30 000 (Envoy). */
  baseEjectionTime?: number;
  /** Longest ejection in ms; default 300 000 (Envoy). */
  maxEjectionTime?: number;
  /** Makes the breaker for each endpoint; default a cockatiel `ConsecutiveBreaker(consecutiveFailures)`. */
  breaker?: () => IBreaker;
  /** Clock in ms; default `Date.now`. Tests inject their own. */
  now?: () => number;
}

/** Health of one endpoint. Mutable; owned by a {@link HealthTracker}. */
export class EndpointHealth {
  /** The endpoint id (`cluster/address:port`). */
  readonly id: string;
  /** Current state. */
  state: HealthState = "healthy";
  /** How many times the endpoint has been ejected. */
  ejections = 0;
  /** When the current ejection ends (epoch ms); 0 when not ejected. */
  ejectedUntil = 0;
  /** Requests in flight to the endpoint, over every transport. */
  outstanding = 0;
  /** The reason of the last failure, e.g. `ECONNREFUSED` or `status 503`. */
  lastFailure: string | undefined = undefined;
  /** When the last failure happened (epoch ms). */
  lastFailureAt = 0;
  /** @internal */
  readonly breaker: IBreaker;

  /** @internal */
  constructor(id: string, breaker: IBreaker) {
    this.id = id;
    this.breaker = breaker;
  }
}

/** A JSON view of one endpoint's health, for `describe()` and `resolve()`. */
export interface HealthView {
  /** Current state. */
  readonly state: HealthState;
  /** Times ejected so far. */
  readonly ejections: number;
  /** When the current ejection ends (ISO time), if ejected. */
  readonly ejectedUntil: string | undefined;
  /** Requests in flight. */
  readonly outstanding: number;
  /** The last failure's reason. */
  readonly lastFailure: string | undefined;
}

/**
 * Tracks the health of every endpoint the mesh has called. Transports report
 * outcomes; the router asks {@link HealthTracker.available} when it builds a
 * picker and rebuilds when {@link HealthTracker.version} moves.
 */
export class HealthTracker {
  readonly #byId = new Map<string, EndpointHealth>();
  readonly #listeners = new Set<(health: EndpointHealth) => void>();
  readonly #makeBreaker: () => IBreaker;
  readonly #base: number;
  readonly #max: number;
  /** The clock, in ms. */
  readonly now: () => number;
  /** Bumped on every state change; pickers compare it to know when to rebuild. */
  version = 0;

  constructor(options: HealthOptions = {}) {
    const threshold = options.consecutiveFailures ?? 5;
    this.#makeBreaker = options.breaker ?? (() => new ConsecutiveBreaker(threshold));
    this.#base = options.baseEjectionTime ?? 30_000;
    this.#max = options.maxEjectionTime ?? 300_000;
    this.now = options.now ?? Date.now;
  }

  /** The health record of an endpoint, created on first use. */
  get(id: string): EndpointHealth {
    let h = this.#byId.get(id);
    if (h === undefined) {
      h = new EndpointHealth(id, this.#makeBreaker());
      this.#byId.set(id, h);
    }
    return h;
  }

  /** The health record of an endpoint, if the mesh has one. */
  peek(id: string): EndpointHealth | undefined {
    return this.#byId.get(id);
  }

  /**
   * True when the endpoint may be picked now: healthy, or ejected with its
   * ejection time over (the next call is its half-open probe). An endpoint
   * whose probe is in flight is not available: the other calls go elsewhere.
   */
  available(h: EndpointHealth, now: number = this.now()): boolean {
    return h.state === "healthy" || (h.state === "ejected" && now >= h.ejectedUntil);
  }

  /** A call to the endpoint starts; an ejected endpoint whose time is over becomes the probe. */
  start(h: EndpointHealth): void {
    h.outstanding++;
    if (h.state === "ejected") this.#set(h, "probing");
  }

  /** The call ended with a response that counts as success. */
  success(h: EndpointHealth): void {
    h.outstanding--;
    h.breaker.success(h.state === "probing" ? CircuitState.HalfOpen : CircuitState.Closed);
    if (h.state === "probing") {
      h.ejectedUntil = 0;
      this.#set(h, "healthy");
    }
  }

  /** The call ended with a failure of the endpoint (connect error, reset, timeout, 502/503/504). */
  failure(h: EndpointHealth, reason: string): void {
    h.outstanding--;
    h.lastFailure = reason;
    h.lastFailureAt = this.now();
    if (h.state === "probing") {
      h.breaker.failure(CircuitState.HalfOpen);
      this.#eject(h);
    } else if (h.breaker.failure(CircuitState.Closed) && h.state === "healthy") {
      this.#eject(h);
    }
  }

  /** The call ended without saying anything about the endpoint (the caller cancelled it). */
  release(h: EndpointHealth): void {
    h.outstanding--;
    // A cancelled probe proves nothing: let the next call probe again.
    if (h.state === "probing") this.#set(h, "ejected");
  }

  /** Subscribes to state changes; returns a disposable. */
  onChange(listener: (health: EndpointHealth) => void): { dispose(): void } {
    this.#listeners.add(listener);
    return { dispose: () => this.#listeners.delete(listener) };
  }

  /** A JSON view of an endpoint's health. */
  view(id: string): HealthView {
    const h = this.#byId.get(id);
    if (h === undefined) {
      return {
        state: "healthy",
        ejections: 0,
        ejectedUntil: undefined,
        outstanding: 0,
        lastFailure: undefined,
      };
    }
    return {
      state: h.state,
      ejections: h.ejections,
      ejectedUntil: h.ejectedUntil ? new Date(h.ejectedUntil).toISOString() : undefined,
      outstanding: h.outstanding,
      lastFailure: h.lastFailure,
    };
  }

  #eject(h: EndpointHealth): void {
    h.ejections++;
    h.ejectedUntil = this.now() + Math.min(this.#base * h.ejections, this.#max);
    this.#set(h, "ejected");
  }

  #set(h: EndpointHealth, state: HealthState): void {
    h.state = state;
    this.version++;
    for (const listener of this.#listeners) listener(h);
  }
}

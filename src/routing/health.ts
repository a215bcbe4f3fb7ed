/**
 * Passive health: outlier detection per endpoint, shared by every transport
 * (one endpoint's health is one fact, whichever protocol saw it), and the
 * load statistics the router balances on (requests in flight, peak-EWMA
 * latency).
 *
 * Each endpoint has a cockatiel breaker deciding *when* to open: by default
 * {@link OutlierBreaker}, which opens on N consecutive failures (cockatiel's
 * `ConsecutiveBreaker`, Envoy's `consecutive_gateway_failure`) or on a
 * failure rate over the last calls (cockatiel's `CountBreaker`, Envoy's
 * `failure_percentage`). The open → half-open → closed timeline is kept
 * here, synchronously, rather than in cockatiel's `CircuitBreakerPolicy`:
 * that policy is promise-based (`execute`) and makes concurrent callers wait
 * behind the half-open test call, whereas a load balancer needs a
 * synchronous answer to "may I pick this host now?" and must send the other
 * calls elsewhere while one probe decides.
 *
 * @module
 */

import { CircuitState, ConsecutiveBreaker, CountBreaker, type IBreaker } from "cockatiel";
import { monotonicNow } from "../clock.js";
import type { Subscription } from "../subscription.js";

/** An endpoint's health state. */
export type HealthState = "healthy" | "ejected" | "probing";

/** The failure-rate rule of outlier detection (Envoy's `failure_percentage`, counted over calls). */
export interface FailureRateOptions {
  /** Share of failed calls, in (0, 1), above which the endpoint is ejected; default 0.85 (Envoy's 85 %). */
  threshold?: number;
  /** How many of the latest calls are counted; default 100. */
  window?: number;
  /** Calls needed in the window before the rule applies; default 50 (Envoy's request volume). */
  minimumRequests?: number;
}

/** Options of {@link HealthTracker}. */
export interface HealthOptions {
  /** Consecutive failures that eject an endpoint; default 5 (Envoy's `consecutive_5xx`). */
  consecutiveFailures?: number;
  /** The failure-rate rule, or `false` to turn it off; default on with {@link FailureRateOptions}' defaults. */
  failureRate?: FailureRateOptions | false;
  /** Base ejection time in ms, multiplied by the times ejected; default 30 000 (Envoy). */
  baseEjectionTime?: number;
  /** Longest ejection in ms, before jitter; default 300 000 (Envoy). */
  maxEjectionTime?: number;
  /**
   * Jitter added to each ejection, as a share of it (0.1 adds up to 10 %);
   * default 0.1. Spreads the probes of endpoints that failed together.
   */
  ejectionJitter?: number;
  /** Makes the breaker for each endpoint; default an {@link OutlierBreaker} from the options above. */
  breaker?: () => IBreaker;
  /** Latency decay window of the peak EWMA, in ms; default 10 000 (Finagle). */
  latencyDecay?: number;
  /** Clock in ms (monotonic, epoch-based); default `performance.timeOrigin + performance.now()`. Tests inject their own. */
  now?: () => number;
  /** Random numbers in [0, 1) for jitter; default `Math.random`. */
  random?: () => number;
}

/**
 * A cockatiel breaker that opens on either rule of outlier detection:
 * `consecutive` failures in a row, or a failure rate over the last calls.
 */
export class OutlierBreaker implements IBreaker {
  readonly #consecutive: ConsecutiveBreaker;
  readonly #rate: CountBreaker | undefined;

  constructor(consecutive: number, rate: FailureRateOptions | false = {}) {
    this.#consecutive = new ConsecutiveBreaker(consecutive);
    if (rate !== false) {
      const window = rate.window ?? 100;
      this.#rate = new CountBreaker({
        threshold: rate.threshold ?? 0.85,
        size: window,
        minimumNumberOfCalls: Math.min(rate.minimumRequests ?? 50, window),
      });
    }
  }

  /** Both rules' state, for cockatiel's serialization. */
  get state(): unknown {
    return { consecutive: this.#consecutive.state, rate: this.#rate?.state };
  }

  /** Restores both rules' state. */
  set state(value: unknown) {
    const v = value as { consecutive: unknown; rate: unknown };
    this.#consecutive.state = v.consecutive as number;
    if (this.#rate !== undefined) this.#rate.state = v.rate;
  }

  /** A call succeeded. */
  success(state: CircuitState): void {
    this.#consecutive.success();
    this.#rate?.success(state);
  }

  /** A call failed; true when either rule says to open. */
  failure(state: CircuitState): boolean {
    const a = this.#consecutive.failure();
    const b = this.#rate?.failure(state) ?? false;
    return a || b;
  }
}

/** Health and load of one endpoint. Mutable; owned by a {@link HealthTracker}. */
export class EndpointHealth {
  /** The endpoint id (`cluster/address:port`). */
  readonly id: string;
  /** Current state. */
  state: HealthState = "healthy";
  /** How many times the endpoint has been ejected. */
  ejections = 0;
  /** When the current ejection ends (tracker clock, epoch ms); 0 when not ejected. */
  ejectedUntil = 0;
  /** Requests in flight to the endpoint, over every transport. */
  outstanding = 0;
  /** The reason of the last failure, e.g. `ECONNREFUSED` or `status 503`. */
  lastFailure: string | undefined = undefined;
  /** When the last failure happened (tracker clock). */
  lastFailureAt = 0;
  /** Peak-EWMA latency in ms; 0 until the first response. */
  latency = 0;
  /** When {@link EndpointHealth.latency} was last updated (tracker clock). */
  latencyAt = 0;
  /** Since when the endpoint ramps up (slow start), tracker clock; 0 when it takes its full weight. */
  warmingSince = 0;
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
  /** Peak-EWMA latency in ms, 0 when unmeasured. */
  readonly latencyMs: number;
}

/** A penalty cost for an endpoint with calls in flight but no latency measured yet (Finagle's PeakEwma). */
const PENALTY = 1e9;

/**
 * Tracks the health and load of every endpoint the mesh has called.
 * Transports report outcomes; the router asks {@link HealthTracker.available}
 * when it builds a picker and rebuilds when {@link HealthTracker.version} moves.
 */
export class HealthTracker {
  readonly #byId = new Map<string, EndpointHealth>();
  readonly #listeners = new Set<(health: EndpointHealth) => void>();
  readonly #makeBreaker: () => IBreaker;
  readonly #base: number;
  readonly #max: number;
  readonly #jitter: number;
  readonly #tau: number;
  readonly #random: () => number;
  /** The clock, in ms. */
  readonly now: () => number;
  /** Bumped on every state change; pickers compare it to know when to rebuild. */
  version = 0;

  constructor(options: HealthOptions = {}) {
    const threshold = options.consecutiveFailures ?? 5;
    const rate = options.failureRate ?? {};
    this.#makeBreaker = options.breaker ?? (() => new OutlierBreaker(threshold, rate));
    this.#base = options.baseEjectionTime ?? 30_000;
    this.#max = options.maxEjectionTime ?? 300_000;
    this.#jitter = options.ejectionJitter ?? 0.1;
    this.#tau = options.latencyDecay ?? 10_000;
    this.#random = options.random ?? Math.random;
    this.now = options.now ?? monotonicNow;
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

  /**
   * A call to the endpoint starts; an ejected endpoint whose time is over
   * becomes the probe. A call to an endpoint still ejected (panic routing)
   * neither probes nor ends the ejection early, as in Envoy.
   */
  start(h: EndpointHealth): void {
    h.outstanding++;
    if (h.state === "ejected" && this.now() >= h.ejectedUntil) this.#set(h, "probing");
  }

  /** The call ended with a response that counts as success, after `latency` ms. */
  success(h: EndpointHealth, latency = -1): void {
    h.outstanding--;
    if (latency >= 0) this.observe(h, latency);
    h.breaker.success(h.state === "probing" ? CircuitState.HalfOpen : CircuitState.Closed);
    if (h.state === "probing") {
      h.ejectedUntil = 0;
      this.#set(h, "healthy");
    }
  }

  /** The call ended with a failure of the endpoint (connect error, reset, timeout, 502/503/504). */
  failure(h: EndpointHealth, reason: string, latency = -1): void {
    h.outstanding--;
    // A failure must not make the host look fast (a refused connect takes
    // 0.1 ms): count it at least twice the current cost.
    if (latency >= 0) this.observe(h, Math.max(latency, 2 * h.latency));
    h.lastFailure = reason;
    h.lastFailureAt = this.now();
    if (h.state === "probing") {
      h.breaker.failure(CircuitState.HalfOpen);
      this.#eject(h);
    } else if (h.breaker.failure(CircuitState.Closed) && h.state === "healthy") {
      // No cap on the share ejected (Envoy's max_ejection_percent): spill-over
      // and the panic threshold decide what a dead locality's load does.
      this.#eject(h);
    }
  }

  /** The call ended without saying anything about the endpoint (the caller cancelled it). */
  release(h: EndpointHealth): void {
    h.outstanding--;
    // A cancelled probe proves nothing: let the next call probe again.
    if (h.state === "probing") this.#set(h, "ejected");
  }

  /**
   * Feeds a latency sample into the endpoint's peak EWMA (Finagle's
   * `PeakEwma`): a higher sample is taken at once, a lower one decays in
   * with the time since the last sample.
   */
  observe(h: EndpointHealth, latency: number): void {
    const now = this.now();
    const td = now - h.latencyAt;
    h.latencyAt = now;
    if (latency > h.latency) h.latency = latency;
    else {
      const w = td > 0 ? Math.exp(-td / this.#tau) : 1;
      h.latency = h.latency * w + latency * (1 - w);
    }
  }

  /**
   * The load cost of an endpoint for the balancer: peak-EWMA latency
   * decayed to now, times requests in flight plus one. An endpoint with no
   * latency yet costs 0 when idle and a penalty when busy (Finagle), so
   * that new endpoints each get a first call without being flooded.
   */
  cost(h: EndpointHealth, now: number): number {
    const pending = h.outstanding;
    let latency = h.latency;
    if (latency === 0) return pending === 0 ? 0 : PENALTY + pending;
    const td = now - h.latencyAt;
    if (td > 0) latency *= Math.exp(-td / this.#tau);
    return latency * (pending + 1);
  }

  /** Subscribes to state changes; returns a disposable. */
  onChange(listener: (health: EndpointHealth) => void): Subscription {
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
        latencyMs: 0,
      };
    }
    return {
      state: h.state,
      ejections: h.ejections,
      ejectedUntil: h.ejectedUntil ? new Date(h.ejectedUntil).toISOString() : undefined,
      outstanding: h.outstanding,
      lastFailure: h.lastFailure,
      latencyMs: h.latency,
    };
  }

  /** The ejection time for the n-th ejection, before jitter: base × n, capped. */
  ejectionTime(n: number): number {
    return Math.min(this.#base * n, this.#max);
  }

  #eject(h: EndpointHealth): void {
    h.ejections++;
    const time = this.ejectionTime(h.ejections);
    h.ejectedUntil = this.now() + time + time * this.#jitter * this.#random();
    this.#set(h, "ejected");
  }

  #set(h: EndpointHealth, state: HealthState): void {
    if (state === "healthy" && h.ejections > 0) h.warmingSince = this.now();
    h.state = state;
    this.version++;
    for (const listener of this.#listeners) listener(h);
  }
}

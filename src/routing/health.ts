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
 * A record lives while some balancer tracks its endpoint
 * ({@link HealthTracker.track}), and tells its trackers of each state
 * change, so that a change reaches only the services that use the endpoint.
 *
 * @module
 */

import { CircuitState, type IBreaker } from "cockatiel";
import { monotonicNow } from "../clock.js";
import type { Subscription } from "../subscription.js";
import { type FailureRateOptions, OutlierBreaker } from "./outlier.js";

export { type FailureRateOptions, OutlierBreaker } from "./outlier.js";

/** An endpoint's health state. */
export type HealthState = "healthy" | "ejected" | "probing";

/** Options of {@link HealthTracker}. */
export interface HealthOptions {
  /** Consecutive failures that eject an endpoint; default 5 (Envoy's `consecutive_5xx`). */
  consecutiveFailures?: number;
  /** The failure-rate rule, or `false` to turn it off; default on with {@link FailureRateOptions}' defaults. */
  failureRate?: FailureRateOptions | false;
  /**
   * Base ejection time in ms, multiplied by the ejection multiplier: one
   * more for each ejection, one less for each base ejection time the
   * endpoint then spends out of ejection; default 30 000 (Envoy).
   */
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
  /**
   * The least latency, in ms, a failed call counts as when its endpoint has
   * none measured yet; default 30 (Linkerd's default RTT). A refused connect
   * takes 0.1 ms: counted as it is, it would make a dead host look fastest.
   */
  failureLatency?: number;
  /** Clock in ms (monotonic, epoch-based); default `performance.timeOrigin + performance.now()`. Tests inject their own. */
  now?: () => number;
  /** Random numbers in [0, 1) for jitter; default `Math.random`. */
  random?: () => number;
}

/** Called with a tracked record after each of its state changes. */
type HealthListener = (health: EndpointHealth) => void;

/** Health and load of one endpoint. Mutable; owned by a {@link HealthTracker}. */
export class EndpointHealth {
  /** The endpoint id (`cluster/address:port`). */
  readonly id: string;
  /** Current state. */
  state: HealthState = "healthy";
  /** How many times the endpoint has been ejected. */
  ejections = 0;
  /**
   * The ejection time multiplier (Envoy's): raised by each ejection, up to
   * where the time reaches the maximum, and lowered by one for each base
   * ejection time spent out of ejection.
   */
  multiplier = 0;
  /** When the current ejection ends (tracker clock, epoch ms); 0 when not ejected. */
  ejectedUntil = 0;
  /** When the last ejection ended or ends (tracker clock); 0 before the first. */
  lastEjectionEnd = 0;
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
  /** @internal The trackers' listeners: one function, or several. */
  holders: HealthListener | HealthListener[] | undefined = undefined;

  /** @internal */
  constructor(id: string, breaker: IBreaker) {
    this.id = id;
    this.breaker = breaker;
  }
}

/** A JSON view of one endpoint's health, for `describe()` and `resolve()`. */
export interface HealthView {
  /** The state at the time of the view: an ejection whose time is over shows as `healthy` (the router takes it back). */
  readonly state: HealthState;
  /** Times ejected so far. */
  readonly ejections: number;
  /** When the current ejection ends (ISO time), while ejected. */
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
 * Tracks the health and load of the endpoints that balancers use.
 * Transports report outcomes; a balancer tracks the endpoints of its
 * service, is told of their state changes, and asks
 * {@link HealthTracker.available} when it re-plans. A record is kept while
 * some holder tracks its endpoint, and forgotten after the last lets go.
 */
export class HealthTracker {
  readonly #byId = new Map<string, EndpointHealth>();
  readonly #listeners = new Set<HealthListener>();
  readonly #makeBreaker: () => IBreaker;
  readonly #base: number;
  readonly #max: number;
  /** The multiplier at which the ejection time reaches the maximum: it grows no further. */
  readonly #maxMultiplier: number;
  readonly #jitter: number;
  readonly #tau: number;
  readonly #failureLatency: number;
  readonly #random: () => number;
  /** The clock, in ms. */
  readonly now: () => number;
  /** Bumped on every state change of any endpoint (a global count, for tests and metrics; balancers do not read it). */
  version = 0;

  constructor(options: HealthOptions = {}) {
    const threshold = options.consecutiveFailures ?? 5;
    const rate = options.failureRate ?? {};
    this.#makeBreaker = options.breaker ?? (() => new OutlierBreaker(threshold, rate));
    this.#base = options.baseEjectionTime ?? 30_000;
    this.#max = options.maxEjectionTime ?? 300_000;
    this.#maxMultiplier = this.#base > 0 ? Math.max(1, Math.ceil(this.#max / this.#base)) : 1;
    this.#jitter = options.ejectionJitter ?? 0.1;
    this.#tau = options.latencyDecay ?? 10_000;
    this.#failureLatency = options.failureLatency ?? 30;
    this.#random = options.random ?? Math.random;
    this.now = options.now ?? monotonicNow;
  }

  /** How many records the tracker keeps: one per endpoint some holder tracks. */
  get size(): number {
    return this.#byId.size;
  }

  /**
   * The health record of an endpoint: the one kept while some holder tracks
   * the endpoint, else a fresh record that is not kept (reports to it change
   * nothing the router sees).
   */
  get(id: string): EndpointHealth {
    return this.#byId.get(id) ?? new EndpointHealth(id, this.#makeBreaker());
  }

  /** The health record of an endpoint, if some holder tracks it. */
  peek(id: string): EndpointHealth | undefined {
    return this.#byId.get(id);
  }

  /**
   * Tracks an endpoint for a holder: returns its record, created on first
   * use and kept until the last holder calls {@link HealthTracker.untrack},
   * and calls `listener` after each of its state changes. A holder tracks
   * an endpoint once; the listener identifies it and must not throw.
   */
  track(id: string, listener: (health: EndpointHealth) => void): EndpointHealth {
    let h = this.#byId.get(id);
    if (h === undefined) {
      h = new EndpointHealth(id, this.#makeBreaker());
      this.#byId.set(id, h);
    }
    const holders = h.holders;
    if (holders === undefined) h.holders = listener;
    else if (typeof holders === "function") {
      if (holders !== listener) h.holders = [holders, listener];
    } else if (!holders.includes(listener)) holders.push(listener);
    return h;
  }

  /** A holder lets go of a record; the tracker forgets it once no holder is left. Idempotent. */
  untrack(h: EndpointHealth, listener: (health: EndpointHealth) => void): void {
    const holders = h.holders;
    if (holders === listener) h.holders = undefined;
    else if (Array.isArray(holders)) {
      const i = holders.indexOf(listener);
      if (i >= 0) holders.splice(i, 1);
      if (holders.length === 1) h.holders = holders[0];
    }
    if (h.holders === undefined && this.#byId.get(h.id) === h) this.#byId.delete(h.id);
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
   * The state at a time, as the router sees it: an ejection whose time is
   * over is `healthy` (available; its next call probes), so that a view and
   * {@link HealthTracker.available} never disagree.
   */
  stateAt(h: EndpointHealth, now: number = this.now()): HealthState {
    return h.state === "ejected" && now >= h.ejectedUntil ? "healthy" : h.state;
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

  /**
   * The call ended with a response that counts as success, after `latency`
   * ms; `at`: when that latency was measured, on this tracker's clock, when
   * the caller knows (saves a clock read).
   */
  success(h: EndpointHealth, latency = -1, at?: number): void {
    h.outstanding--;
    if (latency >= 0) this.observe(h, latency, at);
    h.breaker.success(h.state === "probing" ? CircuitState.HalfOpen : CircuitState.Closed);
    if (h.state === "probing") {
      h.ejectedUntil = 0;
      this.#set(h, "healthy");
    }
  }

  /**
   * The call ended with a failure of the endpoint (connect error, reset,
   * timeout, 502/503/504), after `latency` ms if known.
   */
  failure(h: EndpointHealth, reason: string, latency = -1): void {
    h.outstanding--;
    // A failure must not make the host look fast (a refused connect takes
    // 0.1 ms): it counts at least twice the current latency, and, with none
    // measured yet, at least Linkerd's default RTT. Finagle's PeakEwma and
    // tower's (Linkerd's) feed a failure's time in as it is; Linkerd starts
    // every endpoint at its default RTT, Finagle at 0 and leaves a failing
    // host to failure accrual — here a new endpoint's failed first call
    // would otherwise win every comparison until it is ejected.
    this.observe(h, Math.max(latency, h.latency === 0 ? this.#failureLatency : 2 * h.latency));
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
  observe(h: EndpointHealth, latency: number, now: number = this.now()): void {
    const td = now - h.latencyAt;
    // A sample measured before the last one (its body ended later) does not move the clock back.
    if (td > 0) h.latencyAt = now;
    if (latency > h.latency) h.latency = latency;
    else {
      const w = td > 0 ? Math.exp(-td / this.#tau) : 1;
      h.latency = h.latency * w + latency * (1 - w);
    }
  }

  /**
   * The load cost of an endpoint for the balancer: peak-EWMA latency
   * decayed to now, times requests in flight plus one (Finagle's PeakEwma).
   * `inflightScale` weighs the requests in flight: the balancer passes the
   * group's mean weight over the endpoint's, so that an endpoint of twice the
   * weight carries twice the requests at the same cost (a heavier endpoint
   * holds more, it does not answer faster). An endpoint with no latency yet
   * costs 0 when idle and a penalty when busy (Finagle), so that new
   * endpoints each get a first call without being flooded.
   */
  cost(h: EndpointHealth, now: number, inflightScale = 1): number {
    const pending = h.outstanding * inflightScale;
    let latency = h.latency;
    if (latency === 0) return pending === 0 ? 0 : PENALTY + pending;
    const td = now - h.latencyAt;
    if (td > 0) latency *= Math.exp(-td / this.#tau);
    return latency * (pending + 1);
  }

  /** Subscribes to every endpoint's state changes; returns a disposable. Balancers hear only theirs, through {@link HealthTracker.track}. */
  onChange(listener: (health: EndpointHealth) => void): Subscription {
    this.#listeners.add(listener);
    return { dispose: () => this.#listeners.delete(listener) };
  }

  /** A JSON view of an endpoint's health at `now`. */
  view(id: string, now: number = this.now()): HealthView {
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
    const state = this.stateAt(h, now);
    return {
      state,
      ejections: h.ejections,
      ejectedUntil: state === "ejected" ? new Date(h.ejectedUntil).toISOString() : undefined,
      outstanding: h.outstanding,
      lastFailure: h.lastFailure,
      latencyMs: h.latency,
    };
  }

  /** The ejection time at multiplier n, before jitter: base × n, capped. */
  ejectionTime(n: number): number {
    return Math.min(this.#base * n, this.#max);
  }

  #eject(h: EndpointHealth): void {
    const now = this.now();
    // Envoy lowers the multiplier by one for each interval the host spends
    // out of ejection; with no sweep here, the intervals (base ejection
    // times) are counted when the next ejection comes. The time after an
    // ejection ended counts even before a probe: the router took it back.
    if (h.multiplier > 0 && now > h.lastEjectionEnd && this.#base > 0) {
      h.multiplier = Math.max(0, h.multiplier - Math.floor((now - h.lastEjectionEnd) / this.#base));
    }
    h.multiplier = Math.min(h.multiplier + 1, this.#maxMultiplier);
    h.ejections++;
    const time = this.ejectionTime(h.multiplier);
    h.ejectedUntil = now + time + time * this.#jitter * this.#random();
    h.lastEjectionEnd = h.ejectedUntil;
    this.#set(h, "ejected");
  }

  #set(h: EndpointHealth, state: HealthState): void {
    if (state === "healthy" && h.ejections > 0) h.warmingSince = this.now();
    h.state = state;
    this.version++;
    for (const listener of this.#listeners) listener(h);
    const holders = h.holders;
    if (typeof holders === "function") holders(h);
    else if (holders !== undefined) for (const holder of holders.slice()) holder(h);
  }
}

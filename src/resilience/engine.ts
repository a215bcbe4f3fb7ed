/**
 * The call engine: what happens between "call this service" and "here is
 * the response", whatever the protocol. It admits the call (bulkhead,
 * budget), waits for discovery under the call's deadline, picks endpoints
 * through the router, starts attempts, keeps each attempt's per-try timeout
 * and the call's deadline on the shared timer wheel, decides retries
 * (targets, back-off, `Retry-After`, budget) and hedges, reports every
 * outcome to health, and ends the call once.
 *
 * A transport only adapts. It subclasses {@link EngineCall} (to create and
 * dispatch an attempt on the endpoint the engine hands it, and to deliver
 * the start, the response and the error to its caller) and
 * {@link EngineAttempt} (one request on the wire), and reports back what
 * happened to each attempt: it started writing, it could not connect, it
 * failed before or after writing, a response status arrived, the response
 * ended. HTTP and gRPC drive the same engine, so a retry, a budget or a
 * deadline means the same thing on both.
 *
 * Subclassing rather than composing keeps the per-call cost to one call
 * object and one attempt object: meshlink sits on every call.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import { type AttemptRecord, DeadlineExceededError, RequestFailedError } from "../errors.js";
import type { EndpointHealth } from "../routing/health.js";
import type { PickConstraints } from "../routing/router.js";
import { admitCall, noEndpointError, releaseCall, type ServiceRoute } from "./admission.js";
import { type AttemptOutcome, type EngineAttempt, HedgeLostError, PerTryTimeoutError } from "./attempt.js";
import type { CallPolicy, FailureKind } from "./policy.js";
import { TimerEntry } from "./timer.js";

/** The most reused-connection failures one call retries without charging anyone. */
const MAX_STALE_RETRIES = 2;

/**
 * The part of a call's state that only a retry, a hedge or a failure needs.
 * Kept out of the call object (and made on first use) so that the common
 * call — one attempt that succeeds — allocates, initialises and touches
 * less: on a sequential path each field a call writes costs many times its
 * hot cost (docs/performance.md, "The fetch path, third pass").
 */
class CallRetryState<A extends EngineAttempt> {
  /** The second attempt of a hedge race. */
  other: A | undefined = undefined;
  retryTimer: CallTimer | undefined = undefined;
  hedgeTimer: CallTimer | undefined = undefined;
  retries = 0;
  stale = 0;
  /** Every endpoint tried, once there is a second. */
  tried: string[] | undefined = undefined;
  badClusters: string[] | undefined = undefined;
  records: AttemptRecord[] | undefined = undefined;
  /** The endpoint of a retry waiting for a back-off or for a response to drain. */
  next: Endpoint | undefined = undefined;
  nextDelay = 0;
  tlsFailed = false;
}

/** A call's own timer on the shared wheel. */
class CallTimer extends TimerEntry {
  constructor(
    readonly call: EngineCall,
    readonly kind: 0 | 1 | 2,
  ) {
    super();
  }
  onTimer(): void {
    if (this.kind === DEADLINE) this.call.onDeadline();
    else if (this.kind === RETRY) this.call.onRetryTimer();
    else this.call.onHedgeTimer();
  }
}
const DEADLINE = 0;
const RETRY = 1;
const HEDGE = 2;

/**
 * One call through the mesh, protocol-neutral. A transport subclass
 * implements the abstract members and calls {@link EngineCall.start}.
 */
export abstract class EngineCall<A extends EngineAttempt = EngineAttempt> {
  /** The service route. */
  protected readonly route: ServiceRoute;
  /** The call policy. */
  protected readonly policy: CallPolicy;
  /** The request may be resent after its bytes reached the wire. */
  protected retryable = false;
  /** Hedge delay, or undefined. */
  protected hedge: number | "p95" | undefined = undefined;
  /** The deadline in ms from dispatch (`Infinity`: none). */
  protected deadlineMs = Number.POSITIVE_INFINITY;
  /** The per-try timeout in ms. */
  protected perTryTimeout = 0;
  /** When the deadline passes (engine clock). */
  protected deadlineAt = Number.POSITIVE_INFINITY;
  /** Attempts launched. */
  protected attempts = 0;
  /** The attempt that won (its response is being delivered). */
  protected winner: A | undefined;
  /** The caller's abort reason, once it aborted. */
  protected abortReason: Error | null = null;
  /** The call has ended (delivered its end or its error). */
  protected finished = false;
  /** Something records this call (telemetry): only then is {@link EngineCall.noteSettled} called. */
  protected observed = false;
  #current: A | undefined;
  #deadlineTimer: CallTimer | undefined;
  #inflight = 0;
  /** The first endpoint tried; the rest are in {@link CallRetryState.tried}. */
  #firstId: string | undefined;
  #counted = false;
  #responded = false;
  /** What only a retry, a hedge or a failure needs: made on first use, so a call that succeeds at once does not carry it. */
  #r: CallRetryState<A> | undefined;

  constructor(route: ServiceRoute, policy: CallPolicy) {
    this.route = route;
    this.policy = policy;
  }

  // What a transport implements.

  /** True once the mesh is closed. */
  protected abstract get meshClosed(): boolean;
  /** Creates (does not send) an attempt to `endpoint`. */
  protected abstract createAttempt(endpoint: Endpoint, health: EndpointHealth, now: number): A;
  /**
   * Sends the attempt with this per-try timeout. Must not throw: a failure
   * is reported through {@link EngineCall.attemptFailed}, possibly before
   * this returns.
   */
  protected abstract dispatchAttempt(attempt: A, timeoutMs: number): void;
  /** Tells the caller the call started (undici's `onConnect`): its abort acts from now on. */
  protected abstract deliverStart(): void;
  /** Tells the caller the call failed. */
  protected abstract deliverError(err: Error): void;
  /** True when the request (its body) can be sent again. */
  protected abstract resendable(): boolean;

  /**
   * Picks the endpoint of the next attempt (the first, a retry, a hedge)
   * through the service's balancer. A transport that knows more than the
   * router — grpc-js's subchannel connectivity — overrides it to prefer
   * endpoints it can use at once, within the tier the router chose.
   */
  protected pickEndpoint(constraints?: PickConstraints): Endpoint | undefined {
    return this.route.balancer.pick(constraints);
  }

  // Observation hooks (telemetry); no-ops by default.

  /** A retry goes to `next` after `from` failed this way. */
  protected noteRetry(_from: A, _kind: FailureKind | "status", _next: Endpoint): void {}
  /** A hedge goes to `target`. */
  protected noteHedge(_target: Endpoint): void {}
  /** The retry budget said no. */
  protected noteBudgetExhausted(): void {}
  /** `attempt` answered: its response is the call's. */
  protected noteWinner(_attempt: A): void {}
  /** The call ended: with `err`, or well. */
  protected noteEnd(_err: Error | undefined): void {}
  /**
   * `attempt` is over for health: `outcome` as accounted, `reason` as
   * recorded (an error code, `status 503`; empty for a success or an
   * attempt given up). Called once per attempt, and only when the
   * transport set {@link EngineCall.observed}: a call nothing records
   * skips it (a hook per attempt on the hot path cost some 40 ns).
   */
  protected noteSettled(_attempt: A, _outcome: AttemptOutcome, _reason: string): void {}

  /**
   * The error a call ends with when its last attempt failed (`kind` as the
   * engine counted it: `connect` for one that never started) and no other
   * may follow. A transport may say more, such as why it was not sent again.
   */
  protected requestFailed(err: Error, _kind: FailureKind): Error {
    return new RequestFailedError(this.route.name.key, this.records, { cause: err });
  }

  /** Every endpoint attempt so far, with why each failed. */
  protected get records(): readonly AttemptRecord[] {
    return this.#r?.records ?? [];
  }

  /** Starts the call: the caller's start, the deadline, then discovery, admission and the first attempt. */
  start(): void {
    this.deliverStart();
    if (this.finished) return;
    const now = this.policy.now();
    if (this.deadlineMs !== Number.POSITIVE_INFINITY) {
      // The deadline holds from dispatch, the wait for discovery included.
      this.deadlineAt = now + this.deadlineMs;
      this.#deadlineTimer = new CallTimer(this, DEADLINE);
      this.route.timers.schedule(this.#deadlineTimer, this.deadlineAt);
    }
    const watch = this.route.balancer.watch;
    watch.used = true;
    if (watch.isSettled || this.meshClosed) {
      this.#admit(now);
      return;
    }
    watch.settled().then(
      () => this.#admit(this.policy.now()),
      (err: unknown) => this.#fail(err as Error),
    );
  }

  #admit(now: number): void {
    if (this.finished) return;
    const refused = admitCall(this.route, this.policy, this.meshClosed, now);
    if (refused !== undefined) {
      this.#fail(refused);
      return;
    }
    this.#counted = true;
    const endpoint = this.pickEndpoint();
    if (endpoint === undefined) {
      this.#fail(this.#noEndpoint());
      return;
    }
    this.#launch(endpoint, now);
    if (this.hedge !== undefined && !this.finished) this.#armHedge(now);
  }

  #retryState(): CallRetryState<A> {
    return (this.#r ??= new CallRetryState<A>());
  }

  #noEndpoint(): Error {
    return noEndpointError(this.route, this.policy, this.records);
  }

  #armHedge(now: number): void {
    const state = this.route.state;
    state.hedgeBudget.deposit(now);
    let delay = this.hedge;
    if (delay === "p95") delay = state.latency.percentile(0.95);
    if (delay === undefined) return;
    const timer = new CallTimer(this, HEDGE);
    this.#retryState().hedgeTimer = timer;
    this.route.timers.schedule(timer, now + Math.max(1, delay));
  }

  #launch(endpoint: Endpoint, now: number): void {
    const balancer = this.route.balancer;
    const health = balancer.healthOf(endpoint);
    const a = this.createAttempt(endpoint, health, now);
    this.attempts++;
    this.#inflight++;
    const current = this.#current;
    if (current === undefined || !current.live || current.abandoned !== null) this.#current = a;
    else this.#retryState().other = a;
    balancer.health.start(health);
    if (this.#firstId === undefined) this.#firstId = endpoint.id;
    else (this.#retryState().tried ??= [this.#firstId]).push(endpoint.id);
    let timeout = this.perTryTimeout;
    if (this.deadlineAt !== Number.POSITIVE_INFINITY) {
      const left = Math.max(1, Math.floor(this.deadlineAt - now));
      if (left < timeout) {
        timeout = left;
        a.deadlineBound = true;
      }
    }
    a.timeoutMs = timeout;
    this.route.timers.schedule(a, now + timeout);
    this.dispatchAttempt(a, timeout);
  }

  /** Every endpoint id this call tried (allocates on the retry and hedge paths only). */
  #triedIds(): string[] {
    return (this.#retryState().tried ??= this.#firstId === undefined ? [] : [this.#firstId]);
  }

  /** Accounts an attempt's outcome to its endpoint's health, once. */
  #settle(a: A, outcome: AttemptOutcome, reason: string, latency: number): void {
    if (a.settled) return;
    a.settled = true;
    const tracker = this.route.balancer.health;
    if (outcome === "success") {
      // The response's time, when health keeps the engine's clock: no second read of it.
      tracker.success(a.health, latency, tracker.now === this.policy.now ? a.startedAt + latency : undefined);
    } else if (outcome === "other") tracker.release(a.health);
    else if (outcome === "stale") {
      // A keep-alive connection the server had closed: not the endpoint's fault.
      tracker.release(a.health);
      (this.#retryState().records ??= []).push({ endpoint: a.endpoint.id, reason });
    } else {
      tracker.failure(a.health, reason, latency);
      (this.#retryState().records ??= []).push({ endpoint: a.endpoint.id, reason });
    }
    if (this.observed) this.noteSettled(a, outcome, reason);
  }

  /** The attempt no longer waits for a response. */
  #drop(a: A): void {
    if (a.live) {
      a.live = false;
      this.#inflight--;
    }
  }

  /** Gives up on an attempt: it says nothing about its endpoint; the transport cancels it. */
  #abandon(a: A, reason: Error): void {
    if (a.abandoned !== null) return;
    a.abandoned = reason;
    a.draining = false;
    this.route.timers.cancel(a);
    this.#drop(a);
    this.#settle(a, "other", "", 0);
    a.cancel(reason);
  }

  /** The other attempt of a hedge race, still waiting for its response. */
  #racing(a: A): boolean {
    const other = a === this.#current ? this.#r?.other : this.#current;
    return other?.live === true && other.abandoned === null;
  }

  #win(a: A): void {
    this.winner = a;
    this.#responded = true;
    const r = this.#r;
    if (r?.hedgeTimer !== undefined) this.route.timers.cancel(r.hedgeTimer);
    const loser = a === this.#current ? r?.other : this.#current;
    if (loser !== undefined && loser !== a && loser.abandoned === null && !loser.settled) {
      this.#abandon(loser, new HedgeLostError());
    }
    this.noteWinner(a);
  }

  /** The next endpoint for a retry, or undefined when the policy, the body, the budget or the router says no. */
  #retryTarget(a: A, kind: FailureKind | "status", now: number): Endpoint | undefined {
    if (this.abortReason !== null || this.finished || this.meshClosed) return undefined;
    const r = this.#retryState();
    if (kind === "stale") {
      // The server closed a reused connection as the request went out: resend
      // what may be resent, without counting it as an attempt or a retry.
      if (!this.retryable || r.stale >= MAX_STALE_RETRIES) return undefined;
    } else if (!this.policy.mayRetry(kind, this.retryable, this.attempts - r.stale)) {
      return undefined;
    }
    if (now >= this.deadlineAt || !this.resendable()) return undefined;
    // A connection that failed, broke or went silent points at the network or
    // the whole cluster as much as at the host: retry in another cluster if possible.
    if (kind === "tls") r.tlsFailed = true;
    if (kind === "connect" || kind === "reset" || kind === "timeout") {
      const bad = (r.badClusters ??= []);
      if (!bad.includes(a.endpoint.cluster)) bad.push(a.endpoint.cluster);
    }
    // An endpoint that failed the TLS identity or certificate check is never tried again by this call.
    const next = this.pickEndpoint({
      exclude: this.#triedIds(),
      avoidClusters: r.badClusters,
      hard: r.tlsFailed,
    });
    if (next === undefined) return undefined;
    if (kind === "stale") {
      r.stale++;
      return next;
    }
    const budget = this.route.state.budget;
    if (budget !== undefined && !budget.tryWithdraw()) {
      this.noteBudgetExhausted();
      return undefined;
    }
    return next;
  }

  /** Sends the retry now, or after `delay` ms on the shared wheel. */
  #retry(next: Endpoint, delay: number, now: number): void {
    const r = this.#retryState();
    r.retries++;
    if (delay <= 0) {
      this.#launch(next, now);
      return;
    }
    r.next = next;
    r.retryTimer ??= new CallTimer(this, RETRY);
    this.route.timers.schedule(r.retryTimer, now + delay);
  }

  /** @internal A back-off (or `Retry-After`) ended. */
  onRetryTimer(): void {
    const r = this.#r;
    if (r === undefined) return;
    const next = r.next;
    r.next = undefined;
    if (next === undefined || this.finished) return;
    this.#launch(next, this.policy.now());
  }

  /** @internal The hedge delay passed. */
  onHedgeTimer(): void {
    // Hedge only while the first attempt alone is still waiting, and no retry is pending.
    if (this.finished || this.winner !== undefined || this.#inflight !== 1 || this.#r?.next !== undefined)
      return;
    const budget = this.route.state.hedgeBudget;
    const target = this.pickEndpoint({ exclude: this.#triedIds(), hard: true });
    if (target === undefined || !budget.tryWithdraw()) return;
    this.noteHedge(target);
    this.#launch(target, this.policy.now());
  }

  /** @internal The deadline passed: cancel every attempt and fail the call. */
  onDeadline(): void {
    if (this.finished) return;
    const err = new DeadlineExceededError(this.route.name.key, this.deadlineMs, this.records);
    this.#abandonAll(err);
    this.#fail(err);
  }

  #abandonAll(reason: Error): void {
    if (this.#current !== undefined) this.#abandon(this.#current, reason);
    const other = this.#r?.other;
    if (other !== undefined) this.#abandon(other, reason);
  }

  /** Aborts the call for its caller: every attempt is cancelled and the call fails with `reason` at once. */
  abort(reason: Error): void {
    if (this.abortReason !== null || this.finished) return;
    this.abortReason = reason;
    this.#abandonAll(reason);
    if (this.#r !== undefined) this.#r.next = undefined;
    this.#fail(reason);
  }

  #fail(err: Error): void {
    if (!this.#finish()) return;
    this.noteEnd(err);
    this.deliverError(err);
  }

  /** Ends the call's bookkeeping once; false when it had already ended. */
  #finish(): boolean {
    if (this.finished) return false;
    this.finished = true;
    if (this.#counted) {
      this.#counted = false;
      releaseCall(this.route, this.policy);
    }
    const timers = this.route.timers;
    if (this.#deadlineTimer !== undefined) timers.cancel(this.#deadlineTimer);
    const r = this.#r;
    if (r !== undefined) {
      if (r.retryTimer !== undefined) timers.cancel(r.retryTimer);
      if (r.hedgeTimer !== undefined) timers.cancel(r.hedgeTimer);
    }
    return true;
  }

  // What attempts report.

  /**
   * @internal The attempt starts writing its request. Returns false when it
   * must not: the transport then cancels it (the engine already did, when it could).
   */
  attemptStarted(a: A): boolean {
    a.started = true;
    if (a.abandoned !== null) {
      a.cancel(a.abandoned);
      return false;
    }
    return true;
  }

  /** @internal The per-try timeout passed. */
  attemptTimedOut(a: A): void {
    if (a.settled || a.responded || a.abandoned !== null || this.finished) return;
    const err = new PerTryTimeoutError(a.timeoutMs, a.started);
    // Still connecting: nothing was written, so it is a connect failure (any method may retry).
    const kind: FailureKind = a.started ? "timeout" : "connect";
    a.abandoned = err;
    a.cancel(err);
    this.#failed(a, err, kind);
  }

  /**
   * @internal Response headers arrived with `status`; `retryAfter` is the
   * parsed `Retry-After` in ms when the status is 429 or 503. Returns true
   * when the transport delivers this response to the caller, false when it
   * drains (or drops) it.
   */
  attemptResponse(a: A, status: number, retryAfter: number | undefined): boolean {
    if (a.abandoned !== null || this.finished) return false;
    a.responded = true;
    a.status = status;
    this.route.timers.cancel(a);
    const policy = this.policy;
    const now = policy.now();
    const latency = now - a.startedAt;
    a.latency = latency;
    if (policy.isRetryableStatus(status)) {
      // A 429 says the endpoint is alive: it counts as a success for health.
      this.#settle(a, policy.isFailureStatus(status) ? "status" : "success", `status ${status}`, latency);
      if (this.#racing(a)) {
        // The other attempt of a hedge may still answer well.
        this.#abandon(a, new HedgeLostError());
        return false;
      }
      if (
        retryAfter === undefined ||
        (retryAfter <= policy.maxRetryAfter && now + retryAfter < this.deadlineAt)
      ) {
        const next = this.#retryTarget(a, "status", now);
        if (next !== undefined) {
          this.noteRetry(a, "status", next);
          // Drain this response and send the next attempt when it ends: the connection stays reusable.
          a.draining = true;
          const r = this.#retryState();
          r.next = next;
          r.nextDelay = Math.max(retryAfter ?? 0, policy.backoff(r.retries + 1));
          return false;
        }
      }
    } else {
      this.route.state.latencyIfAny?.record(latency);
    }
    this.#drop(a);
    this.#win(a);
    return true;
  }

  /** @internal An informational (1xx) response: the final one follows on the same attempt. */
  attemptInformational(a: A): boolean {
    return a.abandoned === null && !this.finished && !a.draining;
  }

  /** @internal The connection was upgraded (a 101, or a CONNECT tunnel): the call succeeded. */
  attemptUpgraded(a: A): boolean {
    if (a.abandoned !== null || this.finished) return false;
    a.responded = true;
    this.route.timers.cancel(a);
    this.#drop(a);
    this.#settle(a, "success", "", this.policy.now() - a.startedAt);
    this.#win(a);
    this.#finish();
    this.noteEnd(undefined);
    return true;
  }

  /** @internal The response ended. Returns true when the transport delivers the end to the caller. */
  attemptEnded(a: A): boolean {
    if (a.abandoned !== null) return false;
    if (a.draining) {
      a.draining = false;
      this.#drop(a);
      this.#afterDrain();
      return false;
    }
    if (a !== this.winner || this.finished) return false;
    this.#settle(a, "success", "", a.latency);
    this.#finish();
    this.noteEnd(undefined);
    return true;
  }

  #afterDrain(): void {
    const r = this.#r;
    if (r === undefined) return;
    const next = r.next;
    if (next === undefined || this.finished) return;
    r.next = undefined;
    this.#retry(next, r.nextDelay, this.policy.now());
  }

  /**
   * @internal The attempt failed. `kind` is the transport's reading of the
   * error; what the attempt had written decides the rest: an attempt that
   * never started writing failed to connect, whatever the error says, and
   * one that did may have reached the server.
   */
  attemptFailed(a: A, err: Error, kind: FailureKind): void {
    if (a.abandoned !== null) return;
    if (a.draining) {
      // The failure response broke while draining: go on with the retry all the same.
      a.draining = false;
      this.#drop(a);
      this.#afterDrain();
      return;
    }
    this.route.timers.cancel(a);
    this.#failed(a, err, kind);
  }

  #failed(a: A, err: Error, kind: FailureKind): void {
    const reason = (err as { code?: string }).code ?? err.name;
    if (this.finished) {
      this.#drop(a);
      this.#settle(a, "other", "", 0);
      return;
    }
    if (a === this.winner) {
      // The response had started: it cannot be retried, but a broken or
      // malformed response is the endpoint's failure all the same.
      this.#settle(a, kind === "other" ? "other" : kind, reason, -1);
      this.#fail(
        kind === "other" ? err : new RequestFailedError(this.route.name.key, this.records, { cause: err }),
      );
      return;
    }
    this.#drop(a);
    if (kind !== "other" && kind !== "tls") {
      if (!a.started) kind = "connect";
      else if (kind === "connect") kind = "reset";
    }
    const now = this.policy.now();
    const deadlineHit = now >= this.deadlineAt || (a.deadlineBound && kind === "timeout");
    if (deadlineHit) kind = "other";
    this.#settle(a, kind, reason, now - a.startedAt);
    if (deadlineHit) {
      this.onDeadline();
      return;
    }
    if (this.#racing(a)) return;
    if (!this.#responded && kind !== "other") {
      const next = this.#retryTarget(a, kind, now);
      if (next !== undefined) {
        this.noteRetry(a, kind, next);
        // Nothing reached the server after a connect or stale-connection
        // failure: resend at once (Finagle's requeue); else back off.
        const delay =
          kind === "connect" || kind === "stale" || kind === "tls"
            ? 0
            : this.policy.backoff(this.#retryState().retries + 1);
        this.#retry(next, delay, now);
        return;
      }
      this.#fail(this.requestFailed(err, kind));
      return;
    }
    this.#fail(err);
  }
}

/**
 * One gRPC call through the mesh: the gRPC side of the call engine (see
 * `resilience/engine.ts`). {@link GrpcCall} is made when the call's first
 * pick binds it to its channel's service; from then the engine picks each
 * attempt's endpoint, and this class reads what each attempt's grpc-js call
 * reports:
 *
 * - response headers commit a call whose response is a stream (its
 *   messages then go to the caller); a unary response is held until its
 *   status, so that an attempt that fails after sending its message can
 *   still be retried when the method is idempotent;
 * - OK and application statuses are answers (the endpoint is healthy);
 * - UNAVAILABLE and a CANCELLED that meshlink did not ask for are endpoint
 *   failures: retried on another endpoint (under the retry budget) for an
 *   idempotent method, or for any method while no response message has
 *   arrived — a failed pick (no connection) counts as a connect failure;
 * - DEADLINE_EXCEEDED ends the call as it is.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import { type AttemptOutcome, EngineAttempt } from "../../resilience/attempt.js";
import { EngineCall } from "../../resilience/engine.js";
import type { FailureKind } from "../../resilience/policy.js";
import type { EndpointHealth } from "../../routing/health.js";
import type { PickConstraints } from "../../routing/router.js";
import type { CallObserver } from "../../telemetry/call.js";
import { classifyTlsRejection } from "../../tls/identity.js";
import { parseHedge } from "../http/headers.js";
import type { ServiceBinding } from "./binding.js";
import type { MeshClientCall } from "./interceptor.js";
import type { Leg } from "./leg.js";
import { ANSWER, DEADLINE, GrpcStatusError, statusCodeOf, statusKind } from "./status.js";
import type { GrpcMetadata as Metadata, GrpcStatusObject as StatusObject } from "./types.js";

/** What the interceptor read from the call before it was bound. */
export interface GrpcCallSettings {
  /** The method may be sent twice: marked idempotent, or `x-meshlink-retryable: true`. */
  readonly idempotent: boolean;
  /** `x-meshlink-retryable: false`: never resent once it may have reached the server. */
  readonly neverResend: boolean;
  /** The `x-meshlink-hedge` value, if the call had one. */
  readonly hedge: string | undefined;
  /** The call's deadline, epoch ms (`Infinity`: none). */
  readonly deadline: number;
  /** The call's telemetry (spans per attempt, metrics), when something records. */
  readonly observer: CallObserver | undefined;
}

/** One attempt of a gRPC call: one grpc-js call (a leg) to one endpoint. */
export class GrpcAttempt extends EngineAttempt {
  declare readonly call: GrpcCall;
  /** The grpc-js call carrying this attempt. */
  leg: Leg | undefined = undefined;
  /** A unary response's headers, held until its status. */
  heldMetadata: Metadata | undefined = undefined;
  /** A unary response's message, held until its status. */
  message: unknown = undefined;
  /** True once a response message arrived. */
  hasMessage = false;

  cancel(reason: Error): void {
    this.leg?.cancel(reason);
  }
}

/** One gRPC call through the mesh, bound to its service. */
export class GrpcCall extends EngineCall<GrpcAttempt> {
  /** The interceptor's side of the call (the caller, the legs, the span). */
  readonly client: MeshClientCall;
  readonly #binding: ServiceBinding;
  /** Whether a resend stays allowed after a response message arrived. */
  readonly #afterMessage: boolean;
  readonly #obs: CallObserver | undefined;
  /** The status code the call ends with, once known. */
  #code = -1;

  constructor(client: MeshClientCall, binding: ServiceBinding, settings: GrpcCallSettings) {
    const policy = binding.policy;
    super(binding, policy);
    this.client = client;
    this.#binding = binding;
    // Until a response message arrives the server has said nothing: every
    // method may be retried (gRPC's own rule); after one, only idempotent ones.
    this.retryable = !settings.neverResend;
    this.#afterMessage = settings.idempotent && !settings.neverResend;
    const fallback = policy.hedging.delay ?? "p95";
    const hedge =
      settings.hedge !== undefined
        ? parseHedge(settings.hedge, fallback)
        : binding.state.hedgeByDefault
          ? fallback
          : undefined;
    // A hedge resends the request while the first attempt may still be reading it: a unary request only.
    this.hedge = this.#afterMessage && client.unaryRequest ? hedge : undefined;
    this.deadlineMs =
      settings.deadline === Number.POSITIVE_INFINITY
        ? settings.deadline
        : Math.max(0, settings.deadline - Date.now());
    this.perTryTimeout = policy.perTryTimeout;
    this.#obs = settings.observer;
    this.observed = settings.observer !== undefined;
  }

  /** The call's observer, when something records. */
  get observer(): CallObserver | undefined {
    return this.#obs;
  }

  // The engine's transport side.

  protected get meshClosed(): boolean {
    return this.#binding.host.closed;
  }

  protected createAttempt(endpoint: Endpoint, health: EndpointHealth, now: number): GrpcAttempt {
    const a = new GrpcAttempt(this, endpoint, health, now);
    this.#obs?.attemptCreated(a, this.attempts + 1);
    return a;
  }

  protected dispatchAttempt(a: GrpcAttempt, _timeoutMs: number): void {
    this.client.dispatch(a);
  }

  protected deliverStart(): void {}

  protected deliverError(err: Error): void {
    this.client.fail(err);
  }

  protected resendable(): boolean {
    return this.client.replayable;
  }

  protected override pickEndpoint(constraints?: PickConstraints): Endpoint | undefined {
    return this.#binding.pickReady(constraints);
  }

  // Telemetry: every note goes to the observer (issue 13's), which exists only when something records.

  protected override noteRetry(from: GrpcAttempt, kind: FailureKind | "status", next: Endpoint): void {
    this.#obs?.retry(from, kind, next);
  }

  protected override noteHedge(target: Endpoint): void {
    this.#obs?.hedge(target);
  }

  protected override noteBudgetExhausted(): void {
    this.#obs?.budgetExhausted();
  }

  protected override noteWinner(a: GrpcAttempt): void {
    this.#obs?.winner(a, this.attempts);
  }

  protected override noteSettled(a: GrpcAttempt, outcome: AttemptOutcome, reason: string): void {
    this.#obs?.settled(a, outcome, reason);
  }

  protected override noteEnd(err: Error | undefined): void {
    const span = this.client.span;
    if (span.isRecording()) {
      span.setAttribute(
        "rpc.grpc.status_code",
        err === undefined ? Math.max(0, this.#code) : statusCodeOf(err),
      );
    }
    const obs = this.#obs;
    if (obs !== undefined) obs.end(err, this.attempts);
    // A span that records nothing still ends (an SDK's sampler may have dropped it).
    else span.end();
  }

  // What the interceptor reports.

  /** @internal The winning attempt, once there is one. */
  get winnerAttempt(): GrpcAttempt | undefined {
    return this.winner;
  }

  /**
   * @internal Response headers of a streaming response: true when this
   * attempt's response is the caller's. (Its status is not known yet: 0
   * until it ends. gRPC codes never collide with the HTTP statuses the
   * policy retries.)
   */
  commit(a: GrpcAttempt): boolean {
    return this.attemptResponse(a, 0, undefined);
  }

  /** @internal A response message arrived (a unary one, held): from now only an idempotent call is resent. */
  messageReceived(): void {
    this.retryable = this.#afterMessage;
  }

  /** @internal The attempt's grpc-js call ended with `status`. */
  attemptStatus(a: GrpcAttempt, status: StatusObject): void {
    if (a.abandoned !== null) return;
    const kind = statusKind(status.code);
    if (kind === ANSWER) {
      if (a !== this.winner) {
        if (!this.attemptResponse(a, status.code, undefined)) return;
        this.client.emitHeld(a);
      }
      a.status = status.code;
      this.#code = status.code;
      if (this.attemptEnded(a)) this.client.emitStatus(status);
      return;
    }
    if (kind === DEADLINE) {
      this.attemptFailed(a, new GrpcStatusError(status), "other");
      return;
    }
    // A leg its picker failed never reached a server: the picker's reason is the record,
    // and a refused server certificate is never tried again by this call.
    const err = a.leg?.failure ?? new GrpcStatusError(status);
    if (!a.started && classifyTlsRejection(err) !== undefined) this.attemptFailed(a, err, "tls");
    else this.attemptFailed(a, err, a.started ? "reset" : "connect");
  }
}

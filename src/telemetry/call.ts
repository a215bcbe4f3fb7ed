/**
 * What a call reports while it runs: its span, a child span per attempt
 * (the client span of each request on the wire) and its metrics, with the
 * engine's decisions as attributes — which tier and endpoint, why a
 * failover, why a retry, a hedge, an exhausted budget.
 *
 * A transport makes a {@link CallObserver} only when something records (a
 * recording span, or a registered meter provider): a call with no SDK
 * holds `undefined` and pays one field test per hook.
 *
 * @module
 */

import {
  type Attributes,
  type Context,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceRoute } from "../resilience/admission.js";
import type { AttemptOutcome, EngineAttempt } from "../resilience/attempt.js";
import type { MeshInstruments } from "./metrics.js";
import { leaveReason, type TierChoice, tierChoice } from "./reasons.js";
import { Attr, endSpanWithError, type HeaderList, injectHeaders, TRACER_NAME } from "./tracing.js";

/** What the observer keeps per attempt, in {@link EngineAttempt.trace}. */
interface AttemptTrace {
  readonly span: Span;
  readonly choice: TierChoice;
}

/**
 * How a protocol names things on attempt spans and in metrics: HTTP's
 * semantic conventions (`http.response.status_code`, a status of 400 or
 * more is an error) or gRPC's (`rpc.grpc.status_code`, any status but OK).
 */
export interface ProtocolAttributes {
  /** The attempt span's name, e.g. `GET attempt`. */
  readonly spanName: string;
  /** Attributes every attempt span starts with (method, `url.full`, `server.address`, …). */
  readonly attributes: Attributes;
  /** The attribute that counts resends (`http.request.resend_count`), if the protocol has one. */
  readonly resendCount: string | undefined;
  /** The attribute of a response's status (`http.response.status_code`). */
  readonly statusAttribute: string;
  /** True when a response status is an error for the span (HTTP: 400 or more). */
  isErrorStatus(status: number): boolean;
}

const tracer = trace.getTracer(TRACER_NAME);

/** The call-level reports of one call; see the module. */
export class CallObserver {
  /** The call's span; may be a non-recording one (then no attempt spans). */
  readonly span: Span;
  /** True when attempts get spans of their own (and carry their own trace context). */
  readonly traced: boolean;
  /** The meter's instruments, when a meter provider is registered. */
  readonly instruments: MeshInstruments | undefined;
  /** Headers the transport rebuilds per traced attempt (its own business). */
  headerSource: unknown = undefined;
  /** The transport's extra headers for a traced attempt, before trace context. */
  headerExtra: HeaderList | undefined = undefined;
  readonly #route: ServiceRoute;
  readonly #protocol: ProtocolAttributes;
  readonly #context: Context | undefined;
  readonly #t0: number;
  readonly #service: string;
  #cause: "retry" | "hedge" | undefined;
  #from = "";
  #retryReason = "";
  #lastLeave = "";
  #hedged = false;
  #budgetExhausted = false;
  #winner: EngineAttempt | undefined;

  /**
   * `parent`: the caller's context; `protocol`: how attempt spans and
   * statuses are named. Attempts get spans when `span` records.
   */
  constructor(
    route: ServiceRoute,
    span: Span,
    parent: Context,
    instruments: MeshInstruments | undefined,
    protocol: ProtocolAttributes,
  ) {
    this.#route = route;
    this.span = span;
    this.traced = span.isRecording();
    this.instruments = instruments;
    this.#protocol = protocol;
    this.#context = this.traced ? trace.setSpan(parent, span) : undefined;
    this.#service = route.name.key;
    this.#t0 = instruments === undefined ? 0 : performance.now();
  }

  /** An attempt was created, number `n` of the call; starts its span when tracing. */
  attemptCreated(a: EngineAttempt, n: number): void {
    const cause = this.#cause;
    this.#cause = undefined;
    if (!this.traced) return;
    const e = a.endpoint;
    const h = a.health;
    const balancer = this.#route.balancer;
    const choice = tierChoice(
      balancer,
      e,
      cause === undefined ? undefined : cause === "retry" ? "retried" : "hedged",
    );
    const protocol = this.#protocol;
    // Literal keys, no spread: an object literal with a spread and computed keys
    // took V8's slow path (3 µs); this one costs some 20 ns. Keys are `Attr`'s values.
    const attributes: Attributes = {
      "network.peer.address": e.address,
      "network.peer.port": e.port,
      "meshlink.service": this.#service,
      "meshlink.endpoint": e.id,
      "meshlink.cluster": e.cluster,
      "meshlink.region": e.locality.region,
      "meshlink.zone": e.locality.zone,
      "meshlink.tier": balancer.tierOf(e).label,
      "meshlink.attempt": n,
      "meshlink.attempt.cause": cause ?? "first",
      "meshlink.endpoint.latency_ms": h.latency,
      "meshlink.endpoint.outstanding": h.outstanding,
    };
    const common = protocol.attributes;
    for (const key in common) attributes[key] = common[key];
    if (n > 1 && protocol.resendCount !== undefined) attributes[protocol.resendCount] = n - 1;
    if (choice.failover) {
      attributes["meshlink.failover"] = true;
      attributes["meshlink.failover.reason"] =
        choice.reason === "retried" && this.#retryReason !== "" ? this.#retryReason : choice.reason;
    }
    if (choice.panic) attributes["meshlink.panic"] = true;
    if (cause === "retry") {
      attributes["meshlink.retry.reason"] = this.#retryReason;
      attributes["meshlink.retry.from"] = this.#from;
    }
    const span = tracer.startSpan(protocol.spanName, { kind: SpanKind.CLIENT, attributes }, this.#context);
    a.trace = { span, choice } satisfies AttemptTrace;
  }

  /** Writes an attempt's trace context (its own span's) into `headers`. */
  inject(a: EngineAttempt, headers: HeaderList): void {
    const t = a.trace as AttemptTrace | undefined;
    if (t !== undefined) injectHeaders(trace.setSpan(this.#context!, t.span), headers);
  }

  /** A retry goes to `next`, leaving `from` (which failed as `kind`). */
  retry(from: EngineAttempt, kind: string, next: Endpoint): void {
    this.#cause = "retry";
    this.#from = from.endpoint.id;
    this.#retryReason = this.#lastLeave;
    if (this.span.isRecording()) {
      this.span.addEvent("meshlink.retry", {
        "meshlink.endpoint": from.endpoint.id,
        "error.type": kind,
        "meshlink.retry.reason": this.#lastLeave,
        "meshlink.retry.endpoint": next.id,
      });
    }
    this.instruments?.retries.add(1, {
      "meshlink.service": this.#service,
      "meshlink.retry.reason": this.#lastLeave,
    });
  }

  /** A hedge goes to `target`. */
  hedge(target: Endpoint): void {
    this.#cause = "hedge";
    this.#hedged = true;
    if (this.span.isRecording()) this.span.addEvent("meshlink.hedge", { "meshlink.endpoint": target.id });
    this.instruments?.hedges.add(1, { "meshlink.service": this.#service });
  }

  /** The retry budget refused a retry. */
  budgetExhausted(): void {
    this.#budgetExhausted = true;
    if (this.span.isRecording()) this.span.addEvent("meshlink.retry_budget_exhausted");
    this.instruments?.budgetExhausted.add(1, { "meshlink.service": this.#service });
  }

  /** An attempt is over: ends its span, counts it. */
  settled(a: EngineAttempt, outcome: AttemptOutcome, reason: string): void {
    const leave = outcome === "other" ? otherReason(a.abandoned) : leaveReason(outcome, reason, a.status);
    if (outcome !== "success" || a.status === 429) this.#lastLeave = leave;
    const t = a.trace as AttemptTrace | undefined;
    if (t !== undefined) {
      const span = t.span;
      const protocol = this.#protocol;
      const failedStatus = a.status > 0 && protocol.isErrorStatus(a.status);
      if (a.status > 0) span.setAttribute(protocol.statusAttribute, a.status);
      if (outcome !== "success" || failedStatus) {
        span.setAttribute(Attr.OUTCOME, leave);
        span.setAttribute(
          "error.type",
          failedStatus ? String(a.status) : outcome === "other" ? leave : reason || outcome,
        );
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    }
    const m = this.instruments;
    if (m !== undefined) {
      m.attempts.add(1, {
        "meshlink.service": this.#service,
        "meshlink.cluster": a.endpoint.cluster,
        "meshlink.tier": this.#route.balancer.tierOf(a.endpoint).label,
        "meshlink.attempt.outcome": outcome === "success" && a.status !== 429 ? "success" : leave,
      });
    }
  }

  /** `a` answered: its response is the call's. */
  winner(a: EngineAttempt, attempts: number): void {
    this.#winner = a;
    const span = this.span;
    if (!span.isRecording()) return;
    const e = a.endpoint;
    const attributes: Attributes = {
      "meshlink.endpoint": e.id,
      "meshlink.cluster": e.cluster,
      "meshlink.region": e.locality.region,
      "meshlink.zone": e.locality.zone,
      "meshlink.tier": this.#route.balancer.tierOf(e).label,
      "meshlink.attempts": attempts,
      "network.peer.address": e.address,
      "network.peer.port": e.port,
    };
    const choice = (a.trace as AttemptTrace | undefined)?.choice;
    if (choice?.failover) {
      attributes["meshlink.failover"] = true;
      attributes["meshlink.failover.reason"] =
        choice.reason === "retried" ? this.#retryReason : choice.reason!;
    }
    if (choice?.panic) attributes["meshlink.panic"] = true;
    span.setAttributes(attributes);
  }

  /** The call ended, with `err` or well: ends its span and records its duration. */
  end(err: Error | undefined, attempts: number): void {
    const span = this.span;
    if (span.isRecording()) {
      if (this.#hedged) span.setAttribute(Attr.HEDGED, true);
      if (this.#budgetExhausted) span.setAttribute(Attr.BUDGET_EXHAUSTED, true);
      if (err !== undefined) {
        span.setAttribute(Attr.ATTEMPTS, attempts);
        span.setAttribute("error.type", errorType(err));
      } else {
        const status = this.#winner?.status ?? 0;
        if (status > 0 && this.#protocol.isErrorStatus(status)) {
          span.setAttribute("error.type", String(status));
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
      }
    }
    if (err === undefined) span.end();
    else endSpanWithError(span, err);
    const m = this.instruments;
    if (m === undefined) return;
    const attributes: Attributes = { "meshlink.service": this.#service };
    const w = this.#winner;
    if (w !== undefined && w.status > 0) attributes[this.#protocol.statusAttribute] = w.status;
    if (err !== undefined) attributes["error.type"] = errorType(err);
    if (w !== undefined) attributes["meshlink.tier"] = this.#route.balancer.tierOf(w.endpoint).label;
    m.callDuration.record((performance.now() - this.#t0) / 1000, attributes);
  }
}

/** An error's type for `error.type`: its code, else its name. */
export function errorType(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : err.name;
}

/** Why an attempt the engine gave up on ended. */
function otherReason(abandoned: Error | null): string {
  if (abandoned === null) return "other";
  if (abandoned.name === "HedgeLostError") return "hedge_lost";
  const code = (abandoned as { code?: unknown }).code;
  if (code === "MESHLINK_ERR_DEADLINE_EXCEEDED") return "deadline";
  if (code === "MESHLINK_ATTEMPT_TIMEOUT") return "timed_out";
  return "cancelled";
}

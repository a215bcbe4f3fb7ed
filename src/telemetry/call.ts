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
import type { AttemptOutcome, EngineAttempt, ServiceRoute } from "../resilience/engine.js";
import type { MeshInstruments } from "./metrics.js";
import { leaveReason, type TierChoice, tierChoice } from "./reasons.js";
import { Attr, endSpanWithError, type HeaderList, injectHeaders, TRACER_NAME } from "./tracing.js";

/** What the observer keeps per attempt, in {@link EngineAttempt.trace}. */
interface AttemptTrace {
  readonly span: Span;
  readonly choice: TierChoice;
}

/** How the protocol names things on an attempt span. */
export interface ProtocolAttributes {
  /** The attempt span's name, e.g. `GET attempt`. */
  readonly spanName: string;
  /** Attributes every attempt span starts with (method, `url.full`, `server.address`, …). */
  readonly attributes: Attributes;
  /** The attribute that counts resends (`http.request.resend_count`), if the protocol has one. */
  readonly resendCount: string | undefined;
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
  readonly #protocol: ProtocolAttributes | undefined;
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
   * `parent`: the caller's context; `protocol`: how attempt spans are
   * named, given when the call span records.
   */
  constructor(
    route: ServiceRoute,
    span: Span,
    parent: Context,
    instruments: MeshInstruments | undefined,
    protocol: ProtocolAttributes | undefined,
  ) {
    this.#route = route;
    this.span = span;
    this.traced = protocol !== undefined && span.isRecording();
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
    const protocol = this.#protocol!;
    const attributes: Attributes = {
      ...protocol.attributes,
      "network.peer.address": e.address,
      "network.peer.port": e.port,
      [Attr.SERVICE]: this.#service,
      [Attr.ENDPOINT]: e.id,
      [Attr.CLUSTER]: e.cluster,
      [Attr.REGION]: e.locality.region,
      [Attr.ZONE]: e.locality.zone,
      [Attr.TIER]: balancer.tierOf(e).label,
      [Attr.ATTEMPT]: n,
      [Attr.CAUSE]: cause ?? "first",
      [Attr.LATENCY]: h.latency,
      [Attr.OUTSTANDING]: h.outstanding,
    };
    if (n > 1 && protocol.resendCount !== undefined) attributes[protocol.resendCount] = n - 1;
    if (choice.failover) {
      attributes[Attr.FAILOVER] = true;
      attributes[Attr.FAILOVER_REASON] =
        choice.reason === "retried" && this.#retryReason !== "" ? this.#retryReason : choice.reason;
    }
    if (choice.panic) attributes[Attr.PANIC] = true;
    if (cause === "retry") {
      attributes[Attr.RETRY_REASON] = this.#retryReason;
      attributes[Attr.RETRY_FROM] = this.#from;
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
        [Attr.ENDPOINT]: from.endpoint.id,
        "error.type": kind,
        [Attr.RETRY_REASON]: this.#lastLeave,
        "meshlink.retry.endpoint": next.id,
      });
    }
    this.instruments?.retries.add(1, { [Attr.SERVICE]: this.#service, [Attr.RETRY_REASON]: this.#lastLeave });
  }

  /** A hedge goes to `target`. */
  hedge(target: Endpoint): void {
    this.#cause = "hedge";
    this.#hedged = true;
    if (this.span.isRecording()) this.span.addEvent("meshlink.hedge", { [Attr.ENDPOINT]: target.id });
    this.instruments?.hedges.add(1, { [Attr.SERVICE]: this.#service });
  }

  /** The retry budget refused a retry. */
  budgetExhausted(): void {
    this.#budgetExhausted = true;
    if (this.span.isRecording()) this.span.addEvent("meshlink.retry_budget_exhausted");
    this.instruments?.budgetExhausted.add(1, { [Attr.SERVICE]: this.#service });
  }

  /** An attempt is over: ends its span, counts it. */
  settled(a: EngineAttempt, outcome: AttemptOutcome, reason: string): void {
    const leave = outcome === "other" ? otherReason(a.abandoned) : leaveReason(outcome, reason, a.status);
    if (outcome !== "success" || a.status === 429) this.#lastLeave = leave;
    const t = a.trace as AttemptTrace | undefined;
    if (t !== undefined) {
      const span = t.span;
      if (a.status > 0) span.setAttribute("http.response.status_code", a.status);
      if (outcome !== "success" || a.status >= 400) {
        span.setAttribute(Attr.OUTCOME, leave);
        span.setAttribute(
          "error.type",
          a.status >= 400 ? String(a.status) : outcome === "other" ? leave : reason || outcome,
        );
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
    }
    const m = this.instruments;
    if (m !== undefined) {
      m.attempts.add(1, {
        [Attr.SERVICE]: this.#service,
        [Attr.CLUSTER]: a.endpoint.cluster,
        [Attr.TIER]: this.#route.balancer.tierOf(a.endpoint).label,
        [Attr.OUTCOME]: outcome === "success" && a.status !== 429 ? "success" : leave,
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
      [Attr.ENDPOINT]: e.id,
      [Attr.CLUSTER]: e.cluster,
      [Attr.REGION]: e.locality.region,
      [Attr.ZONE]: e.locality.zone,
      [Attr.TIER]: this.#route.balancer.tierOf(e).label,
      [Attr.ATTEMPTS]: attempts,
      "network.peer.address": e.address,
      "network.peer.port": e.port,
    };
    const choice = (a.trace as AttemptTrace | undefined)?.choice;
    if (choice?.failover) {
      attributes[Attr.FAILOVER] = true;
      attributes[Attr.FAILOVER_REASON] = choice.reason === "retried" ? this.#retryReason : choice.reason!;
    }
    if (choice?.panic) attributes[Attr.PANIC] = true;
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
      }
    }
    if (err === undefined) span.end();
    else endSpanWithError(span, err);
    const m = this.instruments;
    if (m === undefined) return;
    const attributes: Attributes = { [Attr.SERVICE]: this.#service };
    const w = this.#winner;
    if (w !== undefined && w.status > 0) attributes["http.response.status_code"] = w.status;
    if (err !== undefined) attributes["error.type"] = errorType(err);
    if (w !== undefined) attributes[Attr.TIER] = this.#route.balancer.tierOf(w.endpoint).label;
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

/**
 * Tracing through `@opentelemetry/api` only: the application brings the SDK
 * and the propagator. With no SDK registered a call starts no span at all:
 * it shares one no-op span and propagates the caller's context as it is, so
 * that it builds neither attributes nor a context it would throw away.
 *
 * @module
 */

import {
  type Attributes,
  type Context,
  context,
  INVALID_SPAN_CONTEXT,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";

/** The instrumentation scope name of meshlink's tracer. */
export const TRACER_NAME = "meshlink";

/**
 * Attribute names meshlink sets on its spans, beside OpenTelemetry's
 * semantic conventions (`http.request.method`, `url.full`,
 * `server.address`, `server.port`, `network.peer.address`,
 * `http.response.status_code`, `http.request.resend_count`, `error.type`).
 * See docs/observability.md for what each value means.
 */
export const Attr = {
  /** The canonical service name. */
  SERVICE: "meshlink.service",
  /** The endpoint that served the call, or that the attempt went to (`cluster/address:port`). */
  ENDPOINT: "meshlink.endpoint",
  /** Its cluster. */
  CLUSTER: "meshlink.cluster",
  /** Its region. */
  REGION: "meshlink.region",
  /** Its zone. */
  ZONE: "meshlink.zone",
  /** Its tier for this caller (`zone`, `region`, `failover:<region>`, …). */
  TIER: "meshlink.tier",
  /** How many attempts the call made. */
  ATTEMPTS: "meshlink.attempts",
  /** The attempt's number in its call, from 1. */
  ATTEMPT: "meshlink.attempt",
  /** Why the attempt was made: `first`, `retry` or `hedge`. */
  CAUSE: "meshlink.attempt.cause",
  /** On a retry: why the previous choice was left (`refused`, `timed_out`, `status_503`, …). */
  RETRY_REASON: "meshlink.retry.reason",
  /** On a retry: the endpoint that was left. */
  RETRY_FROM: "meshlink.retry.from",
  /** True when the endpoint is not in the best tier the service has (traffic left the caller's locality). */
  FAILOVER: "meshlink.failover",
  /** Why the better tiers were passed over: `ejected`, `spillover`, `not_ready`, `panic`, or a retry reason. */
  FAILOVER_REASON: "meshlink.failover.reason",
  /** True when the endpoint's tier was in panic: the router ignored health there. */
  PANIC: "meshlink.panic",
  /** On a call: true when a hedge (a second attempt racing the first) was sent. */
  HEDGED: "meshlink.hedged",
  /** On a call: true when the retry budget refused a retry. */
  BUDGET_EXHAUSTED: "meshlink.retry_budget_exhausted",
  /** The endpoint's peak-EWMA latency in ms when it was picked (0: not measured yet). */
  LATENCY: "meshlink.endpoint.latency_ms",
  /** Requests in flight to the endpoint when it was picked. */
  OUTSTANDING: "meshlink.endpoint.outstanding",
  /** On an attempt that did not answer: why it ended (`hedge_lost`, `deadline`, `aborted`, a failure reason). */
  OUTCOME: "meshlink.attempt.outcome",
} as const;

const tracer = trace.getTracer(TRACER_NAME);

/** The span of every call while no SDK is registered: records nothing, ends as a no-op. */
export const NOOP_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * The API's own no-op provider: what the global provider delegates to until
 * an SDK registers (a provider without a delegate hands out this one).
 */
const NOOP_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate();

/**
 * True when an SDK has registered a tracer provider, so that a span may
 * record. A provider the check does not recognise (another copy of the API)
 * counts as registered: the call then takes the full path, as before.
 */
export function tracerRegistered(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NOOP_TRACER_PROVIDER;
}

/**
 * The key under which every copy of `@opentelemetry/api` 1.x keeps its
 * registered globals (tracer and meter providers, propagator, context
 * manager) on `globalThis` (the API's `internal/global-utils`), created by
 * the first registration of any of them.
 */
const API_GLOBALS = Symbol.for("opentelemetry.js.api.1");

/**
 * False when no OpenTelemetry global of any kind was ever registered, so
 * that neither a tracer nor a meter provider can be: one property read
 * answers both questions a call asks, where {@link tracerRegistered} and
 * the meter provider's lookup cost about 30 ns each. True otherwise; ask
 * those then.
 */
export function otelRegistered(): boolean {
  return (globalThis as Record<symbol, unknown>)[API_GLOBALS] !== undefined;
}

/** A header list being built for a request: flat `[name, value, name, value, …]`. */
export type HeaderList = string[];

const headerSetter: TextMapSetter<HeaderList> = {
  set(carrier, key, value) {
    carrier.push(key, value);
  },
};

/**
 * The caller's active context. Until some OpenTelemetry global is
 * registered there is no context manager, so it is the root context: one
 * property read instead of the API's lookups (which touch a dozen objects
 * and functions per call, and cost more than that on a cold cache).
 */
export function activeContext(): Context {
  return otelRegistered() ? context.active() : ROOT_CONTEXT;
}

/**
 * Starts the client span of a call as a child of `parent`, with its
 * attributes at the start (samplers see them). Call it only when
 * {@link tracerRegistered}; otherwise use {@link NOOP_SPAN}.
 */
export function startClientSpan(name: string, parent: Context, attributes: Attributes): Span {
  return tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
}

/**
 * Starts the span of a logical call, whose attempts are the client spans
 * (one per request on the wire, as OpenTelemetry's HTTP conventions count
 * resends). Call it only when {@link tracerRegistered}.
 */
export function startCallSpan(name: string, parent: Context, attributes: Attributes): Span {
  return tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes }, parent);
}

/**
 * The context to propagate for a call: `parent` with the call's span in it,
 * or `parent` itself when the span carries no trace of its own (the no-op
 * span), which saves the copy a new context costs.
 */
export function contextWithSpan(parent: Context, span: Span): Context {
  if (span === NOOP_SPAN || !trace.isSpanContextValid(span.spanContext())) return parent;
  return trace.setSpan(parent, span);
}

/**
 * Writes the trace context of `ctx` into a header list with the propagator
 * the application registered. When none is registered, meshlink writes the
 * W3C `traceparent` (and `tracestate`) itself, so that a trace crosses the
 * call whenever the application has a tracer at all.
 */
export function injectHeaders(ctx: Context, headers: HeaderList): void {
  // No propagator registered and no span in the root context: nothing to write.
  if (ctx === ROOT_CONTEXT && !otelRegistered()) return;
  if (propagation.fields().length > 0) {
    propagation.inject(ctx, headers, headerSetter);
    return;
  }
  const sc = trace.getSpanContext(ctx);
  if (sc === undefined || !trace.isSpanContextValid(sc)) return;
  headers.push(
    "traceparent",
    `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`,
  );
  const state = sc.traceState?.serialize();
  if (state) headers.push("tracestate", state);
}

/** The context of a child of `parent`: `parent` with `span` in it. */
export function withSpan(parent: Context, span: Span): Context {
  return trace.setSpan(parent, span);
}

/** Ends a span as failed with the error. */
export function endSpanWithError(span: Span, err: unknown): void {
  if (span.isRecording()) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
  }
  span.end();
}

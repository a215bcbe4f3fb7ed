/**
 * Tracing through `@opentelemetry/api` only: the application brings the SDK
 * and the propagator. With no SDK registered every span is a no-op and costs
 * next to nothing.
 *
 * @module
 */

import {
  type Attributes,
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapSetter,
  trace,
} from "@opentelemetry/api";

/** The instrumentation scope name of meshlink's tracer. */
export const TRACER_NAME = "meshlink";

/** Attribute names meshlink sets on its spans, beside OpenTelemetry's semantic conventions. */
export const Attr = {
  /** The canonical service name. */
  SERVICE: "meshlink.service",
  /** The endpoint that served the call (`cluster/address:port`). */
  ENDPOINT: "meshlink.endpoint",
  /** Its cluster. */
  CLUSTER: "meshlink.cluster",
  /** Its region. */
  REGION: "meshlink.region",
  /** Its tier for this caller (`zone`, `region`, `failover:<region>`, …). */
  TIER: "meshlink.tier",
  /** How many attempts the call made. */
  ATTEMPTS: "meshlink.attempts",
} as const;

const tracer = trace.getTracer(TRACER_NAME);

/** A header list being built for a request: flat `[name, value, name, value, …]`. */
export type HeaderList = string[];

const headerSetter: TextMapSetter<HeaderList> = {
  set(carrier, key, value) {
    carrier.push(key, value);
  },
};

/**
 * Starts the client span of a call, as a child of the caller's active
 * context, and returns it with the context that carries it.
 */
export function startClientSpan(name: string, attributes: Attributes): { span: Span; ctx: Context } {
  const parent = context.active();
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
  return { span, ctx: trace.setSpan(parent, span) };
}

/**
 * Writes the trace context of `ctx` into a header list with the propagator
 * the application registered. When none is registered, meshlink writes the
 * W3C `traceparent` (and `tracestate`) itself, so that a trace crosses the
 * call whenever the application has a tracer at all.
 */
export function injectHeaders(ctx: Context, headers: HeaderList): void {
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

/** Ends a span as failed with the error. */
export function endSpanWithError(span: Span, err: unknown): void {
  if (span.isRecording()) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error)?.message });
  }
  span.end();
}

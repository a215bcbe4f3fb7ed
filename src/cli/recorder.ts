/**
 * A tracer provider that keeps spans in memory, for `meshlink call`: the
 * CLI registers it, makes one call, and reads back what the call's spans
 * say — which endpoint, each attempt, why, how long, the trace id. It uses
 * `@opentelemetry/api` alone (the SDK is the application's, not a
 * dependency of meshlink).
 *
 * @module
 */

import { randomBytes } from "node:crypto";
import {
  type Attributes,
  type AttributeValue,
  type Context,
  type Exception,
  type Link,
  type Span,
  type SpanContext,
  type SpanKind,
  type SpanOptions,
  type SpanStatus,
  SpanStatusCode,
  type TimeInput,
  TraceFlags,
  type Tracer,
  type TracerProvider,
  trace,
} from "@opentelemetry/api";

/** One span as recorded. */
export interface RecordedSpan {
  readonly name: string;
  readonly kind: SpanKind | undefined;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly attributes: Record<string, AttributeValue | undefined>;
  readonly events: { name: string; attributes: Attributes | undefined }[];
  /** `performance.now()` at start and end, ms. */
  readonly start: number;
  end: number | undefined;
  status: SpanStatus;
}

class RecordingSpan implements Span {
  readonly #context: SpanContext;
  readonly #record: RecordedSpan;

  constructor(record: RecordedSpan) {
    this.#record = record;
    this.#context = { traceId: record.traceId, spanId: record.spanId, traceFlags: TraceFlags.SAMPLED };
  }

  spanContext(): SpanContext {
    return this.#context;
  }
  setAttribute(key: string, value: AttributeValue): this {
    if (this.#record.end === undefined) this.#record.attributes[key] = value;
    return this;
  }
  setAttributes(attributes: Attributes): this {
    for (const [k, v] of Object.entries(attributes)) if (v !== undefined) this.setAttribute(k, v);
    return this;
  }
  addEvent(name: string, attributes?: Attributes | TimeInput): this {
    const attrs =
      typeof attributes === "object" && !(attributes instanceof Date) && !Array.isArray(attributes);
    this.#record.events.push({ name, attributes: attrs ? (attributes as Attributes) : undefined });
    return this;
  }
  addLink(_link: Link): this {
    return this;
  }
  addLinks(_links: Link[]): this {
    return this;
  }
  setStatus(status: SpanStatus): this {
    this.#record.status = status;
    return this;
  }
  updateName(_name: string): this {
    return this;
  }
  end(): void {
    this.#record.end ??= performance.now();
  }
  isRecording(): boolean {
    return this.#record.end === undefined;
  }
  recordException(exception: Exception): void {
    const message = typeof exception === "string" ? exception : exception.message;
    this.addEvent("exception", { "exception.message": message ?? "" });
  }
}

/** A tracer provider that records every span it starts. */
export class SpanRecorder implements TracerProvider {
  /** Every span started, in start order. */
  readonly spans: RecordedSpan[] = [];
  readonly #tracer: Tracer;

  constructor() {
    const spans = this.spans;
    this.#tracer = {
      startSpan(name: string, options?: SpanOptions, context?: Context): Span {
        const parent = context === undefined ? undefined : trace.getSpanContext(context);
        const record: RecordedSpan = {
          name,
          kind: options?.kind,
          traceId: parent?.traceId ?? randomBytes(16).toString("hex"),
          spanId: randomBytes(8).toString("hex"),
          parentSpanId: parent?.spanId,
          attributes: { ...options?.attributes },
          events: [],
          start: performance.now(),
          end: undefined,
          status: { code: SpanStatusCode.UNSET },
        };
        spans.push(record);
        return new RecordingSpan(record);
      },
      startActiveSpan(): never {
        throw new Error("not supported by the CLI's recorder");
      },
    };
  }

  getTracer(): Tracer {
    return this.#tracer;
  }

  /** Registers it as the global tracer provider (once per process). */
  register(): boolean {
    return trace.setGlobalTracerProvider(this);
  }
}

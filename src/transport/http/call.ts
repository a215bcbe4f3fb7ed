/**
 * One HTTP call through the mesh: the core that {@link MeshDispatcher} and
 * {@link meshInterceptor} share. It turns a request to a mesh name into
 * attempts to picked endpoints, keeps the `Host` header (and so the TLS
 * server name) of the original URL, reports each outcome to health, applies
 * the call policy (per-try timeout, deadline, retries under a budget,
 * hedging, bulkheads) and carries trace context.
 *
 * A call speaks the caller's handler API on both sides. For a handler of
 * undici's legacy API (`onConnect`/`onHeaders`/`onData`/`onComplete`/
 * `onError`: `undici.request`, `stream`, `pipeline`, undici's and Node's
 * `fetch`), each attempt handed to the agent is a legacy handler too, which
 * undici's `DispatcherBase` passes through unwrapped: the raw header buffers,
 * the `resume` function and the body chunks go from the connection to the
 * caller untouched, and the call reads only what the policy needs (the
 * status, and `Retry-After` on a 429 or 503). A handler of the new API
 * (`onRequestStart`/`onResponseStart`/…, as inside a `compose()` chain) gets
 * the new API end to end, with the call as its one controller across
 * attempts (as undici's `RetryHandler` does).
 *
 * Per-request controls travel as headers, which every client can set
 * (`fetch`, `undici.request`, the global dispatcher) and which meshlink
 * strips before sending: `x-meshlink-retryable: true` lets a
 * non-idempotent request be retried, `x-meshlink-hedge: true | <ms> | p95 | false`
 * turns hedging on or off for the call, and `x-meshlink-timeout-ms: <ms>`
 * sets the call's deadline (the same header carries the time left to the
 * server).
 *
 * The common path allocates the call, one attempt, its dispatch options and
 * its header list, and arms no timer of its own: the per-try timeout rides
 * the shared timer wheel (undici's `headersTimeout` stays set as a
 * backstop), as do deadlines, back-off and hedge delays.
 *
 * @module
 */

import type { Span } from "@opentelemetry/api";
import { type Dispatcher, errors } from "undici";
import type { Endpoint } from "../../discovery/endpoint.js";
import {
  type AttemptRecord,
  BulkheadFullError,
  DeadlineExceededError,
  MeshClosedError,
  NoHealthyEndpointError,
  RequestFailedError,
  ServiceNotFoundError,
} from "../../errors.js";
import { parseTimeoutHeader, TIMEOUT_HEADER } from "../../resilience/deadline.js";
import {
  type CallPolicy,
  classifyError,
  type FailureKind,
  isIdempotent,
  parseRetryAfter,
} from "../../resilience/policy.js";
import { TimerEntry, type TimerWheel } from "../../resilience/timer.js";
import type { EndpointHealth } from "../../routing/health.js";
import {
  Attr,
  activeContext,
  contextWithSpan,
  endSpanWithError,
  type HeaderList,
  injectHeaders,
  NOOP_SPAN,
  startClientSpan,
  tracerRegistered,
} from "../../telemetry/tracing.js";
import type { HttpRoutes, Route } from "./routes.js";

/** The request header that marks a non-idempotent request as safe to retry (`true`) or an idempotent one as not (`false`). */
export const RETRYABLE_HEADER = "x-meshlink-retryable";
/** The request header that turns hedging on (`true`, `p95`, or a delay in ms) or off (`false`) for one call. */
export const HEDGE_HEADER = "x-meshlink-hedge";

type Handler = Dispatcher.DispatchHandler;
type Headers = Dispatcher.DispatchOptions["headers"];
/** Response headers in the caller's API: raw `[name, value, …]` (legacy) or an object (new). */
type ResponseHeaders = Buffer[] | string[] | Record<string, string | string[] | undefined> | null;
type Socket = Parameters<NonNullable<Handler["onRequestUpgrade"]>>[3];
/** A legacy handler's start callback as undici calls it (the types omit the context). */
type LegacyHandler = { onConnect(abort: (reason?: Error) => void, context: unknown): void };

/** Where a call's attempts go. One per dispatcher or interceptor. */
export interface CallSite {
  /** The mesh. */
  readonly routes: HttpRoutes;
  /** Dispatches one attempt: the agent's `dispatch`, or the next one of a `compose()` chain. */
  readonly dispatch: (opts: Dispatcher.DispatchOptions, handler: Handler) => boolean;
}

/**
 * The dispatch options of an attempt: every field of the caller's options,
 * in one shape that starts with the fields undici's `Request` reads
 * (lib/core/request.js); `origin`, `headers` and `headersTimeout` are set
 * per attempt.
 */
class AttemptOptions {
  origin = "";
  path = "";
  method: Dispatcher.HttpMethod = "GET";
  body: unknown = undefined;
  headers: Headers = undefined;
  query: unknown = undefined;
  idempotent: unknown = undefined;
  blocking: unknown = undefined;
  upgrade: unknown = undefined;
  headersTimeout: number | undefined = undefined;
  bodyTimeout: unknown = undefined;
  reset: unknown = undefined;
  expectContinue: unknown = undefined;
  servername: unknown = undefined;
  throwOnError: unknown = undefined;
  maxRedirections: unknown = undefined;
  typeOfService: unknown = undefined;
}

/**
 * Copies the caller's dispatch options, once per call, onto one fixed
 * shape; whatever else the caller passed (its `dispatcher`, an
 * interceptor's options) comes along for the next dispatcher. Measured on
 * Node 20 with the options `undici.request` passes (the result of an object
 * spread): reading them field by field (16 named reads, most of them of
 * absent fields) cost 2 µs per call, and spreading them again with new
 * fields, as each attempt did, 1.2 µs more (V8 11 takes a slow path for a
 * spread followed by new fields); `Object.assign` onto a class instance
 * costs a tenth of either. Every later
 * read, undici's `Request` included, reads the copy at full speed, and a
 * retry or a hedge spreads it (no new fields: fast).
 */
function copyOptions(opts: Dispatcher.DispatchOptions): AttemptOptions {
  return Object.assign(new AttemptOptions(), opts) as AttemptOptions;
}

/** The most body bytes kept so that an iterable body can be sent again. */
const MAX_REPLAY_BYTES = 1 << 20;

/**
 * An iterable request body (what `fetch` sends) that remembers its chunks
 * as they go out, so that a retry can send it again once the first attempt
 * read it to the end — up to {@link MAX_REPLAY_BYTES}.
 */
class ReplayableIterable {
  started = false;
  #complete = false;
  #chunks: unknown[] | undefined = [];
  #bytes = 0;
  readonly #source: AsyncIterable<unknown> | Iterable<unknown>;
  constructor(source: AsyncIterable<unknown> | Iterable<unknown>) {
    this.#source = source;
  }
  /** True when it can be sent (again): not started, or read to the end and remembered. */
  get replayable(): boolean {
    return !this.started || (this.#complete && this.#chunks !== undefined);
  }
  async *[Symbol.asyncIterator]() {
    if (this.started) {
      if (!this.replayable) throw new Error("request body already sent");
      yield* this.#chunks!;
      return;
    }
    this.started = true;
    for await (const chunk of this.#source as AsyncIterable<unknown>) {
      if (this.#chunks !== undefined) {
        const size = (chunk as { byteLength?: number; length?: number }).byteLength ?? String(chunk).length;
        this.#bytes += size;
        if (this.#bytes <= MAX_REPLAY_BYTES) this.#chunks.push(chunk);
        else this.#chunks = undefined;
      }
      yield chunk;
    }
    this.#complete = true;
  }
}

function wrapBody(body: unknown): unknown {
  if (body == null || typeof body === "string" || ArrayBuffer.isView(body)) return body;
  if (typeof (body as { pipe?: unknown }).pipe === "function") return body; // a Node stream: readableDidRead tells
  if (
    typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function" ||
    typeof (body as Iterable<unknown>)[Symbol.iterator] === "function"
  ) {
    return new ReplayableIterable(body as AsyncIterable<unknown>);
  }
  return body;
}

function bodySent(body: unknown): boolean {
  if (body == null || typeof body === "string" || ArrayBuffer.isView(body)) return false;
  if (body instanceof ReplayableIterable) return !body.replayable;
  const stream = body as { readableDidRead?: boolean; destroyed?: boolean };
  if (typeof stream.readableDidRead === "boolean") return stream.readableDidRead || stream.destroyed === true;
  return true; // unknown body kinds (FormData, Blob streams): assume consumed
}

/** A body that two attempts can send at once (hedging): none, a string or bytes. */
function bodyReusable(body: unknown): boolean {
  return body == null || typeof body === "string" || ArrayBuffer.isView(body);
}

/** Adds headers to undici's request headers in whichever shape they came. */
function withHeaders(headers: Headers, extra: HeaderList): Headers {
  if (headers == null) return extra;
  if (Array.isArray(headers)) {
    if (headers.length === 0 || typeof headers[0] === "string") return [...(headers as string[]), ...extra];
    const pairs = (headers as unknown as [string, string][]).slice();
    for (let i = 0; i < extra.length; i += 2) pairs.push([extra[i]!, extra[i + 1]!]);
    return pairs as unknown as string[];
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    return [...toFlat(headers), ...extra];
  }
  // A flat list rather than a copy of the object: spreading a header object
  // into a new dictionary costs about 1 µs per call, a flat list a third.
  const flat: string[] = [];
  const h = headers as Record<string, string | string[] | undefined>;
  for (const k in h) {
    const v = h[k];
    // The extra headers replace the caller's of the same name (trace context).
    if (v === undefined || replaces(extra, k)) continue;
    if (typeof v === "string") flat.push(k, v);
    else for (const x of v) flat.push(k, x);
  }
  for (let i = 0; i < extra.length; i++) flat.push(extra[i]!);
  return flat;
}

/** True when `name` (any case) is one of the names in the flat `extra` list. */
function replaces(extra: HeaderList, name: string): boolean {
  const n = name.length;
  for (let i = 0; i < extra.length; i += 2) {
    const e = extra[i]!;
    if (e.length === n && name.toLowerCase() === e) return true;
  }
  return false;
}

/** Any header shape as a flat `[name, value, …]` list. */
function toFlat(headers: Headers): string[] {
  const flat: string[] = [];
  if (headers == null) return flat;
  const push = (k: string, v: unknown) => {
    if (v === undefined || v === null) return;
    if (Array.isArray(v)) for (const x of v) flat.push(k, String(x));
    else flat.push(k, String(v));
  };
  if (Array.isArray(headers)) {
    if (headers.length > 0 && typeof headers[0] !== "string") {
      for (const [k, v] of headers as unknown as [string, string][]) push(k, v);
    } else {
      for (let i = 0; i < headers.length; i += 2) push(headers[i] as string, headers[i + 1]);
    }
  } else if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const [k, v] of headers as Iterable<[string, unknown]>) push(k, v);
  } else {
    for (const k of Object.keys(headers)) push(k, (headers as Record<string, unknown>)[k]);
  }
  return flat;
}

const NO_HEADERS: string[] = [];
const H_HOST = 1;
const H_RETRYABLE = 2;
const H_HEDGE = 4;
const H_TIMEOUT = 8;
const H_CONTROL = H_RETRYABLE | H_HEDGE | H_TIMEOUT;

/** The control header values the last {@link scanHeaders} found (module scratch, so a scan allocates nothing). */
const found = { retryable: "", hedge: "", timeout: "" };

function classify(name: string, value: unknown): number {
  const n = name.length;
  const c = name.charCodeAt(0) | 0x20;
  if (c === 104 /* h */ && n === 4 && name.toLowerCase() === "host") return H_HOST;
  if (c !== 120 /* x */ || n < 15) return 0;
  const lower = name.toLowerCase();
  if (!lower.startsWith("x-meshlink-")) return 0;
  const v = Array.isArray(value) ? String(value[0]) : String(value);
  if (lower === RETRYABLE_HEADER) {
    found.retryable = v;
    return H_RETRYABLE;
  }
  if (lower === HEDGE_HEADER) {
    found.hedge = v;
    return H_HEDGE;
  }
  if (lower === TIMEOUT_HEADER) {
    found.timeout = v;
    return H_TIMEOUT;
  }
  return 0;
}

/** One pass over the request headers: which of host and the meshlink controls are present. */
function scanHeaders(headers: Headers): number {
  if (headers == null) return 0;
  let mask = 0;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && typeof headers[0] !== "string") {
      for (const [k, v] of headers as unknown as [string, string][]) mask |= classify(k, v);
    } else {
      for (let i = 0; i < headers.length; i += 2) mask |= classify(headers[i] as string, headers[i + 1]);
    }
    return mask;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const [k, v] of headers as Iterable<[string, unknown]>) mask |= classify(k, v);
    return mask;
  }
  for (const k in headers) mask |= classify(k, (headers as Record<string, unknown>)[k]);
  return mask;
}

/** The headers without meshlink's control headers, as a flat list (rare path: only when a caller set one). */
function stripControls(headers: Headers): string[] {
  const flat = toFlat(headers);
  const out: string[] = [];
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!.toLowerCase();
    if (k === RETRYABLE_HEADER || k === HEDGE_HEADER || k === TIMEOUT_HEADER) continue;
    out.push(flat[i]!, flat[i + 1]!);
  }
  return out;
}

/** One response header's first value, from raw `[name, value, …]` (Buffers or strings) or an object. */
function headerValue(headers: ResponseHeaders, name: string): string | undefined {
  if (headers == null) return undefined;
  if (Array.isArray(headers)) {
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const k = headers[i]!;
      if (k.length === name.length && k.toString("latin1").toLowerCase() === name) {
        return headers[i + 1]!.toString("latin1");
      }
    }
    return undefined;
  }
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** What undici's `assertRequestHandler` would reject a legacy handler for (`onError` is checked before), or undefined. */
function invalidLegacyHandler(handler: Handler, upgrade: unknown, method: string): string | undefined {
  if (typeof handler.onConnect !== "function") return "invalid onConnect method";
  if (upgrade || method === "CONNECT") {
    return typeof handler.onUpgrade === "function" ? undefined : "invalid onUpgrade method";
  }
  if (typeof handler.onHeaders !== "function") return "invalid onHeaders method";
  if (typeof handler.onData !== "function") return "invalid onData method";
  if (typeof handler.onComplete !== "function") return "invalid onComplete method";
  return undefined;
}

/** A call's timer on the shared wheel: its deadline, or a back-off or hedge wait. */
class CallTimer extends TimerEntry {
  constructor(
    readonly call: MeshCall,
    readonly deadline: boolean,
  ) {
    super();
  }
  onTimer(): void {
    if (this.deadline) this.call.onDeadline();
    else this.call.onWake();
  }
}

/** The error an attempt ends with when its per-try timeout passes: undici's own code, so that it reads the same. */
function perTryTimeoutError(ms: number): Error {
  const err = new Error(`no response headers within the per-try timeout of ${ms} ms`) as Error & {
    code: string;
  };
  err.name = "HeadersTimeoutError";
  err.code = "UND_ERR_HEADERS_TIMEOUT";
  return err;
}

/**
 * One attempt of a call: the handler of one dispatch to one endpoint, and
 * its own per-try timer on the shared wheel (undici's `headersTimeout` runs
 * on timers of 0.5–1 s resolution, too coarse for sub-second per-try
 * timeouts; it stays set as a backstop). The subclasses speak one handler
 * API each, the caller's.
 */
abstract class AttemptBase extends TimerEntry {
  /** Response headers (or an upgrade) arrived. */
  responded = false;
  /** The per-try timeout passed before the request started. */
  timedOut: Error | null = null;
  /** The per-try timeout in force, ms. */
  timeoutMs = 0;
  /** Reported to health (or released). */
  reported = false;
  /** Ended (error or end seen, or abandoned). */
  closed = false;
  /** Cancelled by the call (hedge loser, deadline, caller abort): its callbacks are ignored. */
  abandoned: Error | null = null;
  /** A retryable response being drained before the next attempt. */
  draining = false;
  /** The per-try headers timeout was cut short by the call's deadline. */
  deadlineBound = false;
  /** Counted among the call's attempts in flight (waiting for a response). */
  live = true;

  constructor(
    readonly call: MeshCall,
    readonly endpoint: Endpoint,
    readonly health: EndpointHealth,
    readonly startedAt: number,
    readonly wheel: TimerWheel,
  ) {
    super();
  }

  /** True once undici started the request, so that it can be aborted. */
  abstract get started(): boolean;
  /** Aborts the request in undici, once started. */
  abstract cancel(reason: Error): void;
  /** Stops reading the response (new API only: a legacy caller pauses through return values). */
  abstract pause(): void;
  /** Reads the response again. */
  abstract resume(): void;

  abandon(reason: Error): void {
    if (this.abandoned !== null || this.closed) return;
    this.abandoned = reason;
    this.wheel.cancel(this);
    this.call.release(this);
    this.cancel(reason);
  }

  /** The per-try timeout passed. */
  onTimer(): void {
    if (this.closed || this.abandoned !== null || this.responded) return;
    const err = perTryTimeoutError(this.timeoutMs);
    if (this.started) this.cancel(err);
    else this.timedOut = err;
  }

  /** The request started: undici can abort it now. */
  protected begin(context: unknown): void {
    if (this.abandoned !== null) this.cancel(this.abandoned);
    else if (this.timedOut !== null) this.cancel(this.timedOut);
    else this.call.onAttemptStart(this, context);
  }

  /** Response headers arrived; returns false to pause the connection (legacy). */
  protected response(
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage: string | undefined,
    resume: (() => void) | undefined,
  ): boolean {
    this.responded = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return true;
    return this.call.onAttemptResponse(this, statusCode, headers, statusMessage, resume);
  }

  protected upgrade(statusCode: number, headers: ResponseHeaders, socket: Socket): void {
    this.responded = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return;
    this.call.onAttemptUpgrade(this, statusCode, headers, socket);
  }

  protected end(trailers: ResponseHeaders): void {
    if (this.closed) return;
    this.closed = true;
    if (this.abandoned !== null) return;
    this.call.onAttemptEnd(this, trailers);
  }

  /** The attempt failed (also when its dispatch threw). */
  error(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return;
    this.call.onAttemptError(this, err);
  }
}

/** An attempt in undici's new handler API, for a caller of that API. */
class Attempt extends AttemptBase implements Handler {
  controller: Dispatcher.DispatchController | null = null;

  get started(): boolean {
    return this.controller !== null;
  }

  cancel(reason: Error): void {
    this.controller?.abort(reason);
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.controller = controller;
    this.begin(context);
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: ResponseHeaders,
    socket: Socket,
  ): void {
    this.upgrade(statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage?: string,
  ): void {
    this.response(statusCode, headers, statusMessage, undefined);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.abandoned !== null || this.draining) return;
    this.call.onAttemptData(this, chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: ResponseHeaders): void {
    this.end(trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.error(err);
  }
}

/**
 * An attempt in undici's legacy handler API, for a caller of that API. It
 * has no `onRequestStart`, so undici's `DispatcherBase` passes it to the
 * connection as it is: no `UnwrapHandler`, no header parsing. Back-pressure
 * is the caller's own: its `onHeaders`/`onData` return values and the
 * connection's `resume` pass straight through. `onResponseStarted` (fetch's
 * timing) and `onBodySent` are passed on; `onRequestSent`, which undici
 * would call on every request and no caller of undici's own implements, is
 * not.
 */
class LegacyAttempt extends AttemptBase {
  #abort: ((reason?: Error) => void) | null = null;

  get started(): boolean {
    return this.#abort !== null;
  }

  cancel(reason: Error): void {
    this.#abort?.(reason);
  }

  pause(): void {}

  resume(): void {}

  onConnect(abort: (reason?: Error) => void, context?: unknown): void {
    this.#abort = abort;
    this.begin(context);
  }

  onResponseStarted(): void {
    if (this.abandoned === null && !this.draining) this.call.onAttemptResponseStarted();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText?: string): boolean {
    return this.response(statusCode, rawHeaders, statusText, resume);
  }

  onData(chunk: Buffer): boolean {
    if (this.abandoned !== null || this.draining) return true;
    return this.call.onAttemptData(this, chunk);
  }

  onComplete(rawTrailers: Buffer[] | string[] | null): void {
    this.end(rawTrailers);
  }

  onError(err: Error): void {
    this.error(err);
  }

  onUpgrade(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Socket): void {
    this.upgrade(statusCode, rawHeaders, socket);
  }

  onBodySent(chunk: unknown): void {
    if (this.abandoned === null) this.call.onAttemptBodySent(chunk);
  }
}

/**
 * One call through the mesh. Towards a new-API caller it is the one stable
 * controller across attempts (undici's `RetryHandler` does the same);
 * towards a legacy caller, one `abort` function. Each attempt has its own
 * handler, so that a hedge can race the first attempt.
 */
export class MeshCall implements Dispatcher.DispatchController {
  readonly #site: CallSite;
  readonly #route: Route;
  readonly #policy: CallPolicy;
  readonly #handler: Handler;
  /** The caller speaks undici's legacy handler API, and so do the attempts. */
  readonly #legacy: boolean;
  readonly #retryable: boolean;
  /** The request body as attempts send it (an iterable wrapped for replay). */
  readonly #body: unknown;
  readonly #span: Span;
  /** The first attempt's dispatch options; a retry or a hedge copies them. */
  readonly #options: AttemptOptions;
  #optionsUsed = false;
  /** The per-try timeout, ms: the caller's `headersTimeout`, else the policy's. */
  readonly #perTryTimeout: number;
  /** The headers without the timeout header, when a deadline is in force and propagated. */
  readonly #baseHeaders: Headers;
  #abortFn: ((reason?: Error) => void) | undefined;
  /** Why undici would refuse the caller's (legacy) handler, if it would: the call then fails at once. */
  readonly #invalid: string | undefined;
  #hedge: number | "p95" | undefined;
  #deadlineMs: number;
  #deadlineAt = Number.POSITIVE_INFINITY;
  #deadlineTimer: CallTimer | undefined;
  #wakeTimer: CallTimer | undefined;
  #attempts = 0;
  #retries = 0;
  #inflight = 0;
  #current: AttemptBase | undefined;
  #other: AttemptBase | undefined;
  #winner: AttemptBase | undefined;
  /** The first endpoint tried; `#tried` lists every one once there is a second (no array on the common path). */
  #firstEndpoint: Endpoint | undefined;
  #tried: Endpoint[] | undefined;
  #badClusters: string[] | undefined;
  #records: AttemptRecord[] | undefined;
  #next: Endpoint | undefined;
  #nextDelay = 0;
  #waitingHedge = false;
  #counted = false;
  #started = false;
  #responded = false;
  #abortReason: Error | null = null;
  #paused = false;
  #finished = false;

  /** `legacy`: the handler speaks undici's legacy API (it has no `onRequestStart`). */
  constructor(
    site: CallSite,
    route: Route,
    opts: Dispatcher.DispatchOptions,
    handler: Handler,
    legacy: boolean,
  ) {
    this.#site = site;
    this.#route = route;
    const policy = site.routes.policy;
    this.#policy = policy;
    this.#handler = handler;
    this.#legacy = legacy;
    const options = copyOptions(opts);
    const method = options.method;
    const upgrade = options.upgrade;
    this.#invalid = legacy ? invalidLegacyHandler(handler, upgrade, method) : undefined;
    let retryable = upgrade == null && method !== "CONNECT" && isIdempotent(method);
    const mask = scanHeaders(options.headers);
    let source = options.headers;
    let hedge: number | "p95" | undefined = route.state.hedgeByDefault
      ? (policy.hedging.delay ?? "p95")
      : undefined;
    let deadlineMs = policy.deadline;
    if ((mask & H_CONTROL) !== 0) {
      source = stripControls(source);
      if (mask & H_RETRYABLE) retryable = upgrade == null && parseFlag(found.retryable, retryable);
      if (mask & H_HEDGE) hedge = parseHedge(found.hedge, policy.hedging.delay ?? "p95");
      if (mask & H_TIMEOUT) {
        const ms = parseTimeoutHeader(found.timeout);
        if (ms !== undefined) deadlineMs = Math.min(deadlineMs, ms);
      }
    }
    this.#deadlineMs = deadlineMs;
    this.#retryable = retryable;
    this.#hedge = retryable && bodyReusable(options.body) ? hedge : undefined;
    const body = wrapBody(options.body);
    options.body = body;
    this.#body = body;
    // With no SDK registered there is nothing to record: no attributes, no
    // span, no new context; the caller's own context (if any) still propagates.
    const parent = activeContext();
    const span = tracerRegistered()
      ? startClientSpan(method, parent, {
          "http.request.method": method,
          "server.address": route.name.host,
          "server.port": route.name.port,
          "url.path": options.path,
          [Attr.SERVICE]: route.name.key,
        })
      : NOOP_SPAN;
    this.#span = span;
    const extra: HeaderList = (mask & H_HOST) !== 0 ? NO_HEADERS.slice() : route.hostHeader.slice();
    injectHeaders(contextWithSpan(parent, span), extra);
    // undici derives the TLS server name from a Host header with a regex
    // test per request; the route knows it already.
    if ((mask & H_HOST) === 0 && options.servername === undefined) options.servername = route.servername;
    const callerTimeout = options.headersTimeout;
    if (deadlineMs !== Number.POSITIVE_INFINITY) {
      // The timeout header carries the time left, so it is added per attempt.
      this.#baseHeaders = extra.length === 0 ? source : withHeaders(source, extra);
      options.headers = this.#baseHeaders;
    } else {
      // No deadline: the server is told the per-try timeout when one was
      // chosen (the policy's or the caller's `headersTimeout`), not the default.
      if (policy.propagateDeadline && (callerTimeout !== undefined || policy.perTryTimeoutSet)) {
        extra.push(
          TIMEOUT_HEADER,
          callerTimeout === undefined ? policy.perTryTimeoutHeader : String(callerTimeout),
        );
      }
      options.headers = extra.length === 0 ? source : withHeaders(source, extra);
      this.#baseHeaders = undefined;
    }
    this.#perTryTimeout = callerTimeout ?? policy.perTryTimeout;
    options.headersTimeout = this.#perTryTimeout;
    this.#options = options;
  }

  start(): void {
    if (this.#invalid !== undefined) {
      this.#fail(new errors.InvalidArgumentError(this.#invalid));
      return;
    }
    const watch = this.#route.balancer.watch;
    if (watch.isSettled || this.#site.routes.closed) {
      this.#first();
      return;
    }
    watch.settled().then(
      () => this.#first(),
      (err: unknown) => this.#fail(err as Error),
    );
  }

  #first(): void {
    if (this.#abortReason !== null) {
      this.#fail(this.#abortReason);
      return;
    }
    if (this.#site.routes.closed) {
      this.#fail(new MeshClosedError());
      return;
    }
    const state = this.#route.state;
    if (state.active >= this.#policy.maxRequestsPerService) {
      this.#fail(new BulkheadFullError(this.#route.name.key, "service", this.#policy.maxRequestsPerService));
      return;
    }
    state.active++;
    this.#counted = true;
    state.budget?.deposit();
    const now = this.#policy.now();
    if (this.#deadlineMs !== Number.POSITIVE_INFINITY) {
      this.#deadlineAt = now + this.#deadlineMs;
      this.#deadlineTimer = new CallTimer(this, true);
      this.#route.timers.schedule(this.#deadlineTimer, this.#deadlineAt);
    }
    const endpoint = this.#route.balancer.pick();
    if (endpoint === undefined) {
      this.#fail(this.#noEndpoint(undefined));
      return;
    }
    this.#launch(endpoint, now);
    if (this.#hedge !== undefined) this.#armHedge(now);
  }

  #noEndpoint(cause: unknown): Error {
    const balancer = this.#route.balancer;
    if (balancer.saturated) {
      return new BulkheadFullError(this.#route.name.key, "endpoint", this.#policy.maxRequestsPerEndpoint);
    }
    const snapshot = balancer.watch.snapshot;
    if (snapshot.endpoints.length === 0 && (snapshot.state === "not-found" || snapshot.state === "pending")) {
      return new ServiceNotFoundError(
        this.#route.name.key,
        snapshot.sources.map((s) => s.backend),
      );
    }
    return new NoHealthyEndpointError(this.#route.name.key, snapshot.endpoints.length, this.#records ?? [], {
      cause,
    });
  }

  #armHedge(now: number): void {
    const state = this.#route.state;
    const budget = state.hedgeBudget;
    budget.deposit();
    let delay = this.#hedge;
    if (delay === "p95") delay = state.latency.percentile(0.95);
    if (delay === undefined) return;
    this.#waitingHedge = true;
    this.#wakeTimer ??= new CallTimer(this, false);
    this.#route.timers.schedule(this.#wakeTimer, now + Math.max(1, delay));
  }

  #launch(endpoint: Endpoint, now: number): void {
    const route = this.#route;
    const balancer = route.balancer;
    const health = balancer.healthOf(endpoint);
    const attempt = this.#legacy
      ? new LegacyAttempt(this, endpoint, health, now, route.timers)
      : new Attempt(this, endpoint, health, now, route.timers);
    this.#attempts++;
    this.#inflight++;
    if (this.#current === undefined || this.#current.closed || this.#current.abandoned !== null) {
      this.#current = attempt;
    } else {
      this.#other = attempt;
    }
    balancer.health.start(health);
    if (this.#firstEndpoint === undefined) this.#firstEndpoint = endpoint;
    else (this.#tried ??= [this.#firstEndpoint]).push(endpoint);
    // The first attempt takes the options built with the call; another one
    // (a retry, a hedge) a copy, as the first may still be queued in undici.
    let options = this.#options;
    if (this.#optionsUsed) options = { ...options };
    else this.#optionsUsed = true;
    options.origin = route.originOf(endpoint);
    if (this.#deadlineAt !== Number.POSITIVE_INFINITY) {
      const left = Math.max(1, Math.floor(this.#deadlineAt - now));
      if (left < this.#perTryTimeout) {
        options.headersTimeout = left;
        attempt.deadlineBound = true;
      } else {
        options.headersTimeout = this.#perTryTimeout;
      }
      options.headers = this.#policy.propagateDeadline
        ? withHeaders(this.#baseHeaders, [TIMEOUT_HEADER, String(options.headersTimeout)])
        : this.#baseHeaders;
    }
    const timeout = options.headersTimeout!;
    attempt.timeoutMs = timeout;
    route.timers.schedule(attempt, now + timeout);
    try {
      this.#site.dispatch(options as unknown as Dispatcher.DispatchOptions, attempt as Handler);
    } catch (err) {
      attempt.error(err as Error);
    }
  }

  /** Every endpoint this call tried (allocates on the retry and hedge paths only). */
  #triedList(): Endpoint[] {
    return (this.#tried ??= this.#firstEndpoint === undefined ? [] : [this.#firstEndpoint]);
  }

  /** Reports an attempt's outcome to health, once. */
  #report(a: AttemptBase, kind: FailureKind | "status" | "success", reason: string, latency: number): void {
    if (a.reported) return;
    a.reported = true;
    const tracker = this.#route.balancer.health;
    if (kind === "success") tracker.success(a.health, latency);
    else if (kind === "other") tracker.release(a.health);
    else tracker.failure(a.health, reason, latency);
    if (kind !== "success" && kind !== "other") {
      (this.#records ??= []).push({ endpoint: a.endpoint.id, reason });
    }
  }

  /** An abandoned attempt says nothing about its endpoint. */
  release(a: AttemptBase): void {
    this.#drop(a);
    this.#report(a, "other", "", 0);
  }

  /** The attempt no longer waits for a response. */
  #drop(a: AttemptBase): void {
    if (a.live) {
      a.live = false;
      this.#inflight--;
    }
  }

  /** The next endpoint for a retry, or undefined when the policy, the budget or the router says no. */
  #retryTarget(a: AttemptBase, kind: FailureKind | "status", now: number): Endpoint | undefined {
    if (this.#abortReason !== null || this.#site.routes.closed || this.#finished) return undefined;
    if (!this.#policy.mayRetry(kind, this.#retryable, this.#attempts)) return undefined;
    if (bodySent(this.#body)) return undefined;
    if (now >= this.#deadlineAt) return undefined;
    // A connection that failed, broke or went silent points at the network or
    // the whole cluster as much as at the host: retry in another cluster if possible.
    if (kind === "connect" || kind === "reset" || kind === "timeout") {
      const bad = (this.#badClusters ??= []);
      if (!bad.includes(a.endpoint.cluster)) bad.push(a.endpoint.cluster);
    }
    const next = this.#route.balancer.pick({
      exclude: this.#triedList().map((e) => e.id),
      avoidClusters: this.#badClusters,
    });
    if (next === undefined) return undefined;
    const budget = this.#route.state.budget;
    if (budget !== undefined && !budget.tryWithdraw()) {
      if (this.#span.isRecording()) this.#span.addEvent("meshlink.retry_budget_exhausted");
      return undefined;
    }
    return next;
  }

  /** Sends the retry now, or after `delay` ms on the shared wheel. */
  #retry(next: Endpoint, delay: number, now: number): void {
    this.#retries++;
    if (delay <= 0) {
      this.#launch(next, now);
      return;
    }
    this.#next = next;
    this.#waitingHedge = false;
    this.#wakeTimer ??= new CallTimer(this, false);
    this.#route.timers.schedule(this.#wakeTimer, now + delay);
  }

  /** The wheel woke the call: a back-off ended, or the hedge delay passed. */
  onWake(): void {
    if (this.#finished) return;
    const now = this.#policy.now();
    const next = this.#next;
    if (next !== undefined) {
      this.#next = undefined;
      if (this.#abortReason !== null) {
        this.#fail(this.#abortReason);
        return;
      }
      this.#launch(next, now);
      return;
    }
    if (!this.#waitingHedge) return;
    this.#waitingHedge = false;
    // Hedge only while the first attempt alone is still waiting for its response.
    if (this.#winner !== undefined || this.#inflight !== 1 || this.#abortReason !== null) return;
    const budget = this.#route.state.hedgeBudget;
    const target = this.#route.balancer.pick({ exclude: this.#triedList().map((e) => e.id), hard: true });
    if (target === undefined || !budget.tryWithdraw()) return;
    if (this.#span.isRecording()) this.#span.addEvent("meshlink.hedge", { [Attr.ENDPOINT]: target.id });
    this.#launch(target, now);
  }

  /** The deadline passed: cancel every attempt and fail the call. */
  onDeadline(): void {
    if (this.#finished) return;
    const err = new DeadlineExceededError(this.#route.name.key, this.#deadlineMs, this.#records ?? []);
    this.#current?.abandon(err);
    this.#other?.abandon(err);
    this.#fail(err);
  }

  #fail(err: Error): void {
    if (!this.#finish()) return;
    endSpanWithError(this.#span, err);
    if (this.#legacy) this.#handler.onError!(err);
    else this.#handler.onResponseError?.(this, err);
  }

  /** Ends the call's bookkeeping once; false when it had already ended. */
  #finish(): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    if (this.#counted) {
      this.#counted = false;
      this.#route.state.active--;
    }
    const timers = this.#route.timers;
    if (this.#deadlineTimer !== undefined) timers.cancel(this.#deadlineTimer);
    if (this.#wakeTimer !== undefined) timers.cancel(this.#wakeTimer);
    return true;
  }

  #annotate(a: AttemptBase): void {
    const span = this.#span;
    if (!span.isRecording()) return;
    const e = a.endpoint;
    span.setAttributes({
      [Attr.ENDPOINT]: e.id,
      [Attr.CLUSTER]: e.cluster,
      [Attr.REGION]: e.locality.region,
      [Attr.TIER]: this.#route.balancer.tierOf(e).label,
      [Attr.ATTEMPTS]: this.#attempts,
      "network.peer.address": e.address,
      "network.peer.port": e.port,
    });
  }

  /** The attempt that won: the others are cancelled. */
  #win(a: AttemptBase): void {
    this.#winner = a;
    this.#responded = true;
    this.#waitingHedge = false;
    if (this.#wakeTimer !== undefined) this.#route.timers.cancel(this.#wakeTimer);
    const loser = a === this.#current ? this.#other : this.#current;
    if (loser !== undefined && !loser.closed) loser.abandon(new HedgeLostError());
  }

  /** The other attempt still in flight, if any (a hedge race). */
  #racing(a: AttemptBase): boolean {
    const other = a === this.#current ? this.#other : this.#current;
    return other !== undefined && !other.closed && other.abandoned === null;
  }

  /** The abort function a legacy caller gets, one per call (see {@link abortFunctionOf}). */
  #abortFunction(): (reason?: Error) => void {
    this.#abortFn ??= abortFunctionOf(this);
    return this.#abortFn;
  }

  // Attempt callbacks.

  /** @internal */
  onAttemptStart(a: AttemptBase, context: unknown): void {
    if (this.#abortReason !== null) {
      a.cancel(this.#abortReason);
      return;
    }
    if (this.#paused) a.pause();
    if (this.#started) return;
    this.#started = true;
    if (this.#legacy) (this.#handler as LegacyHandler).onConnect(this.#abortFunction(), context);
    else this.#handler.onRequestStart?.(this, context);
  }

  /** @internal */
  onAttemptResponseStarted(): void {
    if (!this.#finished) this.#handler.onResponseStarted?.();
  }

  /** @internal */
  onAttemptBodySent(chunk: unknown): void {
    (this.#handler as { onBodySent?: (chunk: unknown) => void }).onBodySent?.(chunk);
  }

  /** @internal */
  onAttemptUpgrade(a: AttemptBase, statusCode: number, headers: ResponseHeaders, socket: Socket): void {
    this.#drop(a);
    this.#report(a, "success", "", this.#policy.now() - a.startedAt);
    this.#win(a);
    this.#annotate(a);
    this.#finish();
    this.#span.end();
    if (this.#legacy) this.#handler.onUpgrade!(statusCode, headers as Buffer[], socket);
    else this.#handler.onRequestUpgrade?.(this, statusCode, headers as Record<string, string>, socket);
  }

  /** @internal Response headers of an attempt; the return value is a legacy caller's (false: pause). */
  onAttemptResponse(
    a: AttemptBase,
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage: string | undefined,
    resume: (() => void) | undefined,
  ): boolean {
    if (this.#finished) return true;
    // An informational response (103 Early Hints): the final one follows on the same attempt.
    if (statusCode < 200) return this.#emitResponse(statusCode, headers, statusMessage, resume);
    const policy = this.#policy;
    const now = policy.now();
    const latency = now - a.startedAt;
    if (policy.isRetryableStatus(statusCode)) {
      const failure = policy.isFailureStatus(statusCode);
      // A 429 says the endpoint is alive: it counts as a success for health.
      this.#report(a, failure ? "status" : "success", `status ${statusCode}`, latency);
      if (this.#racing(a)) {
        // The other attempt of a hedge may still answer well.
        a.abandon(new HedgeLostError());
        return true;
      }
      const retryAfter =
        statusCode === 429 || statusCode === 503
          ? parseRetryAfter(headerValue(headers, "retry-after"))
          : undefined;
      if (
        retryAfter === undefined ||
        (retryAfter <= policy.maxRetryAfter && now + retryAfter < this.#deadlineAt)
      ) {
        const next = this.#retryTarget(a, "status", now);
        if (next !== undefined) {
          // Drain this response and send the next attempt when it ends: the connection stays reusable.
          a.draining = true;
          this.#next = next;
          this.#nextDelay = Math.max(retryAfter ?? 0, policy.backoff(this.#retries + 1));
          return true;
        }
      }
    } else {
      this.#report(a, "success", "", latency);
      this.#route.state.latencyIfAny?.record(latency);
    }
    this.#drop(a);
    this.#win(a);
    this.#annotate(a);
    if (this.#span.isRecording()) this.#span.setAttribute("http.response.status_code", statusCode);
    return this.#emitResponse(statusCode, headers, statusMessage, resume);
  }

  #emitResponse(
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage: string | undefined,
    resume: (() => void) | undefined,
  ): boolean {
    if (this.#legacy) {
      return this.#handler.onHeaders!(statusCode, headers as Buffer[], resume!, statusMessage ?? "");
    }
    this.#handler.onResponseStart?.(this, statusCode, headers as Record<string, string>, statusMessage);
    return true;
  }

  /** @internal A body chunk of an attempt; the return value is a legacy caller's (false: pause). */
  onAttemptData(a: AttemptBase, chunk: Buffer): boolean {
    if (a !== this.#winner || this.#finished) return true;
    if (this.#legacy) return this.#handler.onData!(chunk);
    this.#handler.onResponseData?.(this, chunk);
    return true;
  }

  /** @internal */
  onAttemptEnd(a: AttemptBase, trailers: ResponseHeaders): void {
    if (a.draining) {
      a.draining = false;
      this.#drop(a);
      this.#afterDrain();
      return;
    }
    if (a !== this.#winner || !this.#finish()) return;
    this.#span.end();
    if (this.#legacy) this.#handler.onComplete!(trailers as string[] | null);
    else this.#handler.onResponseEnd?.(this, trailers as Record<string, string>);
  }

  #afterDrain(): void {
    const next = this.#next;
    if (next === undefined || this.#finished) return;
    this.#next = undefined;
    if (this.#abortReason !== null) {
      this.#fail(this.#abortReason);
      return;
    }
    this.#retry(next, this.#nextDelay, this.#policy.now());
  }

  /** @internal */
  onAttemptError(a: AttemptBase, err: Error): void {
    if (a.draining) {
      // The failure response broke while draining: go on with the retry all the same.
      a.draining = false;
      this.#drop(a);
      this.#afterDrain();
      return;
    }
    if (this.#finished) {
      this.#report(a, "other", "", 0);
      return;
    }
    if (a === this.#winner) {
      // The response had started: it cannot be retried.
      this.#annotate(a);
      this.#fail(err);
      return;
    }
    this.#drop(a);
    const now = this.#policy.now();
    const deadlineHit = now >= this.#deadlineAt || (a.deadlineBound && classifyError(err) === "timeout");
    const kind: FailureKind = this.#abortReason !== null || deadlineHit ? "other" : classifyError(err);
    this.#report(a, kind, (err as { code?: string }).code ?? err.name, now - a.startedAt);
    if (deadlineHit) {
      this.onDeadline();
      return;
    }
    if (this.#racing(a)) return;
    if (this.#abortReason !== null) {
      this.#fail(this.#abortReason);
      return;
    }
    if (!this.#responded && kind !== "other") {
      const retry = this.#retryTarget(a, kind, now);
      if (retry !== undefined) {
        if (this.#span.isRecording()) {
          this.#span.addEvent("meshlink.retry", { [Attr.ENDPOINT]: a.endpoint.id, "error.type": kind });
        }
        // Nothing was sent after a connect failure: retry at once (Finagle's requeue); else back off.
        this.#retry(retry, kind === "connect" ? 0 : this.#policy.backoff(this.#retries + 1), now);
        return;
      }
      this.#annotate(a);
      this.#fail(new RequestFailedError(this.#route.name.key, this.#records ?? [], { cause: err }));
      return;
    }
    this.#annotate(a);
    this.#fail(err);
  }

  // Controller side: what a new-API caller's handler sees, stable across attempts.

  abort(reason: Error): void {
    if (this.#abortReason !== null) return;
    this.#abortReason = reason ?? new errors.RequestAbortedError();
    const live = this.#winner ?? this.#current;
    let any = false;
    const current = this.#current;
    if (current !== undefined && !current.closed && current.abandoned === null && current.started) {
      any = true;
      current.cancel(this.#abortReason);
    }
    const other = this.#other;
    if (other !== undefined && !other.closed && other.abandoned === null && other.started) {
      any = true;
      other.cancel(this.#abortReason);
    }
    // Waiting on a back-off, or between attempts: nothing will call back, so fail now.
    if (!any && (live === undefined || live.closed || this.#next !== undefined)) {
      this.#next = undefined;
      this.#fail(this.#abortReason);
    }
  }

  pause(): void {
    this.#paused = true;
    (this.#winner ?? this.#current)?.pause();
  }

  resume(): void {
    this.#paused = false;
    (this.#winner ?? this.#current)?.resume();
  }

  get aborted(): boolean {
    return this.#abortReason !== null;
  }

  get paused(): boolean {
    return this.#paused;
  }

  get reason(): Error | null {
    return this.#abortReason;
  }

  /** The winning attempt's raw response headers, as undici's own controllers expose them. */
  get rawHeaders(): Dispatcher.DispatchController["rawHeaders"] {
    return (this.#winner as Attempt | undefined)?.controller?.rawHeaders ?? null;
  }

  /** The winning attempt's raw trailers. */
  get rawTrailers(): Dispatcher.DispatchController["rawTrailers"] {
    return (this.#winner as Attempt | undefined)?.controller?.rawTrailers ?? null;
  }
}

/**
 * What a legacy caller's `abort(reason?)` is: the whole call's abort. Made
 * here, outside the class, on purpose: measured on Node 20, the same arrow
 * function written inside a `MeshCall` method (capturing `this`) made V8
 * keep whole calls alive through young-generation GCs — three times the
 * scavenge time and 8 µs more CPU per request. A bound method costs a name
 * string per call. Reaching the call through a small object that the call
 * cuts when it ends (so that a caller's handler outliving the call keeps
 * less of it: V8 allocates Node 20 fetch's handler in the old generation)
 * saved 3 % of scavenges on `fetch` but cost 12–45 µs per request at
 * concurrency 1 in the benchmark, for reasons not found; it is not done.
 */
function abortFunctionOf(call: MeshCall): (reason?: Error) => void {
  return (reason?: Error) => call.abort(reason ?? new errors.RequestAbortedError());
}

/** The reason a hedge race's loser is cancelled with. */
class HedgeLostError extends Error {
  constructor() {
    super("another attempt of this call answered first");
    this.name = "HedgeLostError";
  }
}

function parseFlag(value: string, fallback: boolean): boolean {
  const v = value.trim().toLowerCase();
  if (v === "true" || v === "1" || v === "yes") return true;
  if (v === "false" || v === "0" || v === "no") return false;
  return fallback;
}

function parseHedge(value: string, fallback: number | "p95"): number | "p95" | undefined {
  const v = value.trim().toLowerCase();
  if (v === "false" || v === "0" || v === "no" || v === "off") return undefined;
  if (v === "p95") return "p95";
  if (/^\d+$/.test(v)) return Number(v);
  return fallback;
}

/**
 * The HTTP transport: an undici interceptor that turns a request to a mesh
 * name into a request to a picked endpoint, keeps the `Host` header (and so
 * the TLS server name) of the original URL, reports the outcome to health,
 * applies the call policy (per-try timeout, deadline, retries under a
 * budget, hedging, bulkheads) and carries trace context. Any other host
 * passes through untouched.
 *
 * Like undici's own `interceptors.dns()`, it rewrites the origin; unlike it,
 * the origin comes from the router, so every endpoint gets its own
 * keep-alive pool in the agent underneath.
 *
 * Per-request controls travel as headers, which every client can set
 * (`fetch`, `undici.request`, the global dispatcher) and which meshlink
 * strips before sending: `x-meshlink-retryable: true` lets a
 * non-idempotent request be retried, `x-meshlink-hedge: true | <ms> | p95 | false`
 * turns hedging on or off for the call, and `x-meshlink-timeout-ms: <ms>`
 * sets the call's deadline (the same header carries the time left to the
 * server).
 *
 * The hot path allocates one object per attempt and arms no timer of its
 * own: the per-try timeout is undici's `headersTimeout`, and deadlines,
 * back-off and hedge delays share one timer wheel.
 *
 * @module
 */

import type { Span } from "@opentelemetry/api";
import type { Dispatcher } from "undici";
import type { Endpoint } from "../../discovery/endpoint.js";
import { hostPort } from "../../discovery/endpoint.js";
import { type ServiceName, tryParseServiceName } from "../../discovery/names.js";
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
import type { EndpointHealth } from "../../resilience/health.js";
import {
  type CallPolicy,
  classifyError,
  type FailureKind,
  isIdempotent,
  parseRetryAfter,
  type ServiceCallState,
} from "../../resilience/policy.js";
import { sharedTimerWheel, TimerEntry, type TimerWheel } from "../../resilience/timer.js";
import type { Balancer } from "../../routing/router.js";
import {
  Attr,
  endSpanWithError,
  type HeaderList,
  injectHeaders,
  startClientSpan,
} from "../../telemetry/tracing.js";

/** The request header that marks a non-idempotent request as safe to retry (`true`) or an idempotent one as not (`false`). */
export const RETRYABLE_HEADER = "x-meshlink-retryable";
/** The request header that turns hedging on (`true`, `p95`, or a delay in ms) or off (`false`) for one call. */
export const HEDGE_HEADER = "x-meshlink-hedge";

/** What the HTTP transport needs from the mesh. The façade implements it. */
export interface HttpRoutes {
  /**
   * The balancer for a service, or `undefined` when the name is not a mesh
   * name here. `explicit` is true for `mesh.fetch`, where a short `svc.ns`
   * host is always a mesh name; through the global dispatcher it is one only
   * when a backend claims it.
   */
  balancerFor(name: ServiceName, explicit: boolean): Balancer | undefined;
  /** The call policy. */
  readonly policy: CallPolicy;
  /** True once the mesh is closed. */
  readonly closed: boolean;
  /** The timer wheel for deadlines, back-off and hedging; default the process-wide one. */
  readonly timers?: TimerWheel | undefined;
}

/** Options of {@link meshInterceptor}. */
export interface MeshInterceptorOptions {
  /** Treat a short `svc.ns` host as a mesh name even when no backend claims it (`mesh.fetch`). */
  explicit?: boolean;
}

interface Route {
  readonly name: ServiceName;
  readonly balancer: Balancer;
  readonly state: ServiceCallState;
  readonly timers: TimerWheel;
  /** The Host header: the original URL's host (and port). */
  readonly host: string;
  readonly protocol: string;
}

const MAX_CACHED_ORIGINS = 1024;

/**
 * Creates the interceptor, for `agent.compose(meshInterceptor(routes))`.
 * `mesh.dispatcher` is such a composed agent; use this directly to put the
 * mesh into a dispatcher chain of your own.
 */
export function meshInterceptor(
  routes: HttpRoutes,
  options: MeshInterceptorOptions = {},
): Dispatcher.DispatcherComposeInterceptor {
  const explicit = options.explicit ?? false;
  const cache = new Map<string, Route | null>();

  const lookup = (origin: string): Route | null => {
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return null;
    }
    const name = tryParseServiceName(
      url.hostname,
      url.port === "" ? defaultPort(url.protocol) : Number(url.port),
    );
    if (name === undefined) return null;
    const balancer = routes.balancerFor(name, explicit);
    if (balancer === undefined) return null;
    return {
      name,
      balancer,
      state: routes.policy.service(name.key, name.id),
      timers: routes.timers ?? sharedTimerWheel(),
      host: url.host,
      protocol: url.protocol,
    };
  };

  return (dispatch) =>
    function meshDispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      const o = opts.origin;
      const origin = typeof o === "string" ? o : o === undefined ? "" : o.origin;
      let route = cache.get(origin);
      if (route === undefined) {
        route = lookup(origin);
        // A short name that no backend claims yet may be claimed later: do not cache the miss.
        if (route !== null || explicit || !isShortName(origin)) {
          if (cache.size >= MAX_CACHED_ORIGINS) cache.clear();
          cache.set(origin, route);
        }
      }
      if (route === null) return dispatch(opts, handler);
      new MeshCall(route, routes, opts, handler, dispatch).start();
      return true;
    };
}

function isShortName(origin: string): boolean {
  const host = origin.replace(/^[a-z]+:\/\//, "").replace(/:\d+$/, "");
  return host.split(".").length === 2;
}

function defaultPort(protocol: string): number {
  return protocol === "https:" ? 443 : 80;
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

type Headers = Dispatcher.DispatchOptions["headers"];

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

function headerValue(
  headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onResponseStart"]>>[2],
  name: string,
): string | undefined {
  const v = headers?.[name];
  return Array.isArray(v) ? v[0] : v;
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
 * timeouts; it stays set as a backstop).
 */
class Attempt extends TimerEntry implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | null = null;
  /** Response headers (or an upgrade) arrived. */
  responded = false;
  /** The per-try timeout passed before the controller was known. */
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

  abandon(reason: Error): void {
    if (this.abandoned !== null || this.closed) return;
    this.abandoned = reason;
    this.wheel.cancel(this);
    this.call.release(this);
    this.controller?.abort(reason);
  }

  /** The per-try timeout passed. */
  onTimer(): void {
    if (this.closed || this.abandoned !== null || this.responded) return;
    const err = perTryTimeoutError(this.timeoutMs);
    if (this.controller === null) this.timedOut = err;
    else this.controller.abort(err);
  }

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.controller = controller;
    if (this.abandoned !== null) {
      controller.abort(this.abandoned);
      return;
    }
    if (this.timedOut !== null) {
      controller.abort(this.timedOut);
      return;
    }
    this.call.onAttemptStart(this, controller, context);
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[2],
    socket: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[3],
  ): void {
    this.responded = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return;
    this.call.onAttemptUpgrade(this, statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onResponseStart"]>>[2],
    statusMessage?: string,
  ): void {
    this.responded = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return;
    this.call.onAttemptResponse(this, statusCode, headers, statusMessage);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.abandoned !== null || this.draining) return;
    this.call.onAttemptData(this, chunk);
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.closed) return;
    this.closed = true;
    if (this.abandoned !== null) return;
    this.call.onAttemptEnd(this, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.wheel.cancel(this);
    if (this.abandoned !== null) return;
    this.call.onAttemptError(this, err);
  }
}

/**
 * One call through the mesh. Towards the caller's handler it is the one
 * stable controller across attempts (undici's RetryHandler does the same);
 * each attempt has its own {@link Attempt} handler, so that a hedge can race
 * the first attempt.
 */
class MeshCall implements Dispatcher.DispatchController {
  readonly #route: Route;
  readonly #routes: HttpRoutes;
  readonly #policy: CallPolicy;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #handler: Dispatcher.DispatchHandler;
  readonly #dispatch: Dispatcher.Dispatch;
  readonly #retryable: boolean;
  readonly #span: Span;
  /** Headers for every attempt without the timeout header; made only when a deadline is in force. */
  readonly #baseHeaders: Headers | undefined;
  /** Headers for every attempt with the per-try timeout header, when no deadline is in force. */
  readonly #headers: Headers;
  #hedge: number | "p95" | undefined;
  #deadlineMs = Number.POSITIVE_INFINITY;
  #deadlineAt = Number.POSITIVE_INFINITY;
  #deadlineTimer: CallTimer | undefined;
  #wakeTimer: CallTimer | undefined;
  #attempts = 0;
  #retries = 0;
  #inflight = 0;
  #current: Attempt | undefined;
  #other: Attempt | undefined;
  #winner: Attempt | undefined;
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

  constructor(
    route: Route,
    routes: HttpRoutes,
    opts: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
    dispatch: Dispatcher.Dispatch,
  ) {
    this.#route = route;
    this.#routes = routes;
    const policy = routes.policy;
    this.#policy = policy;
    this.#handler = handler;
    this.#dispatch = dispatch;
    const method = opts.method;
    let retryable = opts.upgrade == null && method !== "CONNECT" && isIdempotent(method);
    const mask = scanHeaders(opts.headers);
    let source = opts.headers;
    let hedge: number | "p95" | undefined = route.state.hedgeByDefault
      ? (policy.hedging.delay ?? "p95")
      : undefined;
    this.#deadlineMs = policy.deadline;
    if ((mask & H_CONTROL) !== 0) {
      source = stripControls(opts.headers);
      if (mask & H_RETRYABLE) retryable = opts.upgrade == null && parseFlag(found.retryable, retryable);
      if (mask & H_HEDGE) hedge = parseHedge(found.hedge, policy.hedging.delay ?? "p95");
      if (mask & H_TIMEOUT) {
        const ms = parseTimeoutHeader(found.timeout);
        if (ms !== undefined) this.#deadlineMs = Math.min(this.#deadlineMs, ms);
      }
    }
    this.#retryable = retryable;
    this.#hedge = retryable && bodyReusable(opts.body) ? hedge : undefined;
    const body = wrapBody(opts.body);
    this.#opts = body === opts.body ? opts : { ...opts, body: body as Dispatcher.DispatchOptions["body"] };
    const { span, ctx } = startClientSpan(method, {
      "http.request.method": method,
      "server.address": route.name.host,
      "server.port": route.name.port,
      "url.path": opts.path,
      [Attr.SERVICE]: route.name.key,
    });
    this.#span = span;
    const extra: HeaderList = (mask & H_HOST) !== 0 ? [] : ["host", route.host];
    injectHeaders(ctx, extra);
    this.#baseHeaders =
      this.#deadlineMs === Number.POSITIVE_INFINITY
        ? undefined
        : extra.length === 0
          ? source
          : withHeaders(source, extra);
    if (policy.propagateDeadline) extra.push(TIMEOUT_HEADER, policy.perTryTimeoutHeader);
    this.#headers = extra.length === 0 ? source : withHeaders(source, extra);
  }

  start(): void {
    const watch = this.#route.balancer.watch;
    if (watch.isSettled || this.#routes.closed) {
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
    if (this.#routes.closed) {
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
    const balancer = this.#route.balancer;
    const health = balancer.healthOf(endpoint);
    const attempt = new Attempt(this, endpoint, health, now, this.#route.timers);
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
    const opts = this.#opts;
    let headers = this.#headers;
    let headersTimeout = opts.headersTimeout ?? this.#policy.perTryTimeout;
    if (this.#deadlineAt !== Number.POSITIVE_INFINITY) {
      const left = Math.max(1, Math.floor(this.#deadlineAt - now));
      if (left < headersTimeout) {
        headersTimeout = left;
        attempt.deadlineBound = true;
      }
      headers = this.#policy.propagateDeadline
        ? withHeaders(this.#baseHeaders, [TIMEOUT_HEADER, String(headersTimeout)])
        : this.#baseHeaders;
    }
    attempt.timeoutMs = headersTimeout;
    this.#route.timers.schedule(attempt, now + headersTimeout);
    try {
      this.#dispatch(
        {
          ...opts,
          origin: `${this.#route.protocol}//${hostPort(endpoint.address, endpoint.port)}`,
          headers,
          headersTimeout,
        },
        attempt,
      );
    } catch (err) {
      attempt.onResponseError(null, err as Error);
    }
  }

  /** Every endpoint this call tried (allocates on the retry and hedge paths only). */
  #triedList(): Endpoint[] {
    return (this.#tried ??= this.#firstEndpoint === undefined ? [] : [this.#firstEndpoint]);
  }

  /** Reports an attempt's outcome to health, once. */
  #report(a: Attempt, kind: FailureKind | "status" | "success", reason: string, latency: number): void {
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
  release(a: Attempt): void {
    this.#drop(a);
    this.#report(a, "other", "", 0);
  }

  /** The attempt no longer waits for a response. */
  #drop(a: Attempt): void {
    if (a.live) {
      a.live = false;
      this.#inflight--;
    }
  }

  /** The next endpoint for a retry, or undefined when the policy, the budget or the router says no. */
  #retryTarget(a: Attempt, kind: FailureKind | "status"): Endpoint | undefined {
    if (this.#abortReason !== null || this.#routes.closed || this.#finished) return undefined;
    if (!this.#policy.mayRetry(kind, this.#retryable, this.#attempts)) return undefined;
    if (bodySent(this.#opts.body)) return undefined;
    if (this.#policy.now() >= this.#deadlineAt) return undefined;
    // A connection that failed, broke or went silent points at the network or
    // the whole cluster as much as at the host: retry in another cluster if possible.
    if (kind === "connect" || kind === "reset" || kind === "timeout") {
      const bad = (this.#badClusters ??= []);
      if (!bad.includes(a.endpoint.cluster)) bad.push(a.endpoint.cluster);
    }
    const next = this.#route.balancer.pick({ exclude: this.#triedList(), avoidClusters: this.#badClusters });
    if (next === undefined) return undefined;
    const budget = this.#route.state.budget;
    if (budget !== undefined && !budget.tryWithdraw()) {
      if (this.#span.isRecording()) this.#span.addEvent("meshlink.retry_budget_exhausted");
      return undefined;
    }
    return next;
  }

  /** Sends the retry now, or after `delay` ms on the shared wheel. */
  #retry(next: Endpoint, delay: number): void {
    this.#retries++;
    const now = this.#policy.now();
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
    const target = this.#route.balancer.pick({ exclude: this.#triedList() });
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
    this.#handler.onResponseError?.(this, err);
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

  #annotate(a: Attempt): void {
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
  #win(a: Attempt): void {
    this.#winner = a;
    this.#responded = true;
    this.#waitingHedge = false;
    if (this.#wakeTimer !== undefined) this.#route.timers.cancel(this.#wakeTimer);
    const loser = a === this.#current ? this.#other : this.#current;
    if (loser !== undefined && !loser.closed) loser.abandon(new HedgeLostError());
  }

  /** The other attempt still in flight, if any (a hedge race). */
  #racing(a: Attempt): boolean {
    const other = a === this.#current ? this.#other : this.#current;
    return other !== undefined && !other.closed && other.abandoned === null;
  }

  // Attempt callbacks.

  onAttemptStart(a: Attempt, controller: Dispatcher.DispatchController, context: unknown): void {
    if (this.#abortReason !== null) {
      controller.abort(this.#abortReason);
      return;
    }
    if (this.#paused) controller.pause();
    if (!this.#started) {
      this.#started = true;
      this.#handler.onRequestStart?.(this, context);
    }
    void a;
  }

  onAttemptUpgrade(
    a: Attempt,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[2],
    socket: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[3],
  ): void {
    this.#drop(a);
    this.#report(a, "success", "", this.#policy.now() - a.startedAt);
    this.#win(a);
    this.#annotate(a);
    this.#finish();
    this.#span.end();
    this.#handler.onRequestUpgrade?.(this, statusCode, headers, socket);
  }

  onAttemptResponse(
    a: Attempt,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onResponseStart"]>>[2],
    statusMessage?: string,
  ): void {
    if (this.#finished) return;
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
        return;
      }
      let delay = 0;
      const retryAfter =
        statusCode === 429 || statusCode === 503
          ? parseRetryAfter(headerValue(headers, "retry-after"))
          : undefined;
      if (
        retryAfter === undefined ||
        (retryAfter <= policy.maxRetryAfter && now + retryAfter < this.#deadlineAt)
      ) {
        const next = this.#retryTarget(a, "status");
        if (next !== undefined) {
          delay = Math.max(retryAfter ?? 0, policy.backoff(this.#retries + 1));
          // Drain this response and send the next attempt when it ends: the connection stays reusable.
          a.draining = true;
          this.#next = next;
          this.#nextDelay = delay;
          return;
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
    this.#handler.onResponseStart?.(this, statusCode, headers, statusMessage);
  }

  onAttemptData(a: Attempt, chunk: Buffer): void {
    if (a !== this.#winner || this.#finished) return;
    this.#handler.onResponseData?.(this, chunk);
  }

  onAttemptEnd(a: Attempt, trailers: Record<string, string | string[] | undefined>): void {
    if (a.draining) {
      a.draining = false;
      this.#drop(a);
      this.#afterDrain();
      return;
    }
    if (a !== this.#winner || !this.#finish()) return;
    this.#span.end();
    this.#handler.onResponseEnd?.(this, trailers);
  }

  #afterDrain(): void {
    const next = this.#next;
    if (next === undefined || this.#finished) return;
    this.#next = undefined;
    if (this.#abortReason !== null) {
      this.#fail(this.#abortReason);
      return;
    }
    this.#retry(next, this.#nextDelay);
  }

  onAttemptError(a: Attempt, err: Error): void {
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
      const retry = this.#retryTarget(a, kind);
      if (retry !== undefined) {
        if (this.#span.isRecording()) {
          this.#span.addEvent("meshlink.retry", { [Attr.ENDPOINT]: a.endpoint.id, "error.type": kind });
        }
        // Nothing was sent after a connect failure: retry at once (Finagle's requeue); else back off.
        this.#retry(retry, kind === "connect" ? 0 : this.#policy.backoff(this.#retries + 1));
        return;
      }
      this.#annotate(a);
      this.#fail(new RequestFailedError(this.#route.name.key, this.#records ?? [], { cause: err }));
      return;
    }
    this.#annotate(a);
    this.#fail(err);
  }

  // Controller side: what the caller's handler sees, stable across attempts.

  abort(reason: Error): void {
    if (this.#abortReason !== null) return;
    this.#abortReason = reason ?? new Error("aborted");
    const live = this.#winner ?? this.#current;
    let any = false;
    for (const a of [this.#current, this.#other]) {
      if (a !== undefined && !a.closed && a.abandoned === null && a.controller !== null) {
        any = true;
        a.controller.abort(this.#abortReason);
      }
    }
    // Waiting on a back-off, or between attempts: nothing will call back, so fail now.
    if (!any && (live === undefined || live.closed || this.#next !== undefined)) {
      this.#next = undefined;
      this.#fail(this.#abortReason);
    }
  }

  pause(): void {
    this.#paused = true;
    (this.#winner ?? this.#current)?.controller?.pause();
  }

  resume(): void {
    this.#paused = false;
    (this.#winner ?? this.#current)?.controller?.resume();
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

/**
 * The HTTP transport: an undici interceptor that turns a request to a mesh
 * name into a request to a picked endpoint, keeps the `Host` header (and so
 * the TLS server name) of the original URL, reports the outcome to health,
 * retries per the call policy and carries trace context. Any other host
 * passes through untouched.
 *
 * Like undici's own `interceptors.dns()`, it rewrites the origin; unlike it,
 * the origin comes from the router, so every endpoint gets its own
 * keep-alive pool in the agent underneath.
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
  MeshClosedError,
  NoHealthyEndpointError,
  RequestFailedError,
  ServiceNotFoundError,
} from "../../errors.js";
import type { EndpointHealth } from "../../resilience/health.js";
import { type CallPolicy, classifyError, type FailureKind, isIdempotent } from "../../resilience/policy.js";
import type { Balancer } from "../../routing/router.js";
import {
  Attr,
  endSpanWithError,
  type HeaderList,
  injectHeaders,
  startClientSpan,
} from "../../telemetry/tracing.js";

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
}

/** Options of {@link meshInterceptor}. */
export interface MeshInterceptorOptions {
  /** Treat a short `svc.ns` host as a mesh name even when no backend claims it (`mesh.fetch`). */
  explicit?: boolean;
}

interface Route {
  readonly name: ServiceName;
  readonly balancer: Balancer;
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
    return { name, balancer, host: url.host, protocol: url.protocol };
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

/** Whether a request body can be sent again, and the body to send. */
class ReplayableIterable {
  started = false;
  readonly #source: AsyncIterable<unknown> | Iterable<unknown>;
  constructor(source: AsyncIterable<unknown> | Iterable<unknown>) {
    this.#source = source;
  }
  async *[Symbol.asyncIterator]() {
    this.started = true;
    yield* this.#source as AsyncIterable<unknown>;
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
  if (body instanceof ReplayableIterable) return body.started;
  const stream = body as { readableDidRead?: boolean; destroyed?: boolean };
  if (typeof stream.readableDidRead === "boolean") return stream.readableDidRead || stream.destroyed === true;
  return true; // unknown body kinds (FormData, Blob streams): assume consumed
}

/** Adds headers to undici's request headers in whichever shape they came. */
function withHeaders(
  headers: Dispatcher.DispatchOptions["headers"],
  extra: HeaderList,
): Dispatcher.DispatchOptions["headers"] {
  if (headers == null) return extra;
  if (Array.isArray(headers)) {
    if (headers.length === 0 || typeof headers[0] === "string") return [...(headers as string[]), ...extra];
    const pairs = (headers as unknown as [string, string][]).slice();
    for (let i = 0; i < extra.length; i += 2) pairs.push([extra[i]!, extra[i + 1]!]);
    return pairs as unknown as string[];
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    const flat: string[] = [];
    for (const [k, v] of headers as Iterable<[string, string | string[] | undefined]>) {
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const x of v) flat.push(k, x);
      else flat.push(k, v);
    }
    return [...flat, ...extra];
  }
  const out: Record<string, string | string[] | undefined> = {
    ...(headers as Record<string, string | string[]>),
  };
  for (let i = 0; i < extra.length; i += 2) out[extra[i]!] = extra[i + 1]!;
  return out;
}

function hasHeader(headers: Dispatcher.DispatchOptions["headers"], name: string): boolean {
  if (headers == null) return false;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && typeof headers[0] !== "string") {
      return (headers as unknown as [string, string][]).some(([k]) => k.toLowerCase() === name);
    }
    for (let i = 0; i < headers.length; i += 2)
      if ((headers[i] as string).toLowerCase() === name) return true;
    return false;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") {
    for (const [k] of headers as Iterable<[string, unknown]>) if (k.toLowerCase() === name) return true;
    return false;
  }
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

/**
 * One call through the mesh. It is the handler of each attempt's dispatch
 * and, towards the caller's handler, the one stable controller across
 * attempts (undici's RetryHandler does the same).
 */
class MeshCall implements Dispatcher.DispatchHandler, Dispatcher.DispatchController {
  readonly #route: Route;
  readonly #routes: HttpRoutes;
  readonly #opts: Dispatcher.DispatchOptions;
  readonly #handler: Dispatcher.DispatchHandler;
  readonly #dispatch: Dispatcher.Dispatch;
  readonly #idempotent: boolean;
  readonly #span: Span;
  #headers: Dispatcher.DispatchOptions["headers"];
  #attempt = 0;
  #endpoint: Endpoint | undefined;
  #health: EndpointHealth | undefined;
  #reported = true;
  #tried: Endpoint[] | undefined;
  #records: AttemptRecord[] | undefined;
  #controller: Dispatcher.DispatchController | null = null;
  #started = false;
  #responded = false;
  #next: Endpoint | undefined;
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
    this.#handler = handler;
    this.#dispatch = dispatch;
    const method = opts.method;
    this.#idempotent = opts.upgrade == null && method !== "CONNECT" && isIdempotent(method);
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
    const extra: HeaderList = hasHeader(opts.headers, "host") ? [] : ["host", route.host];
    injectHeaders(ctx, extra);
    this.#headers = extra.length === 0 ? opts.headers : withHeaders(opts.headers, extra);
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
    const endpoint = this.#route.balancer.pick();
    if (endpoint === undefined) {
      this.#fail(this.#noEndpoint(undefined));
      return;
    }
    this.#send(endpoint);
  }

  #noEndpoint(cause: unknown): Error {
    const snapshot = this.#route.balancer.watch.snapshot;
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

  #send(endpoint: Endpoint): void {
    const health = this.#route.balancer.healthOf(endpoint);
    this.#endpoint = endpoint;
    this.#health = health;
    this.#attempt++;
    this.#reported = false;
    this.#route.balancer.health.start(health);
    const opts = this.#opts;
    try {
      this.#dispatch(
        {
          ...opts,
          origin: `${this.#route.protocol}//${hostPort(endpoint.address, endpoint.port)}`,
          headers: this.#headers,
          headersTimeout: opts.headersTimeout ?? this.#routes.policy.perTryTimeout,
        },
        this,
      );
    } catch (err) {
      this.onResponseError(null, err as Error);
    }
  }

  #report(kind: FailureKind | "status" | "success", reason: string): void {
    if (this.#reported || this.#health === undefined) return;
    this.#reported = true;
    const tracker = this.#route.balancer.health;
    if (kind === "success") tracker.success(this.#health);
    else if (kind === "other") tracker.release(this.#health);
    else tracker.failure(this.#health, reason);
    if (kind !== "success" && kind !== "other") {
      (this.#records ??= []).push({ endpoint: this.#endpoint!.id, reason });
    }
  }

  /** The next endpoint for a retry, or undefined when the policy or the router says no. */
  #retryTarget(kind: FailureKind | "status"): Endpoint | undefined {
    if (this.#abortReason !== null || this.#routes.closed) return undefined;
    if (!this.#routes.policy.mayRetry(kind, this.#idempotent, this.#attempt)) return undefined;
    if (bodySent(this.#opts.body)) return undefined;
    const tried = (this.#tried ??= []);
    tried.push(this.#endpoint!);
    return this.#route.balancer.pick({
      exclude: tried,
      avoidCluster: kind === "connect" || kind === "reset" ? this.#endpoint!.cluster : undefined,
    });
  }

  #fail(err: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    endSpanWithError(this.#span, err);
    this.#handler.onResponseError?.(this, err);
  }

  #annotate(): void {
    const span = this.#span;
    if (!span.isRecording()) return;
    const e = this.#endpoint!;
    span.setAttributes({
      [Attr.ENDPOINT]: e.id,
      [Attr.CLUSTER]: e.cluster,
      [Attr.REGION]: e.locality.region,
      [Attr.TIER]: this.#route.balancer.tierOf(e).label,
      [Attr.ATTEMPTS]: this.#attempt,
      "network.peer.address": e.address,
      "network.peer.port": e.port,
    });
  }

  // Handler side: callbacks of the current attempt.

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.#controller = controller;
    if (this.#abortReason !== null) {
      controller.abort(this.#abortReason);
      return;
    }
    if (this.#paused) controller.pause();
    if (!this.#started) {
      this.#started = true;
      this.#handler.onRequestStart?.(this, context);
    }
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[2],
    socket: Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[3],
  ): void {
    this.#report("success", "");
    this.#responded = true;
    this.#finished = true;
    this.#annotate();
    this.#span.end();
    this.#handler.onRequestUpgrade?.(this, statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler["onResponseStart"]>>[2],
    statusMessage?: string,
  ): void {
    if (this.#routes.policy.isFailureStatus(statusCode)) {
      this.#report("status", `status ${statusCode}`);
      const next = this.#retryTarget("status");
      if (next !== undefined) {
        // Drain this response and send the next attempt when it ends: the connection stays reusable.
        this.#next = next;
        return;
      }
    } else {
      this.#report("success", "");
    }
    this.#responded = true;
    this.#annotate();
    if (this.#span.isRecording()) this.#span.setAttribute("http.response.status_code", statusCode);
    this.#handler.onResponseStart?.(this, statusCode, headers, statusMessage);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#next !== undefined) return;
    this.#handler.onResponseData?.(this, chunk);
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: Record<string, string | string[] | undefined>,
  ): void {
    const next = this.#next;
    if (next !== undefined) {
      this.#next = undefined;
      this.#send(next);
      return;
    }
    this.#finished = true;
    this.#span.end();
    this.#handler.onResponseEnd?.(this, trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    const next = this.#next;
    if (next !== undefined) {
      this.#next = undefined;
      this.#send(next);
      return;
    }
    if (this.#finished) return;
    const kind: FailureKind = this.#abortReason !== null ? "other" : classifyError(err);
    this.#report(kind, (err as { code?: string }).code ?? err.name);
    if (!this.#responded && kind !== "other") {
      const retry = this.#retryTarget(kind);
      if (retry !== undefined) {
        if (this.#span.isRecording()) {
          this.#span.addEvent("meshlink.retry", { [Attr.ENDPOINT]: this.#endpoint!.id, "error.type": kind });
        }
        this.#send(retry);
        return;
      }
      this.#annotate();
      this.#fail(new RequestFailedError(this.#route.name.key, this.#records ?? [], { cause: err }));
      return;
    }
    if (this.#endpoint !== undefined) this.#annotate();
    this.#fail(err);
  }

  // Controller side: what the caller's handler sees, stable across attempts.

  abort(reason: Error): void {
    if (this.#abortReason !== null) return;
    this.#abortReason = reason ?? new Error("aborted");
    if (this.#controller !== null) this.#controller.abort(this.#abortReason);
  }

  pause(): void {
    this.#paused = true;
    this.#controller?.pause();
  }

  resume(): void {
    this.#paused = false;
    this.#controller?.resume();
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

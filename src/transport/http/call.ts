/**
 * One HTTP call through the mesh: the HTTP side of the call engine (see
 * `resilience/engine.ts`), shared by {@link MeshDispatcher} and
 * {@link meshInterceptor}. It reads the request (method, body, meshlink's
 * control headers), keeps the `Host` header (and so the TLS server name) of
 * the original URL, sends each attempt the engine asks for to the endpoint's
 * origin, and delivers the winning attempt's response to the caller in the
 * caller's own handler API.
 *
 * For a handler of undici's legacy API (`onConnect`/`onHeaders`/`onData`/
 * `onComplete`/`onError`: `undici.request`, `stream`, `pipeline`, undici's
 * and Node's `fetch`), each attempt handed to the agent is a legacy handler
 * too, which undici's `DispatcherBase` passes through unwrapped: the raw
 * header buffers, the `resume` function and the body chunks go from the
 * connection to the caller untouched. A handler of the new API
 * (`onRequestStart`/`onResponseStart`/…, as inside a `compose()` chain)
 * gets the new API end to end, with the call as its one controller across
 * attempts (as undici's `RetryHandler` does).
 *
 * Per-request controls travel as headers, which every client can set and
 * which meshlink strips before sending: `x-meshlink-retryable: true` lets a
 * non-idempotent request be retried, `x-meshlink-hedge: true | <ms> | p95 | false`
 * turns hedging on or off for the call, and `x-meshlink-timeout-ms: <ms>`
 * sets the call's deadline (the same header carries the time left to the
 * server). The same controls can be given in code, as the `meshlink`
 * dispatch option ({@link MeshCallOptions}), which wins over the headers;
 * and an application can turn the header controls off
 * (`policy.headerControls: false`: the headers are then stripped and ignored).
 *
 * @module
 */

import { ROOT_CONTEXT, type Span } from "@opentelemetry/api";
import { type Dispatcher, errors } from "undici";
import type { Endpoint } from "../../discovery/endpoint.js";
import { ConfigError, RequestFailedError } from "../../errors.js";
import type { AttemptOutcome } from "../../resilience/attempt.js";
import { parseTimeoutHeader, TIMEOUT_HEADER } from "../../resilience/deadline.js";
import { EngineCall } from "../../resilience/engine.js";
import { classifyError, type FailureKind, isIdempotent } from "../../resilience/policy.js";
import type { EndpointHealth } from "../../routing/health.js";
// Telemetry (issue 13): the call's observer, made only when something records.
import { CallObserver } from "../../telemetry/call.js";
import { type MeshInstruments, meshInstruments } from "../../telemetry/metrics.js";
import {
  activeContext,
  contextWithSpan,
  type HeaderList,
  injectHeaders,
  NOOP_SPAN,
  otelRegistered,
  tracerRegistered,
} from "../../telemetry/tracing.js";
import { classifyTlsRejection } from "../../tls/identity.js";
import { Attempt, type HttpAttempt, LegacyAttempt, type Socket } from "./attempt.js";
import { bodyReusable, bodySent, wrapBody } from "./body.js";
import {
  found,
  H_CONTROL,
  H_HEDGE,
  H_HOST,
  H_RETRYABLE,
  H_TIMEOUT,
  type Headers,
  type MeshDispatchOptions,
  NO_HEADERS,
  parseFlag,
  parseHedge,
  type ResponseHeaders,
  readCallOptions,
  scanHeaders,
  stripControls,
  withHeaders,
} from "./headers.js";
import { AttemptOptions, invalidLegacyHandler } from "./options.js";
import type { HttpRoutes, Route } from "./routes.js";
import { HTTP_STATUS_ONLY, httpProtocol, startHttpCallSpan } from "./trace.js";

export { HEDGE_HEADER, RETRYABLE_HEADER } from "./headers.js";

type Handler = Dispatcher.DispatchHandler;
/** What tells a `fetch`'s handler apart (fetch's timing callback). */
type FetchHandler = { onResponseStarted?: () => void };
/** A legacy handler's start callback as undici calls it (the types omit the context). */
type LegacyHandler = { onConnect(abort: (reason?: Error) => void, context: unknown): void };

/** Where a call's attempts go. One per dispatcher or interceptor. */
export interface CallSite {
  /** The mesh. */
  readonly routes: HttpRoutes;
  /** Dispatches one attempt: the agent's `dispatch`, or the next one of a `compose()` chain. */
  readonly dispatch: (opts: Dispatcher.DispatchOptions, handler: Handler) => boolean;
  /**
   * True when `dispatch` reads no request field but those undici's
   * `Request` knows (undici's own `Agent`, made without interceptors): a
   * call may then copy a `fetch`'s options field by field.
   */
  readonly knownFieldsOnly: boolean;
}

/**
 * One call through the mesh. Towards a new-API caller it is the one stable
 * controller across attempts; towards a legacy caller, one `abort`
 * function. Each attempt has its own handler, so that a hedge can race the
 * first attempt.
 */
export class MeshCall extends EngineCall<HttpAttempt> implements Dispatcher.DispatchController {
  readonly #site: CallSite;
  readonly #handler: Handler;
  /** The caller speaks undici's legacy handler API, and so do the attempts. */
  readonly #legacy: boolean;
  /** The request body as attempts send it (an iterable wrapped for replay). */
  readonly #body: unknown;
  readonly #span: Span;
  /** Spans of attempts and metrics; undefined when nothing records (no SDK). */
  readonly #obs: CallObserver | undefined;
  /** The first attempt's dispatch options; a retry or a hedge copies them. */
  readonly #options: AttemptOptions;
  #optionsUsed = false;
  /** The headers without the timeout header, when a deadline is in force and propagated. */
  readonly #baseHeaders: Headers;
  /** How a legacy caller's abort function reaches this call until it ends (see {@link AbortLink}). */
  #link: AbortLink | null = null;
  /**
   * Why undici would refuse the caller's (legacy) handler, or why its
   * `meshlink` option is bad, if either is: the call then fails at once.
   */
  readonly #invalid: string | Error | undefined;
  #paused = false;

  /** `legacy`: the handler speaks undici's legacy API (it has no `onRequestStart`). */
  constructor(
    site: CallSite,
    route: Route,
    opts: Dispatcher.DispatchOptions,
    handler: Handler,
    legacy: boolean,
  ) {
    const policy = site.routes.policy;
    super(route, policy);
    this.#site = site;
    this.#handler = handler;
    this.#legacy = legacy;
    // Node's and undici's `fetch` (the legacy handlers with `onResponseStarted`)
    // hand every dispatcher the same seven-field literal.
    const options =
      legacy && site.knownFieldsOnly && (handler as FetchHandler).onResponseStarted !== undefined
        ? AttemptOptions.of(opts)
        : (Object.assign(new AttemptOptions(), opts) as AttemptOptions);
    const method = options.method;
    const upgrade = options.upgrade;
    let invalid: string | Error | undefined = legacy
      ? invalidLegacyHandler(handler, upgrade, method)
      : undefined;
    let retryable = upgrade == null && method !== "CONNECT" && isIdempotent(method);
    const mask = scanHeaders(options.headers);
    let source = options.headers;
    let hedge: number | "p95" | undefined = route.state.hedgeByDefault
      ? (policy.hedging.delay ?? "p95")
      : undefined;
    let deadlineMs = policy.deadline;
    if ((mask & H_CONTROL) !== 0) {
      source = stripControls(source);
      // Off in a service that forwards its callers' headers, who must not force resends.
      if (site.routes.headerControls !== false) {
        if (mask & H_RETRYABLE) retryable = upgrade == null && parseFlag(found.retryable, retryable);
        if (mask & H_HEDGE) hedge = parseHedge(found.hedge, policy.hedging.delay ?? "p95");
        if (mask & H_TIMEOUT) {
          const ms = parseTimeoutHeader(found.timeout);
          if (ms !== undefined) deadlineMs = Math.min(deadlineMs, ms);
        }
      }
    }
    // meshlink: per-call controls given in code, which win over headers. One property read when absent.
    const given = (opts as MeshDispatchOptions).meshlink;
    if (given !== undefined) {
      const c = readCallOptions(given, policy.hedging.delay ?? "p95");
      if (c instanceof ConfigError) invalid ??= c;
      else {
        if (c.retryable !== undefined) retryable = upgrade == null && method !== "CONNECT" && c.retryable;
        if (c.hedge !== undefined) hedge = c.hedge === false ? undefined : c.hedge;
        if (c.deadline !== undefined) deadlineMs = c.deadline;
      }
    }
    this.#invalid = invalid;
    this.deadlineMs = deadlineMs;
    this.retryable = retryable;
    this.hedge = retryable && bodyReusable(options.body) ? hedge : undefined;
    const body = wrapBody(options.body);
    options.body = body;
    this.#body = body;
    // With no SDK registered there is nothing to record: no attributes, no
    // span, no new context; the caller's own context (if any) still propagates.
    // One check answers every OpenTelemetry question of a call without an SDK.
    const otel = otelRegistered();
    const parent = otel ? activeContext() : ROOT_CONTEXT;
    let span = NOOP_SPAN;
    let url = "";
    let instruments: MeshInstruments | undefined;
    if (otel) {
      if (tracerRegistered()) {
        url = `${route.protocol}//${route.host}${options.path}`;
        span = startHttpCallSpan(method, parent, route, url, options.path);
      }
      instruments = meshInstruments();
    }
    this.#span = span;
    const obs =
      instruments !== undefined || span.isRecording()
        ? new CallObserver(
            route,
            span,
            parent,
            instruments,
            span.isRecording() ? httpProtocol(method, url, route) : HTTP_STATUS_ONLY,
          )
        : undefined;
    this.#obs = obs;
    this.observed = obs !== undefined;
    // Shared until something is added to it (withHeaders copies).
    let extra: HeaderList = (mask & H_HOST) !== 0 ? NO_HEADERS : route.hostHeader;
    // A traced call's attempts carry their own spans' context (see dispatchAttempt).
    if (otel && obs?.traced !== true) {
      extra = extra.slice();
      injectHeaders(contextWithSpan(parent, span), extra);
    }
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
        extra = extra.slice();
        extra.push(
          TIMEOUT_HEADER,
          callerTimeout === undefined ? policy.perTryTimeoutHeader : String(callerTimeout),
        );
      }
      options.headers = extra.length === 0 ? source : withHeaders(source, extra);
      this.#baseHeaders = undefined;
    }
    // The engine's per-try timer keeps this timeout (connecting included).
    // undici is left its own headers timeout (the caller's, or the agent's
    // default, equal to its body timeout; a longer per-try timeout is
    // passed on, see dispatchAttempt): with a different one, each
    // request's connection would swap its headers timer for a new body
    // timer instead of refreshing one (docs/performance.md, "The fetch
    // path, fourth pass").
    this.perTryTimeout = callerTimeout ?? policy.perTryTimeout;
    this.#options = options;
    if (obs?.traced === true) {
      obs.headerSource = source;
      obs.headerExtra = extra;
    }
  }

  override start(): void {
    const invalid = this.#invalid;
    if (invalid !== undefined) {
      this.finished = true;
      const err = typeof invalid === "string" ? new errors.InvalidArgumentError(invalid) : invalid;
      if (this.#obs !== undefined) this.#obs.end(err, 0);
      else this.#span.end();
      if (typeof invalid === "string") this.#handler.onError!(err);
      else {
        this.deliverStart();
        this.deliverError(err);
      }
      return;
    }
    super.start();
  }

  // The engine's transport side.

  protected get meshClosed(): boolean {
    return this.#site.routes.closed;
  }

  protected createAttempt(endpoint: Endpoint, health: EndpointHealth, now: number): HttpAttempt {
    const a = this.#legacy
      ? new LegacyAttempt(this, endpoint, health, now)
      : new Attempt(this, endpoint, health, now);
    this.#obs?.attemptCreated(a, this.attempts + 1);
    return a;
  }

  protected dispatchAttempt(a: HttpAttempt, timeoutMs: number): void {
    // The first attempt takes the options built with the call; another one
    // (a retry, a hedge) a copy, as the first may still be queued in undici.
    let options = this.#options;
    if (this.#optionsUsed) options = { ...options };
    else this.#optionsUsed = true;
    options.origin = (this.route as Route).originOf(a.endpoint);
    // undici's own headers timeout (300 s unless the caller set one) must not
    // cut a longer per-try timeout short.
    if (timeoutMs > UNDICI_HEADERS_TIMEOUT) options.headersTimeout = timeoutMs;
    if (this.deadlineAt !== Number.POSITIVE_INFINITY) {
      options.headers = this.policy.propagateDeadline
        ? withHeaders(this.#baseHeaders, [TIMEOUT_HEADER, String(timeoutMs)])
        : this.#baseHeaders;
    }
    if (a.trace !== undefined) {
      // The attempt's span is the server's parent: its headers carry that span's context.
      const obs = this.#obs!;
      const list = obs.headerExtra!.slice();
      obs.inject(a, list);
      if (this.deadlineAt !== Number.POSITIVE_INFINITY && this.policy.propagateDeadline) {
        list.push(TIMEOUT_HEADER, String(timeoutMs));
      }
      options.headers = withHeaders(obs.headerSource as Headers, list);
    }
    try {
      this.#site.dispatch(options as unknown as Dispatcher.DispatchOptions, a as Handler);
    } catch (err) {
      a.error(err as Error);
    }
  }

  protected deliverStart(): void {
    if (this.#legacy) {
      const link = new AbortLink(this);
      this.#link = link;
      (this.#handler as LegacyHandler).onConnect(abortFunctionOf(link), undefined);
    } else this.#handler.onRequestStart?.(this, undefined);
  }

  protected deliverError(err: Error): void {
    if (this.#legacy) this.#handler.onError!(err);
    else this.#handler.onResponseError?.(this, err);
  }

  /**
   * A request sent once and not retryable says why it was not sent again
   * (and how to mark it); one whose connection was never made sent nothing.
   */
  protected override requestFailed(err: Error, kind: FailureKind): Error {
    const method = this.#options.method;
    if (
      this.retryable ||
      kind === "connect" ||
      kind === "tls" ||
      this.#options.upgrade != null ||
      method === "CONNECT"
    ) {
      return super.requestFailed(err, kind);
    }
    return new RequestFailedError(this.route.name.key, this.records, {
      cause: err,
      method,
      notRetried: isIdempotent(method) ? "marked-not-retryable" : "not-idempotent",
    });
  }

  protected resendable(): boolean {
    return !bodySent(this.#body);
  }

  // Telemetry (issue 13): every note goes to the observer, which exists only when something records.

  protected override noteRetry(from: HttpAttempt, kind: FailureKind | "status", next: Endpoint): void {
    this.#obs?.retry(from, kind, next);
  }

  protected override noteHedge(target: Endpoint): void {
    this.#obs?.hedge(target);
  }

  protected override noteBudgetExhausted(): void {
    this.#obs?.budgetExhausted();
  }

  protected override noteWinner(a: HttpAttempt): void {
    this.#obs?.winner(a, this.attempts);
  }

  protected override noteSettled(a: HttpAttempt, outcome: AttemptOutcome, reason: string): void {
    this.#obs?.settled(a, outcome, reason);
  }

  protected override noteEnd(err: Error | undefined): void {
    // An ended call ignores aborts: let go of it (see AbortLink).
    if (this.#link !== null) this.#link.call = null;
    const obs = this.#obs;
    if (obs !== undefined) obs.end(err, this.attempts);
    // A span that records nothing still ends (an SDK's sampler may have dropped it).
    else this.#span.end();
  }

  /** @internal How an attempt's error reads: a reset on a reused connection before any response byte is `stale`. */
  classify(a: HttpAttempt, err: Error): FailureKind {
    if (!a.started && classifyTlsRejection(err) !== undefined) return "tls";
    const kind = classifyError(err);
    if (kind === "reset" && a.started && !a.responded) {
      const connectedAt = this.#site.routes.connections?.connectedAt(err);
      if (connectedAt !== undefined && connectedAt < a.startedAt) return "stale";
    }
    return kind;
  }

  /** @internal True when the policy retries this status (its `Retry-After` is worth reading). */
  retriesStatus(status: number): boolean {
    return this.policy.isRetryableStatus(status);
  }

  /** @internal The attempt whose response is being delivered. */
  get winnerAttempt(): HttpAttempt | undefined {
    return this.winner;
  }

  // Delivery to the caller, in its handler API.

  /** @internal */
  emitResponse(
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage: string | undefined,
    resume: (() => void) | undefined,
  ): boolean {
    if (statusCode >= 200 && this.#span.isRecording()) {
      this.#span.setAttribute("http.response.status_code", statusCode);
    }
    if (this.#legacy) {
      return this.#handler.onHeaders!(statusCode, headers as Buffer[], resume!, statusMessage ?? "");
    }
    this.#handler.onResponseStart?.(this, statusCode, headers as Record<string, string>, statusMessage);
    return true;
  }

  /** @internal */
  emitData(chunk: Buffer): boolean {
    if (this.finished) return true;
    if (this.#legacy) return this.#handler.onData!(chunk);
    this.#handler.onResponseData?.(this, chunk);
    return true;
  }

  /** @internal */
  emitEnd(trailers: ResponseHeaders): void {
    if (this.#legacy) this.#handler.onComplete!(trailers as string[] | null);
    else this.#handler.onResponseEnd?.(this, trailers as Record<string, string>);
  }

  /** @internal */
  emitUpgrade(statusCode: number, headers: ResponseHeaders, socket: Socket): void {
    if (this.#legacy) this.#handler.onUpgrade!(statusCode, headers as Buffer[], socket);
    else this.#handler.onRequestUpgrade?.(this, statusCode, headers as Record<string, string>, socket);
  }

  /** @internal */
  emitResponseStarted(): void {
    if (!this.finished) this.#handler.onResponseStarted?.();
  }

  /** @internal */
  emitBodySent(chunk: unknown): void {
    (this.#handler as { onBodySent?: (chunk: unknown) => void }).onBodySent?.(chunk);
  }

  // Controller side: what a new-API caller's handler sees, stable across attempts.

  override abort(reason: Error): void {
    super.abort(reason ?? new errors.RequestAbortedError());
  }

  pause(): void {
    this.#paused = true;
    this.winner?.pause();
  }

  resume(): void {
    this.#paused = false;
    this.winner?.resume();
  }

  get aborted(): boolean {
    return this.abortReason !== null;
  }

  get paused(): boolean {
    return this.#paused;
  }

  get reason(): Error | null {
    return this.abortReason;
  }

  // Typed without `undefined`: the interface's optional property would put it in the emitted
  // declaration, which then fails to type-check under `exactOptionalPropertyTypes`.

  /** The winning attempt's raw response headers, as undici's own controllers expose them. */
  get rawHeaders(): NonNullable<Dispatcher.DispatchController["rawHeaders"]> | null {
    return (this.winner as Attempt | undefined)?.controller?.rawHeaders ?? null;
  }

  /** The winning attempt's raw trailers. */
  get rawTrailers(): NonNullable<Dispatcher.DispatchController["rawTrailers"]> | null {
    return (this.winner as Attempt | undefined)?.controller?.rawTrailers ?? null;
  }
}

/** undici's default headers timeout, ms (the mesh's agents keep it). */
const UNDICI_HEADERS_TIMEOUT = 300_000;

/**
 * The one reference from a legacy caller's abort function to its call, cut
 * when the call ends. Node's `fetch` keeps the abort function in its
 * per-request handler, which V8 allocates in the old generation: an old
 * object that reaches the call keeps the call, its attempt, its options and
 * headers and undici's request alive through every young-generation GC
 * until the next full one, so each of them was copied and later
 * mark-compacted (docs/performance.md, "The fetch path").
 */
class AbortLink {
  constructor(public call: MeshCall | null) {}
}

/**
 * What a legacy caller's `abort(reason?)` is: the whole call's abort, while
 * it runs. Made here, outside the class, on purpose: the same arrow function
 * written inside a method (capturing `this`) made V8 keep whole calls alive
 * through young-generation GCs (docs/performance.md, F2).
 */
function abortFunctionOf(link: AbortLink): (reason?: Error) => void {
  return (reason?: Error) => link.call?.abort(reason ?? new errors.RequestAbortedError());
}

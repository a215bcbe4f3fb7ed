/**
 * The call policy: which outcomes are endpoint failures, which calls may be
 * retried and when, how long a call may take, how many run at once, and
 * when a second attempt races the first (hedging). Transports ask; the
 * policy knows nothing of HTTP or gRPC beyond status numbers and error codes.
 *
 * @module
 */

import { monotonicNow } from "../clock.js";
import { RetryBudget, type RetryBudgetOptions } from "./budget.js";
import { LatencyHistogram } from "./latency.js";

/** Retry back-off (Envoy's `retry_back_off`): full jitter over an exponential ceiling. */
export interface BackoffOptions {
  /** The first ceiling in ms; default 25 (Envoy). */
  base?: number;
  /** The largest ceiling in ms; default 250 (Envoy: 10 × base). */
  max?: number;
}

/** Hedging: a second attempt to another endpoint when the first is slow (Finagle's backup requests). */
export interface HedgingOptions {
  /** Wait before the second attempt: ms, or `p95` for the service's 95th-percentile latency; default `p95`. */
  delay?: number | "p95";
  /** Extra load hedges may add, as a share of requests; default 0.01 (1 %, Finagle's `maxExtraLoad`). */
  maxExtraLoad?: number;
  /** Hedges allowed per second whatever the request rate; default 0. */
  minPerSecond?: number;
  /**
   * Services hedged by default (canonical names such as `my-service.default`,
   * with or without `:port`). Other calls hedge only when they ask
   * (`x-meshlink-hedge` header). Default none.
   */
  services?: readonly string[];
}

/** Bulkheads: the most requests in flight (Envoy's `max_requests` circuit breaker). */
export interface BulkheadOptions {
  /** Per endpoint; the router skips a full endpoint. Default unlimited. */
  maxRequestsPerEndpoint?: number;
  /** Per service; a call over it fails at once with `MESHLINK_ERR_BULKHEAD_FULL`. Default unlimited. */
  maxRequestsPerService?: number;
}

/** Options of the call policy. */
export interface CallPolicyOptions {
  /** Attempts per call, the first included; default 2 (one retry). */
  attempts?: number;
  /** Per-try timeout on the response headers, in ms; default 15 000 (Envoy's route timeout). */
  perTryTimeout?: number;
  /** Overall deadline of a call, in ms, across attempts and until the response ends; default none. */
  deadline?: number;
  /**
   * Send the time left as `x-meshlink-timeout-ms` with each attempt; default
   * true. An attempt carries it when the call has a deadline, or else its
   * per-try timeout when one was chosen (`perTryTimeout`, or the request's
   * own `headersTimeout`); the 15 s default alone is not sent.
   */
  propagateDeadline?: boolean;
  /** Response statuses that are endpoint failures and retryable; default 502, 503, 504. */
  retryOn?: readonly number[];
  /** Retry a 429 (not an endpoint failure), after its `Retry-After` if it has one; default true. */
  retryOnRateLimited?: boolean;
  /** The longest `Retry-After` honoured, in ms; a longer one is not retried; default 10 000. */
  maxRetryAfter?: number;
  /** Back-off between retries after a response or a timeout; connect failures retry at once. */
  backoff?: BackoffOptions;
  /** The retry budget, or `false` for none; default Finagle's (20 %, 10/s, 10 s). It runs on the policy's `now`. */
  budget?: Omit<RetryBudgetOptions, "now"> | false;
  /** Hedging; default off unless a call asks for it. */
  hedging?: HedgingOptions;
  /** Bulkheads; default unlimited. */
  bulkhead?: BulkheadOptions;
  /** Clock for budgets and histograms; default a monotonic clock. */
  now?: () => number;
  /** Random numbers in [0, 1) for back-off jitter; default `Math.random`. */
  random?: () => number;
}

/** How an attempt failed, for health and retry decisions. */
export type FailureKind =
  /** No connection was made: nothing of the request was sent. Retryable for every method. */
  | "connect"
  /**
   * A reused keep-alive connection that the server had closed broke before
   * any response byte: not the endpoint's fault (not counted), and resent
   * when the request may be sent again.
   */
  | "stale"
  /**
   * The TLS handshake refused the server (another identity than expected, an
   * untrusted or expired certificate): nothing was written, any method may
   * retry, but never on the same endpoint.
   */
  | "tls"
  /** The connection broke before a response: the server may have seen the request. */
  | "reset"
  /** No response headers within the per-try timeout. */
  | "timeout"
  /** The response was malformed (not HTTP, a bad length, a broken frame): an endpoint failure like a 503. */
  | "protocol"
  /** Not the endpoint's fault (bad request options, the caller's abort): neither counted nor retried. */
  | "other";

const CONNECT_CODES = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_CONNECT_TIMEOUT",
  "MESHLINK_ERR_EGRESS_DENIED",
]);
const RESET_CODES = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED", "ECONNABORTED"]);
const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "ETIMEDOUT", "MESHLINK_ATTEMPT_TIMEOUT"]);
const PROTOCOL_CODES = new Set([
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
  "UND_ERR_INFO",
  "ERR_HTTP2_PROTOCOL_ERROR",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_INVALID_HEADER_VALUE",
]);

/**
 * Classifies an attempt's error by its `code`: a transport's first reading,
 * which the call engine refines by what the attempt had written.
 */
export function classifyError(err: unknown): FailureKind {
  const e = err as { code?: unknown; name?: unknown } | null;
  const code = e?.code;
  if (typeof code !== "string") return e?.name === "HTTPParserError" ? "protocol" : "other";
  if (CONNECT_CODES.has(code)) return "connect";
  if (RESET_CODES.has(code)) return "reset";
  if (TIMEOUT_CODES.has(code)) return "timeout";
  // A TLS handshake that failed (a server that does not speak TLS, no shared cipher): no request was sent.
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_")) return "connect";
  // llhttp's parse errors (HPE_INVALID_CONSTANT, HPE_INVALID_HEADER_TOKEN, …) and their kin.
  if (PROTOCOL_CODES.has(code) || code.startsWith("HPE_") || e?.name === "HTTPParserError") return "protocol";
  return "other";
}

/** Methods that may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** True for the idempotent HTTP methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE). */
export function isIdempotent(method: string): boolean {
  return method === "GET" || IDEMPOTENT.has(method) || IDEMPOTENT.has(method.toUpperCase());
}

/**
 * Parses a `Retry-After` value (delay-seconds or an HTTP date) into ms from
 * `now` (epoch ms); undefined when absent or malformed.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  if (/^\d+$/.test(s)) return Number(s) * 1000;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Per-service call state: retry and hedge budgets, calls in flight, latency percentiles. */
export class ServiceCallState {
  /** The service (`ServiceName.key`). */
  readonly service: string;
  /** The retry budget; undefined when budgets are off. */
  readonly budget: RetryBudget | undefined;
  /** Calls in flight (the per-service bulkhead counts them). */
  active = 0;
  /** True when calls to the service hedge unless they say otherwise. */
  readonly hedgeByDefault: boolean;
  #hedgeBudget: RetryBudget | undefined;
  #latency: LatencyHistogram | undefined;
  readonly #policy: CallPolicy;

  /** @internal */
  constructor(service: string, policy: CallPolicy, hedgeByDefault: boolean) {
    this.service = service;
    this.#policy = policy;
    this.hedgeByDefault = hedgeByDefault;
    const b = policy.budgetOptions;
    // On the policy's clock: the engine hands the budget the time it read for the call.
    this.budget = b === false ? undefined : new RetryBudget({ ...b, now: policy.now });
    if (hedgeByDefault) this.#latency = new LatencyHistogram({ now: policy.now });
  }

  /** The hedge budget (made on first use). */
  get hedgeBudget(): RetryBudget {
    const h = this.#policy.hedging;
    this.#hedgeBudget ??= new RetryBudget({
      percent: h.maxExtraLoad ?? 0.01,
      minRetriesPerSecond: h.minPerSecond ?? 0,
      now: this.#policy.now,
    });
    return this.#hedgeBudget;
  }

  /** The latency histogram, once a call hedged on percentiles (made on first use). */
  get latency(): LatencyHistogram {
    this.#latency ??= new LatencyHistogram({ now: this.#policy.now });
    return this.#latency;
  }

  /** The histogram if one exists, for recording without creating one. */
  get latencyIfAny(): LatencyHistogram | undefined {
    return this.#latency;
  }
}

/** The resolved call policy; one instance is shared by every call. */
export class CallPolicy {
  /** Attempts per call, the first included. */
  readonly attempts: number;
  /** Per-try timeout on the response headers, in ms. */
  readonly perTryTimeout: number;
  /** The per-try timeout as a header value, computed once. */
  readonly perTryTimeoutHeader: string;
  /**
   * True when the per-try timeout was configured rather than defaulted: only
   * then do attempts without a deadline tell the server about it (the
   * default says nothing the caller chose, and would cost every request a
   * header to write and to parse).
   */
  readonly perTryTimeoutSet: boolean;
  /** Overall deadline in ms, or `Infinity` for none. */
  readonly deadline: number;
  /** True when attempts carry `x-meshlink-timeout-ms`. */
  readonly propagateDeadline: boolean;
  /** True when a 429 is retried. */
  readonly retryOnRateLimited: boolean;
  /** The longest `Retry-After` honoured, ms. */
  readonly maxRetryAfter: number;
  /** Most calls in flight per service. */
  readonly maxRequestsPerService: number;
  /** Most calls in flight per endpoint. */
  readonly maxRequestsPerEndpoint: number;
  /** The hedging options (empty when not configured). */
  readonly hedging: HedgingOptions;
  /** The budget options, or false. */
  readonly budgetOptions: Omit<RetryBudgetOptions, "now"> | false;
  /** The clock. */
  readonly now: () => number;
  readonly #retryOn: Set<number>;
  readonly #base: number;
  readonly #max: number;
  readonly #random: () => number;
  readonly #hedged: Set<string>;
  readonly #services = new Map<string, ServiceCallState>();
  #inFlight = 0;
  #drained: (() => void)[] | undefined;

  constructor(options: CallPolicyOptions = {}) {
    this.attempts = options.attempts ?? 2;
    this.perTryTimeout = options.perTryTimeout ?? 15_000;
    this.perTryTimeoutHeader = String(this.perTryTimeout);
    this.perTryTimeoutSet = options.perTryTimeout !== undefined;
    this.deadline = options.deadline ?? Number.POSITIVE_INFINITY;
    this.propagateDeadline = options.propagateDeadline ?? true;
    this.#retryOn = new Set(options.retryOn ?? [502, 503, 504]);
    this.retryOnRateLimited = options.retryOnRateLimited ?? true;
    this.maxRetryAfter = options.maxRetryAfter ?? 10_000;
    this.#base = options.backoff?.base ?? 25;
    this.#max = options.backoff?.max ?? 10 * this.#base;
    this.budgetOptions = options.budget ?? {};
    this.hedging = options.hedging ?? {};
    this.#hedged = new Set(options.hedging?.services ?? []);
    this.maxRequestsPerService = options.bulkhead?.maxRequestsPerService ?? Number.POSITIVE_INFINITY;
    this.maxRequestsPerEndpoint = options.bulkhead?.maxRequestsPerEndpoint ?? Number.POSITIVE_INFINITY;
    this.now = options.now ?? monotonicNow;
    this.#random = options.random ?? Math.random;
  }

  /** True when a response status means the endpoint failed (and the call may be retried). */
  isFailureStatus(status: number): boolean {
    return this.#retryOn.has(status);
  }

  /** True when a response status is retried: a failure status, or 429 when rate-limited retries are on. */
  isRetryableStatus(status: number): boolean {
    return this.#retryOn.has(status) || (status === 429 && this.retryOnRateLimited);
  }

  /**
   * True when an attempt that failed this way may be retried. A connect
   * failure sent nothing, so any method retries; after a reset, a timeout, a
   * malformed response or a retryable status only idempotent (or
   * caller-marked) requests do.
   */
  mayRetry(kind: FailureKind | "status", idempotent: boolean, attempt: number): boolean {
    if (attempt >= this.attempts) return false;
    if (kind === "connect" || kind === "tls") return true;
    if (kind === "other") return false;
    return idempotent;
  }

  /** @internal A call was admitted. */
  admitted(): void {
    this.#inFlight++;
  }

  /** @internal An admitted call ended. */
  ended(): void {
    if (--this.#inFlight === 0 && this.#drained !== undefined) {
      const waiters = this.#drained;
      this.#drained = undefined;
      for (const w of waiters) w();
    }
  }

  /** Calls in flight, every service together. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Resolves once no call is in flight. */
  drained(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#drained ??= []).push(resolve));
  }

  /** The state of a service's calls, if it has any. */
  peek(id: string): ServiceCallState | undefined {
    return this.#services.get(id);
  }

  /** Forgets a service's call state (budgets, histograms): the service was not called for a while. */
  forget(id: string): void {
    this.#services.delete(id);
  }

  /**
   * The wait before retry number `retry` (1 for the first retry), in ms:
   * uniform in [0, min(max, base × (2^retry − 1))] (Envoy's full jitter).
   */
  backoff(retry: number): number {
    const ceiling = Math.min(this.#max, this.#base * (2 ** retry - 1));
    return this.#random() * ceiling;
  }

  /** The state of a service's calls, made on first use. */
  service(key: string, id: string = key): ServiceCallState {
    let s = this.#services.get(id);
    if (s === undefined) {
      s = new ServiceCallState(key, this, this.#hedged.has(key) || this.#hedged.has(id));
      this.#services.set(id, s);
    }
    return s;
  }
}

/**
 * The call policy: which outcomes are endpoint failures, which calls may be
 * retried, and how many attempts a call gets. Transports ask; the policy
 * knows nothing of HTTP or gRPC beyond status numbers and error codes.
 *
 * @module
 */

/** Options of the call policy. */
export interface CallPolicyOptions {
  /** Attempts per call, the first included; default 2 (one retry). */
  attempts?: number;
  /** Per-try timeout on the response headers, in ms; default 15 000 (Envoy's route timeout). */
  perTryTimeout?: number;
  /** Response statuses that are endpoint failures and retryable; default 502, 503, 504. */
  retryOn?: readonly number[];
}

/** How an attempt failed, for health and retry decisions. */
export type FailureKind =
  /** No connection was made: nothing of the request was sent. Retryable for every method. */
  | "connect"
  /** The connection broke before a response: the server may have seen the request. */
  | "reset"
  /** No response headers within the per-try timeout. */
  | "timeout"
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
]);
const RESET_CODES = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED", "ECONNABORTED"]);
const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "ETIMEDOUT"]);

/** Classifies an attempt's error by its `code`. */
export function classifyError(err: unknown): FailureKind {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return "other";
  if (CONNECT_CODES.has(code)) return "connect";
  if (RESET_CODES.has(code)) return "reset";
  if (TIMEOUT_CODES.has(code)) return "timeout";
  return "other";
}

/** Methods that may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** True for the idempotent HTTP methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE). */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method) || IDEMPOTENT.has(method.toUpperCase());
}

/** The resolved call policy; one instance is shared by every call. */
export class CallPolicy {
  /** Attempts per call, the first included. */
  readonly attempts: number;
  /** Per-try timeout on the response headers, in ms. */
  readonly perTryTimeout: number;
  readonly #retryOn: Set<number>;

  constructor(options: CallPolicyOptions = {}) {
    this.attempts = options.attempts ?? 2;
    this.perTryTimeout = options.perTryTimeout ?? 15_000;
    this.#retryOn = new Set(options.retryOn ?? [502, 503, 504]);
  }

  /** True when a response status means the endpoint failed (and the call may be retried). */
  isFailureStatus(status: number): boolean {
    return this.#retryOn.has(status);
  }

  /**
   * True when an attempt that failed this way may be retried. A connect
   * failure sent nothing, so any method retries; after a reset, a timeout or
   * a failure status only idempotent requests do.
   */
  mayRetry(kind: FailureKind | "status", idempotent: boolean, attempt: number): boolean {
    if (attempt >= this.attempts) return false;
    if (kind === "connect") return true;
    if (kind === "other") return false;
    return idempotent;
  }
}

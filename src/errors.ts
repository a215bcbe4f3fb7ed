/**
 * Every error meshlink raises is a {@link MeshError} with a stable `code`
 * (`MESHLINK_ERR_*`). Inside the library failures travel as values (discovery
 * updates, pick results); they become thrown errors only at the façade.
 *
 * `instanceof` keeps working across duplicate installs of meshlink (two
 * copies in one dependency tree), as undici's errors do: each class checks a
 * global brand instead of its prototype chain.
 *
 * @module
 */

import { formatValue, isSecretSource, REDACTED, redactValue } from "./values.js";

const kBrand = Symbol.for("meshlink.error");
const kCode = Symbol.for("meshlink.error.code");

/** The stable error codes, one per error class. */
export const ErrorCodes = {
  /** Any meshlink error without a more specific code. */
  MESH: "MESHLINK_ERR_MESH",
  /** A {@link ConfigError}: a bad option, environment variable or config file field. */
  CONFIG: "MESHLINK_ERR_CONFIG",
  /** A {@link ServiceNameError}: a name in no accepted form. */
  SERVICE_NAME: "MESHLINK_ERR_SERVICE_NAME",
  /** A {@link DiscoveryError}: a backend could not produce endpoints. */
  DISCOVERY: "MESHLINK_ERR_DISCOVERY",
  /** A {@link ServiceNotFoundError}: no backend knows the service. */
  SERVICE_NOT_FOUND: "MESHLINK_ERR_SERVICE_NOT_FOUND",
  /** A {@link NoHealthyEndpointError}: no endpoint may be used now. */
  NO_HEALTHY_ENDPOINT: "MESHLINK_ERR_NO_HEALTHY_ENDPOINT",
  /** A {@link RequestFailedError}: every attempt failed before a response. */
  REQUEST_FAILED: "MESHLINK_ERR_REQUEST_FAILED",
  /** A {@link MeshClosedError}: the mesh was closed. */
  CLOSED: "MESHLINK_ERR_CLOSED",
  /** {@link BulkheadFullError}. */
  BULKHEAD_FULL: "MESHLINK_ERR_BULKHEAD_FULL",
  /** {@link DeadlineExceededError}. */
  DEADLINE_EXCEEDED: "MESHLINK_ERR_DEADLINE_EXCEEDED",
  /** An `InvalidEndpointError`: an endpoint's address or port cannot be connected to. */
  INVALID_ENDPOINT: "MESHLINK_ERR_INVALID_ENDPOINT",
  /** A {@link KubernetesError}: one cluster's Kubernetes API could not be used (see its `reason`). */
  KUBERNETES: "MESHLINK_ERR_KUBERNETES",
  /** A {@link TlsIdentityError}: the server's certificate names another identity than the one expected. */
  TLS_IDENTITY: "MESHLINK_ERR_TLS_IDENTITY",
  /** A {@link TlsMaterialError}: a CA bundle, certificate or key cannot be read, parsed or paired. */
  TLS_MATERIAL: "MESHLINK_ERR_TLS_MATERIAL",
  /** An {@link EgressDeniedError}: the egress guard refuses the endpoint's address. */
  EGRESS_DENIED: "MESHLINK_ERR_EGRESS_DENIED",
} as const;

/** One of the {@link ErrorCodes}. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Why one endpoint was not used, or failed, during a call. */
export interface AttemptRecord {
  /** The endpoint's id, `cluster/address:port`. */
  readonly endpoint: string;
  /** A short reason: an error code, `status 503`, `ejected`, … */
  readonly reason: string;
}

/**
 * The base of every meshlink error.
 *
 * @example
 * ```ts
 * try { await mesh.fetch(url) } catch (err) {
 *   if (isMeshError(err, ErrorCodes.NO_HEALTHY_ENDPOINT)) console.log(err.tried)
 * }
 * ```
 */
export class MeshError extends Error {
  /** The stable code of this error. */
  readonly code: ErrorCode;

  /** @internal */
  constructor(message: string, code: ErrorCode = ErrorCodes.MESH, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "MeshError";
    Object.defineProperty(this, kBrand, { value: true });
  }

  /** Brand check, so that `instanceof` works across duplicate installs. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== "object" || value === null || (value as Record<symbol, unknown>)[kBrand] !== true) {
      return false;
    }
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass being checked against.
    const wanted = (this as unknown as Record<symbol, unknown>)[kCode];
    return wanted === undefined || (value as MeshError).code === wanted;
  }
}

function brand(cls: object, code: ErrorCode): void {
  Object.defineProperty(cls, kCode, { value: code });
}

/**
 * A configuration value is invalid. `source` names the option path
 * (`failover[1]`), the environment variable (`MESHLINK_FAILOVER`) or the
 * config file field, and `value` is the offending value.
 *
 * The message shows at most a short excerpt of the value. A value under a
 * key named like a secret (`token`, `password`, `secret`, `key`,
 * `credentials`, …) is redacted, in the message and in `value`: a
 * configuration error must never put a secret in a log.
 */
export class ConfigError extends MeshError {
  /** The option path, environment variable or file field that is wrong. */
  readonly source: string;
  /** The value that was rejected, redacted where a key names a secret. */
  readonly value: unknown;

  /** @internal */
  constructor(source: string, value: unknown, problem: string, options?: { cause?: unknown }) {
    const secret = isSecretSource(source);
    super(`${source}=${secret ? REDACTED : formatValue(value)}: ${problem}`, ErrorCodes.CONFIG, options);
    this.name = "ConfigError";
    this.source = source;
    this.value = secret ? REDACTED : redactValue(value);
  }
}
brand(ConfigError, ErrorCodes.CONFIG);

/** A service name is not in one of the accepted forms. */
export class ServiceNameError extends MeshError {
  /** The rejected name. */
  readonly input: string;

  /** @internal */
  constructor(input: string, problem: string) {
    super(`service name ${formatValue(input)}: ${problem}`, ErrorCodes.SERVICE_NAME);
    this.name = "ServiceNameError";
    this.input = input;
  }
}
brand(ServiceNameError, ErrorCodes.SERVICE_NAME);

/**
 * A discovery backend could not produce endpoints (server down, garbage
 * payload, timeout). The registry keeps the last-known-good set when this
 * happens; the error is exposed through `describe()`.
 */
export class DiscoveryError extends MeshError {
  /** The backend that failed, e.g. `dns` or `static`. */
  readonly backend: string;
  /** The service being resolved. */
  readonly service: string;

  /** @internal */
  constructor(backend: string, service: string, message: string, options?: { cause?: unknown }) {
    super(`${backend} discovery of ${service}: ${message}`, ErrorCodes.DISCOVERY, options);
    this.name = "DiscoveryError";
    this.backend = backend;
    this.service = service;
  }
}
brand(DiscoveryError, ErrorCodes.DISCOVERY);

/**
 * No discovery backend lists an endpoint for the service: none knows it,
 * or its endpoint list is empty (a static list `[]`, a DNS name with no
 * address, a Kubernetes service with no pods) — backends report both the
 * same way.
 */
export class ServiceNotFoundError extends MeshError {
  /** The service that was asked for. */
  readonly service: string;

  /** @internal */
  constructor(service: string, backends: readonly string[]) {
    super(
      backends.length === 0
        ? `no endpoints for ${service}: no discovery backend is configured (give createMesh a \`discovery\` list, or a config file through MESHLINK_CONFIG)`
        : `no endpoints for ${service}: no discovery backend lists one (asked: ${backends.join(", ")}); the service is unknown to them or its endpoint list is empty`,
      ErrorCodes.SERVICE_NOT_FOUND,
    );
    this.name = "ServiceNotFoundError";
    this.service = service;
  }
}
brand(ServiceNotFoundError, ErrorCodes.SERVICE_NOT_FOUND);

/**
 * The router has no endpoint it may use for the service: every endpoint is
 * ejected, not ready, or was already tried by this call. `tried` lists each
 * endpoint this call attempted and why it failed.
 */
export class NoHealthyEndpointError extends MeshError {
  /** The service that was called. */
  readonly service: string;
  /** The endpoints this call tried, in order, and why each failed. */
  readonly tried: readonly AttemptRecord[];
  /** How many endpoints the service has in all, healthy or not. */
  readonly known: number;

  /** @internal */
  constructor(
    service: string,
    known: number,
    tried: readonly AttemptRecord[],
    options?: { cause?: unknown },
  ) {
    super(
      `no healthy endpoint for ${service} (${known} known${tried.length ? `; tried ${formatTried(tried)}` : ""})`,
      ErrorCodes.NO_HEALTHY_ENDPOINT,
      options,
    );
    this.name = "NoHealthyEndpointError";
    this.service = service;
    this.known = known;
    this.tried = tried;
  }
}
brand(NoHealthyEndpointError, ErrorCodes.NO_HEALTHY_ENDPOINT);

/**
 * Why a failed request was not sent again, when the request itself ruled a
 * retry out: `not-idempotent` (a POST or PATCH whose bytes had reached the
 * endpoint: it may have acted on them) or `marked-not-retryable` (the
 * caller said so).
 */
export type NotRetriedReason = "not-idempotent" | "marked-not-retryable";

/**
 * Every attempt of a call failed before a response arrived (connection
 * refused, reset, timeout) and no retry was left or allowed. `cause` is the
 * last attempt's error. When the request itself ruled a retry out (a POST
 * whose endpoint died after it was sent), `notRetried` says why and the
 * message says how to mark the request retryable.
 */
export class RequestFailedError extends MeshError {
  /** The service that was called. */
  readonly service: string;
  /** The endpoints this call tried, in order, and why each failed. */
  readonly tried: readonly AttemptRecord[];
  /** Why the request was not sent again, when the request itself ruled it out; else undefined. */
  readonly notRetried: NotRetriedReason | undefined;
  /** The request's method, when `notRetried` is set. */
  readonly method: string | undefined;

  /** @internal */
  constructor(
    service: string,
    tried: readonly AttemptRecord[],
    options?: { cause?: unknown; notRetried?: NotRetriedReason | undefined; method?: string | undefined },
  ) {
    const notRetried = options?.notRetried;
    const method = options?.method;
    super(
      `request to ${service} failed: ${formatTried(tried)}${notRetried === undefined ? "" : notRetriedText(notRetried, method ?? "request", tried)}`,
      ErrorCodes.REQUEST_FAILED,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "RequestFailedError";
    this.service = service;
    this.tried = tried;
    this.notRetried = notRetried;
    this.method = notRetried === undefined ? undefined : method;
  }
}

/** The part of a {@link RequestFailedError}'s message that says why it was not retried and what to do. */
function notRetriedText(reason: NotRetriedReason, method: string, tried: readonly AttemptRecord[]): string {
  const last = tried[tried.length - 1]?.reason ?? "";
  const what = /TIMEOUT|ETIMEDOUT/.test(last)
    ? `the endpoint did not answer the ${method} in time`
    : `the connection to the endpoint broke after the ${method} was sent`;
  if (reason === "marked-not-retryable") {
    return ` — ${what}; it was not sent again because it is marked not retryable`;
  }
  return (
    ` — ${what}; it was not sent again because ${method} is not idempotent (the endpoint may have acted on it).` +
    " If sending it twice is safe, mark it retryable: the option `meshlink: { retryable: true }`" +
    " (undici dispatch options, or mesh.fetch's init) or the header `x-meshlink-retryable: true`"
  );
}
brand(RequestFailedError, ErrorCodes.REQUEST_FAILED);

/** The mesh was closed; no new call or lookup is accepted. */
export class MeshClosedError extends MeshError {
  /** @internal */
  constructor() {
    super("the mesh is closed", ErrorCodes.CLOSED);
    this.name = "MeshClosedError";
  }
}
brand(MeshClosedError, ErrorCodes.CLOSED);

/**
 * A bulkhead is full: the service already has `limit` calls in flight
 * (`scope` `service`), or every endpoint the router may use has `limit`
 * requests in flight (`scope` `endpoint`). The call was not sent.
 */
export class BulkheadFullError extends MeshError {
  /** The service that was called. */
  readonly service: string;
  /** Which limit: `service` (`maxRequestsPerService`) or `endpoint` (`maxRequestsPerEndpoint`). */
  readonly scope: "service" | "endpoint";
  /** The limit in force. */
  readonly limit: number;

  /** @internal */
  constructor(service: string, scope: "service" | "endpoint", limit: number) {
    super(
      scope === "service"
        ? `bulkhead full: ${service} already has ${limit} calls in flight`
        : `bulkhead full: every usable endpoint of ${service} has ${limit} requests in flight`,
      ErrorCodes.BULKHEAD_FULL,
    );
    this.name = "BulkheadFullError";
    this.service = service;
    this.scope = scope;
    this.limit = limit;
  }
}
brand(BulkheadFullError, ErrorCodes.BULKHEAD_FULL);

/**
 * The call's deadline passed (the `deadline` option or a caller-set
 * `x-meshlink-timeout-ms`) before its response ended; every attempt still in
 * flight was cancelled.
 */
export class DeadlineExceededError extends MeshError {
  /** The service that was called. */
  readonly service: string;
  /** The deadline, in ms from the call's start. */
  readonly timeoutMs: number;
  /** The endpoints this call tried, in order, and why each failed. */
  readonly tried: readonly AttemptRecord[];

  /** @internal */
  constructor(service: string, timeoutMs: number, tried: readonly AttemptRecord[]) {
    super(
      `deadline of ${timeoutMs} ms exceeded calling ${service}${tried.length ? `; tried ${formatTried(tried)}` : ""}`,
      ErrorCodes.DEADLINE_EXCEEDED,
    );
    this.name = "DeadlineExceededError";
    this.service = service;
    this.timeoutMs = timeoutMs;
    this.tried = tried;
  }
}
brand(DeadlineExceededError, ErrorCodes.DEADLINE_EXCEEDED);

/** The error class of each {@link ErrorCode}: what {@link isMeshError} narrows to. */
export interface MeshErrorByCode {
  /** Any meshlink error. */
  [ErrorCodes.MESH]: MeshError;
  /** A bad option, variable or file field. */
  [ErrorCodes.CONFIG]: ConfigError;
  /** A malformed service name. */
  [ErrorCodes.SERVICE_NAME]: ServiceNameError;
  /** A backend failed. */
  [ErrorCodes.DISCOVERY]: DiscoveryError;
  /** No backend knows the service. */
  [ErrorCodes.SERVICE_NOT_FOUND]: ServiceNotFoundError;
  /** No endpoint may be used. */
  [ErrorCodes.NO_HEALTHY_ENDPOINT]: NoHealthyEndpointError;
  /** Every attempt failed. */
  [ErrorCodes.REQUEST_FAILED]: RequestFailedError;
  /** The mesh is closed. */
  [ErrorCodes.CLOSED]: MeshClosedError;
  /** A bulkhead is full. */
  [ErrorCodes.BULKHEAD_FULL]: BulkheadFullError;
  /** The deadline passed. */
  [ErrorCodes.DEADLINE_EXCEEDED]: DeadlineExceededError;
  /** A bad endpoint address or port. */
  [ErrorCodes.INVALID_ENDPOINT]: InvalidEndpointError;
  /** A Kubernetes API server could not be used. */
  [ErrorCodes.KUBERNETES]: KubernetesError;
  /** The server presented another identity. */
  [ErrorCodes.TLS_IDENTITY]: TlsIdentityError;
  /** TLS material cannot be read, parsed or paired. */
  [ErrorCodes.TLS_MATERIAL]: TlsMaterialError;
  /** The egress guard refused the address. */
  [ErrorCodes.EGRESS_DENIED]: EgressDeniedError;
}

/**
 * The server presented a certificate that chains to a trusted CA but names
 * another identity than the one expected for the endpoint: a SPIFFE ID
 * (URI SAN), or a DNS name in `dns` match mode. The connection is closed
 * before any request byte is written. It counts against the endpoint's
 * health and is never retried on the same endpoint.
 */
export class TlsIdentityError extends MeshError {
  /** The identity the endpoint was expected to present. */
  readonly expected: string;
  /** The identities the certificate presents (its URI SANs, or DNS SANs in `dns` mode); empty when none. */
  readonly presented: readonly string[];

  /** @internal */
  constructor(expected: string, presented: readonly string[]) {
    super(
      `server identity mismatch: expected ${expected}, presented ${presented.length > 0 ? presented.join(", ") : "none"}`,
      ErrorCodes.TLS_IDENTITY,
    );
    this.name = "TlsIdentityError";
    this.expected = expected;
    this.presented = presented;
  }
}
brand(TlsIdentityError, ErrorCodes.TLS_IDENTITY);

/**
 * TLS material (a CA bundle, a certificate chain or a private key) cannot be
 * read, is not valid PEM, or the key does not match the certificate. At
 * start-up it is the `cause` of a {@link ConfigError}; during rotation the
 * previous material is kept and this error is shown by `describe()`. The
 * message never contains key material.
 */
export class TlsMaterialError extends MeshError {
  /** Where the material came from: an option (`tls.cert`), a variable (`MESHLINK_TLS_KEY`) or a path. */
  readonly source: string;

  /** @internal */
  constructor(source: string, problem: string, options?: { cause?: unknown }) {
    super(`${source}: ${problem}`, ErrorCodes.TLS_MATERIAL, options);
    this.name = "TlsMaterialError";
    this.source = source;
  }
}
brand(TlsMaterialError, ErrorCodes.TLS_MATERIAL);

/**
 * The egress guard refused to connect to an address: it is inside a denied
 * range (by default link-local, where cloud metadata services live, and the
 * unspecified addresses), or outside the allow list. Nothing was sent.
 */
export class EgressDeniedError extends MeshError {
  /** The refused address, as discovery (or DNS) gave it. */
  readonly address: string;
  /** The rule that refused it: `deny 169.254.0.0/16`, or `not in allow list`. */
  readonly rule: string;

  /** @internal */
  constructor(address: string, rule: string) {
    super(`egress to ${address} denied by rule: ${rule}`, ErrorCodes.EGRESS_DENIED);
    this.name = "EgressDeniedError";
    this.address = address;
    this.rule = rule;
  }
}
brand(EgressDeniedError, ErrorCodes.EGRESS_DENIED);

/**
 * True when `err` is a meshlink error, of the given code when one is given;
 * with a code, it narrows `err` to that code's class (its fields included).
 *
 * @example
 * ```ts
 * if (isMeshError(err, ErrorCodes.NO_HEALTHY_ENDPOINT)) console.error(err.tried)
 * ```
 */
export function isMeshError<C extends ErrorCode>(err: unknown, code: C): err is MeshErrorByCode[C];
/** True when `err` is a meshlink error. */
export function isMeshError(err: unknown): err is MeshError;
export function isMeshError(err: unknown, code?: ErrorCode): err is MeshError {
  return err instanceof MeshError && (code === undefined || err.code === code);
}

function formatTried(tried: readonly AttemptRecord[]): string {
  return tried.map((t) => `${t.endpoint} (${t.reason})`).join(", ");
}

/**
 * An endpoint's address or port cannot be connected to: the address is no
 * IP address and no host name (`999.1.1.1`, `10.0.0.1:8080`, a path, a
 * URL), or the port is outside 1–65535. Thrown by `createEndpoint`, so that
 * a bad address fails where it is made, not at call time.
 */
export class InvalidEndpointError extends MeshError {
  /** The field that is wrong. */
  readonly field: "address" | "port";
  /** The rejected value. */
  readonly value: unknown;

  /** @internal */
  constructor(field: "address" | "port", value: unknown, problem: string) {
    super(`endpoint ${field} ${formatValue(value)}: ${problem}`, ErrorCodes.INVALID_ENDPOINT);
    this.name = "InvalidEndpointError";
    this.field = field;
    this.value = value;
  }
}
brand(InvalidEndpointError, ErrorCodes.INVALID_ENDPOINT);
/**
 * Why a Kubernetes API server could not be used, as {@link KubernetesError.reason}:
 * - `unauthorized` (401), `forbidden` (403), `not-found` (404), `expired` (410,
 *   the resource version was compacted), `throttled` (429), `server-error` (5xx),
 *   `http-error` (any other status);
 * - `bad-payload` (not JSON, or not the documented shape), `wrong-kind` (an
 *   object of another kind than asked for);
 * - `network` (connect, TLS, reset), `timeout` (no answer in time), `watch-idle`
 *   (a watch that stopped sending), `stream-cut` (a watch cut in the middle of an event);
 * - `credentials` (a token file, client certificate or exec plugin failed);
 * - `port` (the service has no port matching the one asked for).
 */
export type KubernetesErrorReason =
  | "unauthorized"
  | "forbidden"
  | "not-found"
  | "expired"
  | "throttled"
  | "server-error"
  | "http-error"
  | "bad-payload"
  | "wrong-kind"
  | "network"
  | "timeout"
  | "watch-idle"
  | "stream-cut"
  | "credentials"
  | "port";

/**
 * One cluster's Kubernetes API could not be used: a status, a malformed
 * answer, a dead connection, failing credentials. Carried as the `cause` of
 * a {@link DiscoveryError} and shown per cluster in `describe()`; the cluster's
 * last good endpoints are kept meanwhile.
 */
export class KubernetesError extends MeshError {
  /** The cluster whose API server failed. */
  readonly cluster: string;
  /** What went wrong, as a stable token. */
  readonly reason: KubernetesErrorReason;
  /** The HTTP status, when the server answered with one. */
  readonly status: number | undefined;

  /** @internal */
  constructor(
    cluster: string,
    reason: KubernetesErrorReason,
    message: string,
    options?: { cause?: unknown; status?: number | undefined },
  ) {
    super(`cluster ${cluster}: ${reason}: ${message}`, ErrorCodes.KUBERNETES, options);
    this.name = "KubernetesError";
    this.cluster = cluster;
    this.reason = reason;
    this.status = options?.status;
  }
}
brand(KubernetesError, ErrorCodes.KUBERNETES);

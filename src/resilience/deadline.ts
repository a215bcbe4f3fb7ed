/**
 * Deadline propagation. Each attempt tells the server how long the caller
 * will wait for it, as Envoy's `x-envoy-expected-rq-timeout-ms` does: a
 * relative time in ms, so that clock skew between clusters does not matter.
 * A server reads it back with {@link readDeadline}, and passes what is left
 * on to its own calls by setting the same header on them: meshlink takes a
 * caller-set header as the call's deadline.
 *
 * gRPC carries the same fact as `grpc-timeout` (`<digits><unit>`, unit one
 * of `H M S m u n`); {@link readDeadline} understands it too, and
 * {@link formatGrpcTimeout} writes it, for the gRPC transport.
 *
 * @module
 */

/** The HTTP header that carries the time the caller waits for this attempt, in ms. */
export const TIMEOUT_HEADER = "x-meshlink-timeout-ms";

/** The gRPC metadata key for deadlines. */
export const GRPC_TIMEOUT_HEADER = "grpc-timeout";

/** A deadline read from a request: when it ends and how long is left. */
export interface Deadline {
  /** When the caller stops waiting, on the clock given to {@link readDeadline} (ms). */
  readonly at: number;
  /** How long was left when the request arrived, in ms. */
  readonly timeoutMs: number;
  /** Where it came from. */
  readonly source: typeof TIMEOUT_HEADER | typeof GRPC_TIMEOUT_HEADER;
}

const GRPC_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** Parses a `grpc-timeout` value (`100m`, `5S`, …) into ms; undefined when malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (m === null) return undefined;
  return Number(m[1]) * GRPC_UNITS[m[2]!]!;
}

/** Formats ms as a `grpc-timeout` value (at most 8 digits, the coarsest unit that keeps precision). */
export function formatGrpcTimeout(ms: number): string {
  const v = Math.max(0, ms);
  if (v < 1 && v * 1e6 < 1e8) return `${Math.ceil(v * 1e6)}n`;
  if (v < 1e8) return `${Math.ceil(v)}m`;
  if (v / 1000 < 1e8) return `${Math.ceil(v / 1000)}S`;
  return `${Math.min(99_999_999, Math.ceil(v / 60_000))}M`;
}

/** Parses an `x-meshlink-timeout-ms` value; undefined unless a non-negative finite number. */
export function parseTimeoutHeader(value: string): number | undefined {
  const s = value.trim();
  if (s === "" || !/^\d+(\.\d+)?$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** Request headers in any of the shapes servers hand out: Node's `req.headers`, a WHATWG `Headers`, a plain map. */
export type HeaderSource =
  | Record<string, string | string[] | undefined>
  | {
      /** Reads one header, as WHATWG `Headers` does. */
      get(name: string): string | null | undefined;
    };

function header(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null | undefined }).get(name) ?? undefined;
  }
  const v = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Reads the caller's deadline from a request's headers (`x-meshlink-timeout-ms`,
 * else `grpc-timeout`): Node's `req.headers`, a WHATWG `Headers`, or gRPC
 * metadata's `getMap()`. Returns undefined when the request carries none.
 *
 * @example
 * ```ts
 * http.createServer((req, res) => {
 *   const deadline = readDeadline(req.headers);
 *   // pass what is left on to a downstream call:
 *   const left = deadline ? Math.max(0, deadline.at - performance.now()) : undefined;
 *   await mesh.fetch(url, { headers: left === undefined ? {} : { "x-meshlink-timeout-ms": String(Math.floor(left)) } });
 * });
 * ```
 */
export function readDeadline(headers: HeaderSource, now: number = performance.now()): Deadline | undefined {
  const mine = header(headers, TIMEOUT_HEADER);
  if (mine !== undefined) {
    const ms = parseTimeoutHeader(mine);
    if (ms !== undefined) return { at: now + ms, timeoutMs: ms, source: TIMEOUT_HEADER };
  }
  const grpc = header(headers, GRPC_TIMEOUT_HEADER);
  if (grpc !== undefined) {
    const ms = parseGrpcTimeout(grpc);
    if (ms !== undefined) return { at: now + ms, timeoutMs: ms, source: GRPC_TIMEOUT_HEADER };
  }
  return undefined;
}

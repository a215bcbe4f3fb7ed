/**
 * Request and response header utilities of the HTTP transport: adding
 * meshlink's headers to whichever shape undici was given (object, flat
 * list, pairs, iterable) at the least cost, finding the `Host` header and
 * meshlink's per-request control headers in one pass, and reading one
 * response header from raw buffers. Also the same per-request controls
 * given in code rather than as headers (the `meshlink` option).
 *
 * @module
 */

import type { Dispatcher } from "undici";
import { ConfigError } from "../../errors.js";
import { TIMEOUT_HEADER } from "../../resilience/deadline.js";
import type { HeaderList } from "../../telemetry/tracing.js";

/** The request header that marks a non-idempotent request as safe to retry (`true`) or an idempotent one as not (`false`). */
export const RETRYABLE_HEADER = "x-meshlink-retryable";
/** The request header that turns hedging on (`true`, `p95`, or a delay in ms) or off (`false`) for one call. */
export const HEDGE_HEADER = "x-meshlink-hedge";

/** Request headers in any shape undici accepts. */
export type Headers = Dispatcher.DispatchOptions["headers"];
/** Response headers in the caller's API: raw `[name, value, …]` (legacy) or an object (new). */
export type ResponseHeaders = Buffer[] | string[] | Record<string, string | string[] | undefined> | null;

/**
 * Adds headers to undici's request headers in whichever shape they came.
 * Without headers of the caller's, `extra` itself is the answer (a route's
 * shared Host header list, say): the result is read, never added to.
 */
export function withHeaders(headers: Headers, extra: HeaderList): Headers {
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
  // into a new dictionary costs three times a flat list (docs/performance.md, F2).
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
export function toFlat(headers: Headers): string[] {
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

export const NO_HEADERS: string[] = [];
export const H_HOST = 1;
export const H_RETRYABLE = 2;
export const H_HEDGE = 4;
export const H_TIMEOUT = 8;
export const H_CONTROL = H_RETRYABLE | H_HEDGE | H_TIMEOUT;

/** The control header values the last {@link scanHeaders} found (module scratch, so a scan allocates nothing). */
export const found = { retryable: "", hedge: "", timeout: "" };

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
export function scanHeaders(headers: Headers): number {
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
export function stripControls(headers: Headers): string[] {
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
export function headerValue(headers: ResponseHeaders, name: string): string | undefined {
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

/** Parses a boolean control header value; `fallback` when it is neither. */
export function parseFlag(value: string, fallback: boolean): boolean {
  const v = value.trim().toLowerCase();
  if (v === "true" || v === "1" || v === "yes") return true;
  if (v === "false" || v === "0" || v === "no") return false;
  return fallback;
}

/** Parses an `x-meshlink-hedge` value: off, `p95`, a delay in ms, else `fallback`. */
export function parseHedge(value: string, fallback: number | "p95"): number | "p95" | undefined {
  const v = value.trim().toLowerCase();
  if (v === "false" || v === "0" || v === "no" || v === "off") return undefined;
  if (v === "p95") return "p95";
  if (/^\d+$/.test(v)) return Number(v);
  return fallback;
}

// Per-request controls given in code.

/**
 * Per-call controls given in code: the `meshlink` field of undici dispatch
 * options (`undici.request`, `stream`, `pipeline`, a `dispatch` of your own
 * through `mesh.dispatcher`) or of `mesh.fetch`'s init. They do what the
 * `x-meshlink-retryable`, `x-meshlink-hedge` and `x-meshlink-timeout-ms`
 * headers do, and win over them; unlike headers, nothing a caller's caller
 * sends can set them (see the `headerControls` policy option).
 *
 * @example
 * ```ts
 * await mesh.fetch(url, { method: "POST", body, meshlink: { retryable: true, deadline: 2_000 } });
 * // undici: spread it in, as its option types do not list `meshlink`
 * await request(url, { dispatcher: mesh.dispatcher, method: "POST", body, ...{ meshlink: { retryable: true } } });
 * ```
 */
export interface MeshCallOptions {
  /**
   * `true`: the request may be sent again after its bytes reached an
   * endpoint (a POST known to be safe to repeat); `false`: never, even when
   * idempotent. Default: idempotent methods only (GET, HEAD, OPTIONS, PUT,
   * DELETE, TRACE).
   */
  retryable?: boolean | undefined;
  /**
   * Hedging for this call: `true` (the policy's `hedging.delay`, default
   * `p95`), a delay in ms, `"p95"`, or `false` (off, even for a service
   * hedged by default). Only retryable calls hedge.
   */
  hedge?: boolean | number | "p95" | undefined;
  /**
   * The call's deadline, in ms from dispatch, across attempts and until the
   * response ends; replaces the policy's `deadline` for this call
   * (`Infinity`: none).
   */
  deadline?: number | undefined;
}

/** undici dispatch options with meshlink's per-call controls. */
export interface MeshDispatchOptions extends Dispatcher.DispatchOptions {
  /** Per-call controls. */
  meshlink?: MeshCallOptions | undefined;
}

/** `mesh.fetch`'s init: fetch's `RequestInit` with meshlink's per-call controls. */
export interface MeshFetchInit extends RequestInit {
  /** Per-call controls. */
  meshlink?: MeshCallOptions | undefined;
}

/** @internal A call's controls as read from its `meshlink` option. */
export interface CallControls {
  /** undefined: not given. */
  readonly retryable: boolean | undefined;
  /** undefined: not given; false: off; else the delay. */
  readonly hedge: number | "p95" | false | undefined;
  /** undefined: not given; ms (`Infinity`: none). */
  readonly deadline: number | undefined;
}

const CONTROL_KEYS = ["retryable", "hedge", "deadline"];

/**
 * @internal Reads a `meshlink` option (rare path: only when a caller gave
 * one). A bad value is a {@link ConfigError} naming the field
 * (`meshlink.deadline`) and the value; the call then fails with it.
 */
export function readCallOptions(value: unknown, hedgeDelay: number | "p95"): CallControls | ConfigError {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return new ConfigError(
      "meshlink",
      value,
      "per-call options: an object with retryable, hedge or deadline",
    );
  }
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!CONTROL_KEYS.includes(key)) {
      return new ConfigError(
        `meshlink.${key}`,
        o[key],
        `unknown per-call option; known: ${CONTROL_KEYS.join(", ")}`,
      );
    }
  }
  const { retryable, hedge, deadline } = o;
  if (retryable !== undefined && typeof retryable !== "boolean") {
    return new ConfigError("meshlink.retryable", retryable, "true or false");
  }
  let h: number | "p95" | false | undefined;
  if (hedge === undefined) h = undefined;
  else if (hedge === true) h = hedgeDelay;
  else if (hedge === false) h = false;
  else if (hedge === "p95") h = "p95";
  else if (typeof hedge === "number" && Number.isInteger(hedge) && hedge >= 1 && hedge <= 3_600_000)
    h = hedge;
  else return new ConfigError("meshlink.hedge", hedge, 'true, false, "p95" or a delay in ms (1 to 3600000)');
  if (
    deadline !== undefined &&
    (typeof deadline !== "number" || !(deadline > 0) || (deadline > 86_400_000 && deadline !== Infinity))
  ) {
    return new ConfigError(
      "meshlink.deadline",
      deadline,
      "a deadline in ms: more than 0, at most 86400000, or Infinity",
    );
  }
  return { retryable, hedge: h, deadline: deadline as number | undefined };
}

/**
 * @internal A dispatcher that gives every request the same per-call
 * controls, for `mesh.fetch`: fetch hands its dispatcher no option of its
 * own, so a call's `meshlink` init field rides on this per-call wrapper
 * (made only when a call has one).
 */
export function withCallOptions(
  dispatcher: Dispatcher,
  controls: MeshCallOptions,
): Pick<Dispatcher, "dispatch"> {
  return {
    dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
      (opts as MeshDispatchOptions).meshlink = controls;
      return dispatcher.dispatch(opts, handler);
    },
  };
}

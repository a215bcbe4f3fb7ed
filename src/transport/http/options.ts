/**
 * What a mesh call reads of its caller's dispatch: the options each attempt
 * hands the agent (copied once, in the cheapest way for the caller's shape)
 * and the checks undici would make of a legacy handler.
 *
 * @module
 */

import type { Dispatcher } from "undici";
import type { Headers } from "./headers.js";

type Handler = Dispatcher.DispatchHandler;

/**
 * The dispatch options of an attempt: every field of the caller's options,
 * in one shape that starts with the fields undici's `Request` reads
 * (lib/core/request.js); `origin` and `headers` are set per attempt.
 * `Object.assign` onto this class is the cheapest copy of an arbitrary
 * caller's options on Node 20 (docs/performance.md, F2 and "The
 * fetch path, second pass"): reading the fields one by one made
 * `undici.request` calls about 4 µs dearer at c=16 (its options object is a
 * spread with fields added, which V8 keeps as a dictionary), and a spread of
 * `fetch`'s options with fields added takes V8's slow path (about 1.5 µs).
 * `fetch`'s own options, a literal of known shape, are read field by field
 * ({@link AttemptOptions.of}) when the agent reads no other field.
 */
export class AttemptOptions {
  /**
   * The known fields of `o`, read by name: four times cheaper than
   * `Object.assign` on the object literal `fetch` hands its dispatcher
   * (V8 reads a missing field of a known shape for free), and only for it:
   * on `undici.request`'s options, a dictionary, it is dearer.
   */
  static of(o: Dispatcher.DispatchOptions): AttemptOptions {
    const x = new AttemptOptions();
    const f = o as unknown as AttemptOptions;
    x.path = f.path;
    x.method = f.method;
    x.body = f.body;
    x.headers = f.headers;
    x.query = f.query;
    x.idempotent = f.idempotent;
    x.blocking = f.blocking;
    x.upgrade = f.upgrade;
    x.headersTimeout = f.headersTimeout;
    x.bodyTimeout = f.bodyTimeout;
    x.reset = f.reset;
    x.expectContinue = f.expectContinue;
    x.servername = f.servername;
    x.throwOnError = f.throwOnError;
    x.maxRedirections = f.maxRedirections;
    x.typeOfService = f.typeOfService;
    return x;
  }

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

/** What undici's `assertRequestHandler` would reject a legacy handler for (`onError` is checked before), or undefined. */
export function invalidLegacyHandler(handler: Handler, upgrade: unknown, method: string): string | undefined {
  if (typeof handler.onConnect !== "function") return "invalid onConnect method";
  if (upgrade || method === "CONNECT") {
    return typeof handler.onUpgrade === "function" ? undefined : "invalid onUpgrade method";
  }
  if (typeof handler.onHeaders !== "function") return "invalid onHeaders method";
  if (typeof handler.onData !== "function") return "invalid onData method";
  if (typeof handler.onComplete !== "function") return "invalid onComplete method";
  return undefined;
}

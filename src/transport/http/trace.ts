/**
 * The HTTP side of a call's telemetry: the call span with the semantic
 * conventions' `http.*`, `url.*` and `server.*` attributes, and what the
 * call observer needs of HTTP for attempt spans and metrics (span names,
 * the status attribute, which statuses are errors). The rest — whether an
 * SDK is registered, the span itself, trace-context injection — is
 * `telemetry/tracing.ts`'s, shared with gRPC (see `transport/grpc/trace.ts`).
 *
 * @module
 */

import type { Context, Span } from "@opentelemetry/api";
import type { ProtocolAttributes } from "../../telemetry/call.js";
import { startCallSpan } from "../../telemetry/tracing.js";
import type { Route } from "./routes.js";

/** Starts the client span of a call to `url` (made only when a tracer is registered). */
export function startHttpCallSpan(
  method: string,
  parent: Context,
  route: Route,
  url: string,
  path: string,
): Span {
  return startCallSpan(method, parent, {
    "http.request.method": method,
    "server.address": route.name.host,
    "server.port": route.name.port,
    "url.full": url,
    "url.path": path,
    // A literal key: computed keys put the object on V8's slow path.
    "meshlink.service": route.name.key,
  });
}

/** HTTP's names for the call observer's attempt spans and metrics: `GET attempt`, with the call's attributes. */
export function httpProtocol(method: string, url: string, route: Route): ProtocolAttributes {
  return {
    spanName: `${method} attempt`,
    attributes: {
      "http.request.method": method,
      "url.full": url,
      "server.address": route.name.host,
      "server.port": route.name.port,
    },
    resendCount: "http.request.resend_count",
    statusAttribute: "http.response.status_code",
    isErrorStatus: httpErrorStatus,
  };
}

/**
 * What a call that only records metrics (no span of its own) needs of the
 * protocol: the status rules. Shared, so that such a call builds no
 * attribute object it would never read.
 */
export const HTTP_STATUS_ONLY: ProtocolAttributes = {
  spanName: "",
  attributes: {},
  resendCount: undefined,
  statusAttribute: "http.response.status_code",
  isErrorStatus: httpErrorStatus,
};

/** OpenTelemetry's rule for HTTP client spans: a status of 400 or more is an error. */
function httpErrorStatus(status: number): boolean {
  return status >= 400;
}

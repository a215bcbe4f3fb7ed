/**
 * Trace context in gRPC metadata (written as for HTTP headers: one
 * propagator serves both), and the `rpc.*` attributes of a call's client
 * span. The rest —
 * whether an SDK is registered, the span itself, the W3C fallback when the
 * application registered no propagator — is `telemetry/tracing.ts`'s, shared
 * with HTTP.
 *
 * @module
 */

import type { Attributes, Context } from "@opentelemetry/api";
import type { ServiceName } from "../../discovery/names.js";
import type { ProtocolAttributes } from "../../telemetry/call.js";
import { type HeaderList, injectHeaders } from "../../telemetry/tracing.js";
import type { GrpcMetadata as Metadata } from "./types.js";

/**
 * Injects the trace context of `ctx` into metadata as {@link injectHeaders}
 * writes it for HTTP: through the registered propagator, or the W3C
 * `traceparent` (and `tracestate`) when none is registered; nothing (and
 * no lookups) while no OpenTelemetry global is registered.
 */
export function injectMetadata(ctx: Context, metadata: Metadata): void {
  const fields: HeaderList = [];
  injectHeaders(ctx, fields);
  setFields(metadata, fields);
}

/**
 * The semantic-convention attributes of a gRPC client call from its method
 * path (`/pkg.Service/Method`): `rpc.system`, `rpc.service`, `rpc.method`.
 */
export function rpcAttributes(path: string): Attributes {
  const slash = path.lastIndexOf("/");
  return {
    "rpc.system": "grpc",
    "rpc.service": path.slice(path.startsWith("/") ? 1 : 0, Math.max(slash, 0)),
    "rpc.method": path.slice(slash + 1),
  };
}

/**
 * gRPC's names for the call observer's attempt spans and metrics: each
 * attempt is a client span (`pkg.Service/Method attempt`) with the `rpc.*`
 * attributes; any status but OK is an error.
 */
export function rpcProtocol(path: string, service: ServiceName): ProtocolAttributes {
  const attributes = rpcAttributes(path);
  attributes["server.address"] = service.host;
  attributes["server.port"] = service.port ?? service.portName ?? "";
  return {
    spanName: `${rpcSpanName(path)} attempt`,
    attributes,
    resendCount: undefined,
    statusAttribute: "rpc.grpc.status_code",
    isErrorStatus: grpcErrorStatus,
  };
}

function grpcErrorStatus(code: number): boolean {
  return code !== 0;
}

/** Writes an attempt's trace context into its metadata, replacing the call's. */
export function setFields(metadata: Metadata, fields: HeaderList): void {
  for (let i = 0; i < fields.length; i += 2) metadata.set(fields[i]!, fields[i + 1]!);
}

/** The span name of a gRPC call (`pkg.Service/Method`), as the semantic conventions have it. */
export function rpcSpanName(path: string): string {
  return path.startsWith("/") ? path.slice(1) : path;
}

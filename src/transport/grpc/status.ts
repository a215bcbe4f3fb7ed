/**
 * gRPC statuses, both ways: what a status an attempt ended with means for
 * the call engine and health (DESIGN.md: UNAVAILABLE and a transport-side
 * CANCELLED are endpoint failures and retryable; a caller's own cancel and
 * application statuses are neither), and the status a caller gets for a
 * meshlink error, with the error's code in the `x-meshlink-error` trailer.
 *
 * The numbers are the wire codes of the gRPC protocol, the same in every
 * implementation, so they are written here rather than read from grpc-js.
 *
 * @module
 */

import { ErrorCodes, isMeshError, RequestFailedError } from "../../errors.js";
import type { GrpcMetadata as Metadata, GrpcStatusObject as StatusObject } from "./types.js";

/** gRPC status codes (the protocol's wire values). */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

const NAMES: readonly string[] = Object.keys(Status);

/** The trailer that carries a meshlink error's code to the caller (`MESHLINK_ERR_…`). */
export const ERROR_METADATA = "x-meshlink-error";

/** A gRPC status an attempt ended with, as an error the call engine can record (`code` is `GRPC_UNAVAILABLE`, …). */
export class GrpcStatusError extends Error {
  /** `GRPC_<status name>`: the reason recorded for the endpoint. */
  readonly code: string;
  /** The status as grpc-js reported it. */
  readonly status: StatusObject;

  constructor(status: StatusObject) {
    super(status.details);
    this.name = "GrpcStatusError";
    this.code = `GRPC_${NAMES[status.code] ?? status.code}`;
    this.status = status;
  }
}

/** The caller cancelled its call: the status it asked for is what it gets. */
export class CallerCancelledError extends Error {
  /** The status code the caller cancelled with (CANCELLED from grpc-js's `call.cancel()`). */
  readonly statusCode: number;

  constructor(statusCode: number, details: string) {
    super(details);
    this.name = "CallerCancelledError";
    this.statusCode = statusCode;
  }
}

/** The endpoint answered: OK, or an application status. Neither a failure nor retried. */
export const ANSWER = 0;
/** UNAVAILABLE, or a CANCELLED nobody on this side asked for: the endpoint (or the way to it) failed. */
export const ENDPOINT_FAILURE = 1;
/** DEADLINE_EXCEEDED: the call's own deadline (grpc-js's timer, or the server's); not the endpoint's fault. */
export const DEADLINE = 2;

/**
 * How the engine reads the status an attempt ended with (meshlink's own
 * cancels never get here): {@link ANSWER}, {@link ENDPOINT_FAILURE} or {@link DEADLINE}.
 */
export function statusKind(code: number): number {
  if (code === Status.UNAVAILABLE || code === Status.CANCELLED) return ENDPOINT_FAILURE;
  if (code === Status.DEADLINE_EXCEEDED) return DEADLINE;
  return ANSWER;
}

/** The status code of each meshlink error a call can end with. */
const CODE_OF: Readonly<Record<string, number>> = {
  [ErrorCodes.DEADLINE_EXCEEDED]: Status.DEADLINE_EXCEEDED,
  [ErrorCodes.BULKHEAD_FULL]: Status.RESOURCE_EXHAUSTED,
  [ErrorCodes.NO_HEALTHY_ENDPOINT]: Status.UNAVAILABLE,
  [ErrorCodes.SERVICE_NOT_FOUND]: Status.UNAVAILABLE,
  [ErrorCodes.DISCOVERY]: Status.UNAVAILABLE,
  [ErrorCodes.REQUEST_FAILED]: Status.UNAVAILABLE,
  [ErrorCodes.CLOSED]: Status.UNAVAILABLE,
};

/** The status code a call ends with for an error (as {@link statusOf} gives it, without building metadata). */
export function statusCodeOf(err: Error): number {
  if (err instanceof GrpcStatusError) return err.status.code;
  if (err instanceof CallerCancelledError) return err.statusCode;
  if (!isMeshError(err)) return Status.INTERNAL;
  const cause = (err as RequestFailedError).cause;
  if (err instanceof RequestFailedError && cause instanceof GrpcStatusError) return cause.status.code;
  return CODE_OF[err.code] ?? Status.UNKNOWN;
}

/**
 * The status a call ends with for an error: an attempt's own status as it
 * came; the caller's cancel as asked; a meshlink error as its status code
 * (the last attempt's, for `MESHLINK_ERR_REQUEST_FAILED`) with the error's
 * message as details and its code in {@link ERROR_METADATA}.
 */
export function statusOf(err: Error, newMetadata: () => Metadata): StatusObject {
  if (err instanceof GrpcStatusError) return err.status;
  if (err instanceof CallerCancelledError) {
    return { code: err.statusCode, details: err.message, metadata: newMetadata() };
  }
  const metadata = newMetadata();
  if (!isMeshError(err)) {
    return { code: Status.INTERNAL, details: `meshlink: ${err?.message ?? String(err)}`, metadata };
  }
  metadata.set(ERROR_METADATA, err.code);
  let details = err.message;
  const cause = (err as RequestFailedError).cause;
  if (err instanceof RequestFailedError) {
    if (cause instanceof GrpcStatusError) details = `${err.message}; last status: ${cause.status.details}`;
    else if (cause instanceof Error) details = `${err.message}; last: ${cause.message}`;
  }
  return { code: statusCodeOf(err), details, metadata };
}

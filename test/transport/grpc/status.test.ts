import { Metadata } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import {
  BulkheadFullError,
  DeadlineExceededError,
  ErrorCodes,
  MeshClosedError,
  NoHealthyEndpointError,
  RequestFailedError,
  ServiceNotFoundError,
} from "../../../src/errors.js";
import {
  ANSWER,
  CallerCancelledError,
  DEADLINE,
  ENDPOINT_FAILURE,
  ERROR_METADATA,
  GrpcStatusError,
  Status,
  statusKind,
  statusOf,
} from "../../../src/transport/grpc/status.js";

const md = () => new Metadata();

describe("statusKind", () => {
  it("reads UNAVAILABLE and CANCELLED as endpoint failures", () => {
    expect(statusKind(Status.UNAVAILABLE)).toBe(ENDPOINT_FAILURE);
    expect(statusKind(Status.CANCELLED)).toBe(ENDPOINT_FAILURE);
  });

  it("reads DEADLINE_EXCEEDED as the call's deadline", () => {
    expect(statusKind(Status.DEADLINE_EXCEEDED)).toBe(DEADLINE);
  });

  it("reads OK and every application status as an answer", () => {
    for (const code of [
      Status.OK,
      Status.NOT_FOUND,
      Status.INTERNAL,
      Status.RESOURCE_EXHAUSTED,
      Status.UNKNOWN,
    ]) {
      expect(statusKind(code)).toBe(ANSWER);
    }
  });
});

describe("GrpcStatusError", () => {
  it("records the status by name", () => {
    const err = new GrpcStatusError({ code: Status.UNAVAILABLE, details: "gone", metadata: md() });
    expect(err.code).toBe("GRPC_UNAVAILABLE");
    expect(err.message).toBe("gone");
  });
});

describe("statusOf", () => {
  it("gives an attempt's own status back as it came", () => {
    const status = { code: Status.DEADLINE_EXCEEDED, details: "late", metadata: md() };
    expect(statusOf(new GrpcStatusError(status), md)).toBe(status);
  });

  it("gives the caller the status it cancelled with", () => {
    expect(statusOf(new CallerCancelledError(Status.CANCELLED, "Cancelled on client"), md)).toMatchObject({
      code: Status.CANCELLED,
      details: "Cancelled on client",
    });
  });

  it.each([
    [new DeadlineExceededError("s", 100, []), Status.DEADLINE_EXCEEDED, ErrorCodes.DEADLINE_EXCEEDED],
    [new BulkheadFullError("s", "service", 1), Status.RESOURCE_EXHAUSTED, ErrorCodes.BULKHEAD_FULL],
    [new NoHealthyEndpointError("s", 2, []), Status.UNAVAILABLE, ErrorCodes.NO_HEALTHY_ENDPOINT],
    [new ServiceNotFoundError("s", ["static"]), Status.UNAVAILABLE, ErrorCodes.SERVICE_NOT_FOUND],
    [new MeshClosedError(), Status.UNAVAILABLE, ErrorCodes.CLOSED],
  ])("maps %s to its status with the code in the trailer", (err, code, meshCode) => {
    const status = statusOf(err, md);
    expect(status.code).toBe(code);
    expect(status.details).toBe(err.message);
    expect(status.metadata.get(ERROR_METADATA)).toEqual([meshCode]);
  });

  it("keeps the last attempt's status code and details when every attempt failed", () => {
    const last = new GrpcStatusError({
      code: Status.UNAVAILABLE,
      details: "connection dropped",
      metadata: md(),
    });
    const status = statusOf(
      new RequestFailedError("s", [{ endpoint: "a/1:1", reason: last.code }], { cause: last }),
      md,
    );
    expect(status.code).toBe(Status.UNAVAILABLE);
    expect(status.details).toContain("connection dropped");
    expect(status.metadata.get(ERROR_METADATA)).toEqual([ErrorCodes.REQUEST_FAILED]);
  });

  it("reports an error that is no meshlink error as INTERNAL", () => {
    expect(statusOf(new TypeError("bug"), md)).toMatchObject({
      code: Status.INTERNAL,
      details: "meshlink: bug",
    });
  });
});

import { describe, expect, it } from "vitest";
import {
  formatGrpcTimeout,
  parseGrpcTimeout,
  parseTimeoutHeader,
  readDeadline,
  TIMEOUT_HEADER,
} from "../../src/resilience/deadline.js";

describe("readDeadline", () => {
  it("reads x-meshlink-timeout-ms from Node's headers", () => {
    expect(readDeadline({ [TIMEOUT_HEADER]: "250" }, 1000)).toEqual({
      at: 1250,
      timeoutMs: 250,
      source: TIMEOUT_HEADER,
    });
  });

  it("reads grpc-timeout when no meshlink header is present", () => {
    expect(readDeadline({ "grpc-timeout": "2S" }, 0)).toMatchObject({ at: 2000, source: "grpc-timeout" });
  });

  it("reads a WHATWG Headers object", () => {
    expect(readDeadline(new Headers({ [TIMEOUT_HEADER]: "5" }), 10)?.at).toBe(15);
  });

  it("returns undefined without a deadline or with a malformed one", () => {
    expect(readDeadline({}, 0)).toBeUndefined();
    expect(readDeadline({ [TIMEOUT_HEADER]: "soon" }, 0)).toBeUndefined();
  });
});

describe("parseGrpcTimeout", () => {
  it("parses every unit", () => {
    expect(parseGrpcTimeout("1H")).toBe(3_600_000);
    expect(parseGrpcTimeout("2M")).toBe(120_000);
    expect(parseGrpcTimeout("3S")).toBe(3000);
    expect(parseGrpcTimeout("40m")).toBe(40);
    expect(parseGrpcTimeout("5000u")).toBe(5);
    expect(parseGrpcTimeout("1000000n")).toBe(1);
    expect(parseGrpcTimeout("123456789m")).toBeUndefined();
    expect(parseGrpcTimeout("5x")).toBeUndefined();
  });
});

describe("formatGrpcTimeout", () => {
  it("writes at most eight digits in the finest unit that fits", () => {
    expect(formatGrpcTimeout(250)).toBe("250m");
    expect(formatGrpcTimeout(0.5)).toBe("500000n");
    expect(formatGrpcTimeout(200_000_000)).toBe("200000S");
    expect(parseGrpcTimeout(formatGrpcTimeout(1234))).toBe(1234);
  });
});

describe("parseTimeoutHeader", () => {
  it("accepts non-negative numbers only", () => {
    expect(parseTimeoutHeader(" 100 ")).toBe(100);
    expect(parseTimeoutHeader("-1")).toBeUndefined();
    expect(parseTimeoutHeader("")).toBeUndefined();
  });
});

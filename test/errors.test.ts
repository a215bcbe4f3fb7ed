import { describe, expect, it } from "vitest";
import {
  ConfigError,
  ErrorCodes,
  isMeshError,
  MeshError,
  NoHealthyEndpointError,
  RequestFailedError,
  ServiceNameError,
} from "../src/errors.js";

describe("MeshError", () => {
  it("carries a stable code and keeps instanceof for each subclass", () => {
    const err = new NoHealthyEndpointError("api.default", 3, [
      { endpoint: "east/10.0.0.1:80", reason: "ECONNREFUSED" },
    ]);
    expect(err.code).toBe(ErrorCodes.NO_HEALTHY_ENDPOINT);
    expect(err).toBeInstanceOf(MeshError);
    expect(err).toBeInstanceOf(NoHealthyEndpointError);
    expect(err).not.toBeInstanceOf(ConfigError);
    expect(err.message).toContain("east/10.0.0.1:80 (ECONNREFUSED)");
  });

  it("recognises errors of a duplicate install by their brand", () => {
    // A copy of meshlink elsewhere in the tree brands its errors with the same global symbol.
    const foreign = Object.assign(new Error("x"), { code: ErrorCodes.CONFIG });
    Object.defineProperty(foreign, Symbol.for("meshlink.error"), { value: true });
    expect(foreign).toBeInstanceOf(MeshError);
    expect(foreign).toBeInstanceOf(ConfigError);
    expect(foreign).not.toBeInstanceOf(ServiceNameError);
    expect(new Error("plain")).not.toBeInstanceOf(MeshError);
  });

  it("names the source and value in a ConfigError", () => {
    const err = new ConfigError("MESHLINK_FAILOVER", "us-east-1,,x", "empty region at position 2");
    expect(err.message).toBe('MESHLINK_FAILOVER="us-east-1,,x": empty region at position 2');
    expect(err.source).toBe("MESHLINK_FAILOVER");
    expect(err.value).toBe("us-east-1,,x");
  });

  it("narrows with isMeshError by code", () => {
    const err = new RequestFailedError("api.default", [], { cause: new Error("boom") });
    expect(isMeshError(err)).toBe(true);
    expect(isMeshError(err, ErrorCodes.REQUEST_FAILED)).toBe(true);
    expect(isMeshError(err, ErrorCodes.CONFIG)).toBe(false);
    expect(isMeshError(new Error("x"))).toBe(false);
  });
});

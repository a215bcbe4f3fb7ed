import { describe, expect, it } from "vitest";
import { addressProblem, createEndpoint } from "../../src/discovery/endpoint.js";
import { ErrorCodes, InvalidEndpointError, isMeshError } from "../../src/errors.js";

function thrown(fn: () => unknown): InvalidEndpointError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidEndpointError);
    expect(isMeshError(err, ErrorCodes.INVALID_ENDPOINT)).toBe(true);
    return err as InvalidEndpointError;
  }
  throw new Error("expected an InvalidEndpointError");
}

const base = { port: 8080, cluster: "east", backend: "test" };

describe("createEndpoint", () => {
  it.each([
    "10.0.1.7",
    "127.0.0.1",
    "fd00::1",
    "::ffff:10.0.0.1",
    "localhost",
    "api.internal.example",
    "api.internal.example.",
    "123abc.example",
    "xn--bcher-kva.example",
  ])("accepts the address %j", (address) => {
    expect(createEndpoint({ ...base, address }).address).toBe(address);
  });

  it.each([
    "999.1.1.1",
    "10.1",
    "01.2.3.4",
    "10.0.0.1:8080",
    "[fd00::1]",
    "fe80::1%eth0",
    "/var/run/x.sock",
    "./x.sock",
    "http://x",
    "",
    " ",
    " 10.0.0.1",
    "my host",
    "my_service",
    "-a.example",
    "a-.example",
    "a..example",
    `${"a".repeat(64)}.example`,
    `${"abcdefghi.".repeat(26)}com`,
  ])("rejects the address %j with an InvalidEndpointError naming the field and value", (address) => {
    const err = thrown(() => createEndpoint({ ...base, address }));
    expect(err.field).toBe("address");
    expect(err.value).toBe(address);
  });

  it("rejects an address that is not a string", () => {
    expect(thrown(() => createEndpoint({ ...base, address: undefined as never })).field).toBe("address");
  });

  it.each([0, 65536, 80.5, Number.NaN, -1])("rejects the port %j", (port) => {
    const err = thrown(() => createEndpoint({ ...base, address: "10.0.0.1", port }));
    expect(err.field).toBe("port");
    expect(err.value).toBe(port);
  });
});

describe("addressProblem", () => {
  it("tells a URL, a path and an address with a port apart", () => {
    const problems = ["http://x", "/var/run/x.sock", "10.0.0.1:8080", "999.1.1.1"].map(addressProblem);
    expect(new Set(problems).size).toBe(4);
    expect(problems.every((p) => typeof p === "string")).toBe(true);
    expect(addressProblem("10.0.0.1")).toBeUndefined();
  });
});

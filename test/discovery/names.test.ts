import { describe, expect, it } from "vitest";
import { isQualifiedServiceName, parseServiceName, tryParseServiceName } from "../../src/discovery/names.js";
import { ErrorCodes, ServiceNameError } from "../../src/errors.js";

describe("parseServiceName", () => {
  it.each([
    ["my-service.default", "kubernetes", "my-service.default"],
    ["my-service.default.svc.cluster.local", "kubernetes", "my-service.default"],
    ["My-Service.Default.svc.cluster.local.", "kubernetes", "my-service.default"],
    ["my-service.default.svc.clusterset.local", "clusterset", "my-service.default.svc.clusterset.local"],
    ["web.service.consul", "consul", "web.service.consul"],
    ["web.service.dc-east.consul", "consul", "web.service.dc-east.consul"],
  ])("parses %s as a %s name with key %s", (input, kind, key) => {
    const name = parseServiceName(input);
    expect(name.kind).toBe(kind);
    expect(name.key).toBe(key);
  });

  it("keeps the service, namespace, datacenter and port", () => {
    const k = parseServiceName("api.payments.svc.cluster.local", 8080);
    expect([k.service, k.namespace, k.port, k.id]).toEqual(["api", "payments", 8080, "api.payments:8080"]);
    const c = parseServiceName("web.service.dc-west.consul", "http");
    expect([c.service, c.datacenter, c.portName, c.id]).toEqual([
      "web",
      "dc-west",
      "http",
      "web.service.dc-west.consul:http",
    ]);
  });

  it.each([
    "my-service",
    "a.b.c",
    "my_service.default",
    "api.default.svc.cluster.remote",
    "-api.default",
    "",
  ])("rejects %j with the accepted forms in the message", (input) => {
    let err: unknown;
    try {
      parseServiceName(input);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ServiceNameError);
    expect((err as ServiceNameError).code).toBe(ErrorCodes.SERVICE_NAME);
    expect((err as Error).message).toContain("<svc>.<ns>.svc.cluster.local");
  });

  it("rejects a port out of range", () => {
    expect(() => parseServiceName("api.default", 70000)).toThrow(ServiceNameError);
  });
});

describe("tryParseServiceName", () => {
  it("returns undefined for hosts that are not mesh names", () => {
    expect(tryParseServiceName("localhost")).toBeUndefined();
    expect(tryParseServiceName("127.0.0.1")).toBeUndefined();
    expect(tryParseServiceName("www.example.com")).toBeUndefined();
  });

  it("tells fully qualified names from short ones", () => {
    expect(isQualifiedServiceName(tryParseServiceName("api.default.svc.cluster.local")!)).toBe(true);
    expect(isQualifiedServiceName(tryParseServiceName("web.service.consul")!)).toBe(true);
    expect(isQualifiedServiceName(tryParseServiceName("example.com")!)).toBe(false);
  });
});

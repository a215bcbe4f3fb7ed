import { metrics } from "@opentelemetry/api";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh } from "../../src/mesh.js";
import { meshInstruments } from "../../src/telemetry/metrics.js";
import { otelRegistered, tracerRegistered } from "../../src/telemetry/tracing.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// With no OpenTelemetry SDK registered, meshlink records nothing and writes no trace context.
let server: TestServer;
beforeAll(async () => {
  server = await startServer("api", { address: "127.0.100.101" });
});
afterAll(() => server.stop());

describe("meshInstruments", () => {
  it("is undefined while no meter provider is registered, and taken once per provider", async () => {
    // Nothing of OpenTelemetry registered: a call reads one property and asks no more.
    expect(otelRegistered()).toBe(false);
    expect(meshInstruments()).toBeUndefined();
    const provider = new MeterProvider();
    metrics.setGlobalMeterProvider(provider);
    try {
      expect(otelRegistered()).toBe(true);
      const first = meshInstruments();
      expect(first).toBeDefined();
      expect(meshInstruments()).toBe(first);
    } finally {
      metrics.disable();
      await provider.shutdown();
    }
    expect(meshInstruments()).toBeUndefined();
  });
});

describe("a call with no SDK", () => {
  it("starts no span and sends no trace context", async () => {
    expect(tracerRegistered()).toBe(false);
    const mesh = createMesh({
      env: {},
      discovery: [
        staticDiscovery({
          services: { "api.default": [{ address: server.address, port: server.port, cluster: "c" }] },
        }),
      ],
    });
    const res = await mesh.fetch("http://api.default.svc.cluster.local/");
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    await mesh.close();
    expect(server.requests[0]!.headers.traceparent).toBeUndefined();
  });
});

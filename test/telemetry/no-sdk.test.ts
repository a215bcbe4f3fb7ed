import { context, metrics, propagation, TraceFlags, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
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

describe("a call with a propagator and no tracer", () => {
  it("sends the active context's traceparent in place of the caller's own, once", async () => {
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    const mesh = createMesh({
      env: {},
      discovery: [
        staticDiscovery({
          services: { "api.default": [{ address: server.address, port: server.port, cluster: "c" }] },
        }),
      ],
    });
    try {
      expect(tracerRegistered()).toBe(false);
      const parent = trace.wrapSpanContext({
        traceId: "0af7651916cd43dd8448eb211c80319c",
        spanId: "b7ad6b7169203331",
        traceFlags: TraceFlags.SAMPLED,
      });
      server.requests.length = 0;
      await context.with(trace.setSpan(context.active(), parent), async () => {
        // fetch hands the dispatcher its headers as an object.
        const res = await mesh.fetch("http://api.default.svc.cluster.local/own", {
          headers: { traceparent: "00-11111111111111111111111111111111-2222222222222222-01", "x-app": "a" },
        });
        await res.arrayBuffer();
      });
      const seen = server.requests[0]!;
      expect(seen.headers.traceparent).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
      expect(seen.headers["x-app"]).toBe("a");
      expect(seen.headers.host).toBe("api.default.svc.cluster.local");
    } finally {
      await mesh.close();
      propagation.disable();
      context.disable();
    }
  });
});

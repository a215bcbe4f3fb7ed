import { context, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh } from "../../src/mesh.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// An application with an SDK but no propagator registered: meshlink still writes W3C trace context.
let server: TestServer;
const exporter = new InMemorySpanExporter();

beforeAll(async () => {
  server = await startServer("api");
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
  );
});

afterAll(async () => {
  trace.disable();
  context.disable();
  await server.stop();
});

describe("trace context without a registered propagator", () => {
  it("writes the W3C traceparent of the client span", async () => {
    const mesh = createMesh({
      env: {},
      discovery: [
        staticDiscovery({
          services: { "api.default": [{ address: server.address, port: server.port, cluster: "c" }] },
        }),
      ],
    });
    await (await mesh.fetch("http://api.default.svc.cluster.local/")).arrayBuffer();
    await mesh.close();
    const span = exporter.getFinishedSpans()[0]!;
    const { traceId, spanId } = span.spanContext();
    expect(server.requests[0]!.headers.traceparent).toBe(`00-${traceId}-${spanId}-01`);
  });
});

/**
 * gRPC through the mesh, end to end: two clusters of the Greeter service
 * (examples/grpc/greeter.proto, an ordinary grpc-js server) and a client
 * in us-east-1 that uses meshlink's target, credentials and interceptors
 * (examples/grpc/client.ts).
 *
 *   1. unary and server-streaming calls stay in the caller's region;
 *   2. the server sees the caller's trace context and deadline;
 *   3. the east cluster dies: the next calls go to us-west-2, none fails.
 *
 * Run: npx tsx examples/grpc.ts
 */

import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { createMesh, staticDiscovery } from "meshlink";
import { greeterClient } from "./grpc/client.js";
import { startGreeter } from "./grpc/server.js";

const east = await startGreeter("greeter in us-east-1", "127.0.0.1");
const west = await startGreeter("greeter in us-west-2", "127.0.0.2");

const mesh = createMesh({
  region: "us-east-1",
  failover: ["us-west-2"],
  discovery: [
    staticDiscovery({
      services: {
        "greeter.default": [
          { address: east.address, port: east.port, cluster: "east", region: "us-east-1" },
          { address: west.address, port: west.port, cluster: "west", region: "us-west-2" },
        ],
      },
    }),
  ],
});
const greeter = greeterClient(mesh);

// The application's own OpenTelemetry set-up (meshlink uses only @opentelemetry/api).
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

const [hello, traceId] = await trace.getTracer("example").startActiveSpan("handle-request", async (span) => {
  const reply = await greeter.sayHello("unary", 3000);
  span.end();
  return [reply, span.spanContext().traceId] as const;
});
console.log(`SayHello → ${hello.message} (${hello.served_by})`);
const sameTrace = hello.traceparent.split("-")[1] === traceId;
console.log(
  `  the server saw a deadline of ${hello.deadline_ms} ms, ${sameTrace ? "in the caller's trace" : "no trace"}`,
);
const stream = await greeter.streamGreetings("stream", 3);
console.log(`StreamGreetings → ${stream.map((r) => r.message).join(" ")} (${stream[0]?.served_by})`);

east.stop();
console.log("east cluster stopped");
let failed = 0;
const servedBy = new Map<string, number>();
for (let i = 0; i < 20; i++) {
  try {
    const r = await greeter.sayHello(`after ${i}`);
    servedBy.set(r.served_by, (servedBy.get(r.served_by) ?? 0) + 1);
  } catch (err) {
    failed++;
    console.error((err as Error).message);
  }
}
console.log(`20 calls after the failure: ${failed} failed, served by ${[...servedBy.keys()].join(", ")}`);

greeter.close();
await mesh.close();
west.stop();
if (failed > 0 || servedBy.has(east.name) || hello.served_by !== east.name || !sameTrace)
  process.exitCode = 1;

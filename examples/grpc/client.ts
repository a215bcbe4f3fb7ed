/**
 * A gRPC client through the mesh: the application's own @grpc/grpc-js
 * client for greeter.proto, given three things by meshlink — a
 * `meshlink://` target, the mesh's channel credentials and its
 * interceptors. Calls then go to the best healthy endpoint by zone and
 * region, fail over across clusters, are retried on another endpoint when
 * one fails, carry the caller's trace and deadline, and feed the same
 * health as HTTP calls.
 *
 * Run with a Greeter on 127.0.0.1:50051 (examples/grpc/server.ts):
 * npx tsx examples/grpc/client.ts
 */

import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { createMesh, type Mesh, staticDiscovery } from "meshlink";
import { packageDefinition, proto } from "./server.js";

interface HelloReply {
  message: string;
  served_by: string;
  traceparent: string;
  deadline_ms: number;
}

/** The Greeter client's methods (proto-loader's clients are untyped without generated types). */
interface GreeterClient extends grpc.Client {
  SayHello(
    request: { name: string },
    options: grpc.CallOptions,
    callback: (err: grpc.ServiceError | null, reply: HelloReply) => void,
  ): grpc.ClientUnaryCall;
  StreamGreetings(request: { name: string; count: number }): grpc.ClientReadableStream<HelloReply>;
}

/** A Greeter client of `mesh`'s `greeter.default` service. */
export function greeterClient(mesh: Mesh) {
  // Once per process: the mesh's resolver and load balancer on this grpc-js.
  mesh.grpc.register(grpc);
  // SayHello is NO_SIDE_EFFECTS in the .proto: its calls may be retried and hedged.
  mesh.grpc.idempotent(packageDefinition);
  const client = new proto.meshlink.example.Greeter(
    mesh.grpc.target("greeter.default", 50051),
    mesh.grpc.credentials(),
    { interceptors: mesh.grpc.interceptors },
  ) as unknown as GreeterClient;
  return {
    sayHello(name: string, timeoutMs = 2000): Promise<HelloReply> {
      return new Promise((resolve, reject) =>
        client.SayHello(
          { name },
          { deadline: Date.now() + timeoutMs },
          (err: Error | null, reply: HelloReply) => (err ? reject(err) : resolve(reply)),
        ),
      );
    },
    async streamGreetings(name: string, count: number): Promise<HelloReply[]> {
      const replies: HelloReply[] = [];
      for await (const r of client.StreamGreetings({ name, count })) replies.push(r);
      return replies;
    },
    close: () => client.close(),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mesh = createMesh({
    discovery: [
      staticDiscovery({
        services: { "greeter.default": [{ address: "127.0.0.1", port: 50051, cluster: "local" }] },
      }),
    ],
  });
  const greeter = greeterClient(mesh);
  console.log(await greeter.sayHello("mesh"));
  console.log(await greeter.streamGreetings("mesh", 3));
  greeter.close();
  await mesh.close();
}

/**
 * The Greeter service (greeter.proto) on @grpc/grpc-js, loaded with
 * @grpc/proto-loader: an ordinary gRPC server, unaware of meshlink. It
 * answers who served the call, and what it received of the caller's trace
 * and deadline.
 *
 * Run alone: npx tsx examples/grpc/server.ts [address] [port]
 */

import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

/** The Greeter package, as proto-loader reads it (the client uses the same definition). */
export const packageDefinition = loadSync(fileURLToPath(new URL("./greeter.proto", import.meta.url)), {
  keepCase: true,
  longs: Number,
  defaults: true,
});
export const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  meshlink: { example: { Greeter: grpc.ServiceClientConstructor } };
};

interface HelloRequest {
  name: string;
  count: number;
}

/** Starts a Greeter that says it is `name`, on `address:port` (0: any free port). */
export async function startGreeter(name: string, address: string, port = 0) {
  const server = new grpc.Server();
  const reply = (
    call: grpc.ServerUnaryCall<HelloRequest, unknown> | grpc.ServerWritableStream<HelloRequest, unknown>,
    message: string,
  ) => {
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    return {
      message,
      served_by: name,
      traceparent: String(call.metadata.get("traceparent")[0] ?? ""),
      deadline_ms: Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0,
    };
  };
  server.addService(proto.meshlink.example.Greeter.service, {
    SayHello(call: grpc.ServerUnaryCall<HelloRequest, unknown>, callback: grpc.sendUnaryData<unknown>) {
      callback(null, reply(call, `Hello, ${call.request.name}!`));
    },
    StreamGreetings(call: grpc.ServerWritableStream<HelloRequest, unknown>) {
      for (let i = 1; i <= Math.max(1, call.request.count); i++) {
        call.write(reply(call, `Hello #${i}, ${call.request.name}!`));
      }
      call.end();
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${address}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { name, address, port: bound, server, stop: () => server.forceShutdown() };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const g = await startGreeter("greeter", process.argv[2] ?? "127.0.0.1", Number(process.argv[3] ?? 50051));
  console.log(`Greeter listening on ${g.address}:${g.port}`);
}

import * as grpc from "@grpc/grpc-js";

/** What the test servers answer: who served, and what they saw of the call. */
export interface EchoReply {
  readonly server: string;
  readonly text: string;
  /** The `traceparent` metadata the server received ("" when none). */
  readonly traceparent: string;
  /** Milliseconds left of the call's deadline when the server saw it (-1 when none). */
  readonly deadlineMs: number;
}

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (buf: Buffer) => JSON.parse(buf.toString()) as unknown,
};

function method(
  path: string,
  responseStream: boolean,
  requestStream = false,
): grpc.MethodDefinition<unknown, unknown> {
  return {
    path,
    requestStream,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}

/** The test service (JSON messages): unary `Echo`, server-streaming `Count`, bidi `Chat`. */
export const echoService: grpc.ServiceDefinition = {
  Echo: method("/meshlink.test.Echo/Echo", false),
  Count: method("/meshlink.test.Echo/Count", true),
  Chat: method("/meshlink.test.Echo/Chat", true, true),
};

/** A generic client of {@link echoService}. */
export const EchoClient = grpc.makeGenericClientConstructor(echoService, "Echo");
/** An instance of {@link EchoClient}. */
export type EchoClientInstance = InstanceType<typeof EchoClient>;

/** What one call looked like on the server. */
export interface SeenCall {
  readonly method: string;
  readonly metadata: Record<string, unknown>;
  readonly deadlineMs: number;
}

/** How a server answers `Echo`: normally, with a status, after a delay, or never. */
export type Behavior =
  | { readonly kind: "answer"; readonly delayMs?: number }
  | { readonly kind: "status"; readonly code: number }
  | { readonly kind: "hang" };

/** A real grpc-js server on a loopback address. */
export interface GrpcTestServer {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly calls: SeenCall[];
  behavior: Behavior;
  /** Listening. */
  readonly running: boolean;
  /** Kills the server: open calls and connections are dropped. */
  kill(): void;
  /** Listens again on the same address and port. */
  restart(): Promise<void>;
}

function remaining(call: { getDeadline(): grpc.Deadline }): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(at) ? at - Date.now() : -1;
}

/** Starts the echo service on `address:port` (port 0: a free one). */
export async function startGrpcServer(
  name: string,
  address: string,
  options: { credentials?: grpc.ServerCredentials; port?: number } = {},
): Promise<GrpcTestServer> {
  const credentials = options.credentials ?? grpc.ServerCredentials.createInsecure();
  let server: grpc.Server;
  const state: GrpcTestServer = {
    name,
    address,
    port: options.port ?? 0,
    calls: [],
    behavior: { kind: "answer" },
    running: false,
    kill() {
      (state as { running: boolean }).running = false;
      server.forceShutdown();
    },
    async restart() {
      await bind();
    },
  };
  const bind = async () => {
    server = new grpc.Server();
    server.addService(echoService, {
      Echo: (
        call: grpc.ServerUnaryCall<{ text: string }, EchoReply>,
        callback: grpc.sendUnaryData<EchoReply>,
      ) => {
        const seen = { method: "Echo", metadata: call.metadata.getMap(), deadlineMs: remaining(call) };
        state.calls.push(seen);
        const b = state.behavior;
        if (b.kind === "hang") return;
        if (b.kind === "status") {
          callback({ code: b.code, details: `${name} says ${b.code}` });
          return;
        }
        const reply: EchoReply = {
          server: name,
          text: call.request.text,
          traceparent: String(call.metadata.get("traceparent")[0] ?? ""),
          deadlineMs: seen.deadlineMs,
        };
        if (b.delayMs) setTimeout(() => callback(null, reply), b.delayMs);
        else callback(null, reply);
      },
      Count: (call: grpc.ServerWritableStream<{ count: number }, { server: string; i: number }>) => {
        state.calls.push({ method: "Count", metadata: call.metadata.getMap(), deadlineMs: remaining(call) });
        for (let i = 0; i < call.request.count; i++) call.write({ server: name, i });
        call.end();
      },
      Chat: (call: grpc.ServerDuplexStream<{ text: string }, { server: string; text: string }>) => {
        state.calls.push({ method: "Chat", metadata: call.metadata.getMap(), deadlineMs: remaining(call) });
        call.on("data", (m: { text: string }) => call.write({ server: name, text: m.text }));
        call.on("end", () => call.end());
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${address}:${state.port}`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    (state as { port: number }).port = port;
    (state as { running: boolean }).running = true;
  };
  await bind();
  return state;
}

/** One unary `Echo` call. */
export function echo(
  client: EchoClientInstance,
  text: string,
  options: { deadline?: number; metadata?: grpc.Metadata } = {},
): Promise<EchoReply> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      echoService.Echo!.path,
      json.serialize,
      json.deserialize,
      { text },
      options.metadata ?? new grpc.Metadata(),
      { deadline: options.deadline ?? Date.now() + 10_000 },
      (err: grpc.ServiceError | null, value?: unknown) => (err ? reject(err) : resolve(value as EchoReply)),
    );
  });
}

/** One server-streaming `Count` call: every message, in order. */
export async function count(client: EchoClientInstance, n: number): Promise<{ server: string; i: number }[]> {
  const stream = client.makeServerStreamRequest(
    echoService.Count!.path,
    json.serialize,
    json.deserialize,
    { count: n },
    new grpc.Metadata(),
    { deadline: Date.now() + 10_000 },
  );
  const out: { server: string; i: number }[] = [];
  for await (const m of stream) out.push(m as { server: string; i: number });
  return out;
}

/** One bidi `Chat` call: sends every text, then half-closes; returns every reply. */
export async function chat(
  client: EchoClientInstance,
  texts: readonly string[],
): Promise<{ server: string; text: string }[]> {
  const stream = client.makeBidiStreamRequest(
    echoService.Chat!.path,
    json.serialize,
    json.deserialize,
    new grpc.Metadata(),
    { deadline: Date.now() + 10_000 },
  );
  for (const text of texts) stream.write({ text });
  stream.end();
  const out: { server: string; text: string }[] = [];
  for await (const m of stream) out.push(m as { server: string; text: string });
  return out;
}

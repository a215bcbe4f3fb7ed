import * as grpc from "@grpc/grpc-js";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { GRPC_ERROR_METADATA } from "../../src/transport/grpc/grpc.js";
import { scriptedBackend } from "../helpers/backend.js";
import {
  chat,
  count,
  EchoClient,
  type EchoClientInstance,
  echo,
  echoService,
  type GrpcTestServer,
  startGrpcServer,
} from "../helpers/grpc.js";
import { installTracing } from "../helpers/otel.js";

// Three clusters on loopback (127.0.120.0/24): home (the caller's zone),
// west (the failover region) and eu (the rest), two servers each.
let home: GrpcTestServer[];
let west: GrpcTestServer[];
let eu: GrpcTestServer[];
let mesh: Mesh;
const clients: grpc.Client[] = [];

const SERVICE = "echo.default";
const ECHO = echoService.Echo!.path;

async function cluster(prefix: string, octet: number): Promise<GrpcTestServer[]> {
  return Promise.all([1, 2].map((i) => startGrpcServer(`${prefix}-${i}`, `127.0.120.${octet + i}`)));
}

const ep = (s: GrpcTestServer, cluster: string, region: string, zone: string) => ({
  address: s.address,
  port: s.port,
  cluster,
  region,
  zone,
});

function newMesh(): Mesh {
  const m = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    // Hedges are budgeted at 1 % of calls by default: a few per second let a test see them.
    policy: { perTryTimeout: 2000, attempts: 3, hedging: { minPerSecond: 100 } },
    outlierDetection: { baseEjectionTime: 300, maxEjectionTime: 1000 },
    discovery: [
      staticDiscovery({
        services: {
          [SERVICE]: [
            ...home.map((s) => ep(s, "home", "us-east-1", "us-east-1a")),
            ...west.map((s) => ep(s, "west", "us-west-2", "us-west-2a")),
            ...eu.map((s) => ep(s, "eu", "europe-west1", "europe-west1-b")),
          ],
        },
      }),
    ],
  });
  m.grpc.register(grpc);
  return m;
}

function client(m: Mesh = mesh, options: { interceptors?: boolean } = {}): EchoClientInstance {
  const c = new EchoClient(m.grpc.target(SERVICE, 50051), m.grpc.credentials(), {
    interceptors: options.interceptors === false ? [] : m.grpc.interceptors,
  });
  clients.push(c);
  return c;
}

function healthOf(m: Mesh, server: GrpcTestServer) {
  const e = m
    .describe()
    .services[0]!.endpoints.find((x) => x.id.endsWith(`/${server.address}:${server.port}`));
  return e!.health;
}

/** Calls until `done` says so (each call awaited: the loop is the event, not a timer). */
async function callUntil(
  c: EchoClientInstance,
  done: (server: string) => boolean,
  max = 200,
): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < max; i++) {
    const r = await echo(c, `n${i}`);
    served.push(r.server);
    if (done(r.server)) break;
  }
  return served;
}

beforeEach(async () => {
  home = await cluster("home", 10);
  west = await cluster("west", 20);
  eu = await cluster("eu", 30);
  mesh = newMesh();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await mesh.close();
  for (const s of [...home, ...west, ...eu]) if (s.running) s.kill();
});

describe("MeshGrpc (real grpc-js servers in three clusters)", () => {
  it("routes unary calls to the caller's zone", async () => {
    const c = client();
    const served = await Promise.all(Array.from({ length: 40 }, (_, i) => echo(c, `n${i}`)));
    expect(new Set(served.map((r) => r.server.split("-")[0]))).toEqual(new Set(["home"]));
    // Both home servers share the load.
    expect(home.every((s) => s.calls.length > 0)).toBe(true);
  });

  it("carries a server-streaming call through to its end", async () => {
    const messages = await count(client(), 5);
    expect(messages.map((m) => m.i)).toEqual([0, 1, 2, 3, 4]);
    expect(new Set(messages.map((m) => m.server)).size).toBe(1);
    expect(messages[0]!.server).toMatch(/^home-/);
  });

  it("carries a bidi-streaming call both ways, a long request stream in order", async () => {
    const replies = await chat(client(), ["a", "b", "c"]);
    expect(replies.map((r) => r.text)).toEqual(["a", "b", "c"]);
    expect(replies[0]!.server).toMatch(/^home-/);
    const texts = Array.from({ length: 300 }, (_, i) => `m${i}`);
    expect((await chat(client(), texts)).map((r) => r.text)).toEqual(texts);
  });

  it("resends a bidi call whose first attempt could not connect, with the messages written meanwhile", async () => {
    // Calls the router sends to the dead server first are resent elsewhere (another cluster first, after a connect failure).
    home[0]!.kill();
    const replies = await Promise.all(Array.from({ length: 6 }, () => chat(client(), ["x", "y"])));
    for (const r of replies) {
      expect(r.map((m) => m.text)).toEqual(["x", "y"]);
      expect(r[0]!.server).not.toBe("home-1");
    }
  });

  it("fails over to the failover region when the home cluster dies during a run, with no failed idempotent call", async () => {
    mesh.grpc.idempotent(ECHO);
    for (const s of [...home, ...west, ...eu]) s.behavior = { kind: "answer", delayMs: 5 };
    const c = client();
    const outcomes: (string | Error)[] = [];
    let killed = -1;
    const worker = async () => {
      while (outcomes.length < 400) {
        try {
          outcomes.push((await echo(c, "x")).server);
        } catch (err) {
          outcomes.push(err as Error);
        }
        if (killed < 0 && outcomes.length >= 100) {
          killed = outcomes.length;
          for (const s of home) s.kill();
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(outcomes.filter((o) => o instanceof Error)).toEqual([]);
    expect(outcomes.slice(0, killed).every((o) => String(o).startsWith("home"))).toBe(true);
    const after = outcomes.slice(killed + 20).map((o) => String(o).split("-")[0]);
    expect(new Set(after)).toEqual(new Set(["west"]));
    expect(eu.every((s) => s.calls.length === 0)).toBe(true);
  });

  it("sends the policy's deadline when the caller sets none", async () => {
    await mesh.close();
    mesh = createMesh({
      env: {},
      policy: { deadline: 3000 },
      discovery: [staticDiscovery({ services: { [SERVICE]: [ep(home[0]!, "home", "", "")] } })],
    });
    mesh.grpc.register(grpc);
    const c = new EchoClient(mesh.grpc.target(SERVICE, 50051), mesh.grpc.credentials(), {
      interceptors: mesh.grpc.interceptors,
    });
    clients.push(c);
    const reply = await new Promise<{ deadlineMs: number }>((resolve, reject) =>
      c.makeUnaryRequest(
        ECHO,
        (v: unknown) => Buffer.from(JSON.stringify(v)),
        (b: Buffer) => JSON.parse(String(b)),
        { text: "policy" },
        (err: grpc.ServiceError | null, v?: { deadlineMs: number }) => (err ? reject(err) : resolve(v!)),
      ),
    );
    expect(reply.deadlineMs).toBeGreaterThan(0);
    expect(reply.deadlineMs).toBeLessThanOrEqual(3000);
  });

  it("returns an application status as it is, without retrying it or counting it against the endpoint", async () => {
    for (const s of home) s.behavior = { kind: "status", code: grpc.status.NOT_FOUND };
    const c = client();
    for (let i = 0; i < 10; i++) {
      await expect(echo(c, "x")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    }
    expect(home[0]!.calls.length + home[1]!.calls.length).toBe(10);
    for (const s of home)
      expect(healthOf(mesh, s)).toMatchObject({ state: "healthy", lastFailure: undefined });
  });

  it("retries UNAVAILABLE on another endpoint and ejects the endpoint that returns it", async () => {
    home[0]!.behavior = { kind: "status", code: grpc.status.UNAVAILABLE };
    const c = client();
    const served = await Promise.all(Array.from({ length: 30 }, () => echo(c, "x")));
    // Every call succeeds elsewhere (home-2, or west once home-1's ejection spills part of home's share).
    expect(served.some((r) => r.server === "home-1")).toBe(false);
    expect(home[0]!.calls.length).toBeGreaterThan(0);
    expect(healthOf(mesh, home[0]!)).toMatchObject({ state: "ejected", lastFailure: "GRPC_UNAVAILABLE" });
  });

  it("does not resend a call marked x-meshlink-retryable: false once it reached a server", async () => {
    for (const s of home) s.behavior = { kind: "status", code: grpc.status.UNAVAILABLE };
    const metadata = new grpc.Metadata();
    metadata.set("x-meshlink-retryable", "false");
    const err = await echo(client(), "x", { metadata }).catch((e: grpc.ServiceError) => e);
    expect(err).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect((err as grpc.ServiceError).metadata.get(GRPC_ERROR_METADATA)).toEqual([ErrorCodes.REQUEST_FAILED]);
    expect(home[0]!.calls.length + home[1]!.calls.length).toBe(1);
    // The control metadata never reaches the server.
    expect([...home[0]!.calls, ...home[1]!.calls][0]!.metadata).not.toHaveProperty("x-meshlink-retryable");
  });

  it("neither retries nor counts the caller's own cancel", async () => {
    for (const s of home) s.behavior = { kind: "hang" };
    const c = client();
    const seen = new Promise<void>((resolve) => {
      const check = () =>
        home[0]!.calls.length + home[1]!.calls.length > 0 ? resolve() : setImmediate(check);
      check();
    });
    const call = c.makeUnaryRequest(
      ECHO,
      (v: unknown) => Buffer.from(JSON.stringify(v)),
      (b: Buffer) => JSON.parse(String(b)),
      { text: "x" },
      () => {},
    );
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    await seen;
    call.cancel();
    expect((await status).code).toBe(grpc.status.CANCELLED);
    expect(home[0]!.calls.length + home[1]!.calls.length).toBe(1);
    for (const s of home) expect(healthOf(mesh, s)).toMatchObject({ lastFailure: undefined, outstanding: 0 });
  });

  it("ends a call whose servers hang at its deadline with DEADLINE_EXCEEDED", async () => {
    for (const s of home) s.behavior = { kind: "hang" };
    const err = await echo(client(), "x", { deadline: Date.now() + 300 }).catch((e: grpc.ServiceError) => e);
    expect(err).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
  });

  it("hedges an idempotent call that asks for it", async () => {
    mesh.grpc.idempotent(ECHO);
    home[0]!.behavior = { kind: "hang" };
    const metadata = new grpc.Metadata();
    metadata.set("x-meshlink-hedge", "50");
    const c = client();
    const served: string[] = [];
    for (let i = 0; i < 20; i++) served.push((await echo(c, "x", { metadata })).server);
    expect(served.every((s) => s === "home-2")).toBe(true);
    // The router sent some first attempts to the hanging server; the hedge answered them.
    expect(home[0]!.calls.length).toBeGreaterThan(0);
  });

  it("routes and fails over without the interceptors too", async () => {
    const c = client(mesh, { interceptors: false });
    const before = await Promise.all(Array.from({ length: 20 }, () => echo(c, "x")));
    expect(before.every((r) => r.server.startsWith("home"))).toBe(true);
    for (const s of home) s.kill();
    // Without the engine there is no retry: calls fail until health ejects home, then go west.
    // While one home endpoint is ejected and the other is not yet, the tier spills part of its load
    // west and the rest still fails: wait for ten calls in a row served by west.
    const served: string[] = [];
    const settled = () => served.length >= 10 && served.slice(-10).every((s) => s.startsWith("west"));
    for (let i = 0; i < 100 && !settled(); i++) {
      served.push(
        await echo(c, "x").then(
          (r) => r.server,
          (e: grpc.ServiceError) => `error ${e.code}`,
        ),
      );
    }
    expect(settled()).toBe(true);
    // grpc-js reports a call its dying server dropped as CANCELLED (DESIGN.md); the rest cannot connect.
    const codes = new Set(served.filter((s) => s.startsWith("error")));
    expect(
      [...codes].every(
        (s) => s === `error ${grpc.status.UNAVAILABLE}` || s === `error ${grpc.status.CANCELLED}`,
      ),
    ).toBe(true);
  });

  it("keeps an open channel working after the mesh forgets its idle service", async () => {
    await mesh.close();
    mesh = createMesh({
      env: {},
      serviceIdleTimeout: 1000,
      discovery: [staticDiscovery({ services: { [SERVICE]: [ep(home[0]!, "home", "", "")] } })],
    });
    mesh.grpc.register(grpc);
    const c = client();
    expect((await echo(c, "before")).server).toBe("home-1");
    // The registry's idle sweep (every second) forgets the service: no event says so, describe() shows it.
    await new Promise<void>((resolve) => {
      const check = () => (mesh.describe().services.length === 0 ? resolve() : setTimeout(check, 100));
      check();
    });
    expect((await echo(c, "first after")).server).toBe("home-1");
    expect((await echo(c, "second after")).server).toBe("home-1");
    // The channel bound the service again: the new balancer has its endpoint, with the call's latency.
    expect(mesh.describe().services[0]!.endpoints[0]!.health.latencyMs).toBeGreaterThan(0);
  }, 20_000);

  it("resolves a target without a mesh id to the one mesh of the process", async () => {
    const c = new EchoClient(`meshlink:///${SERVICE}:50051`, mesh.grpc.credentials(), {
      interceptors: mesh.grpc.interceptors,
    });
    clients.push(c);
    expect((await echo(c, "x")).server).toMatch(/^home-/);
  });

  it("keeps two meshes in one process apart", async () => {
    const other = createMesh({
      env: {},
      discovery: [staticDiscovery({ services: { [SERVICE]: [ep(eu[0]!, "eu", "europe-west1", "")] } })],
    });
    try {
      other.grpc.register(grpc);
      expect(other.grpc.target(SERVICE, 50051)).not.toBe(mesh.grpc.target(SERVICE, 50051));
      const [mine, theirs] = await Promise.all([echo(client(), "a"), echo(client(other), "b")]);
      expect(mine.server).toMatch(/^home-/);
      expect(theirs.server).toBe("eu-1");
    } finally {
      await other.close();
    }
  });
  describe("with an OpenTelemetry SDK", () => {
    // One SDK for these tests: meshlink's tracer keeps the provider it first delegated to.
    let tracing: ReturnType<typeof installTracing>;
    beforeAll(() => {
      tracing = installTracing();
    });
    afterEach(() => tracing.exporter.reset());
    afterAll(() => tracing.uninstall());

    it("lets the server see the trace id and the deadline", async () => {
      const tracer = trace.getTracer("test");
      const parent = tracer.startSpan("parent");
      const reply = await context.with(trace.setSpan(context.active(), parent), () =>
        echo(client(), "traced", { deadline: Date.now() + 4000 }),
      );
      parent.end();
      expect(reply.traceparent).toMatch(new RegExp(`^00-${parent.spanContext().traceId}-[0-9a-f]{16}-01$`));
      expect(reply.deadlineMs).toBeGreaterThan(0);
      expect(reply.deadlineMs).toBeLessThanOrEqual(4000);
      const spans = tracing.exporter.getFinishedSpans();
      const call = spans.find((s) => s.name === "meshlink.test.Echo/Echo")!;
      expect(call.attributes).toMatchObject({
        "rpc.system": "grpc",
        "rpc.service": "meshlink.test.Echo",
        "rpc.method": "Echo",
        "rpc.grpc.status_code": 0,
        "meshlink.service": SERVICE,
        "meshlink.cluster": "home",
      });
      // One client span per attempt, child of the call's: the server's parent.
      const attempt = spans.find((s) => s.name === "meshlink.test.Echo/Echo attempt")!;
      expect(attempt.kind).toBe(SpanKind.CLIENT);
      expect(attempt.parentSpanContext?.spanId).toBe(call.spanContext().spanId);
      expect(attempt.attributes).toMatchObject({
        "rpc.system": "grpc",
        "meshlink.cluster": "home",
        "meshlink.attempt": 1,
      });
      expect(reply.traceparent).toContain(attempt.spanContext().spanId);
    });

    it("traces a retried call as one call span with a span per attempt and why each one was made", async () => {
      home[0]!.behavior = { kind: "status", code: grpc.status.UNAVAILABLE };
      const c = client();
      // Until the router sends a first attempt to the failing server (P2C picks either at first).
      for (let i = 0; i < 20 && home[0]!.calls.length === 0; i++) await echo(c, "x");
      const spans = tracing.exporter.getFinishedSpans();
      const attempts = spans.filter((s) => s.name.endsWith(" attempt"));
      const failed = attempts.find((s) =>
        s.attributes["meshlink.endpoint"]?.toString().includes(home[0]!.address),
      )!;
      expect(failed.status.code).toBe(SpanStatusCode.ERROR);
      const retry = attempts.find(
        (s) => s.parentSpanContext?.spanId === failed.parentSpanContext?.spanId && s !== failed,
      )!;
      expect(retry.attributes).toMatchObject({ "meshlink.attempt": 2, "meshlink.attempt.cause": "retry" });
      const call = spans.find((s) => s.spanContext().spanId === failed.parentSpanContext?.spanId)!;
      expect(call.events.map((e) => e.name)).toContain("meshlink.retry");
      expect(call.attributes).toMatchObject({ "rpc.grpc.status_code": 0, "meshlink.attempts": 2 });
    });

    it("passes calls through untouched on a channel that is not a mesh target, trace context included", async () => {
      const direct = new EchoClient(
        `${home[0]!.address}:${home[0]!.port}`,
        grpc.credentials.createInsecure(),
        {
          interceptors: mesh.grpc.interceptors,
        },
      );
      clients.push(direct);
      const parent = trace.getTracer("test").startSpan("parent");
      const reply = await context.with(trace.setSpan(context.active(), parent), () => echo(direct, "plain"));
      parent.end();
      expect(reply.server).toBe("home-1");
      expect(reply.traceparent).toContain(parent.spanContext().traceId);
    });
  });
});

describe("MeshGrpc with changing discovery", () => {
  let backend: ReturnType<typeof scriptedBackend>;
  let dynamic: Mesh;

  const endpointOf = (s: GrpcTestServer) =>
    createEndpoint({
      address: s.address,
      port: s.port,
      cluster: "home",
      region: "us-east-1",
      backend: "scripted",
    });

  /** Resolves once the mesh's view of the service has `n` endpoints (polled on the event loop, not on a timer). */
  const endpointsAre = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () =>
        (dynamic.describe().services[0]?.endpoints.length ?? -1) === n ? resolve() : setImmediate(check);
      check();
    });

  beforeEach(() => {
    backend = scriptedBackend("scripted");
    dynamic = createMesh({ env: {}, region: "us-east-1", discovery: [backend] });
    dynamic.grpc.register(grpc);
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await dynamic.close();
  });

  it("queues calls while discovery is pending, then sends them", async () => {
    const c = client(dynamic);
    const pending = echo(c, "waiting");
    backend.push({ kind: "bound", endpoints: [endpointOf(home[0]!)] });
    expect((await pending).server).toBe("home-1");
  });

  it("sends calls to an endpoint discovery adds, and none to one it removes, from the next call on", async () => {
    backend.push({ kind: "bound", endpoints: [endpointOf(home[0]!)] });
    const c = client(dynamic);
    expect((await echo(c, "first")).server).toBe("home-1");
    backend.push({ kind: "bound", endpoints: [endpointOf(home[0]!), endpointOf(home[1]!)] });
    await endpointsAre(2);
    const served = await callUntil(c, (s) => s === "home-2");
    expect(served.at(-1)).toBe("home-2");
    backend.push({ kind: "bound", endpoints: [endpointOf(home[1]!)] });
    await endpointsAre(1);
    const before = home[0]!.calls.length;
    const after = await Promise.all(Array.from({ length: 20 }, () => echo(c, "x")));
    expect(after.every((r) => r.server === "home-2")).toBe(true);
    expect(home[0]!.calls.length).toBe(before);
  });

  it("fails a call to a service no backend knows with UNAVAILABLE and the meshlink code", async () => {
    backend.push({ kind: "not-found" });
    const err = await echo(client(dynamic), "x").catch((e: grpc.ServiceError) => e);
    expect(err).toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect((err as grpc.ServiceError).metadata.get(GRPC_ERROR_METADATA)).toEqual([
      ErrorCodes.SERVICE_NOT_FOUND,
    ]);
  });
});

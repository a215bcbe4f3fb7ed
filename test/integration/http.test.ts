import { context, trace } from "@opentelemetry/api";
import { getGlobalDispatcher, request, setGlobalDispatcher } from "undici";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { rejection } from "../helpers/assert.js";
import { installTracing } from "../helpers/otel.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Three clusters on loopback: two zones of us-east-1 (one cluster), us-west-2, europe-west1.
let eastA: TestServer;
let eastB: TestServer;
let west: TestServer;
let eu: TestServer;
let outside: TestServer;
let all: TestServer[];
let mesh: Mesh;

function endpoints() {
  return {
    "api.default": [
      { address: eastA.address, port: eastA.port, cluster: "east", region: "us-east-1", zone: "us-east-1a" },
      { address: eastB.address, port: eastB.port, cluster: "east", region: "us-east-1", zone: "us-east-1b" },
      { address: west.address, port: west.port, cluster: "west", region: "us-west-2", zone: "us-west-2a" },
      { address: eu.address, port: eu.port, cluster: "eu", region: "europe-west1", zone: "europe-west1-b" },
    ],
  };
}

function newMesh(extra: Parameters<typeof createMesh>[0] = {}): Mesh {
  return createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [staticDiscovery({ services: endpoints() })],
    ...extra,
  });
}

async function json(res: Response): Promise<{ server: string; method: string; body: string }> {
  return (await res.json()) as { server: string; method: string; body: string };
}

const URL_BASE = "http://api.default.svc.cluster.local:8080";

beforeAll(async () => {
  eastA = await startServer("east-a", { address: "127.0.0.1" });
  eastB = await startServer("east-b", { address: "127.0.0.2" });
  west = await startServer("west", { address: "127.0.0.3" });
  eu = await startServer("eu", { address: "127.0.0.4" });
  outside = await startServer("outside", { address: "127.0.0.1" });
  all = [eastA, eastB, west, eu, outside];
});

afterAll(async () => {
  await Promise.all(all.map((s) => s.stop().catch(() => undefined)));
});

beforeEach(() => {
  for (const s of all) {
    s.requests.length = 0;
    s.status = 200;
    s.handler = undefined;
  }
  mesh = newMesh();
});

afterEach(async () => {
  await mesh.close();
  for (const s of all) if (!s.listening) await s.start();
});

describe("mesh.fetch", () => {
  it("sends calls to the caller's own zone and keeps the original Host header", async () => {
    for (let i = 0; i < 10; i++) {
      const res = await mesh.fetch(`${URL_BASE}/api/data?i=${i}`);
      expect(res.status).toBe(200);
      expect((await json(res)).server).toBe("east-a");
    }
    expect(eastA.requests).toHaveLength(10);
    expect(eastA.requests[0]!.headers.host).toBe("api.default.svc.cluster.local:8080");
    expect(eastA.requests[0]!.url).toBe("/api/data?i=0");
  });

  it("returns the global Response class and streams bodies both ways", async () => {
    eastA.handler = (_req, res, body) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write(`got:${body}`);
      setImmediate(() => res.end(":done"));
    };
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("chunk-1,"));
        controller.enqueue(new TextEncoder().encode("chunk-2"));
        controller.close();
      },
    });
    const res = await mesh.fetch(`${URL_BASE}/echo`, { method: "PUT", body, duplex: "half" } as RequestInit);
    expect(res).toBeInstanceOf(Response);
    const chunks: string[] = [];
    for await (const chunk of res.body!) chunks.push(new TextDecoder().decode(chunk));
    expect(chunks.join("")).toBe("got:chunk-1,chunk-2:done");
  });

  it("accepts a Request object", async () => {
    const res = await mesh.fetch(new Request(`${URL_BASE}/req`, { method: "POST", body: "from-request" }));
    expect((await json(res)).body).toBe("from-request");
  });

  it("aborts a call with the caller's AbortSignal", async () => {
    let seen!: () => void;
    const arrived = new Promise<void>((r) => (seen = r));
    eastA.handler = () => seen(); // never answers
    const controller = new AbortController();
    const call = mesh.fetch(`${URL_BASE}/hang`, { signal: controller.signal });
    await arrived;
    controller.abort();
    const err = await rejection(call);
    expect(err.name).toBe("AbortError");
    // The aborted call neither retried elsewhere nor counted against the endpoint.
    expect(west.requests).toHaveLength(0);
    expect(eastB.requests).toHaveLength(0);
    const [first] = await mesh.resolve("api.default");
    expect(first!.health.lastFailure).toBeUndefined();
  });

  it("fails with ServiceNotFoundError for a name no backend knows", async () => {
    const err = await rejection(mesh.fetch("http://unknown.default.svc.cluster.local/"));
    expect(err.cause?.code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
  });

  it("fails with MeshClosedError after close", async () => {
    await mesh.close();
    const err = await rejection(mesh.fetch(`${URL_BASE}/late`));
    expect(err.cause?.code).toBe(ErrorCodes.CLOSED);
  });
});

describe("mesh.dispatcher", () => {
  it("routes Node's global fetch to mesh names and passes other hosts through unchanged", async () => {
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(mesh.dispatcher);
    try {
      const routed = await fetch(`${URL_BASE}/global`);
      expect((await json(routed)).server).toBe("east-a");
      // A short svc.ns name routes too when a backend claims it.
      const short = await fetch("http://api.default/short");
      expect((await json(short)).server).toBe("east-a");
      const passed = await fetch(`http://localhost:${outside.port}/plain`);
      expect((await json(passed)).server).toBe("outside");
      expect(outside.requests[0]!.headers.host).toBe(`localhost:${outside.port}`);
      expect(eastA.requests.map((r) => r.url)).toEqual(["/global", "/short"]);
    } finally {
      setGlobalDispatcher(previous);
    }
  });

  it("routes undici.request through the mesh", async () => {
    const res = await request(`${URL_BASE}/undici`, { dispatcher: mesh.dispatcher });
    expect(res.statusCode).toBe(200);
    expect(((await res.body.json()) as { server: string }).server).toBe("east-a");
  });
});

describe("failure handling", () => {
  it("retries a connect failure once, on another cluster", async () => {
    await eastA.stop();
    const res = await mesh.fetch(`${URL_BASE}/retry`);
    expect((await json(res)).server).toBe("west");
    expect(eastB.requests).toHaveLength(0);
  });

  it("retries 502/503/504 for an idempotent request on another endpoint", async () => {
    for (const status of [502, 503, 504]) {
      eastA.status = status;
      const res = await mesh.fetch(`${URL_BASE}/status-${status}`);
      expect(res.status).toBe(200);
      expect(["east-b", "west", "eu"]).toContain((await json(res)).server);
    }
  });

  it("returns a 503 to the caller of a non-idempotent request instead of retrying it", async () => {
    eastA.status = 503;
    const res = await mesh.fetch(`${URL_BASE}/order`, { method: "POST", body: "once" });
    expect(res.status).toBe(503);
    expect(eastA.requests).toHaveLength(1);
    expect(eastB.requests.length + west.requests.length + eu.requests.length).toBe(0);
  });

  it("never retries a non-idempotent request once its body was sent", async () => {
    eastA.handler = (req) => req.socket.destroy(); // reads the body, then resets
    const err = await rejection(mesh.fetch(`${URL_BASE}/pay`, { method: "POST", body: "charge-once" }));
    expect(err.cause?.code).toBe(ErrorCodes.REQUEST_FAILED);
    expect(eastA.requests.map((r) => r.body)).toEqual(["charge-once"]);
    expect(eastB.requests.length + west.requests.length + eu.requests.length).toBe(0);
  });

  it("retries a non-idempotent request after a connect failure, with its body intact", async () => {
    await eastA.stop();
    const res = await mesh.fetch(`${URL_BASE}/create`, { method: "POST", body: "payload" });
    const answer = await json(res);
    expect(answer.server).toBe("west");
    expect(answer.body).toBe("payload");
  });

  it("ejects an endpoint after consecutive failures and stops sending it traffic", async () => {
    eastA.status = 503;
    for (let i = 0; i < 5; i++) expect((await mesh.fetch(`${URL_BASE}/eject-${i}`)).status).toBe(200);
    expect(eastA.requests).toHaveLength(5);
    for (let i = 0; i < 10; i++)
      expect((await json(await mesh.fetch(`${URL_BASE}/after-${i}`))).server).toBe("east-b");
    expect(eastA.requests).toHaveLength(5);
    const [a] = (await mesh.resolve("api.default")).filter((e) => e.endpoint.address === eastA.address);
    expect(a).toMatchObject({ available: false, unavailableReason: "ejected", health: { state: "ejected" } });
  });

  it("reports what was tried, then NoHealthyEndpointError once every endpoint is ejected", async () => {
    await mesh.close();
    const dead = await startServer("dead", { address: "127.0.0.5" });
    const port = dead.port;
    await dead.stop();
    mesh = createMesh({
      env: {},
      region: "us-east-1",
      outlierDetection: { consecutiveFailures: 2 },
      // Without panic routing: by default (Envoy's panic threshold) a service whose endpoints are all
      // ejected is still tried on all of them, rather than failing without a try.
      routing: { panicThreshold: 0 },
      discovery: [
        staticDiscovery({
          services: {
            "solo.default": [
              { address: "127.0.0.5", port, cluster: "east", region: "us-east-1" },
              { address: "127.0.0.6", port, cluster: "west", region: "us-west-2" },
            ],
          },
        }),
      ],
    });
    const url = "http://solo.default.svc.cluster.local/";
    const first = await rejection(mesh.fetch(url));
    expect(first.cause?.code).toBe(ErrorCodes.REQUEST_FAILED);
    const tried = (first.cause as unknown as { tried: { endpoint: string; reason: string }[] }).tried;
    expect(tried.map((t) => t.reason)).toEqual(["ECONNREFUSED", "ECONNREFUSED"]);
    expect(new Set(tried.map((t) => t.endpoint.split("/")[0]))).toEqual(new Set(["east", "west"]));
    await rejection(mesh.fetch(url));
    const last = await rejection(mesh.fetch(url));
    expect(last.cause?.code).toBe(ErrorCodes.NO_HEALTHY_ENDPOINT);
    expect(last.cause?.message).toContain("no healthy endpoint for solo.default (2 known");
  });
});

describe("trace context", () => {
  // Registered once per file, as an application does at start-up.
  let tracing: ReturnType<typeof installTracing>;
  beforeAll(() => {
    tracing = installTracing();
  });
  afterAll(() => tracing.uninstall());
  beforeEach(() => tracing.exporter.reset());

  it("injects the caller's trace into the request and records a client span", async () => {
    const appSpan = trace.getTracer("app").startSpan("handle-request");
    await context.with(trace.setSpan(context.active(), appSpan), async () => {
      const res = await mesh.fetch(`${URL_BASE}/traced`);
      await res.arrayBuffer();
    });
    appSpan.end();
    const header = eastA.requests[0]!.headers.traceparent as string;
    expect(header).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const [, traceId, spanId] = header.split("-");
    expect(traceId).toBe(appSpan.spanContext().traceId);
    const client = tracing.exporter.getFinishedSpans().find((s) => s.name === "GET")!;
    // The request carries its attempt's span, a child of the call's.
    const attempt = tracing.exporter.getFinishedSpans().find((s) => s.name === "GET attempt")!;
    expect(attempt.spanContext().spanId).toBe(spanId);
    expect(attempt.parentSpanContext?.spanId).toBe(client.spanContext().spanId);
    expect(client.parentSpanContext?.spanId).toBe(appSpan.spanContext().spanId);
    expect(client.attributes).toMatchObject({
      "meshlink.service": "api.default",
      "meshlink.cluster": "east",
      "meshlink.tier": "zone",
      "http.response.status_code": 200,
    });
  });

  it("records the failover on the span", async () => {
    await eastA.stop();
    await (await mesh.fetch(`${URL_BASE}/traced-failover`)).arrayBuffer();
    const client = tracing.exporter.getFinishedSpans().find((s) => s.name === "GET")!;
    expect(client.attributes).toMatchObject({ "meshlink.cluster": "west", "meshlink.attempts": 2 });
    expect(client.events.map((e) => e.name)).toEqual(["meshlink.retry"]);
    expect(west.requests[0]!.headers.traceparent).toContain(client.spanContext().traceId);
  });
});

describe("mesh.describe", () => {
  it("shows each service's sources, endpoints in the router's order and their health", async () => {
    await (await mesh.fetch(`${URL_BASE}/d`)).arrayBuffer();
    const d = mesh.describe();
    expect(d.locality).toEqual({ region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2"] });
    const svc = d.services[0]!;
    expect(svc.service).toBe("api.default:8080");
    expect(svc.state).toBe("bound");
    expect(svc.sources[0]).toMatchObject({ backend: "static", state: "bound", endpoints: 4, stale: false });
    expect(svc.endpoints.map((e) => e.tier)).toEqual(["zone", "region", "failover:us-west-2", "other"]);
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
  });
});

import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh, type Mesh, type MeshOptions } from "../../src/index.js";
import { installTracing } from "../helpers/otel.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Spans of calls through the mesh, read through the SDK's in-memory exporter.
let tracing: ReturnType<typeof installTracing>;
let zone: TestServer;
let west: TestServer;
let failing: TestServer;
let slow: TestServer;
let deadPort: number;
const meshes: Mesh[] = [];

const ep = (address: string, port: number, cluster: string, region: string, zone = "") => ({
  address,
  port,
  cluster,
  region,
  zone,
});

function mesh(options: Partial<MeshOptions> = {}): Mesh {
  const m = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [ep(zone.address, zone.port, "east", "us-east-1", "us-east-1a"), westEp()],
          "down.default": [ep("127.0.100.43", deadPort, "east", "us-east-1", "us-east-1a"), westEp()],
          "flaky.default": [ep(failing.address, failing.port, "east", "us-east-1", "us-east-1a"), westEp()],
          "slow.default": [ep(slow.address, slow.port, "east", "us-east-1", "us-east-1a"), westEp()],
          "dead.default": [
            ep("127.0.100.43", deadPort, "east", "us-east-1", "us-east-1a"),
            ep("127.0.100.46", deadPort, "east", "us-east-1", "us-east-1a"),
          ],
        },
      }),
    ],
    ...options,
  });
  meshes.push(m);
  return m;
}
const westEp = () => ep(west.address, west.port, "west", "us-west-2", "us-west-2a");

beforeAll(async () => {
  tracing = installTracing();
  zone = await startServer("zone", { address: "127.0.100.41" });
  west = await startServer("west", { address: "127.0.100.42" });
  failing = await startServer("failing", { address: "127.0.100.44" });
  failing.status = 503;
  slow = await startServer("slow", {
    address: "127.0.100.45",
    // Answers late: the hedge answers first.
    handler: (_req, res) => setTimeout(() => res.end("slow"), 500),
  });
  const dead = await startServer("dead", { address: "127.0.100.43" });
  deadPort = dead.port;
  await dead.stop();
});

afterAll(async () => {
  for (const m of meshes) await m.close();
  tracing.uninstall();
  for (const s of [zone, west, failing, slow]) await s.stop();
});

beforeEach(() => tracing.exporter.reset());

/** The call span and its attempt spans, in attempt order. */
function spansOf(): { call: ReadableSpan; attempts: ReadableSpan[] } {
  const spans = tracing.exporter.getFinishedSpans();
  const call = spans.find((s) => s.kind === SpanKind.INTERNAL)!;
  const attempts = spans
    .filter((s) => s.parentSpanContext?.spanId === call.spanContext().spanId)
    .sort((a, b) => Number(a.attributes["meshlink.attempt"]) - Number(b.attributes["meshlink.attempt"]));
  return { call, attempts };
}

describe("call and attempt spans", () => {
  it("records a call span and a client span per attempt with HTTP semantic conventions", async () => {
    const m = mesh();
    await (await m.fetch("http://api.default.svc.cluster.local/x?y=1")).arrayBuffer();
    const { call, attempts } = spansOf();
    expect(call.name).toBe("GET");
    expect(call.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.full": "http://api.default.svc.cluster.local/x?y=1",
      "server.address": "api.default.svc.cluster.local",
      "server.port": 80,
      "http.response.status_code": 200,
      "meshlink.service": "api.default",
      "meshlink.endpoint": `east/127.0.100.41:${zone.port}`,
      "meshlink.cluster": "east",
      "meshlink.region": "us-east-1",
      "meshlink.zone": "us-east-1a",
      "meshlink.tier": "zone",
      "meshlink.attempts": 1,
    });
    expect(call.attributes["meshlink.failover"]).toBeUndefined();
    expect(attempts).toHaveLength(1);
    const [a] = attempts;
    expect(a!.name).toBe("GET attempt");
    expect(a!.kind).toBe(SpanKind.CLIENT);
    expect(a!.attributes).toMatchObject({
      "http.request.method": "GET",
      "url.full": "http://api.default.svc.cluster.local/x?y=1",
      "server.address": "api.default.svc.cluster.local",
      "network.peer.address": "127.0.100.41",
      "network.peer.port": zone.port,
      "http.response.status_code": 200,
      "meshlink.attempt": 1,
      "meshlink.attempt.cause": "first",
      "meshlink.tier": "zone",
      "meshlink.endpoint.outstanding": 0,
    });
    expect(a!.attributes["http.request.resend_count"]).toBeUndefined();
    // The server's parent is the attempt: the span of the request it received.
    const header = zone.requests.at(-1)!.headers.traceparent as string;
    expect(header).toBe(`00-${a!.spanContext().traceId}-${a!.spanContext().spanId}-01`);
  });

  it("says why a retry left its endpoint and why the retry failed over", async () => {
    const m = mesh();
    await (await m.fetch("http://down.default.svc.cluster.local/r")).arrayBuffer();
    const { call, attempts } = spansOf();
    expect(attempts.map((a) => a.attributes["meshlink.attempt.cause"])).toEqual(["first", "retry"]);
    const [first, retry] = attempts;
    expect(first!.status.code).toBe(SpanStatusCode.ERROR);
    expect(first!.attributes).toMatchObject({
      "error.type": "ECONNREFUSED",
      "meshlink.attempt.outcome": "refused",
      "meshlink.tier": "zone",
    });
    expect(retry!.attributes).toMatchObject({
      "meshlink.attempt": 2,
      "http.request.resend_count": 1,
      "meshlink.retry.reason": "refused",
      "meshlink.retry.from": `east/127.0.100.43:${deadPort}`,
      "meshlink.tier": "failover:us-west-2",
      "meshlink.failover": true,
      "meshlink.failover.reason": "refused",
      "http.response.status_code": 200,
    });
    expect(call.attributes).toMatchObject({
      "meshlink.attempts": 2,
      "meshlink.failover": true,
      "meshlink.failover.reason": "refused",
      "meshlink.cluster": "west",
    });
    expect(call.events.map((e) => [e.name, e.attributes?.["meshlink.retry.reason"]])).toEqual([
      ["meshlink.retry", "refused"],
    ]);
  });

  it("says a first attempt failed over because the better tier's endpoints are ejected", async () => {
    const m = mesh({ outlierDetection: { consecutiveFailures: 1 } });
    await (await m.fetch("http://down.default.svc.cluster.local/eject")).arrayBuffer();
    tracing.exporter.reset();
    await (await m.fetch("http://down.default.svc.cluster.local/after")).arrayBuffer();
    const { call, attempts } = spansOf();
    expect(attempts).toHaveLength(1);
    expect(attempts[0]!.attributes).toMatchObject({
      "meshlink.attempt.cause": "first",
      "meshlink.tier": "failover:us-west-2",
      "meshlink.failover": true,
      "meshlink.failover.reason": "ejected",
    });
    expect(call.attributes).toMatchObject({ "meshlink.failover.reason": "ejected", "meshlink.attempts": 1 });
  });

  it("records a retried status as the attempt's error and the retry's reason", async () => {
    const m = mesh();
    await (await m.fetch("http://flaky.default.svc.cluster.local/s")).arrayBuffer();
    const { attempts } = spansOf();
    expect(attempts[0]!.attributes).toMatchObject({
      "http.response.status_code": 503,
      "error.type": "503",
      "meshlink.attempt.outcome": "status_503",
    });
    expect(attempts[1]!.attributes).toMatchObject({
      "meshlink.retry.reason": "status_503",
      "http.response.status_code": 200,
    });
  });

  it("marks the call when the retry budget refused a retry", async () => {
    const m = mesh({ policy: { budget: { percent: 0, minRetriesPerSecond: 0 } } });
    const res = await m.fetch("http://flaky.default.svc.cluster.local/budget");
    await res.arrayBuffer();
    expect(res.status).toBe(503);
    const { call, attempts } = spansOf();
    expect(attempts).toHaveLength(1);
    expect(call.attributes).toMatchObject({
      "meshlink.retry_budget_exhausted": true,
      "http.response.status_code": 503,
      "error.type": "503",
    });
    expect(call.status.code).toBe(SpanStatusCode.ERROR);
    expect(call.events.map((e) => e.name)).toEqual(["meshlink.retry_budget_exhausted"]);
  });

  it("records a hedge: the racing attempt, the loser given up, the call marked hedged", async () => {
    const m = mesh({ policy: { hedging: { minPerSecond: 100 } } });
    const res = await m.fetch("http://slow.default.svc.cluster.local/h", {
      headers: { "x-meshlink-hedge": "20" },
    });
    expect(await res.text()).toContain("west");
    // The loser's span ends when the engine gives up on it: at the winner's response.
    const { call, attempts } = spansOf();
    expect(call.attributes).toMatchObject({ "meshlink.hedged": true, "meshlink.cluster": "west" });
    expect(attempts.map((a) => a.attributes["meshlink.attempt.cause"])).toEqual(["first", "hedge"]);
    expect(attempts[0]!.attributes).toMatchObject({ "meshlink.attempt.outcome": "hedge_lost" });
    expect(attempts[1]!.attributes).toMatchObject({
      "meshlink.failover": true,
      "meshlink.failover.reason": "hedged",
    });
  });

  it("marks an attempt sent in panic, and the failed call's error type", async () => {
    const m = mesh({ outlierDetection: { consecutiveFailures: 1 } });
    await expect(m.fetch("http://dead.default.svc.cluster.local/1")).rejects.toThrow();
    tracing.exporter.reset();
    // Every endpoint is ejected: the router panics and tries them all the same.
    await expect(m.fetch("http://dead.default.svc.cluster.local/2")).rejects.toThrow();
    const { call, attempts } = spansOf();
    expect(attempts[0]!.attributes).toMatchObject({ "meshlink.panic": true, "meshlink.tier": "zone" });
    expect(call.status.code).toBe(SpanStatusCode.ERROR);
    expect(call.attributes).toMatchObject({
      "error.type": "MESHLINK_ERR_REQUEST_FAILED",
      "meshlink.attempts": 2,
    });
  });
});

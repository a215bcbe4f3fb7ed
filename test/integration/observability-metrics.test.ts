import type { Histogram } from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { DiscoveryError } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { scriptedBackend } from "../helpers/backend.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import { type Collected, installMetrics } from "../telemetry/metric-reader.js";

// Metrics of calls through the mesh, read through the SDK's in-memory metric reader.
let reader: ReturnType<typeof installMetrics>;
let zone: TestServer;
let west: TestServer;
let failing: TestServer;
let deadPort: number;
let mesh: Mesh;
let frugal: Mesh;
let watched: Mesh;
const scripted = scriptedBackend("scripted");
let collected: Collected;

const ep = (address: string, port: number, cluster: string, region: string, zone = "") => ({
  address,
  port,
  cluster,
  region,
  zone,
});

beforeAll(async () => {
  reader = installMetrics();
  zone = await startServer("zone", { address: "127.0.100.61" });
  west = await startServer("west", { address: "127.0.100.62" });
  failing = await startServer("failing", { address: "127.0.100.64" });
  failing.status = 503;
  const dead = await startServer("dead", { address: "127.0.100.63" });
  deadPort = dead.port;
  await dead.stop();
  const westEp = ep(west.address, west.port, "west", "us-west-2", "us-west-2a");
  const services = {
    "api.default": [ep(zone.address, zone.port, "east", "us-east-1", "us-east-1a"), westEp],
    "down.default": [ep("127.0.100.63", deadPort, "east", "us-east-1", "us-east-1a"), westEp],
    "flaky.default": [ep(failing.address, failing.port, "east", "us-east-1", "us-east-1a"), westEp],
  };
  const common = { env: {}, region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2"] };
  mesh = createMesh({
    ...common,
    outlierDetection: { consecutiveFailures: 1 },
    discovery: [staticDiscovery({ services })],
  });
  watched = createMesh({ env: {}, discovery: [scripted] });
  frugal = createMesh({
    ...common,
    policy: { budget: { percent: 0, minRetriesPerSecond: 0 } },
    discovery: [staticDiscovery({ services })],
  });
  for (let i = 0; i < 2; i++) await (await mesh.fetch("http://api.default.svc.cluster.local/")).arrayBuffer();
  await (await mesh.fetch("http://down.default.svc.cluster.local/")).arrayBuffer();
  await (await mesh.fetch("http://flaky.default.svc.cluster.local/")).arrayBuffer();
  await (await frugal.fetch("http://flaky.default.svc.cluster.local/")).arrayBuffer();
  // A service only the scripted backend knows: it answers, then fails.
  const resolving = watched.resolve("scripted.default");
  scripted.push({
    kind: "bound",
    endpoints: [createEndpoint({ address: "127.0.100.65", port: 80, cluster: "c", backend: "scripted" })],
  });
  await resolving;
  const failed = new Promise<void>((resolve) => watched.onDiscoveryError(() => resolve()));
  scripted.push({ kind: "failed", error: new DiscoveryError("scripted", "scripted.default", "down") });
  await failed;
  // A minute later, as the collector sees it.
  const now = Date.now();
  vi.spyOn(Date, "now").mockReturnValue(now + 60_000);
  try {
    collected = await reader.collect();
  } finally {
    vi.restoreAllMocks();
  }
});

afterAll(async () => {
  await mesh.close();
  await frugal.close();
  await watched.close();
  await reader.uninstall();
  for (const s of [zone, west, failing]) await s.stop();
});

describe("metrics", () => {
  it("records each call's duration by service, status and tier", () => {
    const api = collected.points("meshlink.call.duration", {
      "meshlink.service": "api.default",
      "http.response.status_code": 200,
      "meshlink.tier": "zone",
    });
    expect(api).toHaveLength(1);
    expect((api[0]!.value as Histogram).count).toBe(2);
    expect(collected.byName.get("meshlink.call.duration")!.descriptor.unit).toBe("s");
    const down = collected.points("meshlink.call.duration", {
      "meshlink.service": "down.default",
      "meshlink.tier": "failover:us-west-2",
    });
    expect((down[0]!.value as Histogram).count).toBe(1);
  });

  it("counts attempts by outcome, and retries by why the endpoint was left", () => {
    expect(
      collected.value("meshlink.attempts", {
        "meshlink.service": "down.default",
        "meshlink.cluster": "east",
        "meshlink.tier": "zone",
        "meshlink.attempt.outcome": "refused",
      }),
    ).toBe(1);
    expect(
      collected.value("meshlink.attempts", {
        "meshlink.service": "down.default",
        "meshlink.cluster": "west",
        "meshlink.attempt.outcome": "success",
      }),
    ).toBe(1);
    expect(collected.value("meshlink.attempts", { "meshlink.service": "api.default" })).toBe(2);
    expect(
      collected.value("meshlink.retries", {
        "meshlink.service": "down.default",
        "meshlink.retry.reason": "refused",
      }),
    ).toBe(1);
    expect(
      collected.value("meshlink.retries", {
        "meshlink.service": "flaky.default",
        "meshlink.retry.reason": "status_503",
      }),
    ).toBe(1);
  });

  it("counts retries the budget refused", () => {
    expect(collected.value("meshlink.retry_budget.exhausted", { "meshlink.service": "flaky.default" })).toBe(
      1,
    );
  });

  it("counts ejections by cluster", () => {
    // The refused endpoint and the 503 one, each ejected after one failure.
    expect(collected.value("meshlink.ejections", { "meshlink.cluster": "east" })).toBe(2);
  });

  it("observes healthy and known endpoints per service and tier", () => {
    const down = { "meshlink.service": "down.default" };
    expect(collected.value("meshlink.endpoints.healthy", { ...down, "meshlink.tier": "zone" })).toBe(0);
    expect(collected.value("meshlink.endpoints", { ...down, "meshlink.tier": "zone" })).toBe(1);
    expect(
      collected.value("meshlink.endpoints.healthy", { ...down, "meshlink.tier": "failover:us-west-2" }),
    ).toBe(1);
    expect(
      collected.value("meshlink.endpoints.healthy", {
        "meshlink.service": "api.default",
        "meshlink.tier": "zone",
      }),
    ).toBe(1);
  });

  it("observes discovery staleness: 0 while a backend answers, the age of its last answer while it fails", () => {
    const api = collected.points("meshlink.discovery.staleness", {
      "meshlink.service": "api.default",
      "meshlink.backend": "static",
    });
    expect(api.map((p) => p.value)).toEqual([0]);
    const stale = collected.value("meshlink.discovery.staleness", {
      "meshlink.service": "scripted.default",
      "meshlink.backend": "scripted",
    });
    expect(stale).toBeGreaterThanOrEqual(60);
    expect(stale).toBeLessThan(120);
  });
});

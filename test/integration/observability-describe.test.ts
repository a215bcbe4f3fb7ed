import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import type { EndpointDescription } from "../../src/telemetry/describe.js";
import { scriptedBackend } from "../helpers/backend.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// mesh.describe() and mesh.config against real loopback servers.
let west: TestServer;
let deadPort: number;
let mesh: Mesh;

beforeAll(async () => {
  west = await startServer("west", { address: "127.0.100.82" });
  const dead = await startServer("dead", { address: "127.0.100.81" });
  deadPort = dead.port;
  await dead.stop();
  mesh = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 300, ejectionJitter: 0 },
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [
            {
              address: "127.0.100.81",
              port: deadPort,
              cluster: "east",
              region: "us-east-1",
              zone: "us-east-1a",
            },
            {
              address: west.address,
              port: west.port,
              cluster: "west",
              region: "us-west-2",
              zone: "us-west-2a",
            },
          ],
        },
      }),
    ],
  });
});

afterAll(async () => {
  await mesh.close();
  await west.stop();
});

/** An endpoint's `available`, `unavailableReason` and health `state` say the same thing. */
function consistent(e: EndpointDescription): void {
  expect(e.available).toBe(e.unavailableReason === undefined);
  if (e.ready) expect(e.available).toBe(e.health.state === "healthy");
  if (e.health.state !== "ejected") expect(e.health.ejectedUntil).toBeUndefined();
}

describe("Mesh.describe", () => {
  it("shows each tier's share of traffic, each cluster's available endpoints and every endpoint's health", async () => {
    await (await mesh.fetch("http://api.default.svc.cluster.local/")).arrayBuffer();
    const d = mesh.describe();
    expect(Date.parse(d.time)).not.toBeNaN();
    const api = d.services[0]!;
    expect(api.service).toBe("api.default:80");
    expect(api.failover).toBe(true);
    expect(api.panic).toBe(false);
    expect(api.ageMs).toBeGreaterThanOrEqual(0);
    expect(api.tiers).toEqual([
      { tier: "zone", rank: 0, total: 1, healthy: 0, load: 0, panic: false },
      { tier: "failover:us-west-2", rank: 2, total: 1, healthy: 1, load: 1, panic: false },
    ]);
    expect(api.clusters).toEqual([
      { cluster: "east", regions: ["us-east-1"], zones: ["us-east-1a"], endpoints: 1, available: 0 },
      { cluster: "west", regions: ["us-west-2"], zones: ["us-west-2a"], endpoints: 1, available: 1 },
    ]);
    const [dead, alive] = api.endpoints;
    expect(dead).toMatchObject({
      address: "127.0.100.81",
      port: deadPort,
      tier: "zone",
      available: false,
      unavailableReason: "ejected",
      health: { state: "ejected", ejections: 1, lastFailure: "ECONNREFUSED", outstanding: 0 },
    });
    expect(Date.parse(dead!.health.ejectedUntil!)).toBeGreaterThan(Date.now());
    expect(alive).toMatchObject({ address: west.address, available: true, health: { state: "healthy" } });
    // Peak-EWMA latency of the endpoint that answered.
    expect(alive!.health.latencyMs).toBeGreaterThan(0);
    for (const e of api.endpoints) consistent(e);
    expect(api.sources).toMatchObject([
      { backend: "static", state: "bound", error: undefined, errorCode: undefined },
    ]);
  });

  it("shows an endpoint whose ejection is over as available and healthy, never one without the other", async () => {
    // The ejection ends (the router takes the endpoint back) and the failover with it.
    if (mesh.describe().services[0]!.failover) {
      await new Promise<void>((resolve) => {
        const sub = mesh.onFailoverEnded(() => {
          sub.dispose();
          resolve();
        });
      });
    }
    const api = mesh.describe().services[0]!;
    expect(api.failover).toBe(false);
    const dead = api.endpoints.find((e) => e.cluster === "east")!;
    expect(dead).toMatchObject({
      available: true,
      unavailableReason: undefined,
      health: { state: "healthy" },
    });
    expect(dead.health.ejectedUntil).toBeUndefined();
    for (const e of api.endpoints) consistent(e);
    expect(api.tiers[0]).toMatchObject({ tier: "zone", healthy: 1, load: 1 });
  });

  it("shows a failing backend's error and code", async () => {
    const backend = scriptedBackend("scripted");
    const m = createMesh({ env: {}, discovery: [backend] });
    try {
      const resolving = m.resolve("svc.default");
      backend.push({
        kind: "bound",
        endpoints: [createEndpoint({ address: "127.0.100.83", port: 80, cluster: "c", backend: "scripted" })],
      });
      await resolving;
      const failed = new Promise<void>((resolve) => m.onDiscoveryError(() => resolve()));
      backend.push({ kind: "failed", error: new DiscoveryError("scripted", "svc.default", "timed out") });
      await failed;
      const source = m.describe().services[0]!.sources[0]!;
      expect(source).toMatchObject({
        backend: "scripted",
        stale: true,
        endpoints: 1,
        errorCode: ErrorCodes.DISCOVERY,
      });
      expect(source.error).toContain("timed out");
    } finally {
      await m.close();
    }
  });
});

describe("Mesh.config", () => {
  it("shows the values in force, defaults included, and the mesh behaves as configured", async () => {
    const c = mesh.config;
    expect(c.policy).toMatchObject({
      attempts: 2,
      perTryTimeout: 15_000,
      retryOn: [502, 503, 504],
      propagateDeadline: true,
      retryOnRateLimited: true,
      maxRetryAfter: 10_000,
      backoff: { base: 25, max: 250 },
      budget: { percent: 0.2, minRetriesPerSecond: 10, ttl: 10_000 },
      hedging: { delay: "p95", maxExtraLoad: 0.01, minPerSecond: 0, services: [] },
    });
    expect(c.policy.deadline).toBeUndefined();
    expect(c.outlierDetection).toEqual({
      consecutiveFailures: 1,
      baseEjectionTime: 300,
      maxEjectionTime: 300_000,
      ejectionJitter: 0,
      failureRate: { threshold: 0.85, window: 100, minimumRequests: 50 },
    });
    expect(c.routing).toMatchObject({
      lbPolicy: "p2c",
      overprovisioningFactor: 1.4,
      panicThreshold: 0.5,
      latencyDecay: 10_000,
    });
    expect(c.agent).toMatchObject({ connectTimeout: 10_000, pipelining: 1 });
    expect(c.admin).toBeUndefined();
    expect(Object.isFrozen(c)).toBe(true);
    // The default per-try timeout is in force but was not chosen: the server is not told it.
    expect(west.requests[0]!.headers["x-meshlink-timeout-ms"]).toBeUndefined();
  });
});

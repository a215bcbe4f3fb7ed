import { describe, expect, it, vi } from "vitest";
import { staticDiscovery } from "../src/discovery/static.js";
import { ErrorCodes } from "../src/errors.js";
import { createMesh } from "../src/mesh.js";
import { rejection } from "./helpers/assert.js";

const ep = (
  address: string,
  cluster: string,
  region: string,
  zone = "",
  extra: Record<string, unknown> = {},
) => ({
  address,
  port: 80,
  cluster,
  region,
  zone,
  ...extra,
});

describe("createMesh", () => {
  const services = {
    "api.default": [
      ep("10.0.0.9", "dr", "us-east-1", "us-east-1a", { backup: true }),
      ep("10.3.0.1", "asia", "ap-south-1"),
      ep("10.2.0.1", "eu", "europe-west1"),
      ep("10.1.0.1", "west", "us-west-2"),
      ep("10.0.0.2", "east", "us-east-1", "us-east-1b"),
      ep("10.0.0.1", "east", "us-east-1", "us-east-1a"),
    ],
  };

  it("orders resolved endpoints by tier: zone, region, failover regions in order, the rest, backups", async () => {
    const mesh = createMesh({
      env: {
        MESHLINK_REGION: "us-east-1",
        MESHLINK_ZONE: "us-east-1a",
        MESHLINK_FAILOVER: "europe-west1,us-west-2",
      },
      discovery: [staticDiscovery({ services })],
    });
    const resolved = await mesh.resolve("api.default.svc.cluster.local");
    expect(resolved.map((r) => [r.endpoint.address, r.tier])).toEqual([
      ["10.0.0.1", "zone"],
      ["10.0.0.2", "region"],
      ["10.2.0.1", "failover:europe-west1"],
      ["10.1.0.1", "failover:us-west-2"],
      ["10.3.0.1", "other"],
      ["10.0.0.9", "backup"],
    ]);
    expect(resolved.every((r) => r.available && r.health.state === "healthy")).toBe(true);
    await mesh.close();
  });

  it("uses a terminating endpoint only when its cluster has no ready one", async () => {
    const mesh = createMesh({
      env: {},
      region: "us-east-1",
      discovery: [
        staticDiscovery({
          services: {
            "api.default": [
              ep("10.0.0.1", "east", "us-east-1", "", { terminating: true }),
              ep("10.0.0.2", "east", "us-east-1"),
              ep("10.1.0.1", "west", "us-west-2", "", { terminating: true }),
              ep("10.1.0.2", "west", "us-west-2", "", { ready: false }),
            ],
          },
        }),
      ],
    });
    const byAddress = Object.fromEntries(
      (await mesh.resolve("api.default")).map((r) => [
        r.endpoint.address,
        r.unavailableReason ?? "available",
      ]),
    );
    expect(byAddress).toEqual({
      "10.0.0.1": "terminating",
      "10.0.0.2": "available",
      "10.1.0.1": "available",
      "10.1.0.2": "not-ready",
    });
    await mesh.close();
  });

  it("rejects a malformed name, an unknown service and a call after close with typed errors", async () => {
    const mesh = createMesh({ env: {}, discovery: [staticDiscovery({ services })] });
    expect((await rejection(mesh.resolve("not_a service"))).code).toBe(ErrorCodes.SERVICE_NAME);
    expect((await rejection(mesh.resolve("nope.default"))).code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
    await mesh.close();
    await mesh.close(); // idempotent
    expect((await rejection(mesh.resolve("api.default"))).code).toBe(ErrorCodes.CLOSED);
  });

  it("fails fast on a bad environment variable, naming it", () => {
    let err: (Error & { code?: string }) | undefined;
    try {
      createMesh({ env: { MESHLINK_FAILOVER: "us-west-2,,eu" } });
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe(ErrorCodes.CONFIG);
    expect(err?.message).toBe('MESHLINK_FAILOVER="us-west-2,,eu": empty region at position 2');
  });

  it("rejects something that is not a discovery backend", () => {
    expect(() => createMesh({ env: {}, discovery: [{} as never] })).toThrow(/discovery\[0\]/);
  });
});

describe("createMesh forgetting", () => {
  it("forgets services nobody called for serviceIdleTimeout: watches, balancers and call state", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval", "Date"] });
    try {
      let watching = 0;
      const base = staticDiscovery({ services: { "api.default": [ep("10.0.0.1", "east", "us-east-1")] } });
      const counting = {
        name: "static",
        claims: base.claims,
        async *watch(...args: Parameters<typeof base.watch>) {
          watching++;
          try {
            yield* base.watch(...args);
          } finally {
            watching--;
          }
        },
      };
      const mesh = createMesh({ env: {}, discovery: [counting], serviceIdleTimeout: 1_000 });
      for (let i = 0; i < 200; i++) await rejection(mesh.resolve(`gone${i}.default`));
      await mesh.resolve("api.default");
      expect(mesh.describe().services).toHaveLength(201);
      expect(watching).toBe(201);
      for (let t = 0; t < 4; t++) {
        await mesh.resolve("api.default"); // in use all along
        vi.advanceTimersByTime(1_000);
      }
      await new Promise((r) => setImmediate(r));
      expect(mesh.describe().services.map((s) => s.service)).toEqual(["api.default"]);
      expect(watching).toBe(1);
      await mesh.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { answerAfter, type Blackhole, flap, startBlackhole } from "../helpers/faults.js";
import { failures, runLoad, shareOfLast } from "../helpers/load.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Three clusters on loopback: home (us-east-1, the caller's zone), west (the
// failover region) and eu (the rest), two servers each, every one on its
// own address.
let home: TestServer[];
let west: TestServer[];
let eu: TestServer[];
let mesh: Mesh;
let holes: Blackhole[];

const URL_ = "http://api.default.svc.cluster.local/";

async function cluster(prefix: string, octet: number): Promise<TestServer[]> {
  return Promise.all([1, 2].map((i) => startServer(`${prefix}-${i}`, { address: `127.0.${octet}.${i}` })));
}

function newMesh(attempts = 2): Mesh {
  const ep = (s: TestServer, cluster: string, region: string, zone: string) => ({
    address: s.address,
    port: s.port,
    cluster,
    region,
    zone,
  });
  return createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    // A blackholed attempt gives up after 300 ms; ejections last 300 ms × n, so that recovery shows within a test.
    policy: { perTryTimeout: 300, attempts },
    outlierDetection: { baseEjectionTime: 300, maxEjectionTime: 1000 },
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [
            ...home.map((s) => ep(s, "home", "us-east-1", "us-east-1a")),
            ...west.map((s) => ep(s, "west", "us-west-2", "us-west-2a")),
            ...eu.map((s) => ep(s, "eu", "europe-west1", "europe-west1-b")),
          ],
        },
      }),
    ],
  });
}

/** Traffic until most of the last 100 calls land home again (the home cluster recovered and was probed). */
async function awaitReturnHome(): Promise<number> {
  const outcomes = await runLoad(mesh, URL_, {
    maxMs: 8000,
    until: (o) => shareOfLast(o, 100, "home") >= 0.95,
  });
  expect(failures(outcomes)).toEqual([]);
  return shareOfLast(outcomes, 100, "home");
}

beforeEach(async () => {
  home = await cluster("home", 11);
  west = await cluster("west", 12);
  eu = await cluster("eu", 13);
  holes = [];
  mesh = newMesh();
});

afterEach(async () => {
  await mesh.close();
  await Promise.all(holes.map((h) => h.close()));
  await Promise.all([...home, ...west, ...eu].filter((s) => s.listening).map((s) => s.stop()));
});

describe("failover across clusters", () => {
  it("serves from home while it is healthy", async () => {
    const outcomes = await runLoad(mesh, URL_, { maxMs: 5000, until: (o) => o.length >= 200 });
    expect(failures(outcomes)).toEqual([]);
    expect(outcomes.every((o) => o.server?.startsWith("home"))).toBe(true);
  });

  it("loses no idempotent call when the home cluster refuses connections, and returns when it recovers", async () => {
    await runLoad(mesh, URL_, { maxMs: 5000, until: (o) => o.length >= 50 });
    await Promise.all(home.map((s) => s.stop()));
    const during = await runLoad(mesh, URL_, {
      maxMs: 5000,
      until: (o) => o.length >= 300 && shareOfLast(o, 100, "west") === 1,
    });
    expect(failures(during)).toEqual([]);
    expect(shareOfLast(during, 100, "west")).toBe(1);
    await Promise.all(home.map((s) => s.start()));
    expect(await awaitReturnHome()).toBeGreaterThanOrEqual(0.95);
  }, 30_000);

  it("loses no idempotent call when the home cluster is blackholed, and returns when it recovers", async () => {
    await runLoad(mesh, URL_, { maxMs: 5000, until: (o) => o.length >= 50 });
    await Promise.all(home.map((s) => s.stop()));
    holes = await Promise.all(home.map((s) => startBlackhole(s.address, s.port)));
    const during = await runLoad(mesh, URL_, {
      maxMs: 8000,
      until: (o) => o.length >= 300 && shareOfLast(o, 100, "west") === 1,
    });
    expect(failures(during)).toEqual([]);
    expect(shareOfLast(during, 100, "west")).toBe(1);
    expect(holes.reduce((n, h) => n + h.accepted, 0)).toBeGreaterThan(0);
    await Promise.all(holes.map((h) => h.close()));
    holes = [];
    await Promise.all(home.map((s) => s.start()));
    expect(await awaitReturnHome()).toBeGreaterThanOrEqual(0.95);
  }, 30_000);

  it("keeps serving from a home cluster that answers ten times slower, and fails nothing", async () => {
    for (const s of [...home, ...west, ...eu]) s.handler = answerAfter(s.name, 3);
    for (const s of home) s.handler = answerAfter(s.name, 30);
    const outcomes = await runLoad(mesh, URL_, { maxMs: 8000, until: (o) => o.length >= 200 });
    expect(failures(outcomes)).toEqual([]);
    // Slowness is not failure: nothing is ejected and home keeps its traffic.
    expect(shareOfLast(outcomes, 100, "home")).toBe(1);
    const resolved = await mesh.resolve("api.default");
    expect(resolved.filter((r) => r.health.state !== "healthy")).toEqual([]);
  }, 30_000);

  it("moves load inside a tier towards the faster endpoint", async () => {
    home[0]!.handler = answerAfter(home[0]!.name, 40);
    home[1]!.handler = answerAfter(home[1]!.name, 4);
    const outcomes = await runLoad(mesh, URL_, { maxMs: 8000, until: (o) => o.length >= 400 });
    expect(failures(outcomes)).toEqual([]);
    const last = outcomes.slice(-200);
    const fast = last.filter((o) => o.server === home[1]!.name).length;
    expect(fast / last.length).toBeGreaterThan(0.6);
  }, 30_000);

  it("loses no idempotent call while the home cluster flaps down and up every second", async () => {
    const flapping = flap(home, 1000);
    let outcomes: Awaited<ReturnType<typeof runLoad>>;
    try {
      outcomes = await runLoad(mesh, URL_, { maxMs: 3500 });
    } finally {
      await flapping.stop();
    }
    expect(flapping.toggles).toBeGreaterThanOrEqual(3);
    expect(failures(outcomes)).toEqual([]);
    expect(outcomes.some((o) => o.server?.startsWith("west"))).toBe(true);
    expect(await awaitReturnHome()).toBeGreaterThanOrEqual(0.95);
  }, 30_000);

  it("moves to the rest of the world when home and the failover region are both down, given three attempts", async () => {
    await mesh.close();
    mesh = newMesh(3);
    await Promise.all([...home, ...west].map((s) => s.stop()));
    const outcomes = await runLoad(mesh, URL_, {
      maxMs: 5000,
      until: (o) => o.length >= 200 && shareOfLast(o, 100, "eu") === 1,
    });
    expect(failures(outcomes)).toEqual([]);
    expect(shareOfLast(outcomes, 100, "eu")).toBe(1);
  }, 30_000);
});

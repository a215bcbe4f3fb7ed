import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ConsulBackend } from "../../src/discovery/consul/consul.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry } from "../../src/discovery/registry.js";
import { consulBackend, ids, manualDelays, until, watchOf } from "../helpers/consul-backend.js";
import { type ConsulInstance, startConsulServer, type TestConsulServer } from "../helpers/consul-server.js";

let server: TestConsulServer;
let backend: ConsulBackend | undefined;
let registry: Registry | undefined;

const web = (node: string, address: string, extra: Partial<ConsulInstance> = {}): ConsulInstance => ({
  node,
  address,
  service: "web",
  port: 8080,
  ...extra,
});

beforeEach(async () => {
  server = await startConsulServer({ datacenters: ["dc-east", "dc-west"], address: "127.0.70.1" });
  server.register("dc-east", web("east-1", "127.0.70.2"));
  server.register("dc-west", web("west-1", "127.0.70.4"));
});

afterEach(async () => {
  await registry?.close();
  await backend?.close();
  registry = undefined;
  backend = undefined;
  await server.stop();
});

describe("consulDiscovery", () => {
  it("asks /v1/health/service per datacenter with passing, tags, node-meta and the token header", async () => {
    const s = await startConsulServer({
      datacenters: ["dc-east"],
      address: "127.0.70.1",
      acl: { tokens: { s3cr3t: { services: [""], nodes: [""] } } },
    });
    try {
      s.register("dc-east", web("a", "127.0.70.2", { tags: ["v1", "blue"], nodeMeta: { rack: "r1" } }));
      s.register("dc-east", web("b", "127.0.70.3", { tags: ["v2"], nodeMeta: { rack: "r1" } }));
      s.register("dc-east", web("c", "127.0.70.4", { tags: ["v1"], nodeMeta: { rack: "r2" } }));
      s.register(
        "dc-east",
        web("d", "127.0.70.5", { tags: ["v1"], nodeMeta: { rack: "r1" }, checks: [{ status: "critical" }] }),
      );
      backend = consulBackend(s.url, {
        datacenters: [{ name: "dc-east", region: "us-east-1" }],
        token: "s3cr3t",
        tags: ["v1"],
        nodeMeta: { rack: "r1" },
      });
      const w = watchOf(backend, "web.service.consul");
      expect(ids(await w.next())).toEqual(["dc-east/127.0.70.2:8080"]);
      const first = s.requests[0]!;
      expect(first.service).toBe("web");
      expect(first.token).toBe("s3cr3t");
      expect(first.query.get("dc")).toBe("dc-east");
      expect(first.query.get("passing")).toBe("1");
      expect(first.query.getAll("tag")).toEqual(["v1"]);
      expect(first.query.getAll("node-meta")).toEqual(["rack:r1"]);
      expect(first.query.has("index")).toBe(false);
      w.abort.abort();
    } finally {
      await backend?.close();
      backend = undefined;
      await s.stop();
    }
  });

  it("makes each datacenter a cluster with its region and the zone from meta", async () => {
    server.register(
      "dc-east",
      web("east-2", "127.0.70.3", { meta: { zone: "us-east-1b" }, weights: { Passing: 3, Warning: 1 } }),
    );
    backend = consulBackend(server.url);
    const update = await watchOf(backend, "web.service.consul").next();
    expect(update.kind).toBe("bound");
    if (update.kind !== "bound") return;
    expect(
      update.endpoints.map((e) => [e.id, e.cluster, e.locality.region, e.locality.zone, e.weight, e.backend]),
    ).toEqual([
      ["dc-east/127.0.70.2:8080", "dc-east", "us-east-1", "", 1, "consul"],
      ["dc-east/127.0.70.3:8080", "dc-east", "us-east-1", "us-east-1b", 3, "consul"],
      ["dc-west/127.0.70.4:8080", "dc-west", "us-west-2", "", 1, "consul"],
    ]);
    expect(update.clusters?.map((c) => [c.cluster, c.fresh, c.error])).toEqual([
      ["dc-east", true, undefined],
      ["dc-west", true, undefined],
    ]);
  });

  it("blocks with the last X-Consul-Index and yields a registration change", async () => {
    backend = consulBackend(server.url, { wait: 120_000 });
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    const held = await server.held((r) => r.dc === "dc-east");
    expect(held.index).toBe(11);
    expect(held.query.get("wait")).toBe("120000ms");
    server.register("dc-east", web("east-2", "127.0.70.3"));
    expect(ids(await w.next())).toEqual([
      "dc-east/127.0.70.2:8080",
      "dc-east/127.0.70.3:8080",
      "dc-west/127.0.70.4:8080",
    ]);
    expect((await server.held((r) => r.dc === "dc-east")).index).toBe(12);
  });

  it("yields nothing when a wait ends or the index moves without a change", async () => {
    backend = consulBackend(server.url, { wait: 20 });
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    let settled = false;
    const next = w.next().then((u) => {
      settled = true;
      return u;
    });
    // Waits run out (20 ms each) and an idempotent write moves the index.
    const east = () => server.requests.filter((r) => r.dc === "dc-east").length;
    const seen = east();
    await server.nextRequest((r) => r.dc === "dc-east" && east() >= seen + 3);
    server.touch("dc-east", "web");
    await server.held((r) => r.dc === "dc-east" && r.index === 12);
    expect(settled).toBe(false);
    server.deregister("dc-west", "web-west-1");
    expect(ids(await next)).toEqual(["dc-east/127.0.70.2:8080"]);
  });

  it("resets the index to 0 when X-Consul-Index goes backwards, and still sees the next change", async () => {
    backend = consulBackend(server.url);
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    await server.held((r) => r.dc === "dc-east" && r.index === 11);
    const fresh = server.nextRequest((r) => r.dc === "dc-east");
    server.resetIndex();
    expect((await fresh).index).toBe(0);
    // The loop blocks again on the new, lower index…
    expect((await server.held((r) => r.dc === "dc-east")).index).toBe(2);
    // …and a change after the reset arrives.
    server.register("dc-east", web("east-2", "127.0.70.3"));
    expect(ids(await w.next())).toContain("dc-east/127.0.70.3:8080");
  });

  it("blocks on index 1 when X-Consul-Index is 0, as Consul's docs prescribe", async () => {
    server.fault("zero-index");
    backend = consulBackend(server.url, { rateLimit: { interval: 60_000 } });
    const w = watchOf(backend, "web.service.consul");
    expect((await w.next()).kind).toBe("bound");
    const next = await server.request((r) => r.dc === "dc-east" && r.index !== 0);
    expect(next.index).toBe(1);
  });

  it("fails a datacenter whose answer lacks X-Consul-Index, keeping its last good set", async () => {
    backend = consulBackend(server.url);
    registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("web.service.consul"));
    await until(watch, (s) => s.state === "bound");
    await server.held((r) => r.dc === "dc-west");
    server.fault("no-index", "dc-west");
    server.touch("dc-west", "web");
    const failed = await until(watch, (s) => s.sources[0]!.stale);
    expect(failed.endpoints.map((e) => e.id)).toContain("dc-west/127.0.70.4:8080");
    const west = failed.sources[0]!.clusters!.find((c) => c.cluster === "dc-west")!;
    expect(west.fresh).toBe(false);
    expect(west.error).toMatch(/^EINDEX X-Consul-Index missing/);
    expect(failed.sources[0]!.error?.code).toBe("MESHLINK_ERR_DISCOVERY");
    server.fault(undefined, "dc-west");
    const recovered = await until(watch, (s) => !s.sources[0]!.stale);
    expect(recovered.sources[0]!.clusters!.every((c) => c.fresh && c.error === undefined)).toBe(true);
  });

  it.each([
    ["garbage", /^EPAYLOAD not JSON/],
    ["wrong-shape", /^EPAYLOAD unexpected shape .*: \[0\]\.Node: /],
    ["500", /^EHTTP HTTP 500 "rpc error making call: No cluster leader"/],
    ["forbidden", /^EACL HTTP 403 "Permission denied"/],
  ] as const)(
    "keeps the last good set through a %s answer and names the error per datacenter",
    async (fault, pattern) => {
      backend = consulBackend(server.url);
      registry = new Registry([backend]);
      const watch = registry.watch(parseServiceName("web.service.consul"));
      await until(watch, (s) => s.state === "bound");
      await server.held((r) => r.dc === "dc-west");
      server.fault(fault, "dc-west");
      server.touch("dc-west", "web");
      const failed = await until(watch, (s) => s.sources[0]!.stale);
      expect(failed.state).toBe("bound");
      expect(failed.endpoints.map((e) => e.id)).toEqual([
        "dc-east/127.0.70.2:8080",
        "dc-west/127.0.70.4:8080",
      ]);
      const [east, west] = failed.sources[0]!.clusters!;
      expect(east).toMatchObject({ cluster: "dc-east", fresh: true, error: undefined });
      expect(west).toMatchObject({ cluster: "dc-west", fresh: false });
      expect(west!.error).toMatch(pattern);
      expect(west!.error).toMatch(/\(datacenter dc-west\)$/);
      server.fault(undefined, "dc-west");
      await until(watch, (s) => !s.sources[0]!.stale);
    },
  );

  it("fails with ACL not found for an unknown token and never shows the token", async () => {
    const s = await startConsulServer({
      datacenters: ["dc-east"],
      address: "127.0.70.1",
      acl: { tokens: {} },
    });
    try {
      s.register("dc-east", web("a", "127.0.70.2"));
      backend = consulBackend(s.url, {
        datacenters: [{ name: "dc-east", region: "us-east-1" }],
        token: "wrong-token",
      });
      const update = await watchOf(backend, "web.service.consul").next();
      expect(update.kind).toBe("failed");
      if (update.kind !== "failed") return;
      expect(update.error.code).toBe("MESHLINK_ERR_DISCOVERY");
      expect(update.clusters?.[0]?.error).toMatch(/^EACL HTTP 403 "ACL not found"/);
      expect(update.error.message).not.toContain("wrong-token");
    } finally {
      await backend?.close();
      backend = undefined;
      await s.stop();
    }
  });

  it("fails when ACLs filtered out every instance, instead of saying the service does not exist", async () => {
    const s = await startConsulServer({
      datacenters: ["dc-east"],
      address: "127.0.70.1",
      acl: { tokens: { reader: { services: ["other"], nodes: [""] } } },
    });
    try {
      s.register("dc-east", web("a", "127.0.70.2"));
      backend = consulBackend(s.url, {
        datacenters: [{ name: "dc-east", region: "us-east-1" }],
        token: "reader",
      });
      const update = await watchOf(backend, "web.service.consul").next();
      expect(update.kind).toBe("failed");
      expect(update.kind === "failed" && update.clusters?.[0]?.error).toMatch(
        /^EACL every instance was filtered out by ACLs/,
      );
    } finally {
      await backend?.close();
      backend = undefined;
      await s.stop();
    }
  });

  it("keeps the last good set while the agent is down and recovers when it restarts with its index reset", async () => {
    backend = consulBackend(server.url);
    registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("web.service.consul"));
    await until(watch, (s) => s.state === "bound");
    await server.held((r) => r.dc === "dc-east" && r.index === 11);
    await server.stop();
    const down = await until(watch, (s) => s.sources[0]!.clusters!.every((c) => c.error !== undefined));
    expect(down.sources[0]!.stale).toBe(true);
    expect(down.endpoints).toHaveLength(2);
    expect(down.sources[0]!.clusters!.map((c) => c.error)).toEqual([
      expect.stringMatching(/^ECONNECT /),
      expect.stringMatching(/^ECONNECT /),
    ]);
    server.resetIndex();
    server.register("dc-east", web("east-2", "127.0.70.3"));
    const fresh = server.nextRequest((r) => r.dc === "dc-east");
    await server.start();
    expect((await fresh).index).toBe(0);
    const up = await until(watch, (s) => s.sources[0]!.clusters!.every((c) => c.fresh));
    expect(up.sources[0]!.stale).toBe(false);
    expect(up.endpoints).toHaveLength(3);
    // Blocking again on the new agent's (lower) index.
    expect((await server.held((r) => r.dc === "dc-east")).index).toBe(3);
  });

  it("retries a failing datacenter after a jittered exponential back-off", async () => {
    await server.stop();
    const delays = manualDelays(5);
    backend = consulBackend(
      server.url,
      { datacenters: [DATACENTER_EAST], backoff: { base: 100, max: 1000 } },
      { delay: delays.delay, random: () => 0.5 },
    );
    const w = watchOf(backend, "web.service.consul");
    expect((await w.next()).kind).toBe("failed");
    await delays.asks(6);
    // Half of each doubled delay is fixed, half random (0.5 here): 0.75 × 100, 200, 400, 800, 1000, 1000.
    expect(delays.asked).toEqual([75, 150, 300, 600, 750, 750]);
  });

  it("rate-limits the loop when the index moves without a change, and not before the burst is spent", async () => {
    let now = 0;
    const delays = manualDelays();
    backend = consulBackend(
      server.url,
      { datacenters: [DATACENTER_EAST], rateLimit: { interval: 15_000, burst: 2 } },
      { delay: delays.delay, now: () => now },
    );
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    await server.held();
    server.touch("dc-east", "web");
    await server.held((r) => r.index === 12);
    server.touch("dc-east", "web");
    await delays.asks(1);
    expect(delays.asked).toEqual([15_000]);
    const before = server.requests.length;
    const after = server.held((r) => r.index === 13);
    now += 15_000;
    delays.release();
    await after;
    expect(server.requests.length).toBe(before + 1);
  });

  it("does not let a datacenter that never answers hold the first snapshot past the grace after the first answer", async () => {
    server.fault("hang", "dc-west");
    const delays = manualDelays();
    backend = consulBackend(server.url, {}, { delay: delays.delay });
    const w = watchOf(backend, "web.service.consul");
    const first = w.next();
    await delays.asks(1);
    expect(delays.asked).toEqual([1000]);
    delays.release();
    const update = await first;
    expect(ids(update)).toEqual(["dc-east/127.0.70.2:8080"]);
    expect(update.kind === "bound" && update.clusters?.[1]).toMatchObject({
      cluster: "dc-west",
      fresh: false,
      updatedAt: undefined,
      error: undefined,
    });
  });

  it("says not-found only once every datacenter has answered", async () => {
    server.deregister("dc-east", "web-east-1");
    server.fault("hang", "dc-west");
    const delays = manualDelays();
    backend = consulBackend(server.url, {}, { delay: delays.delay });
    const w = watchOf(backend, "web.service.consul");
    let settled = false;
    const first = w.next().then((u) => {
      settled = true;
      return u;
    });
    await delays.asks(1);
    delays.release();
    // The grace is over, dc-east has nothing, dc-west has not answered: no
    // verdict yet, once everything the release set off has run.
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    server.fault(undefined, "dc-west");
    server.deregister("dc-west", "web-west-1");
    expect((await first).kind).toBe("not-found");
  });

  it("runs one blocking query per (service, datacenter) for every watch of the service", async () => {
    backend = consulBackend(server.url);
    const a = watchOf(backend, "web.service.consul", 8080);
    const b = watchOf(backend, "web.service.consul", 9090);
    await Promise.all([a.next(), b.next()]);
    expect(backend.queries).toBe(2);
    expect(server.requests.filter((r) => r.index === 0)).toHaveLength(2);
    a.abort.abort();
    expect(await a.it.next()).toEqual({ done: true, value: undefined });
    expect(backend.queries).toBe(2);
    b.abort.abort();
    expect(await b.it.next()).toEqual({ done: true, value: undefined });
    expect(backend.queries).toBe(0);
  });

  it("close() aborts a blocking query at once and ends the watch", async () => {
    backend = consulBackend(server.url, { datacenters: [DATACENTER_EAST], wait: 600_000 });
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    const held = await server.held();
    expect(held.query.get("wait")).toBe("600000ms");
    const released = server.nextReleased();
    const next = w.it.next();
    await backend.close();
    await released;
    expect(await next).toEqual({ done: true, value: undefined });
    expect(server.holding).toBe(0);
  });

  it("yields nothing after the signal aborts", async () => {
    backend = consulBackend(server.url, { datacenters: [DATACENTER_EAST] });
    const w = watchOf(backend, "web.service.consul");
    await w.next();
    await server.held();
    const next = w.it.next();
    const released = server.nextReleased();
    w.abort.abort();
    server.register("dc-east", web("east-2", "127.0.70.3"));
    expect(await next).toEqual({ done: true, value: undefined });
    await released;
    expect(backend.queries).toBe(0);
  });
});

const DATACENTER_EAST = { name: "dc-east", region: "us-east-1" };

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { consulDiscovery } from "../../src/discovery/consul/consul.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { type ConsulInstance, startConsulServer, type TestConsulServer } from "../helpers/consul-server.js";
import { failures, runLoad, shareOfLast } from "../helpers/load.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Two Consul datacenters as two clusters: dc-east (us-east-1, the caller's
// region) and dc-west (us-west-2, its failover region), two servers each on
// their own loopback addresses, all registered in one federated test agent.
let consul: TestConsulServer;
let pods: TestServer[];
let mesh: Mesh | undefined;

const PODS = [
  { name: "east-1", address: "127.0.70.2", dc: "dc-east", zone: "us-east-1a" },
  { name: "east-2", address: "127.0.70.3", dc: "dc-east", zone: "us-east-1b" },
  { name: "west-1", address: "127.0.70.4", dc: "dc-west", zone: "us-west-2a" },
  { name: "west-2", address: "127.0.70.5", dc: "dc-west", zone: "us-west-2b" },
];

const DATACENTERS = [
  { name: "dc-east", region: "us-east-1" },
  { name: "dc-west", region: "us-west-2" },
];

function instance(pod: TestServer, zone: string): ConsulInstance {
  return { node: pod.name, address: pod.address, service: "web", port: pod.port, meta: { zone } };
}

function newMesh(): Mesh {
  return createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [consulDiscovery({ address: consul.url, datacenters: DATACENTERS, env: {} })],
  });
}

beforeEach(async () => {
  consul = await startConsulServer({ datacenters: ["dc-east", "dc-west"], address: "127.0.70.1" });
  pods = await Promise.all(PODS.map((p) => startServer(p.name, { address: p.address })));
  for (const [i, pod] of pods.entries()) consul.register(PODS[i]!.dc, instance(pod, PODS[i]!.zone));
});

afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  await Promise.all(pods.filter((p) => p.listening).map((p) => p.stop()));
  await consul.stop();
});

describe("Consul discovery end to end", () => {
  it("makes two datacenters two clusters with their regions, in the router's tiers", async () => {
    mesh = newMesh();
    const order = await mesh.resolve("web.service.consul");
    expect(order.map((r) => [r.endpoint.id, r.endpoint.locality.region, r.tier])).toEqual([
      [`dc-east/127.0.70.2:${pods[0]!.port}`, "us-east-1", "zone"],
      [`dc-east/127.0.70.3:${pods[1]!.port}`, "us-east-1", "region"],
      [`dc-west/127.0.70.4:${pods[2]!.port}`, "us-west-2", "failover:us-west-2"],
      [`dc-west/127.0.70.5:${pods[3]!.port}`, "us-west-2", "failover:us-west-2"],
    ]);
    const res = await mesh.fetch("http://web.service.consul/hello");
    expect(((await res.json()) as { server: string }).server).toBe("east-1");
  });

  it("brings a registration change to the router while a blocking query waits", async () => {
    mesh = newMesh();
    expect((await mesh.resolve("web.service.consul"))[0]!.endpoint.address).toBe("127.0.70.2");
    const held = await consul.held((r) => r.dc === "dc-east");
    // east-1 moves to another port: one write, one index step.
    const moved = await startServer("east-1b", { address: "127.0.70.2" });
    pods.push(moved);
    consul.register("dc-east", { ...instance(moved, "us-east-1a"), id: "web-east-1" });
    // The loop asks again only after it handed the change on.
    await consul.held((r) => r.dc === "dc-east" && r.index > held.index);
    const first = (await mesh.resolve("web.service.consul"))[0]!;
    expect(first.endpoint.id).toBe(`dc-east/127.0.70.2:${moved.port}`);
    const res = await mesh.fetch("http://web.service.consul/");
    expect(((await res.json()) as { server: string }).server).toBe("east-1b");
  });

  it("fails over to the other datacenter with no failed idempotent call when one datacenter's servers die", async () => {
    mesh = newMesh();
    const url = "http://web.service.consul/api";
    const before = await runLoad(mesh, url, { maxMs: 5000, until: (o) => o.length >= 100 });
    expect(failures(before)).toEqual([]);
    expect(shareOfLast(before, 100, "east")).toBe(1);
    // The east servers die; Consul still lists them as passing (its checks lag).
    await Promise.all(pods.slice(0, 2).map((p) => p.stop()));
    const during = await runLoad(mesh, url, {
      maxMs: 8000,
      until: (o) => o.length >= 300 && shareOfLast(o, 100, "west") === 1,
    });
    expect(failures(during)).toEqual([]);
    expect(shareOfLast(during, 100, "west")).toBe(1);
    // Then Consul's checks catch up: east leaves the set, calls keep going west.
    consul.setCheck("dc-east", "web-east-1", "critical");
    const index = consul.setCheck("dc-east", "web-east-2", "critical");
    await consul.held((r) => r.dc === "dc-east" && r.index >= index);
    const after = await runLoad(mesh, url, { maxMs: 5000, until: (o) => o.length >= 100 });
    expect(failures(after)).toEqual([]);
    expect((await mesh.resolve("web.service.consul")).map((r) => r.endpoint.cluster)).toEqual([
      "dc-west",
      "dc-west",
    ]);
  }, 30_000);

  it("shows a failing datacenter's error in describe() and keeps its endpoints", async () => {
    mesh = newMesh();
    await mesh.resolve("web.service.consul");
    await consul.held((r) => r.dc === "dc-west");
    consul.fault("500", "dc-west");
    // The retry after the failed answer comes once the failure was handed on.
    const retry = consul.nextRequest((r) => r.dc === "dc-west" && r.index === 0);
    consul.touch("dc-west", "web");
    const source = () => mesh!.describe().services[0]!.sources[0]!;
    await retry;
    expect(source().stale).toBe(true);
    expect(source().endpoints).toBe(4);
    expect(source().clusters?.map((c) => [c.cluster, c.fresh, c.error?.slice(0, 14)])).toEqual([
      ["dc-east", true, undefined],
      ["dc-west", false, "EHTTP HTTP 500"],
    ]);
    const res = await mesh.fetch("http://web.service.consul/");
    expect(res.status).toBe(200);
  });

  it("builds the backend from a config file's consul entry through the kind registry", async () => {
    const dir = mkdtempSync(join(tmpdir(), "meshlink-consul-config-"));
    try {
      const path = join(dir, "mesh.yaml");
      writeFileSync(
        path,
        [
          "region: us-east-1",
          "failover: [us-west-2]",
          "discovery:",
          `  - consul: { address: "${consul.url}", datacenters: [ { name: dc-east, region: us-east-1 }, { name: dc-west, region: us-west-2 } ] }`,
          "",
        ].join("\n"),
      );
      mesh = createMesh({ env: { MESHLINK_CONFIG: path } });
      expect(mesh.describe().backends).toEqual(["consul"]);
      const order = await mesh.resolve("web.service.consul");
      expect(order.map((r) => [r.endpoint.cluster, r.endpoint.locality.region])).toEqual([
        ["dc-east", "us-east-1"],
        ["dc-east", "us-east-1"],
        ["dc-west", "us-west-2"],
        ["dc-west", "us-west-2"],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

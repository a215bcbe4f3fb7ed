import { EventEmitter, once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import { type DnsBackend, type DnsDiscoveryOptions, dnsDiscovery } from "../../src/discovery/dns.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot } from "../../src/discovery/registry.js";
import { ConfigError, ErrorCodes, isMeshError } from "../../src/errors.js";
import { createMesh } from "../../src/mesh.js";
import type { ServiceDescription } from "../../src/telemetry/describe.js";
import {
  type DnsRecords,
  dnsmasqPath,
  type SrvHost,
  startDnsServer,
  startTcpDnsProxy,
  type TcpDnsProxy,
  type TestDnsServer,
} from "../helpers/dns-server.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Locally the suite may skip when dnsmasq is missing; in CI it must run.
const missing = dnsmasqPath() === undefined;
const skip = missing && process.env.CI !== "true";
if (skip)
  console.warn("test/integration/dns.test.ts skipped: dnsmasq is not installed (apt-get install dnsmasq)");

const WEB = "web.default.svc.cluster.local";
const TTL = 1; // seconds, every record
const REFRESH = { minTtl: 100, maxTtl: 1000, negativeTtl: 1000, timeout: 500, tries: 1 } as const;
// A change must reach the registry within the records' TTL plus one refresh
// (maxTtl); the rest is slack for a loaded CI machine.
const WITHIN = TTL * 1000 + REFRESH.maxTtl + 2000;

let port: number;
let pods: Record<string, TestServer>;
let east: TestDnsServer;
let west: TestDnsServer;

function eastRecords(): Required<DnsRecords> {
  return {
    hosts: {
      [WEB]: ["127.0.40.2", "127.0.40.3"],
      [`pod-a.${WEB}`]: ["127.0.40.2"],
      [`pod-b.${WEB}`]: ["127.0.40.3"],
      "web.default.svc.clusterset.local": ["127.0.40.2", "127.0.40.3"],
    },
    srv: [
      { name: `_http._tcp.${WEB}`, target: `pod-a.${WEB}`, port, priority: 10, weight: 3 },
      { name: `_http._tcp.${WEB}`, target: `pod-b.${WEB}`, port, priority: 10, weight: 0 },
      { name: "web.service.consul", target: `pod-a.${WEB}`, port, priority: 1, weight: 1 },
    ],
  };
}

function westRecords(): Required<DnsRecords> {
  return {
    hosts: {
      [WEB]: ["127.0.40.4"],
      [`pod-c.${WEB}`]: ["127.0.40.4"],
      [`pod-d.${WEB}`]: ["127.0.40.5"],
    },
    srv: westSrv(20),
  };
}

function westSrv(podDPriority: number): SrvHost[] {
  return [
    { name: `_http._tcp.${WEB}`, target: `pod-c.${WEB}`, port, priority: 10, weight: 1 },
    { name: `_http._tcp.${WEB}`, target: `pod-d.${WEB}`, port, priority: podDPriority, weight: 1 },
  ];
}

function options(extra: Partial<DnsDiscoveryOptions> = {}, tcp = false): DnsDiscoveryOptions {
  return {
    clusters: [
      { name: "east", region: "us-east-1", zone: "us-east-1a", servers: [east.server], tcp },
      { name: "west", region: "us-west-2", servers: [west.server], tcp },
    ],
    ...REFRESH,
    ...extra,
  };
}

/**
 * Wraps a backend so that the test hears each update once the registry has
 * applied it (the code after `yield` runs when the registry asks for more).
 */
function tapped(backend: DiscoveryBackend): { backend: DiscoveryBackend; applied: EventEmitter } {
  const applied = new EventEmitter();
  return {
    applied,
    backend: {
      name: backend.name,
      close: () => backend.close?.(),
      async *watch(service, opts) {
        for await (const update of backend.watch(service, opts)) {
          yield update;
          applied.emit("update");
        }
      },
    },
  };
}

/** Resolves once `check()` holds, re-checking on every `event` of `emitter`; rejects after `ms`. */
async function until(emitter: EventEmitter, event: string, check: () => boolean, ms: number, what: string) {
  if (check()) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`not within ${ms} ms: ${what}`));
    }, ms);
    const on = () => {
      if (!check()) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve();
    };
    emitter.on(event, on);
  });
}

/** The same, for a registry watch's snapshots. */
async function snapshotWhere(
  registry: Registry,
  name: string,
  port: number | string,
  check: (s: ServiceSnapshot) => boolean,
  ms: number,
  what: string,
): Promise<ServiceSnapshot> {
  const watch = registry.watch(parseServiceName(name, port));
  const events = new EventEmitter();
  const sub = watch.onUpdate(() => events.emit("update"));
  try {
    await until(events, "update", () => check(watch.snapshot), ms, what);
    return watch.snapshot;
  } finally {
    sub.dispose();
  }
}

const ids = (s: ServiceSnapshot) => s.endpoints.map((e) => e.id);

describe.skipIf(skip)("dnsDiscovery", () => {
  beforeAll(async () => {
    if (missing) throw new Error("dnsmasq is not installed; CI must install the dnsmasq package");
    // A records carry no port, so every pod listens on the same one; if
    // another test holds it on one of the addresses, try another port.
    for (let attempt = 0; ; attempt++) {
      const first = await startServer("east-a", { address: "127.0.40.2" });
      port = first.port;
      pods = { "east-a": first };
      try {
        for (const [name, address] of [
          ["east-b", "127.0.40.3"],
          ["west-c", "127.0.40.4"],
          ["west-d", "127.0.40.5"],
        ] as const) {
          pods[name] = await startServer(name, { address, port });
        }
        break;
      } catch (err) {
        for (const pod of Object.values(pods)) await pod.stop();
        if (attempt >= 4) throw err;
      }
    }
    east = await startDnsServer({ address: "127.0.40.53", ttl: TTL, records: eastRecords() });
    west = await startDnsServer({ address: "127.0.40.54", ttl: TTL, records: westRecords() });
  });

  afterAll(async () => {
    await east?.close();
    await west?.close();
    for (const pod of Object.values(pods ?? {})) await pod.stop();
  });

  afterEach(async () => {
    // Each test starts from the same records and with both servers up.
    for (const [server, records] of [
      [east, eastRecords()],
      [west, westRecords()],
    ] as const) {
      if (!server.running) await server.start();
      await server.setHosts(records.hosts);
    }
  });

  it("finds A records in every cluster and calls the caller's own region first", async () => {
    const mesh = createMesh({
      env: {},
      region: "us-east-1",
      failover: ["us-west-2"],
      discovery: [dnsDiscovery(options())],
    });
    try {
      const resolved = await mesh.resolve("web.default", port);
      expect(resolved.map((r) => [r.endpoint.id, r.tier])).toEqual([
        [`east/127.0.40.2:${port}`, "region"],
        [`east/127.0.40.3:${port}`, "region"],
        [`west/127.0.40.4:${port}`, "failover:us-west-2"],
      ]);
      expect(resolved[0]!.endpoint).toMatchObject({
        backend: "dns",
        locality: { region: "us-east-1", zone: "us-east-1a" },
      });
      const res = await mesh.fetch(`http://${WEB}:${port}/hello`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { server: string }).server).toMatch(/^east-/);
    } finally {
      await mesh.close();
    }
  });

  it("maps SRV priority to backup endpoints and weight 0 to 1", async () => {
    const mesh = createMesh({ env: {}, region: "us-east-1", discovery: [dnsDiscovery(options())] });
    try {
      const resolved = await mesh.resolve("web.default", "http");
      expect(
        resolved
          .map((r) => [r.endpoint.id, r.endpoint.weight, r.endpoint.backup])
          .sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
      ).toEqual([
        [`east/127.0.40.2:${port}`, 3, false],
        [`east/127.0.40.3:${port}`, 1, false],
        [`west/127.0.40.4:${port}`, 1, false],
        [`west/127.0.40.5:${port}`, 1, true],
      ]);
    } finally {
      await mesh.close();
    }
  });

  it("answers clusterset and Consul names with the same code", async () => {
    const mesh = createMesh({ env: {}, region: "us-east-1", discovery: [dnsDiscovery(options())] });
    try {
      const clusterset = await mesh.resolve("web.default.svc.clusterset.local", port);
      expect(clusterset.map((r) => r.endpoint.id)).toEqual([
        `east/127.0.40.2:${port}`,
        `east/127.0.40.3:${port}`,
      ]);
      // A Consul name without a port is an SRV question: the service carries its port.
      const consul = await mesh.resolve("web.service.consul");
      expect(consul.map((r) => r.endpoint.id)).toEqual([`east/127.0.40.2:${port}`]);
      const res = await mesh.fetch(`http://web.service.consul:${port}/`);
      expect(res.status).toBe(200);
    } finally {
      await mesh.close();
    }
  });

  it("says not-found for NXDOMAIN and fails with the server's refusal", async () => {
    const mesh = createMesh({ env: {}, discovery: [dnsDiscovery(options())] });
    const refusing = createMesh({
      env: {},
      discovery: [
        dnsDiscovery({
          ...REFRESH,
          clusters: [{ name: "east", region: "", servers: [east.server], domain: "example.test" }],
        }),
      ],
    });
    try {
      const notFound = await mesh.resolve("nope.default", port).catch((e: unknown) => e);
      expect(isMeshError(notFound, ErrorCodes.SERVICE_NOT_FOUND)).toBe(true);
      const refused = (await refusing.resolve("web.default", port).catch((e: unknown) => e)) as Error;
      expect(isMeshError(refused, ErrorCodes.DISCOVERY)).toBe(true);
      expect((refused.cause as { code?: string }).code).toBe("EREFUSED");
    } finally {
      await mesh.close();
      await refusing.close();
    }
  });

  it("sees A records added and removed at run time within TTL + one refresh", async () => {
    const registry = new Registry([dnsDiscovery(options())]);
    try {
      const first = await registry.watch(parseServiceName("web.default", port)).settled();
      expect(ids(first)).toEqual([
        `east/127.0.40.2:${port}`,
        `east/127.0.40.3:${port}`,
        `west/127.0.40.4:${port}`,
      ]);

      await east.setHosts({ ...eastRecords().hosts, [WEB]: ["127.0.40.2", "127.0.40.3", "127.0.40.6"] });
      const added = await snapshotWhere(
        registry,
        "web.default",
        port,
        (s) => ids(s).includes(`east/127.0.40.6:${port}`),
        WITHIN,
        "the added record",
      );
      expect(added.endpoints.find((e) => e.address === "127.0.40.6")).toMatchObject({
        cluster: "east",
        backend: "dns",
      });

      await west.setHosts({ ...westRecords().hosts, [WEB]: [] });
      const removed = await snapshotWhere(
        registry,
        "web.default",
        port,
        (s) => !ids(s).some((id) => id.startsWith("west/")),
        WITHIN,
        "the removed record",
      );
      expect(ids(removed)).toEqual([
        `east/127.0.40.2:${port}`,
        `east/127.0.40.3:${port}`,
        `east/127.0.40.6:${port}`,
      ]);
      // The west cluster answered NXDOMAIN: its endpoints are gone, not stale.
      expect(removed.sources[0]!.stale).toBe(false);
    } finally {
      await registry.close();
    }
  });

  it("sees SRV records changed at run time", async () => {
    const registry = new Registry([dnsDiscovery(options())]);
    try {
      const first = await registry.watch(parseServiceName("web.default", "http")).settled();
      expect(first.endpoints.find((e) => e.address === "127.0.40.5")?.backup).toBe(true);
      // dnsmasq reads SRV lines only at start: this restarts it.
      await west.setSrv(westSrv(10));
      const changed = await snapshotWhere(
        registry,
        "web.default",
        "http",
        (s) => s.endpoints.find((e) => e.address === "127.0.40.5")?.backup === false && !s.sources[0]!.stale,
        WITHIN,
        "pod-d promoted to the primary tier",
      );
      expect(changed.endpoints.filter((e) => e.cluster === "west").map((e) => e.backup)).toEqual([
        false,
        false,
      ]);
    } finally {
      await west.setSrv(westSrv(20));
      await registry.close();
    }
  });

  it("keeps the last-known-good set, marked stale, while a cluster's DNS is down, and calls keep working", async () => {
    const { backend, applied } = tapped(dnsDiscovery(options()));
    const mesh = createMesh({ env: {}, region: "us-east-1", failover: ["us-west-2"], discovery: [backend] });
    const described = (): ServiceDescription | undefined =>
      mesh.describe().services.find((s) => s.service === `web.default:${port}`);
    try {
      await mesh.resolve("web.default", port);
      await east.stop();
      await until(
        applied,
        "update",
        () => described()?.sources[0]?.stale === true,
        WITHIN,
        "the east cluster marked stale",
      );
      const stale = described()!;
      expect(stale.state).toBe("bound");
      expect(stale.sources[0]!.error).toContain("ECONNREFUSED");
      const [eastStatus, westStatus] = stale.sources[0]!.clusters!;
      expect(eastStatus).toMatchObject({
        cluster: "east",
        fresh: false,
        error: expect.stringContaining("127.0.40.53"),
      });
      expect(eastStatus!.updatedAt).toBeTypeOf("number");
      expect(westStatus).toMatchObject({ cluster: "west", fresh: true, error: undefined });
      expect(stale.endpoints.map((e) => e.id)).toContain(`east/127.0.40.2:${port}`);

      // The pods are fine; only their DNS is down. Calls still go to east.
      for (let i = 0; i < 4; i++) {
        const res = await mesh.fetch(`http://${WEB}:${port}/while-dns-is-down`);
        expect(((await res.json()) as { server: string }).server).toMatch(/^east-/);
      }

      await east.start();
      await until(
        applied,
        "update",
        () =>
          described()?.sources[0]?.stale === false &&
          described()!.sources[0]!.clusters!.every((c) => c.fresh),
        WITHIN,
        "the east cluster fresh again",
      );
      expect(described()!.sources[0]!.error).toBeUndefined();
    } finally {
      await mesh.close();
    }
  });

  it("asks over TCP when told to", async () => {
    // A TCP-only path to each dnsmasq: a proxy on a port where nothing
    // listens for UDP, so only a TCP client can get an answer through it.
    const proxies: Server[] = [];
    let connections = 0;
    const proxy = async (target: TestDnsServer) => {
      const server = createServer((client) => {
        connections++;
        const upstream = connect(target.port, target.address);
        client.pipe(upstream).pipe(client);
        client.on("error", () => upstream.destroy());
        upstream.on("error", () => client.destroy());
      });
      server.listen(0, "127.0.40.1");
      await once(server, "listening");
      proxies.push(server);
      return `127.0.40.1:${(server.address() as AddressInfo).port}`;
    };
    const viaTcp = [await proxy(east), await proxy(west)];
    const backend = dnsDiscovery({
      ...REFRESH,
      clusters: [
        { name: "east", region: "us-east-1", servers: [viaTcp[0]!], tcp: true },
        { name: "west", region: "us-west-2", servers: [viaTcp[1]!], tcp: true },
      ],
    });
    const mesh = createMesh({ env: {}, region: "us-east-1", discovery: [backend] });
    try {
      const a = await mesh.resolve("web.default", port);
      expect(a.map((r) => r.endpoint.id).sort()).toEqual([
        `east/127.0.40.2:${port}`,
        `east/127.0.40.3:${port}`,
        `west/127.0.40.4:${port}`,
      ]);
      const srv = await mesh.resolve("web.default", "http");
      expect(srv.map((r) => [r.endpoint.id, r.endpoint.weight, r.endpoint.backup]).sort()).toEqual([
        [`east/127.0.40.2:${port}`, 3, false],
        [`east/127.0.40.3:${port}`, 1, false],
        [`west/127.0.40.4:${port}`, 1, false],
        [`west/127.0.40.5:${port}`, 1, true],
      ]);
      expect(connections).toBeGreaterThan(0);
      const nx = await mesh.resolve("nope.default", port).catch((e: unknown) => e);
      expect(isMeshError(nx, ErrorCodes.SERVICE_NOT_FOUND)).toBe(true);
      const res = await mesh.fetch(`http://${WEB}:${port}/over-tcp-dns`);
      expect(res.status).toBe(200);
    } finally {
      await mesh.close();
      for (const p of proxies) p.close();
    }
  });

  describe("over TCP", () => {
    const proxies: TcpDnsProxy[] = [];
    const viaTcp = async (target: TestDnsServer, closeAfterAnswer = false) => {
      const p = await startTcpDnsProxy(target, { address: "127.0.40.1", closeAfterAnswer });
      proxies.push(p);
      return p;
    };
    const tcpOptions = (eastTcp: TcpDnsProxy, westTcp: TcpDnsProxy): DnsDiscoveryOptions => ({
      ...REFRESH,
      clusters: [
        { name: "east", region: "us-east-1", servers: [eastTcp.server], tcp: true },
        { name: "west", region: "us-west-2", servers: [westTcp.server], tcp: true },
      ],
    });

    afterEach(async () => {
      for (const p of proxies.splice(0)) await p.close();
    });

    it("asks every question on one pipelined connection per server", async () => {
      const eastTcp = await viaTcp(east);
      const westTcp = await viaTcp(west);
      const registry = new Registry([dnsDiscovery(tcpOptions(eastTcp, westTcp))]);
      try {
        const names = ["web.default", ...Array.from({ length: 20 }, (_, i) => `nope-${i}.default`)];
        const snapshots = await Promise.all(
          names.map((n) => registry.watch(parseServiceName(n, port)).settled()),
        );
        expect(ids(snapshots[0]!)).toEqual([
          `east/127.0.40.2:${port}`,
          `east/127.0.40.3:${port}`,
          `west/127.0.40.4:${port}`,
        ]);
        expect(snapshots.slice(1).map((s) => s.state)).toEqual(names.slice(1).map(() => "not-found"));
        // A and AAAA of 21 names in each cluster, on one connection each.
        expect(eastTcp.questions.length).toBeGreaterThanOrEqual(42);
        expect(westTcp.questions.length).toBeGreaterThanOrEqual(42);
        expect(eastTcp.connections).toBe(1);
        expect(westTcp.connections).toBe(1);
      } finally {
        await registry.close();
      }
    });

    it("takes SRV targets' addresses from the answer's additional section", async () => {
      const eastTcp = await viaTcp(east);
      const westTcp = await viaTcp(west);
      const registry = new Registry([dnsDiscovery(tcpOptions(eastTcp, westTcp))]);
      try {
        const srv = await registry.watch(parseServiceName("web.default", "http")).settled();
        expect(srv.endpoints.map((e) => [e.id, e.weight, e.backup])).toEqual([
          [`east/127.0.40.2:${port}`, 3, false],
          [`east/127.0.40.3:${port}`, 1, false],
          [`west/127.0.40.4:${port}`, 1, false],
          [`west/127.0.40.5:${port}`, 1, true],
        ]);
        // dnsmasq sends the targets' A records along: no question about them.
        expect([...eastTcp.questions, ...westTcp.questions].filter((q) => q.type !== "SRV")).toEqual([]);
      } finally {
        await registry.close();
      }
    });

    it("keeps answering when the server closes the connection after each answer", async () => {
      const eastTcp = await viaTcp(east, true);
      const westTcp = await viaTcp(west, true);
      const registry = new Registry([dnsDiscovery(tcpOptions(eastTcp, westTcp))]);
      try {
        const names = ["web.default", ...Array.from({ length: 5 }, (_, i) => `nope-${i}.default`)];
        const snapshots = await Promise.all(
          names.map((n) => registry.watch(parseServiceName(n, port)).settled()),
        );
        expect(ids(snapshots[0]!)).toHaveLength(3);
        expect(snapshots.slice(1).map((s) => s.state)).toEqual(names.slice(1).map(() => "not-found"));
        expect(snapshots.every((s) => !s.sources[0]!.stale)).toBe(true);
        expect(eastTcp.connections).toBeGreaterThan(1);
      } finally {
        await registry.close();
      }
    });

    it("closes its connections and stops refreshing once every watch has ended", async () => {
      const eastTcp = await viaTcp(east);
      const westTcp = await viaTcp(west);
      const backend = dnsDiscovery(tcpOptions(eastTcp, westTcp)) as DnsBackend;
      const aborts: AbortController[] = [];
      const firsts: Promise<unknown>[] = [];
      for (let i = 0; i < 200; i++) {
        const abort = new AbortController();
        aborts.push(abort);
        const name = i === 0 ? "web.default" : `name-${i}.default`;
        firsts.push(
          backend
            .watch(parseServiceName(name, port), { signal: abort.signal })
            [Symbol.asyncIterator]()
            .next(),
        );
      }
      await Promise.all(firsts);
      expect(backend.stats()).toMatchObject({ watches: 200, clients: 2 });
      // 400 questions per server, not 400 connections: dnsmasq closes a TCP
      // connection after 100 queries, and the client then opens the next one.
      for (const p of [eastTcp, westTcp]) {
        expect(p.questions.length).toBeGreaterThanOrEqual(400);
        expect(p.connections).toBeLessThanOrEqual(Math.ceil(p.questions.length / 100));
      }
      // The watches' consumers pull no further: the signals alone end them.
      for (const abort of aborts) abort.abort();
      expect(backend.stats()).toMatchObject({ watches: 0, clients: 0, timers: 0 });
      await eastTcp.idle();
      await westTcp.idle();
      expect(backend.stats()).toEqual({ watches: 0, clients: 0, timers: 0, lookups: 0 });
    });
  });

  it("claims a short name once a cluster has answered it with records", async () => {
    const backend = dnsDiscovery(options());
    const registry = new Registry([backend]);
    try {
      expect(backend.claims?.(parseServiceName("web.default", port))).toBe(false);
      await registry.watch(parseServiceName("web.default", port)).settled();
      await registry.watch(parseServiceName("nope.default", port)).settled();
      // The name is claimed, whatever port a URL names.
      expect(backend.claims?.(parseServiceName("web.default", 443))).toBe(true);
      expect(backend.claims?.(parseServiceName("nope.default", port))).toBe(false);
    } finally {
      await registry.close();
    }
  });

  it("builds the backend from a config file's dns entry", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshlink-dns-config-"));
    try {
      const file = join(dir, "mesh.yaml");
      await writeFile(
        file,
        [
          "region: us-west-2",
          "discovery:",
          "  - dns:",
          "      minTtl: 100",
          "      maxTtl: 1000",
          "      clusters:",
          `        - { name: east, region: us-east-1, servers: ["${east.server}"] }`,
          `        - { name: west, region: us-west-2, servers: ["${west.server}"], tcp: true }`,
          "",
        ].join("\n"),
      );
      const mesh = createMesh({ env: {}, config: file });
      try {
        const resolved = await mesh.resolve("web.default", port);
        expect(resolved.map((r) => r.endpoint.id)).toEqual([
          `west/127.0.40.4:${port}`,
          `east/127.0.40.2:${port}`,
          `east/127.0.40.3:${port}`,
        ]);
        expect(mesh.describe().backends).toEqual(["dns"]);
      } finally {
        await mesh.close();
      }

      await writeFile(
        file,
        'discovery:\n  - dns: { clusters: [ { name: east, region: r, servers: ["kube-dns:53"] } ] }\n',
      );
      let error: unknown;
      try {
        createMesh({ env: {}, config: file });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).source).toBe(`${file}: discovery[0].dns.clusters[0].servers[0]`);
      expect((error as ConfigError).value).toBe("kube-dns:53");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

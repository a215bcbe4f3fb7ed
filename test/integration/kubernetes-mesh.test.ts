import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import { kubernetesDiscovery } from "../../src/discovery/kubernetes/kubernetes.js";
import type {
  KubernetesCluster,
  KubernetesDiscoveryOptions,
} from "../../src/discovery/kubernetes/options.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { ConfigError, DiscoveryError, ErrorCodes, KubernetesError } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { createTestCa, type TestCa } from "../helpers/certs.js";
import { type KubeApiServer, startKubeApiServer } from "../helpers/kube-apiserver.js";
import { startServer, type TestServer } from "../helpers/servers.js";

let ca: TestCa;
const servers: KubeApiServer[] = [];
const pods: TestServer[] = [];
const meshes: Mesh[] = [];

beforeAll(() => {
  ca = createTestCa("kube test CA");
});
afterAll(() => ca.dispose());
afterEach(async () => {
  for (const m of meshes.splice(0)) await m.close();
  for (const s of servers.splice(0)) await s.close();
  for (const p of pods.splice(0)) if (p.listening) await p.stop();
});

async function apiServer(): Promise<KubeApiServer> {
  const s = await startKubeApiServer({ ca, http2: true });
  servers.push(s);
  return s;
}

async function pod(name: string, address: string): Promise<TestServer> {
  const p = await startServer(name, { address });
  pods.push(p);
  return p;
}

const clusterOf = (s: KubeApiServer, name: string, region: string): KubernetesCluster => ({
  name,
  region,
  server: s.url,
  token: s.token,
  ca: s.caPem,
});

function mesh(
  clusters: KubernetesCluster[],
  extra: Partial<KubernetesDiscoveryOptions> = {},
  failover: string[] = [],
): { mesh: Mesh; backend: DiscoveryBackend } {
  const backend = kubernetesDiscovery({
    clusters,
    backoff: { base: 20, max: 200 },
    requestTimeout: 2_000,
    ...extra,
  });
  const m = createMesh({ env: {}, region: "us-east-1", zone: "us-east-1a", failover, discovery: [backend] });
  meshes.push(m);
  return { mesh: m, backend };
}

/** One slice per pod: each pod listens on its own port, as its slice says. */
function publish(
  s: KubeApiServer,
  name: string,
  p: TestServer,
  conditions: { ready?: boolean; serving?: boolean; terminating?: boolean } = {},
) {
  s.applySlice("default", {
    name: `web-${name}`,
    service: "web",
    endpoints: [{ address: p.address, zone: "us-east-1a", ...conditions }],
    ports: [{ name: "http", port: p.port }],
  });
}

async function serve(m: Mesh, n = 8): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await m.fetch("http://web.default.svc.cluster.local:80/");
    served.push(((await res.json()) as { server: string }).server);
  }
  return served;
}

async function eventually<T>(probe: () => Promise<T>, ok: (value: T) => boolean): Promise<T> {
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe("kubernetesDiscovery in a mesh", () => {
  it("answers every name form with every cluster's endpoints", async () => {
    const east = await apiServer();
    const west = await apiServer();
    for (const [s, address] of [
      [east, "10.1.0.1"],
      [west, "10.2.0.1"],
    ] as const) {
      s.applyService("default", { name: "web", ports: [{ name: "http", port: 80, targetPort: 8080 }] });
      s.applySlice("default", {
        name: "web-1",
        service: "web",
        endpoints: [{ address }],
        ports: [{ name: "http", port: 8080 }],
      });
    }
    const { mesh: m } = mesh([clusterOf(east, "east", "us-east-1"), clusterOf(west, "west", "us-west-2")]);
    for (const name of ["web.default.svc.cluster.local", "web.default", "web.default.svc.clusterset.local"]) {
      const resolved = await m.resolve(name, 80);
      expect(resolved.map((r) => [r.endpoint.id, r.tier])).toEqual([
        ["east/10.1.0.1:8080", "region"],
        ["west/10.2.0.1:8080", "other"],
      ]);
    }
    await expect(m.resolve("web.service.consul")).rejects.toMatchObject({
      code: ErrorCodes.SERVICE_NOT_FOUND,
    });
    // Every form shares one list + watch per cluster.
    expect(east.requests.filter((r) => !r.watch && r.path.endsWith("/endpointslices"))).toHaveLength(1);
  });

  it("claims a short name once it has seen the Service, never because it was asked", async () => {
    const s = await apiServer();
    s.applyService("default", { name: "web", ports: [{ port: 80, targetPort: 8080 }] });
    s.applySlice("default", {
      name: "web-1",
      service: "web",
      endpoints: [{ address: "10.1.0.1" }],
      ports: [{ port: 8080 }],
    });
    const { mesh: m, backend } = mesh([clusterOf(s, "east", "us-east-1")]);
    const web = parseServiceName("web.default", 443);
    const api = parseServiceName("api.default", 443);
    expect(backend.claims!(web)).toBe(false);
    await m.resolve("web.default", 80);
    expect(backend.claims!(web)).toBe(true);
    await expect(m.resolve("api.default", 80)).rejects.toMatchObject({ code: ErrorCodes.SERVICE_NOT_FOUND });
    expect(backend.claims!(api)).toBe(false);
    s.deleteService("default", "web");
    await eventually(
      async () => backend.claims!(web),
      (claimed) => !claimed,
    );
  });

  it("maps the URL's Service port to the target port, following changes to the Service", async () => {
    const s = await apiServer();
    s.applyService("default", {
      name: "web",
      ports: [
        { name: "http", port: 80, targetPort: "http" },
        { name: "metrics", port: 9100, targetPort: 9102 },
      ],
    });
    s.applySlice("default", {
      name: "web-1",
      service: "web",
      endpoints: [{ address: "10.1.0.1" }],
      ports: [
        { name: "http", port: 8080 },
        { name: "metrics", port: 9102 },
      ],
    });
    const { mesh: m } = mesh([clusterOf(s, "east", "us-east-1")]);
    const port = async (p: number | string) => (await m.resolve("web.default", p))[0]!.endpoint.port;
    expect(await port(80)).toBe(8080);
    expect(await port(9100)).toBe(9102);
    expect(await port("metrics")).toBe(9102);
    const err = await m.resolve("web.default", 443).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DiscoveryError);
    expect((err as DiscoveryError).cause).toBeInstanceOf(KubernetesError);
    expect(((err as DiscoveryError).cause as KubernetesError).reason).toBe("port");

    // Port 80 now serves what the metrics port served.
    s.applyService("default", {
      name: "web",
      ports: [
        { name: "metrics", port: 80, targetPort: 9102 },
        { name: "http", port: 8000, targetPort: "http" },
      ],
    });
    expect(
      await eventually(
        () => port(80),
        (p) => p === 9102,
      ),
    ).toBe(9102);
  });

  it("drains a pod that goes terminating: no new call reaches it while others are ready", async () => {
    const s = await apiServer();
    const a = await pod("east-a", "127.0.80.11");
    const b = await pod("east-b", "127.0.80.12");
    s.applyService("default", { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] });
    publish(s, "a", a);
    publish(s, "b", b);
    const { mesh: m } = mesh([clusterOf(s, "east", "us-east-1")]);
    expect(new Set(await serve(m, 16))).toEqual(new Set(["east-a", "east-b"]));

    publish(s, "a", a, { ready: false, serving: true, terminating: true });
    const resolved = await eventually(
      () => m.resolve("web.default", 80),
      (r) => r.some((x) => x.endpoint.terminating),
    );
    expect(resolved.find((r) => r.endpoint.address === a.address)).toMatchObject({
      available: false,
      unavailableReason: "terminating",
    });
    const before = a.requests.length;
    expect(new Set(await serve(m, 16))).toEqual(new Set(["east-b"]));
    expect(a.requests.length).toBe(before);

    // With nothing ready in its cluster, a serving, terminating pod still takes calls (kube-proxy's rule).
    publish(s, "b", b, { ready: false, serving: false });
    await eventually(
      () => m.resolve("web.default", 80),
      (r) => r.every((x) => !x.endpoint.ready),
    );
    expect(new Set(await serve(m, 4))).toEqual(new Set(["east-a"]));
  });

  it("fails over across three clusters end to end through mesh.fetch", async () => {
    const apis = { east: await apiServer(), west: await apiServer(), eu: await apiServer() };
    const running = {
      east: [await pod("east-1", "127.0.80.21"), await pod("east-2", "127.0.80.22")],
      west: [await pod("west-1", "127.0.80.31"), await pod("west-2", "127.0.80.32")],
      eu: [await pod("eu-1", "127.0.80.41")],
    };
    for (const [cluster, list] of Object.entries(running)) {
      const s = apis[cluster as keyof typeof apis];
      s.applyService("default", { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] });
      for (const [i, p] of list.entries()) publish(s, String(i), p);
    }
    const { mesh: m } = mesh(
      [
        clusterOf(apis.east, "east", "us-east-1"),
        clusterOf(apis.west, "west", "us-west-2"),
        clusterOf(apis.eu, "eu", "eu-west-1"),
      ],
      {},
      ["us-west-2", "eu-west-1"],
    );
    expect((await serve(m)).every((s) => s.startsWith("east-"))).toBe(true);

    // East's pods stop being ready: the API says so, and calls move to the first failover region.
    for (const [i, p] of running.east.entries())
      publish(apis.east, String(i), p, { ready: false, serving: false });
    await eventually(
      () => m.resolve("web.default", 80),
      (r) => r.filter((x) => x.endpoint.cluster === "east").every((x) => !x.available),
    );
    expect((await serve(m)).every((s) => s.startsWith("west-"))).toBe(true);

    // West's API server goes away: its endpoints are kept, marked stale, and still served.
    await apis.west.close();
    servers.splice(servers.indexOf(apis.west), 1);
    const stale = await eventually(
      async () => m.describe().services.find((x) => x.service === "web.default:80")!,
      (d) => d.sources[0]!.clusters!.some((c) => c.cluster === "west" && !c.fresh),
    );
    expect(stale.sources[0]!.stale).toBe(true);
    expect((await serve(m)).every((s) => s.startsWith("west-"))).toBe(true);

    // Then west's pods die too: retries and outlier detection move the calls to eu.
    for (const p of running.west) await p.stop();
    const served = await serve(m, 12);
    expect(served.at(-1)).toBe("eu-1");
    expect(served.every((s) => s === "eu-1")).toBe(true);
  });

  it("is built from a config file entry `- kubernetes: { clusters: [...] }`", async () => {
    const s = await apiServer();
    s.applyService("default", { name: "web", ports: [{ port: 80, targetPort: 8080 }] });
    s.applySlice("default", {
      name: "web-1",
      service: "web",
      endpoints: [{ address: "10.1.0.1" }],
      ports: [{ port: 8080 }],
    });
    const dir = mkdtempSync(join(tmpdir(), "meshlink-kube-config-"));
    try {
      writeFileSync(join(dir, "token"), s.token);
      writeFileSync(join(dir, "ca.pem"), s.caPem);
      const config = join(dir, "mesh.yaml");
      writeFileSync(
        config,
        `region: us-east-1
discovery:
  - kubernetes:
      clusters:
        - { name: east, region: us-east-1, server: "${s.url}", tokenFile: ${join(dir, "token")}, caFile: ${join(dir, "ca.pem")} }
`,
      );
      const m = createMesh({ env: {}, config });
      meshes.push(m);
      expect(m.describe().backends).toEqual(["kubernetes"]);
      expect((await m.resolve("web.default", 80))[0]!.endpoint.id).toBe("east/10.1.0.1:8080");

      writeFileSync(
        config,
        "discovery:\n  - kubernetes: { clusters: [ { name: east, region: us-east-1, server: 'https://x', context: west } ] }\n",
      );
      const err = (() => {
        try {
          createMesh({ env: {}, config });
        } catch (e) {
          return e as ConfigError;
        }
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect(err!.source).toBe(`${config}: discovery[0].kubernetes.clusters[0].server`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

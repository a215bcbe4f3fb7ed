import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { getGlobalDispatcher, MockAgent, setGlobalDispatcher } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import {
  createKubernetesBackend,
  type KubernetesClusterStatus,
} from "../../src/discovery/kubernetes/kubernetes.js";
import type { ParsedKubernetesOptions } from "../../src/discovery/kubernetes/options.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot, type ServiceWatch } from "../../src/discovery/registry.js";
import { ErrorCodes, KubernetesError } from "../../src/errors.js";
import { createTestCa, type TestCa } from "../helpers/certs.js";
import {
  type KubeApiServer,
  nextRequest,
  startKubeApiServer,
  watchesOpen,
} from "../helpers/kube-apiserver.js";
import { until } from "../helpers/watch.js";

let ca: TestCa;
const servers: KubeApiServer[] = [];
const registries: Registry[] = [];

beforeAll(() => {
  ca = createTestCa("kube test CA");
});
afterAll(() => ca.dispose());
afterEach(async () => {
  for (const r of registries.splice(0)) await r.close();
  for (const s of servers.splice(0)) await s.close();
});

async function server(
  options: { http2?: boolean; compactedWatch?: "event" | "status" } = {},
): Promise<KubeApiServer> {
  const s = await startKubeApiServer({ ca, ...options });
  servers.push(s);
  return s;
}

function backendFor(
  s: KubeApiServer,
  extra: Partial<ParsedKubernetesOptions> = {},
  cluster: Record<string, unknown> = {},
): DiscoveryBackend {
  return createKubernetesBackend(
    {
      clusters: [
        { name: "east", region: "us-east-1", server: s.url, token: s.token, ca: s.caPem, ...cluster },
      ],
      backoff: { base: 20, max: 200 },
      requestTimeout: 2_000,
      ...extra,
    },
    { random: () => 0.5 },
  );
}

function watch(backend: DiscoveryBackend, name: string, port?: number | string): ServiceWatch {
  const registry = new Registry([backend], { settleTimeout: 10_000 });
  registries.push(registry);
  return registry.watch(parseServiceName(name, port));
}

/** Resolves once `n` watches are open on the server. */
const ids = (s: ServiceSnapshot) => s.endpoints.map((e) => e.id).sort();
const clusterStatus = (s: ServiceSnapshot) =>
  s.sources[0]?.clusters as readonly KubernetesClusterStatus[] | undefined;

const WEB_SERVICE = { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] };
const webSlice = (name: string, addresses: string[], port = 8080) => ({
  name,
  service: "web",
  endpoints: addresses.map((address) => ({ address, zone: "us-east-1a", nodeName: "node-1" })),
  ports: [{ name: "http", port }],
});

describe("kubernetesDiscovery", () => {
  for (const http2 of [false, true]) {
    describe(http2 ? "over HTTP/2" : "over HTTP/1.1", () => {
      it("lists the slices, then follows the watch: added, modified and deleted", async () => {
        const s = await server({ http2 });
        s.applyService("default", WEB_SERVICE);
        s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.2"]));
        const w = watch(backendFor(s), "web.default.svc.cluster.local", 80);
        const first = await until(w, (x) => x.state === "bound");
        expect(ids(first)).toEqual(["east/10.0.0.1:8080", "east/10.0.0.2:8080"]);
        expect(first.endpoints[0]!.locality).toEqual({
          region: "us-east-1",
          zone: "us-east-1a",
          subzone: "",
        });

        s.applySlice("default", webSlice("web-def", ["10.0.0.3"]));
        expect(ids(await until(w, (x) => x.endpoints.length === 3))).toContain("east/10.0.0.3:8080");
        s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
        expect(ids(await until(w, (x) => x.endpoints.length === 2))).toEqual([
          "east/10.0.0.1:8080",
          "east/10.0.0.3:8080",
        ]);
        s.deleteSlice("default", "web-def");
        expect(ids(await until(w, (x) => x.endpoints.length === 1))).toEqual(["east/10.0.0.1:8080"]);

        const sliceWatch = s.requests.find((r) => r.watch && r.path.endsWith("/endpointslices"))!;
        expect(sliceWatch.query.get("labelSelector")).toBe("kubernetes.io/service-name=web");
        expect(sliceWatch.query.get("allowWatchBookmarks")).toBe("true");
        expect(sliceWatch.query.get("timeoutSeconds")).toBe("300");
        expect(sliceWatch.httpVersion).toBe(http2 ? "2.0" : "1.1");
      });

      it("re-lists after a 410 without dropping the endpoints in between", async () => {
        const s = await server({ http2 });
        s.applyService("default", WEB_SERVICE);
        s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
        const w = watch(backendFor(s), "web.default", 80);
        await until(w, (x) => x.state === "bound");
        await watchesOpen(s, 2);
        const seen: number[] = [];
        w.onUpdate((x) => seen.push(x.endpoints.length));
        const relist = nextRequest(s, (r) => !r.watch && r.path.endsWith("/endpointslices"));
        s.expireWatches();
        s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.9"]));
        const list = await relist;
        // A re-list after 410 asks for current data, not the watch cache.
        expect(list.query.get("resourceVersion")).toBeNull();
        expect(ids(await until(w, (x) => x.endpoints.length === 2))).toContain("east/10.0.0.9:8080");
        expect(seen.every((n) => n > 0)).toBe(true);
      });
    });
  }

  it("shares one HTTP/2 connection among every list and watch to a server", async () => {
    const s = await server({ http2: true });
    s.applyService("default", WEB_SERVICE);
    s.applyService("default", { name: "api", ports: [{ port: 80, targetPort: 9090 }] });
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    s.applySlice("default", {
      name: "api-1",
      service: "api",
      endpoints: [{ address: "10.0.1.1" }],
      ports: [{ port: 9090 }],
    });
    const backend = backendFor(s);
    const registry = new Registry([backend]);
    registries.push(registry);
    const web = registry.watch(parseServiceName("web.default", 80));
    const api = registry.watch(parseServiceName("api.default", 80));
    await until(web, (x) => x.state === "bound");
    await until(api, (x) => x.state === "bound");
    await watchesOpen(s, 4);
    expect(s.sessions).toBe(1);
    expect(s.connections).toBe(1);
  });

  it("opens a connection per watch to an HTTP/1.1 server", async () => {
    const s = await server();
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    const w = watch(backendFor(s), "web.default", 80);
    await until(w, (x) => x.state === "bound");
    await watchesOpen(s, 2);
    expect(s.connections).toBeGreaterThanOrEqual(2);
    expect(s.sessions).toBe(0);
  });

  it("keeps the last good endpoints and shows a typed error per cluster on 403", async () => {
    const s = await server();
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    const w = watch(backendFor(s), "web.default", 80);
    await until(w, (x) => x.state === "bound");
    await watchesOpen(s, 2);
    s.fault = () => ({
      status: 403,
      body: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message:
          'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:default:app" cannot watch resource "endpointslices"',
        reason: "Forbidden",
        details: { group: "discovery.k8s.io", kind: "endpointslices" },
        code: 403,
      },
    });
    s.endWatches();
    const failed = await until(w, (x) => x.sources[0]!.stale);
    expect(ids(failed)).toEqual(["east/10.0.0.1:8080"]);
    const status = clusterStatus(failed)![0]!;
    expect(status.reason).toBe("forbidden");
    expect(status.code).toBe(ErrorCodes.KUBERNETES);
    expect(status.fresh).toBe(false);
    const error = failed.sources[0]!.error!;
    expect(error.code).toBe(ErrorCodes.DISCOVERY);
    expect(error.cause).toBeInstanceOf(KubernetesError);
    expect((error.cause as KubernetesError).status).toBe(403);

    s.fault = undefined;
    const recovered = await until(w, (x) => !x.sources[0]!.stale && clusterStatus(x)![0]!.fresh);
    expect(ids(recovered)).toEqual(["east/10.0.0.1:8080"]);
  });

  it("lets an idle process exit while its watches run", async () => {
    const s = await server({ http2: true });
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    const root = join(import.meta.dirname, "..", "..");
    const { stdout } = await promisify(execFile)(
      join(root, "node_modules", ".bin", "tsx"),
      [join(root, "test", "fixtures", "kubernetes", "idle-mesh.ts")],
      { env: { ...process.env, KUBE_URL: s.url, KUBE_TOKEN: s.token, KUBE_CA: s.caPem }, timeout: 15_000 },
    );
    expect(stdout).toContain("resolved east/10.0.0.1:8080");
    // It exited on its own with its watches open (no close), and did not take the lists' answers with it.
    expect(s.requests.filter((r) => r.watch).length).toBeGreaterThanOrEqual(1);
  });

  it("ends promptly when its signal aborts, yielding nothing after and closing its watches", async () => {
    const s = await server({ http2: true });
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    const backend = backendFor(s);
    const abort = new AbortController();
    const updates = backend
      .watch(parseServiceName("web.default", 80), { signal: abort.signal })
      [Symbol.asyncIterator]();
    expect((await updates.next()).value).toMatchObject({ kind: "bound" });
    await watchesOpen(s, 2);
    const closed = new Promise<void>((resolve) => {
      let n = 0;
      s.on("watch-closed", () => {
        if (++n === 2) resolve();
      });
    });
    const pending = updates.next();
    abort.abort();
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.2"]));
    expect(await pending).toEqual({ done: true, value: undefined });
    await closed;
    expect(s.openWatches).toBe(0);
    await backend.close?.();
  });

  it("never uses the global dispatcher", async () => {
    const s = await server();
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    const previous = getGlobalDispatcher();
    const trap = new MockAgent();
    trap.disableNetConnect();
    setGlobalDispatcher(trap);
    try {
      const w = watch(backendFor(s), "web.default", 80);
      expect(ids(await until(w, (x) => x.state === "bound"))).toEqual(["east/10.0.0.1:8080"]);
    } finally {
      setGlobalDispatcher(previous);
      await trap.close();
    }
  });
});

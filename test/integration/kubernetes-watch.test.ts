import { once } from "node:events";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import {
  createKubernetesBackend,
  type KubernetesClusterStatus,
} from "../../src/discovery/kubernetes/kubernetes.js";
import type { ParsedKubernetesOptions } from "../../src/discovery/kubernetes/options.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot, type ServiceWatch } from "../../src/discovery/registry.js";
import { ErrorCodes, type KubernetesErrorReason } from "../../src/errors.js";
import { statusObject } from "../fixtures/kubernetes/objects.js";
import { createTestCa, type TestCa } from "../helpers/certs.js";
import {
  type ApiRequest,
  type Fault,
  type KubeApiServer,
  nextRequest,
  startKubeApiServer,
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

const WEB_SERVICE = { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] };
const webSlice = (name: string, addresses: string[]) => ({
  name,
  service: "web",
  endpoints: addresses.map((address) => ({ address })),
  ports: [{ name: "http", port: 8080 }],
});

async function setup(
  options: { http2?: boolean; compactedWatch?: "event" | "status" } = {},
  extra: Partial<ParsedKubernetesOptions> = {},
): Promise<{ s: KubeApiServer; w: ServiceWatch; backend: DiscoveryBackend }> {
  const s = await startKubeApiServer({ ca, ...options });
  servers.push(s);
  s.applyService("default", WEB_SERVICE);
  s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
  const backend = createKubernetesBackend(
    {
      clusters: [{ name: "east", region: "us-east-1", server: s.url, token: s.token, ca: s.caPem }],
      backoff: { base: 20, max: 100 },
      requestTimeout: 2_000,
      ...extra,
    },
    { random: () => 0.5 },
  );
  const registry = new Registry([backend], { settleTimeout: 10_000 });
  registries.push(registry);
  const w = registry.watch(parseServiceName("web.default", 80));
  await until(w, (x) => x.state === "bound");
  while (s.openWatches < 2) await once(s, "watch");
  return { s, w, backend };
}

const isSliceWatch = (r: ApiRequest) => r.watch && r.path.endsWith("/endpointslices");
const isSliceList = (r: ApiRequest) => !r.watch && r.path.endsWith("/endpointslices");
const ids = (s: ServiceSnapshot) => s.endpoints.map((e) => e.id).sort();
const status = (s: ServiceSnapshot) => (s.sources[0]!.clusters as readonly KubernetesClusterStatus[])[0]!;

describe("kubernetesDiscovery watch", () => {
  it("resumes from the last event's resourceVersion after the server ends a watch", async () => {
    const { s, w } = await setup();
    const rv = s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.2"]));
    await until(w, (x) => x.endpoints.length === 2);
    const resumed = nextRequest(s, isSliceWatch);
    s.endWatches();
    expect((await resumed).query.get("resourceVersion")).toBe(String(rv));
    expect(s.requests.filter(isSliceList)).toHaveLength(1);
  });

  it("resumes from a BOOKMARK's resourceVersion", async () => {
    const { s } = await setup();
    // A change the slice watch does not see moves the server's version on.
    s.applySlice("default", {
      name: "api-1",
      service: "api",
      endpoints: [{ address: "10.9.0.1" }],
      ports: [{ port: 80 }],
    });
    const bookmarked = s.resourceVersion;
    const bookmark = new Promise<void>((resolve) => setImmediate(resolve));
    s.bookmark();
    await bookmark;
    // The bookmark must reach the client before the stream ends: wait for the next watch it starts.
    const resumed = nextRequest(s, isSliceWatch);
    setTimeout(() => s.endWatches(), 50);
    expect((await resumed).query.get("resourceVersion")).toBe(String(bookmarked));
  });

  it("re-lists when a watch from a compacted version is refused with HTTP 410", async () => {
    const { s, w } = await setup({ compactedWatch: "status" });
    const seen: number[] = [];
    w.onUpdate((x) => seen.push(x.endpoints.length));
    s.applySlice("default", {
      name: "api-1",
      service: "api",
      endpoints: [{ address: "10.9.0.1" }],
      ports: [{ port: 80 }],
    });
    s.compact();
    const relist = nextRequest(s, isSliceList);
    s.endWatches();
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.7"]));
    expect((await relist).query.get("resourceVersion")).toBeNull();
    expect(ids(await until(w, (x) => x.endpoints.length === 2))).toContain("east/10.0.0.7:8080");
    expect(seen.every((n) => n > 0)).toBe(true);
    expect(s.requests.some((r) => isSliceWatch(r) && r.query.get("resourceVersion") !== null)).toBe(true);
  });

  it("pages a re-list with limit and continue, and starts it over when the continue token expires", async () => {
    const { s, w } = await setup({}, { pageSize: 1 });
    s.applySlice("default", webSlice("web-def", ["10.0.0.2"]));
    s.applySlice("default", webSlice("web-ghi", ["10.0.0.3"]));
    await until(w, (x) => x.endpoints.length === 3);
    let expired = false;
    s.fault = (r) => {
      if (!expired && r.query.get("continue") !== null) {
        // History moves on and is compacted while the client pages: its continue token is now too old.
        expired = true;
        s.applySlice("default", {
          name: "api-1",
          service: "api",
          endpoints: [{ address: "10.9.0.1" }],
          ports: [{ port: 80 }],
        });
        s.compact();
      }
      return undefined;
    };
    const seen: number[] = [];
    w.onUpdate((x) => seen.push(x.endpoints.length));
    s.expireWatches();
    s.applySlice("default", webSlice("web-ghi", ["10.0.0.3", "10.0.0.4"]));
    expect(ids(await until(w, (x) => x.endpoints.length === 4))).toContain("east/10.0.0.4:8080");
    const pages = s.requests.filter((r) => isSliceList(r) && r.query.get("resourceVersion") === null);
    expect(pages.every((r) => r.query.get("limit") === "1")).toBe(true);
    // One page, a continue refused with 410, then a list started over: three pages.
    expect(pages.filter((r) => r.query.get("continue") === null).length).toBeGreaterThanOrEqual(2);
    expect(pages.filter((r) => r.query.get("continue") !== null).length).toBeGreaterThanOrEqual(3);
    expect(seen.every((n) => n >= 3)).toBe(true);
  });

  for (const http2 of [false, true]) {
    for (const mode of ["reset", "end"] as const) {
      it(`recovers the event of a stream cut in its middle (${mode}, ${http2 ? "HTTP/2" : "HTTP/1.1"})`, async () => {
        const { s, w } = await setup({ http2 });
        const before = s.resourceVersion;
        const resumed = nextRequest(s, isSliceWatch);
        s.cutNextEvent(mode);
        s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.3"]));
        // The half event is dropped; the next watch starts before it and gets it whole.
        expect((await resumed).query.get("resourceVersion")).toBe(String(before));
        expect(ids(await until(w, (x) => x.endpoints.length === 2))).toContain("east/10.0.0.3:8080");
        expect(s.requests.filter(isSliceList)).toHaveLength(1);
      });
    }
  }

  it("restarts a watch that sends nothing, showing watch-idle meanwhile", async () => {
    const { s, w } = await setup({}, { idleTimeout: 150 });
    s.fault = (r) => (r.watch ? "silent" : undefined);
    s.endWatches();
    const idle = await until(w, (x) => status(x).reason === "watch-idle");
    expect(ids(idle)).toEqual(["east/10.0.0.1:8080"]);
    expect(idle.sources[0]!.stale).toBe(true);
    s.fault = undefined;
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.4"]));
    const back = await until(w, (x) => x.endpoints.length === 2 && status(x).fresh);
    expect(back.sources[0]!.stale).toBe(false);
  });

  it("restarts a watch whose response headers never come", async () => {
    const { s, w } = await setup({}, { idleTimeout: 150 });
    s.fault = (r) => (r.watch ? "hang" : undefined);
    s.endWatches();
    await until(w, (x) => status(x).reason === "watch-idle");
    s.fault = undefined;
    await until(w, (x) => status(x).fresh);
  });

  const faults: [string, KubernetesErrorReason, (r: ApiRequest) => Fault][] = [
    ["401", "unauthorized", () => ({ status: 401, body: statusObject(401, "Unauthorized", "Unauthorized") })],
    [
      "403",
      "forbidden",
      () => ({
        status: 403,
        body: statusObject(
          403,
          "Forbidden",
          'endpointslices.discovery.k8s.io is forbidden: User "system:anonymous" cannot watch resource "endpointslices"',
          {
            group: "discovery.k8s.io",
            kind: "endpointslices",
          },
        ),
      }),
    ],
    [
      "404 for an unknown namespace",
      "not-found",
      () => ({
        status: 404,
        body: statusObject(404, "NotFound", 'namespaces "default" not found', {
          name: "default",
          kind: "namespaces",
        }),
      }),
    ],
    [
      "500",
      "server-error",
      () => ({ status: 500, body: statusObject(500, "InternalError", "etcdserver: request timed out") }),
    ],
    [
      "a body that is not JSON",
      "bad-payload",
      () => ({ status: 200, body: "<html><body>502 Bad Gateway</body></html>\n", contentType: "text/html" }),
    ],
    [
      "an object of the wrong kind",
      "wrong-kind",
      (r) =>
        r.watch
          ? {
              status: 200,
              body: `${JSON.stringify({ type: "ADDED", object: { kind: "Pod", apiVersion: "v1", metadata: { name: "x", resourceVersion: "999" } } })}\n`,
            }
          : {
              status: 200,
              body: { kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: "999" }, items: [] },
            },
    ],
  ];
  for (const [what, reason, fault] of faults) {
    it(`keeps the last good endpoints on ${what}, shows ${reason}, and recovers`, async () => {
      const { s, w } = await setup();
      s.fault = fault;
      s.endWatches();
      const failed = await until(w, (x) => x.sources[0]!.stale);
      expect(ids(failed)).toEqual(["east/10.0.0.1:8080"]);
      expect(status(failed).reason).toBe(reason);
      expect(status(failed).code).toBe(ErrorCodes.KUBERNETES);
      expect(status(failed).error).toContain(s.url);
      expect(failed.sources[0]!.error?.code).toBe(ErrorCodes.DISCOVERY);
      s.fault = undefined;
      s.applySlice("default", webSlice("web-abc", ["10.0.0.1", "10.0.0.5"]));
      const back = await until(w, (x) => x.endpoints.length === 2 && status(x).fresh);
      expect(back.sources[0]!.stale).toBe(false);
      expect(back.sources[0]!.error).toBeUndefined();
    });
  }

  it("fails a first lookup with the cluster's typed error, and binds once the server answers", async () => {
    const s = await startKubeApiServer({ ca });
    servers.push(s);
    s.applyService("default", WEB_SERVICE);
    s.applySlice("default", webSlice("web-abc", ["10.0.0.1"]));
    s.fault = () => ({ status: 403, body: statusObject(403, "Forbidden", "forbidden") });
    const backend = createKubernetesBackend(
      {
        clusters: [{ name: "east", region: "us-east-1", server: s.url, token: s.token, ca: s.caPem }],
        backoff: { base: 20, max: 100 },
      },
      { random: () => 0.5 },
    );
    const registry = new Registry([backend]);
    registries.push(registry);
    const w = registry.watch(parseServiceName("web.default", 80));
    const failed = await until(w, (x) => x.state === "failed");
    expect(status(failed).reason).toBe("forbidden");
    s.fault = undefined;
    expect(ids(await until(w, (x) => x.state === "bound"))).toEqual(["east/10.0.0.1:8080"]);
  });

  it("says not found for a service in a namespace that does not exist", async () => {
    const { backend } = await setup();
    const registry = new Registry([backend]);
    registries.push(registry);
    const w = registry.watch(parseServiceName("web.nowhere", 80));
    const snapshot = await w.settled();
    expect(snapshot.state).toBe("not-found");
    expect(status(snapshot).fresh).toBe(true);
  });
});

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ConsulBackend } from "../../src/discovery/consul/consul.js";
import { applyServiceTemplate, planService } from "../../src/discovery/consul/names.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { consulBackend, ids, watchOf } from "../helpers/consul-backend.js";
import { startConsulServer, type TestConsulServer } from "../helpers/consul-server.js";

let server: TestConsulServer;
let backend: ConsulBackend;

beforeEach(async () => {
  server = await startConsulServer({ datacenters: ["dc-east", "dc-west", "dc-eu"], address: "127.0.70.1" });
  server.register("dc-east", {
    node: "e1",
    address: "127.0.70.2",
    service: "web",
    port: 8080,
    tags: ["http"],
  });
  server.register("dc-west", { node: "w1", address: "127.0.70.4", service: "web", port: 8080 });
  server.register("dc-eu", { node: "u1", address: "127.0.70.6", service: "web", port: 8080 });
  server.register("dc-east", { node: "e1", address: "127.0.70.2", service: "default-api", port: 9090 });
});

afterEach(async () => {
  await backend?.close();
  await server.stop();
});

describe("applyServiceTemplate", () => {
  it("fills {service} and {namespace}", () => {
    expect(applyServiceTemplate("{service}", "web", "default")).toBe("web");
    expect(applyServiceTemplate("{namespace}-{service}", "web", "shop")).toBe("shop-web");
    expect(applyServiceTemplate("{service}.{namespace}.{service}", "a", "b")).toBe("a.b.a");
  });
});

describe("planService", () => {
  const settings = () => consulBackend("http://127.0.0.1:1").settings;

  it("asks every datacenter for svc.service.consul and one for svc.service.<dc>.consul", () => {
    const s = settings();
    expect(planService(parseServiceName("web.service.consul"), s)!.datacenters.map((d) => d.name)).toEqual([
      "dc-east",
      "dc-west",
    ]);
    const west = planService(parseServiceName("web.service.dc-west.consul"), s)!;
    expect(west.datacenters).toEqual([s.datacenters[1]]);
  });

  it("maps Kubernetes-style names through the template and leaves clusterset names alone", () => {
    const s = settings();
    expect(planService(parseServiceName("web.default"), s)?.service).toBe("web");
    expect(planService(parseServiceName("web.default.svc.cluster.local"), s)?.service).toBe("web");
    expect(planService(parseServiceName("web.default.svc.clusterset.local"), s)).toBeUndefined();
    expect(planService(parseServiceName("web.default"), { ...s, serviceName: false })).toBeUndefined();
  });

  it("makes a named port a tag on Consul names only", () => {
    const s = { ...settings(), tags: ["v1"] };
    expect(planService(parseServiceName("web.service.consul", "http"), s)?.tags).toEqual(["v1", "http"]);
    expect(planService(parseServiceName("web.default", "http"), s)?.tags).toEqual(["v1"]);
  });
});

describe("consulDiscovery names", () => {
  it("asks only that datacenter for svc.service.<dc>.consul", async () => {
    backend = consulBackend(server.url);
    expect(ids(await watchOf(backend, "web.service.dc-west.consul").next())).toEqual([
      "dc-west/127.0.70.4:8080",
    ]);
    expect(new Set(server.requests.map((r) => r.dc))).toEqual(new Set(["dc-west"]));
  });

  it("asks a datacenter it was not configured with, in an unknown region, for svc.service.<dc>.consul", async () => {
    backend = consulBackend(server.url);
    const update = await watchOf(backend, "web.service.dc-eu.consul").next();
    expect(update.kind === "bound" && update.endpoints.map((e) => [e.id, e.locality.region])).toEqual([
      ["dc-eu/127.0.70.6:8080", ""],
    ]);
  });

  it("asks the agent's own datacenter, without dc, when no datacenters are configured", async () => {
    backend = consulBackend(server.url, { datacenters: undefined });
    const update = await watchOf(backend, "web.service.consul").next();
    expect(ids(update)).toEqual(["dc-east/127.0.70.2:8080"]);
    expect(update.kind === "bound" && update.clusters?.[0]?.cluster).toBe("dc-east");
    expect(server.requests[0]!.query.has("dc")).toBe(false);
  });

  it("looks a Kubernetes-style name up under the service the template makes of it", async () => {
    backend = consulBackend(server.url, { serviceName: "{namespace}-{service}" });
    expect(ids(await watchOf(backend, "api.default.svc.cluster.local", 80).next())).toEqual([
      "dc-east/127.0.70.2:9090",
    ]);
    expect(server.requests[0]!.service).toBe("default-api");
  });

  it("filters by the named port as a tag", async () => {
    backend = consulBackend(server.url);
    expect(ids(await watchOf(backend, "web.service.consul", "http").next())).toEqual([
      "dc-east/127.0.70.2:8080",
    ]);
    expect(server.requests[0]!.query.getAll("tag")).toEqual(["http"]);
  });

  it("answers not-found for names it does not serve, asks nothing, and holds the watch open until aborted", async () => {
    backend = consulBackend(server.url, { serviceName: false });
    const w = watchOf(backend, "web.default");
    expect(await w.next()).toEqual({ kind: "not-found" });
    const next = w.it.next();
    w.abort.abort();
    expect(await next).toEqual({ done: true, value: undefined });
    const c = watchOf(backend, "web.default.svc.clusterset.local");
    expect(await c.next()).toEqual({ kind: "not-found" });
    c.abort.abort();
    expect(server.requests).toHaveLength(0);
  });

  it("claims Consul names always, and a short svc.ns only while a datacenter has instances of it", async () => {
    backend = consulBackend(server.url);
    expect(backend.claims!(parseServiceName("anything.service.consul"))).toBe(true);
    const webDefault = parseServiceName("web.default");
    expect(backend.claims!(webDefault)).toBe(false);
    // Asking is not enough: a name with no instances stays unclaimed.
    const missing = watchOf(backend, "nothing.default");
    expect((await missing.next()).kind).toBe("not-found");
    expect(backend.claims!(parseServiceName("nothing.default"))).toBe(false);
    const w = watchOf(backend, "web.default");
    expect((await w.next()).kind).toBe("bound");
    expect(backend.claims!(webDefault)).toBe(true);
    expect(backend.claims!(parseServiceName("web.default.svc.clusterset.local"))).toBe(false);
    // Still claimed after the watch ends: the service exists.
    w.abort.abort();
    await w.it.next();
    expect(backend.claims!(webDefault)).toBe(true);
    // Gone from every datacenter: no longer claimed.
    const again = watchOf(backend, "web.default");
    await again.next();
    server.deregister("dc-east", "web-e1");
    server.deregister("dc-west", "web-w1");
    let update = await again.next();
    while (update.kind === "bound") update = await again.next();
    expect(update.kind).toBe("not-found");
    expect(backend.claims!(webDefault)).toBe(false);
  });
});

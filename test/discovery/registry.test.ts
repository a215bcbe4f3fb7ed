import { describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot, type ServiceWatch } from "../../src/discovery/registry.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";
import { scriptedBackend } from "../helpers/backend.js";

const api = parseServiceName("api.default");
const ep = (address: string, cluster = "east", backend = "a") =>
  createEndpoint({ address, port: 80, cluster, region: "us-east-1", backend });

function nextUpdate(watch: ServiceWatch): Promise<ServiceSnapshot> {
  return new Promise((resolve) => {
    const sub = watch.onUpdate((s) => {
      sub.dispose();
      resolve(s);
    });
  });
}

describe("Registry", () => {
  it("starts one watch per service and backend, shared by every caller", async () => {
    const a = scriptedBackend("a");
    const b = scriptedBackend("b");
    const registry = new Registry([a, b]);
    const w1 = registry.watch(api);
    const w2 = registry.watch(parseServiceName("api.default.svc.cluster.local"));
    expect(w1).toBe(w2);
    await Promise.resolve();
    expect(a.watched.map((s) => s.key)).toEqual(["api.default"]);
    expect(b.watched.map((s) => s.key)).toEqual(["api.default"]);
    await registry.close();
  });

  it("merges the endpoints of every backend, first backend winning a duplicate id", async () => {
    const a = scriptedBackend("a");
    const b = scriptedBackend("b");
    const registry = new Registry([a, b]);
    const watch = registry.watch(api);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1"), ep("10.0.0.2")] });
    b.push({ kind: "bound", endpoints: [ep("10.0.0.2", "east", "b"), ep("10.0.1.1", "west", "b")] });
    const snapshot = await watch.settled();
    expect(snapshot.state).toBe("bound");
    expect(snapshot.endpoints.map((e) => `${e.id}@${e.backend}`)).toEqual([
      "east/10.0.0.1:80@a",
      "east/10.0.0.2:80@a",
      "west/10.0.1.1:80@b",
    ]);
    expect(Object.isFrozen(snapshot)).toBe(true);
    expect(Object.isFrozen(snapshot.endpoints)).toBe(true);
    await registry.close();
  });

  it("keeps the last-known-good set of a backend that fails, marked stale with the error", async () => {
    const a = scriptedBackend("a");
    const registry = new Registry([a]);
    const watch = registry.watch(api);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
    await watch.settled();
    const error = new DiscoveryError("a", "api.default", "SERVFAIL");
    a.push({ kind: "failed", error });
    const snapshot = await nextUpdate(watch);
    expect(snapshot.state).toBe("bound");
    expect(snapshot.endpoints.map((e) => e.address)).toEqual(["10.0.0.1"]);
    expect(snapshot.sources[0]).toMatchObject({ state: "bound", stale: true, error });
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
    const fresh = await nextUpdate(watch);
    expect(fresh.sources[0]).toMatchObject({ stale: false, error: undefined });
    // An identical set keeps the same array, so pickers need not rebuild.
    expect(fresh.endpoints).toBe(snapshot.endpoints);
    await registry.close();
  });

  it("treats a garbage update as a failure naming the backend, and keeps the last good set", async () => {
    const a = scriptedBackend("a");
    const registry = new Registry([a]);
    const watch = registry.watch(api);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
    await watch.settled();
    a.push({ kind: "bogus", endpoints: 7 });
    const snapshot = await nextUpdate(watch);
    expect(snapshot.endpoints).toHaveLength(1);
    expect(snapshot.sources[0]!.error?.code).toBe(ErrorCodes.DISCOVERY);
    expect(snapshot.sources[0]!.error?.message).toContain("a discovery of api.default: invalid update");
    await registry.close();
  });

  it("turns a backend that throws into a failed source without losing the other backends", async () => {
    const a = scriptedBackend("a");
    const b = scriptedBackend("b");
    const registry = new Registry([a, b]);
    const watch = registry.watch(api);
    a.fail(new Error("connection reset"));
    b.push({ kind: "bound", endpoints: [ep("10.0.1.1", "west", "b")] });
    const snapshot = await watch.settled();
    expect(snapshot.state).toBe("bound");
    expect(snapshot.sources[0]).toMatchObject({ state: "failed" });
    expect(snapshot.sources[0]!.error).toBeInstanceOf(DiscoveryError);
    expect(snapshot.sources[0]!.error?.message).toContain("connection reset");
    await registry.close();
  });

  it("is not-found only when every backend says so, and empties a removed service", async () => {
    const a = scriptedBackend("a");
    const b = scriptedBackend("b");
    const registry = new Registry([a, b]);
    const watch = registry.watch(api);
    a.push({ kind: "not-found" });
    b.push({ kind: "bound", endpoints: [ep("10.0.0.9", "east", "b")] });
    expect((await watch.settled()).state).toBe("bound");
    b.push({ kind: "not-found" });
    const snapshot = await nextUpdate(watch);
    expect(snapshot.state).toBe("not-found");
    expect(snapshot.endpoints).toEqual([]);
    await registry.close();
  });

  it("settles after the settle timeout when a backend never answers", async () => {
    const a = scriptedBackend("a");
    const silent = scriptedBackend("silent");
    const registry = new Registry([a, silent], { settleTimeout: 20 });
    const watch = registry.watch(api);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
    const snapshot = await watch.settled();
    expect(snapshot.state).toBe("bound");
    expect(snapshot.sources[1]!.state).toBe("pending");
    await registry.close();
  });

  it("stops every watch on close", async () => {
    const a = scriptedBackend("a");
    const registry = new Registry([a]);
    registry.watch(api);
    registry.watch(parseServiceName("web.default"));
    await Promise.resolve();
    expect(a.active).toBe(2);
    await registry.close();
    expect(a.active).toBe(0);
    expect(registry.closed).toBe(true);
  });
});

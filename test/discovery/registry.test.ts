import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot, type ServiceWatch } from "../../src/discovery/registry.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";
import { scriptedBackend } from "../helpers/backend.js";
import { manualClock } from "../helpers/routing.js";

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

  it("restarts a watch whose iterator threw, keeping the last set marked stale meanwhile", async () => {
    const a = scriptedBackend("a");
    const registry = new Registry([a], { restartBackoff: { base: 5, max: 5 } });
    const watch = registry.watch(api);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
    await watch.settled();
    a.fail(new Error("stream cut"));
    const stale = await nextUpdate(watch);
    expect(stale.sources[0]).toMatchObject({ stale: true, state: "bound" });
    expect(stale.endpoints.map((e) => e.address)).toEqual(["10.0.0.1"]);
    a.push({ kind: "bound", endpoints: [ep("10.0.0.2")] });
    const fresh = await nextUpdate(watch);
    expect(fresh.sources[0]).toMatchObject({ stale: false });
    expect(fresh.endpoints.map((e) => e.address)).toEqual(["10.0.0.2"]);
    expect(a.watched).toHaveLength(2);
    await registry.close();
  });

  it("restarts a watch whose iterator ended", async () => {
    let runs = 0;
    const ending: DiscoveryBackend = {
      name: "ending",
      async *watch() {
        runs++;
        yield { kind: "bound", endpoints: [ep(`10.0.0.${runs}`)] };
      },
    };
    const registry = new Registry([ending], { restartBackoff: { base: 5, max: 5 } });
    const watch = registry.watch(api);
    while (runs < 3) await nextUpdate(watch);
    expect(watch.snapshot.endpoints.length).toBe(1);
    await registry.close();
  });

  it("contains a listener that throws: the others still hear, and the error goes to meshlink:error", async () => {
    const seen: unknown[] = [];
    const report = (m: unknown) => seen.push(m);
    subscribe("meshlink:error", report);
    try {
      const a = scriptedBackend("a");
      const registry = new Registry([a]);
      const watch = registry.watch(api);
      watch.onUpdate(() => {
        throw new Error("listener bug");
      });
      const heard = nextUpdate(watch);
      a.push({ kind: "bound", endpoints: [ep("10.0.0.1")] });
      expect((await heard).state).toBe("bound");
      expect(seen).toEqual([{ where: "discovery update listener", error: new Error("listener bug") }]);
      // The backend's loop goes on.
      a.push({ kind: "bound", endpoints: [ep("10.0.0.2")] });
      expect((await nextUpdate(watch)).endpoints[0]!.address).toBe("10.0.0.2");
      await registry.close();
    } finally {
      unsubscribe("meshlink:error", report);
    }
  });

  it("gives every watch its own signal, so that many services raise no MaxListenersExceededWarning", async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      const a = scriptedBackend("a");
      const signals: AbortSignal[] = [];
      const backend: DiscoveryBackend = {
        name: "a",
        watch: (service, options) => {
          signals.push(options.signal);
          return a.watch(service, options);
        },
      };
      const registry = new Registry([backend]);
      for (let i = 0; i < 30; i++) registry.watch(parseServiceName(`svc${i}.default`));
      await new Promise((r) => setImmediate(r));
      expect(new Set(signals).size).toBe(30);
      await registry.close();
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("forgets a service nobody used for the idle timeout: its watch stops and forget listeners run", async () => {
    const clock = manualClock(0);
    const a = scriptedBackend("a");
    const registry = new Registry([a], { idleTimeout: 1_000, now: clock });
    const forgotten: string[] = [];
    registry.onForget((w) => forgotten.push(w.service.id));
    const idle = registry.watch(api);
    const busy = registry.watch(parseServiceName("web.default"));
    await Promise.resolve();
    expect(a.active).toBe(2);
    registry.sweep(); // both were used at creation
    clock.advance(600);
    busy.used = true;
    registry.sweep();
    clock.advance(600);
    registry.sweep();
    expect(forgotten).toEqual(["api.default"]);
    expect(idle.closed).toBe(true);
    expect([...registry.services()]).toEqual([busy]);
    await new Promise((r) => setImmediate(r));
    expect(a.active).toBe(1);
    // Asked for again, the service gets a new watch.
    expect(registry.watch(api)).not.toBe(idle);
    await registry.close();
  });

  it("keeps a service with calls in flight however long ago they started", () => {
    const clock = manualClock(0);
    const registry = new Registry([scriptedBackend("a")], {
      idleTimeout: 1_000,
      now: clock,
      busy: () => true,
    });
    registry.watch(api);
    for (let i = 0; i < 5; i++) {
      clock.advance(1_000);
      registry.sweep();
    }
    expect([...registry.services()]).toHaveLength(1);
    void registry.close();
  });

  it("claims a short name only when a backend knows it, never because someone asked", async () => {
    const known = parseServiceName("known.default");
    const a: DiscoveryBackend = { ...scriptedBackend("a"), claims: (s) => s.key === "known.default" };
    const registry = new Registry([a]);
    const asked = parseServiceName("example.invalid");
    registry.watch(asked);
    expect(registry.claims(asked)).toBe(false);
    expect(registry.claims(known)).toBe(true);
    expect(registry.claims(parseServiceName("web.default.svc.cluster.local"))).toBe(true);
    await registry.close();
  });
});

import { afterEach, describe, expect, it, vi } from "vitest";
import { HealthTracker } from "../../src/routing/health.js";
import { Balancer } from "../../src/routing/router.js";
import { TierMap } from "../../src/routing/tiers.js";
import { countBy, endpoints, fixedWatch, manualClock } from "../helpers/routing.js";
import { CALLER, home, setup, west } from "./setup.js";

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe("Balancer", () => {
  it("sends every call to the home tier while it is healthy", () => {
    const { balancer } = setup([...home(4), ...west(4)]);
    expect(
      countBy(
        1000,
        () => balancer.pick(),
        (e) => e.cluster,
      ),
    ).toEqual({ home: 1000 });
  });

  it("spills a share of the traffic to the next tier as home endpoints are ejected", () => {
    const h = home(10);
    const { balancer, eject } = setup([...h, ...west(10)]);
    for (const e of h.slice(0, 5)) eject(e);
    const counts = countBy(
      10_000,
      () => balancer.pick(),
      (e) => e.cluster,
    );
    // 50 % healthy × 1.4 = 70 % stays home.
    expect(counts.home! / 10_000).toBeCloseTo(0.7, 1);
    expect(counts.west! / 10_000).toBeCloseTo(0.3, 1);
    const [t0, t1] = balancer.tiers();
    expect(t0).toMatchObject({ healthy: 5, total: 10, panic: false });
    expect(t0!.load).toBeCloseTo(0.7, 5);
    expect(t1!.load).toBeCloseTo(0.3, 5);
  });

  it("fails over a dead home tier entirely, without panic", () => {
    const h = home(3);
    const { balancer, eject } = setup([...h, ...west(3)]);
    for (const e of h) eject(e);
    expect(
      countBy(
        1000,
        () => balancer.pick(),
        (e) => e.cluster,
      ),
    ).toEqual({ west: 1000 });
    expect(balancer.tiers().map((t) => t.panic)).toEqual([false, false]);
  });

  it("panics when the tiers together fall short: picks ignore health", () => {
    const h = home(4);
    const { balancer, eject } = setup(h);
    for (const e of h.slice(0, 3)) eject(e);
    const counts = countBy(
      4000,
      () => balancer.pick(),
      (e) => e.id,
    );
    expect(Object.keys(counts)).toHaveLength(4);
    expect(balancer.tiers()[0]!.panic).toBe(true);
  });

  it("picks nothing when every endpoint is ejected and panic is off", () => {
    const h = home(2);
    const { balancer, eject } = setup(h, { panicThreshold: 0 });
    for (const e of h) eject(e);
    expect(balancer.pick()).toBeUndefined();
    expect(balancer.saturated).toBe(false);
  });

  it("uses backups only when no other tier has a healthy endpoint", () => {
    const h = home(2);
    const backups = endpoints(2, { cluster: "dr", region: "dr", backup: true }, 9);
    const { balancer, eject } = setup([...h, ...backups]);
    eject(h[0]!);
    expect(
      countBy(
        500,
        () => balancer.pick(),
        (e) => e.cluster,
      ),
    ).toEqual({ home: 500 });
    eject(h[1]!);
    expect(
      countBy(
        500,
        () => balancer.pick(),
        (e) => e.cluster,
      ),
    ).toEqual({ dr: 500 });
  });

  it("takes an endpoint back when its ejection time is over, with no health event", () => {
    const h = home(1);
    const { balancer, eject, clock } = setup([...h, ...west(1)]);
    eject(h[0]!);
    expect(balancer.pick()!.cluster).toBe("west");
    clock.advance(30_000);
    expect(balancer.pick()!.cluster).toBe("home");
  });

  it("rebuilds its plan only when the snapshot or health changes", () => {
    const { balancer, health, watch } = setup([...home(100), ...west(100)]);
    balancer.pick();
    const spy = vi.spyOn(health, "available");
    for (let i = 0; i < 1000; i++) balancer.pick();
    expect(spy).not.toHaveBeenCalled();
    watch.set(home(50));
    balancer.pick();
    expect(spy).toHaveBeenCalledTimes(50);
  });

  it("keeps its table and picker across a discovery update that changes nothing", () => {
    const h = home(3);
    const { balancer, watch, tiers, health } = setup([...h, ...west(3)], { policy: "round-robin" });
    expect(balancer.pick()).toBe(h[0]);
    const before = watch.snapshot;
    const of = vi.spyOn(tiers, "of");
    const available = vi.spyOn(health, "available");
    watch.set([...before.endpoints]);
    expect(watch.snapshot.version).toBeGreaterThan(before.version);
    expect(watch.snapshot.endpoints).toBe(before.endpoints);
    // The round-robin position carries on where it was.
    expect([balancer.pick(), balancer.pick(), balancer.pick()]).toEqual([h[1], h[2], h[0]]);
    expect(of).not.toHaveBeenCalled();
    expect(available).not.toHaveBeenCalled();
  });

  it("rebuilds its table when an endpoint changes", () => {
    const h = home(2);
    const { balancer, watch, tiers } = setup(h);
    balancer.pick();
    const of = vi.spyOn(tiers, "of");
    const heavier = endpoints(1, { cluster: "home", region: "east", zone: "east-a", weight: 3 }, 1);
    watch.set([heavier[0]!, h[1]!]);
    const counts = countBy(
      4000,
      () => balancer.pick(),
      (e) => String(e.weight),
    );
    expect(of).toHaveBeenCalledTimes(2);
    expect(counts["3"]! / 4000).toBeCloseTo(0.75, 1);
  });

  it("re-weights the tiers after an ejection without rebuilding the tier table", () => {
    const h = home(4);
    const w = west(4);
    const { balancer, tiers, health, eject } = setup([...h, ...w], { policy: "round-robin" });
    expect(balancer.pick()).toBe(h[0]);
    const of = vi.spyOn(tiers, "of");
    const get = vi.spyOn(health, "get");
    // A health change in another tier leaves the home group, and its round-robin position, as they were.
    eject(w[0]!);
    get.mockClear();
    expect(balancer.pick()).toBe(h[1]);
    for (const e of h.slice(0, 3)) eject(e);
    get.mockClear();
    const counts = countBy(
      1000,
      () => balancer.pick(),
      (e) => e.cluster,
    );
    // 1 of 4 healthy at home: 1.4 × 25 % = 35 % stays, the rest spills to the 3 healthy of the west.
    expect(counts.home! / 1000).toBeCloseTo(0.35, 1);
    expect(balancer.tiers().map((t) => [t.healthy, t.total])).toEqual([
      [1, 4],
      [3, 4],
    ]);
    expect(of).not.toHaveBeenCalled();
    expect(get).not.toHaveBeenCalled();
  });

  it("keeps a partly ejected group's picker across a health change that does not touch it", () => {
    // Eight at home: with two ejected, 6/8 × 1.4 ≥ 1 keeps every call at home.
    const h = home(8);
    const w = west(4);
    const { balancer, eject } = setup([...h, ...w], { policy: "round-robin" });
    eject(h[0]!);
    expect(balancer.pick()).toBe(h[1]);
    eject(w[0]!);
    expect([balancer.pick(), balancer.pick(), balancer.pick()]).toEqual([h[2], h[3], h[4]]);
    // Its own healthy set changes: a new picker over the endpoints left.
    eject(h[2]!);
    expect([balancer.pick(), balancer.pick(), balancer.pick()]).toEqual([h[1], h[3], h[4]]);
  });

  it("skips excluded endpoints and prefers another cluster when asked", () => {
    const h = home(2);
    const w = west(2);
    const { balancer } = setup([...h, ...w]);
    for (let i = 0; i < 50; i++) {
      expect(balancer.pick({ exclude: [h[0]!.id] })!.id).toBe(h[1]!.id);
      expect(balancer.pick({ exclude: [h[0]!.id], avoidCluster: "home" })!.cluster).toBe("west");
    }
    // With no other cluster left, the avoided one is still used.
    expect(balancer.pick({ exclude: [...w, h[0]!].map((e) => e.id), avoidCluster: "home" })!.id).toBe(
      h[1]!.id,
    );
  });

  it("skips endpoints at their request limit and reports saturation when all are full", () => {
    const h = home(2);
    const { balancer, health } = setup(h, { maxRequestsPerEndpoint: 2 });
    health.get(h[0]!.id).outstanding = 2;
    expect(
      countBy(
        100,
        () => balancer.pick(),
        (e) => e.id,
      ),
    ).toEqual({ [h[1]!.id]: 100 });
    health.get(h[1]!.id).outstanding = 2;
    expect(balancer.pick()).toBeUndefined();
    expect(balancer.saturated).toBe(true);
  });

  it("splits a distribute tier by locality weight", () => {
    const a = endpoints(2, { cluster: "home", region: "east", zone: "east-a" }, 1);
    const b = endpoints(2, { cluster: "home", region: "east", zone: "east-b" }, 2);
    const { balancer } = setup(
      [...a, ...b],
      {},
      {
        ...CALLER,
        distribute: [{ from: "east/east-a", to: { "east/east-a": 80, "east/east-b": 20 } }],
      },
    );
    const counts = countBy(
      10_000,
      () => balancer.pick(),
      (e) => e.locality.zone,
    );
    expect(counts["east-a"]! / 10_000).toBeCloseTo(0.8, 1);
  });

  it("shifts a distribute split away from a locality as it loses health", () => {
    const a = endpoints(2, { cluster: "home", region: "east", zone: "east-a" }, 1);
    const b = endpoints(2, { cluster: "home", region: "east", zone: "east-b" }, 2);
    const { balancer, eject } = setup(
      [...a, ...b],
      {},
      {
        ...CALLER,
        distribute: [{ from: "east/east-a", to: { "east/east-a": 50, "east/east-b": 50 } }],
      },
    );
    for (const e of a) eject(e);
    expect(
      countBy(
        1000,
        () => balancer.pick(),
        (e) => e.locality.zone,
      ),
    ).toEqual({ "east-b": 1000 });
  });

  it("lists every endpoint in the router's order with availability", () => {
    const h = home(2);
    const { balancer, eject } = setup([...west(1), ...h]);
    eject(h[0]!);
    const rows = balancer.order();
    expect(rows.map((r) => [r.tier.label, r.available])).toEqual([
      ["zone", true],
      ["zone", false],
      ["failover:west", true],
    ]);
    expect(rows[1]!.unavailableReason).toBe("ejected");
  });

  it("excludes endpoints by id, so a discovery refresh cannot send a retry back to the one that failed", () => {
    const { balancer, watch } = setup(home(2));
    const tried = balancer.pick()!;
    // A refresh that adds an endpoint re-creates every endpoint object, with the same ids.
    watch.set([...home(2), ...home(1, 5)]);
    const again = watch.snapshot.endpoints.find((e) => e.id === tried.id)!;
    expect(again).not.toBe(tried);
    for (let i = 0; i < 300; i++) expect(balancer.pick({ exclude: [tried.id] })!.id).not.toBe(tried.id);
  });

  it("falls back to an endpoint already tried when it is the only candidate, unless the exclusion is hard", () => {
    const [only] = home(1);
    const one = setup([only!]).balancer;
    expect(one.pick({ exclude: [only!.id] })).toBe(only);
    expect(one.pick({ exclude: [only!.id], hard: true })).toBeUndefined();

    // Two endpoints, one ejected: the healthy one is the only candidate.
    const h = home(2);
    const { balancer, eject } = setup(h);
    eject(h[1]!);
    for (let i = 0; i < 50; i++) expect(balancer.pick({ exclude: [h[0]!.id] })).toBe(h[0]);
    expect(balancer.pick({ exclude: [h[0]!.id], hard: true })).toBeUndefined();
  });

  it("keeps preferring another cluster when it falls back to endpoints already tried", () => {
    const h = home(2);
    const w = west(2);
    const { balancer } = setup([...h, ...w]);
    const all = [...h, ...w].map((e) => e.id);
    for (let i = 0; i < 50; i++)
      expect(balancer.pick({ exclude: all, avoidCluster: "home" })!.cluster).toBe("west");
    expect(balancer.pick({ exclude: all, hard: true })).toBeUndefined();
  });

  it("tells only the balancer whose endpoint changed health, and fires its change event", () => {
    const clock = manualClock();
    const health = new HealthTracker({ now: clock, random: () => 0, failureRate: false });
    const tiers = new TierMap(CALLER);
    const mine = home(3);
    const a = new Balancer(fixedWatch(mine), tiers, health);
    const b = new Balancer(fixedWatch(west(3)), tiers, health);
    a.pick();
    b.pick();
    const events = { a: 0, b: 0 };
    a.onChange((x) => {
      expect(x).toBe(a);
      events.a++;
    });
    b.onChange(() => events.b++);
    const versions = { a: a.version, b: b.version };
    const h = a.healthOf(mine[0]!);
    for (let i = 0; i < 5; i++) {
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
    expect(events).toEqual({ a: 1, b: 0 });
    expect(a.version).toBeGreaterThan(versions.a);
    expect(b.version).toBe(versions.b);
    const available = vi.spyOn(health, "available");
    b.pick();
    expect(available).not.toHaveBeenCalled();
    a.pick();
    expect(available).toHaveBeenCalledTimes(3);
  });

  it("fires its change event when its endpoints change, not on a refresh that changes nothing", () => {
    const h = home(3);
    const { balancer, watch } = setup(h);
    let events = 0;
    balancer.onChange(() => events++);
    watch.set([...watch.snapshot.endpoints]);
    expect(events).toBe(0);
    watch.set(h.slice(0, 2));
    expect(events).toBe(1);
  });

  it("fires its change event when an ejection ends, and not once unsubscribed", () => {
    vi.useFakeTimers();
    const health = new HealthTracker({ now: () => Date.now(), random: () => 0, failureRate: false });
    const h = home(2);
    const balancer = new Balancer(fixedWatch(h), new TierMap(CALLER), health);
    let events = 0;
    const sub = balancer.onChange(() => events++);
    const r = balancer.healthOf(h[0]!);
    for (let i = 0; i < 5; i++) {
      health.start(r);
      health.failure(r, "ECONNREFUSED");
    }
    expect(events).toBe(1);
    vi.advanceTimersByTime(29_999);
    expect(events).toBe(1);
    vi.advanceTimersByTime(1);
    expect(events).toBe(2);
    expect(balancer.tiers()[0]!.healthy).toBe(2);
    sub.dispose();
    health.start(r);
    health.failure(r, "ECONNREFUSED");
    vi.advanceTimersByTime(120_000);
    expect(events).toBe(2);
  });

  it("contains a change listener that throws: health reporting and other listeners carry on", () => {
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const h = home(2);
    const { balancer, eject, health } = setup(h);
    const boom = new Error("listener bug");
    balancer.onChange(() => {
      throw boom;
    });
    let heard = 0;
    balancer.onChange(() => heard++);
    expect(() => eject(h[0]!)).not.toThrow();
    expect(balancer.healthOf(h[0]!).state).toBe("ejected");
    expect(heard).toBe(1);
    expect(warn).toHaveBeenCalledWith(boom);
    expect(health.size).toBe(2);
  });

  it("keeps a health record while some open balancer uses the endpoint, and forgets it after", () => {
    const health = new HealthTracker({ now: manualClock(), random: () => 0 });
    const tiers = new TierMap(CALLER);
    const shared = home(2);
    const a = new Balancer(fixedWatch(shared), tiers, health);
    const b = new Balancer(fixedWatch([shared[0]!, ...west(1)]), tiers, health);
    expect(health.size).toBe(3);
    expect(a.healthOf(shared[0]!)).toBe(b.healthOf(shared[0]!));
    a.close();
    a.close();
    expect(health.size).toBe(2);
    b.close();
    expect(health.size).toBe(0);
  });

  it("forgets the health of endpoints that leave the snapshot", () => {
    const h = home(3);
    const { balancer, watch, health, eject } = setup(h);
    eject(h[2]!);
    expect(health.size).toBe(3);
    watch.set(h.slice(0, 2));
    expect(health.size).toBe(2);
    // Back again: a new record, its old ejection forgotten.
    watch.set(h);
    expect(balancer.healthOf(h[2]!).state).toBe("healthy");
  });

  it("stops following discovery and health once closed, and still picks from its last set", () => {
    const h = home(2);
    const { balancer, watch, health } = setup(h);
    let events = 0;
    balancer.onChange(() => events++);
    balancer.close();
    watch.set(home(5));
    expect(events).toBe(0);
    expect(health.size).toBe(0);
    expect(h).toContain(balancer.pick());
  });

  it("never shows an endpoint as ejected once its ejection time is over", () => {
    const h = home(2);
    const { balancer, eject, clock } = setup(h);
    eject(h[0]!);
    const before = balancer.order().find((r) => r.endpoint.id === h[0]!.id)!;
    expect([before.available, before.unavailableReason, before.health.state]).toEqual([
      false,
      "ejected",
      "ejected",
    ]);
    expect(before.health.ejectedUntil).toBeDefined();
    clock.advance(30_000);
    const after = balancer.order().find((r) => r.endpoint.id === h[0]!.id)!;
    expect([after.available, after.unavailableReason, after.health.state]).toEqual([
      true,
      undefined,
      "healthy",
    ]);
    expect(after.health.ejectedUntil).toBeUndefined();
    expect(after.health.ejections).toBe(1);
  });
});

import { describe, expect, it, vi } from "vitest";
import { HealthTracker } from "../../src/resilience/health.js";
import { Balancer, type BalancerOptions } from "../../src/routing/router.js";
import { type RouterOptions, TierMap } from "../../src/routing/tiers.js";
import { countBy, endpoints, fixedWatch, manualClock, seededRandom } from "../helpers/routing.js";

const CALLER: RouterOptions = { region: "east", zone: "east-a", failover: ["west"] };

function setup(
  eps: ReturnType<typeof endpoints>,
  options: BalancerOptions = {},
  caller: RouterOptions = CALLER,
) {
  const clock = manualClock();
  const health = new HealthTracker({ now: clock, random: () => 0, failureRate: false });
  const watch = fixedWatch(eps);
  const balancer = new Balancer(watch, new TierMap(caller), health, { random: seededRandom(), ...options });
  const eject = (e: (typeof eps)[number]) => {
    const h = health.get(e.id);
    for (let i = 0; i < 5; i++) {
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
  };
  return { clock, health, watch, balancer, eject };
}

const home = (n: number) => endpoints(n, { cluster: "home", region: "east", zone: "east-a" }, 1);
const west = (n: number) => endpoints(n, { cluster: "west", region: "west", zone: "west-a" }, 2);

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

  it("looks at two endpoints per pick at 10 000 endpoints", () => {
    const { balancer, health } = setup(home(10_000));
    balancer.pick();
    const spy = vi.spyOn(health, "cost");
    for (let i = 0; i < 100; i++) balancer.pick();
    expect(spy).toHaveBeenCalledTimes(200);
  });

  it("prefers the endpoint with fewer requests in flight", () => {
    const h = home(2);
    const { balancer, health } = setup(h);
    for (const e of h) health.observe(health.get(e.id), 10);
    health.get(h[0]!.id).outstanding = 5;
    expect(
      countBy(
        200,
        () => balancer.pick(),
        (e) => e.id,
      ),
    ).toEqual({ [h[1]!.id]: 200 });
  });

  it("prefers the endpoint with the lower peak-EWMA latency", () => {
    const h = home(3);
    const { balancer, health } = setup(h);
    health.observe(health.get(h[0]!.id), 100);
    health.observe(health.get(h[1]!.id), 10);
    health.observe(health.get(h[2]!.id), 10);
    const counts = countBy(
      3000,
      () => balancer.pick(),
      (e) => e.id,
    );
    // The slow one wins only when paired with itself, which P2C never does.
    expect(counts[h[0]!.id]).toBeUndefined();
    expect(counts[h[1]!.id]! / 3000).toBeCloseTo(0.5, 1);
  });

  it("shares the load evenly between endpoints with no latency data", () => {
    const h = home(4);
    const { balancer } = setup(h);
    const counts = countBy(
      8000,
      () => balancer.pick(),
      (e) => e.id,
    );
    for (const e of h) expect(counts[e.id]! / 8000).toBeCloseTo(0.25, 1);
  });

  it("honours endpoint weights", () => {
    const heavy = endpoints(1, { cluster: "home", region: "east", zone: "east-a", weight: 3 }, 1);
    const light = endpoints(1, { cluster: "home", region: "east", zone: "east-a", weight: 1 }, 2);
    for (const policy of ["p2c", "random", "round-robin"] as const) {
      const { balancer } = setup([...heavy, ...light], { policy });
      const counts = countBy(
        4000,
        () => balancer.pick(),
        (e) => e.id,
      );
      expect(counts[heavy[0]!.id]! / 4000, policy).toBeCloseTo(0.75, 1);
    }
  });

  it("cycles through endpoints in order with round-robin", () => {
    const h = home(3);
    const { balancer } = setup(h, { policy: "round-robin" });
    const ids = Array.from({ length: 6 }, () => balancer.pick()!.id);
    expect(ids).toEqual([...h, ...h].map((e) => e.id));
  });

  it("ramps a new endpoint's weight up over the slow-start window", () => {
    const h = home(2);
    const { balancer, watch, health, clock } = setup(h, { slowStart: { window: 10_000 } });
    balancer.pick();
    const added = endpoints(1, { cluster: "home", region: "east", zone: "east-a" }, 3);
    watch.set([...h, ...added]);
    for (const e of [...h, ...added]) health.observe(health.get(e.id), 10);
    clock.advance(1000);
    const early =
      countBy(
        3000,
        () => balancer.pick(),
        (e) => e.id,
      )[added[0]!.id] ?? 0;
    clock.advance(10_000);
    const late =
      countBy(
        3000,
        () => balancer.pick(),
        (e) => e.id,
      )[added[0]!.id] ?? 0;
    expect(early).toBeLessThan(late / 2);
    expect(late / 3000).toBeCloseTo(1 / 3, 1);
  });

  it("does not slow-start the endpoints of the first snapshot", () => {
    const h = home(2);
    const { balancer, health } = setup(h, { slowStart: { window: 10_000 } });
    balancer.pick();
    for (const e of h) expect(health.get(e.id).warmingSince).toBe(0);
  });

  it("skips excluded endpoints and prefers another cluster when asked", () => {
    const h = home(2);
    const w = west(2);
    const { balancer } = setup([...h, ...w]);
    for (let i = 0; i < 50; i++) {
      expect(balancer.pick({ exclude: [h[0]!] })!.id).toBe(h[1]!.id);
      expect(balancer.pick({ exclude: [h[0]!], avoidCluster: "home" })!.cluster).toBe("west");
    }
    expect(balancer.pick({ exclude: [...h, ...w] })).toBeUndefined();
    // With no other cluster left, the avoided one is still used.
    expect(balancer.pick({ exclude: [...w, h[0]!], avoidCluster: "home" })!.id).toBe(h[1]!.id);
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
});

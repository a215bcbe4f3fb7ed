import { describe, expect, it, vi } from "vitest";
import { HealthTracker } from "../../src/routing/health.js";
import { Balancer, type BalancerOptions } from "../../src/routing/router.js";
import { type RouterOptions, TierMap } from "../../src/routing/tiers.js";
import { countBy, endpoints, fixedWatch, manualClock, seededRandom } from "../helpers/routing.js";

/** nginx's smooth weighted round-robin, step by step as nginx does it (weights scaled to at most 64), for reference. */
function nginxOrder(weights: readonly number[], steps: number): number[] {
  let max = 0;
  for (const w of weights) max = Math.max(max, w);
  const scaled = weights.map((w) => Math.max(1, Math.round(w * Math.min(1, 64 / max))));
  const total = scaled.reduce((a, b) => a + b, 0);
  const current = scaled.map(() => 0);
  const out: number[] = [];
  for (let s = 0; s < steps; s++) {
    let best = 0;
    for (let i = 0; i < scaled.length; i++) {
      current[i]! += scaled[i]!;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    out.push(best);
  }
  return out;
}

/** One endpoint per weight, all in the caller's zone, in the order given. */
const weighted = (weights: readonly number[]) =>
  weights.map(
    (weight, i) =>
      endpoints(1, {
        cluster: "home",
        region: "east",
        zone: "east-a",
        address: `10.9.${i >> 8}.${i & 255}`,
        weight,
      })[0]!,
  );

const CALLER: RouterOptions = { region: "east", zone: "east-a", failover: ["west"] };

function setup(
  eps: ReturnType<typeof endpoints>,
  options: BalancerOptions = {},
  caller: RouterOptions = CALLER,
) {
  const clock = manualClock();
  const health = new HealthTracker({ now: clock, random: () => 0, failureRate: false });
  const watch = fixedWatch(eps);
  const tiers = new TierMap(caller);
  const balancer = new Balancer(watch, tiers, health, { random: seededRandom(), ...options });
  const eject = (e: (typeof eps)[number]) => {
    const h = health.get(e.id);
    for (let i = 0; i < 5; i++) {
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
  };
  return { clock, health, watch, tiers, balancer, eject };
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

  it("follows nginx's smooth weighted round-robin order when weights differ", () => {
    const five = weighted([5, 1, 1]);
    const { balancer } = setup(five, { policy: "round-robin" });
    const ids = Array.from({ length: 14 }, () => five.indexOf(balancer.pick()!));
    expect(ids).toEqual([0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);

    // Many distinct weights, some above 64 (scaled down), ties everywhere.
    const random = seededRandom(7);
    const weights = Array.from({ length: 60 }, (_, i) =>
      i % 7 === 0 ? 1 + Math.floor(random() * 300) : 1 + Math.floor(random() * 6),
    );
    const list = weighted(weights);
    const rr = setup(list, { policy: "round-robin" }).balancer;
    const steps = 2 * nginxOrder(weights, 0).length + 2_000;
    expect(Array.from({ length: steps }, () => list.indexOf(rr.pick()!))).toEqual(nginxOrder(weights, steps));
  });

  it("gives every endpoint its weight's share of each round-robin cycle", () => {
    const weights = Array.from({ length: 1000 }, (_, i) => 1 + ((i * 7) % 4));
    const list = weighted(weights);
    const { balancer } = setup(list, { policy: "round-robin" });
    const cycle = weights.reduce((a, b) => a + b, 0);
    for (let round = 0; round < 2; round++) {
      const counts = countBy(
        cycle,
        () => balancer.pick(),
        (e) => e.id,
      );
      expect(list.map((e) => counts[e.id])).toEqual(weights);
    }
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
      expect(balancer.pick({ exclude: [h[0]!.id] })!.id).toBe(h[1]!.id);
      expect(balancer.pick({ exclude: [h[0]!.id], avoidCluster: "home" })!.cluster).toBe("west");
    }
    const all = [...h, ...w].map((e) => e.id);
    expect(balancer.pick({ exclude: all, hard: true })).toBeUndefined();
    // Soft exclusion: with every endpoint tried, one is picked again.
    expect(all).toContain(balancer.pick({ exclude: all })!.id);
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
});

import { describe, expect, it, vi } from "vitest";
import type { Endpoint } from "../../src/discovery/endpoint.js";
import type { HealthTracker } from "../../src/routing/health.js";
import type { Balancer } from "../../src/routing/router.js";
import { countBy, endpoints, type ManualClock, seededRandom } from "../helpers/routing.js";
import { home, setup, weighted } from "./setup.js";

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

/**
 * A closed loop of `concurrency` calls on a manual clock: each call takes
 * `latency` ms whichever endpoint serves it (every endpoint keeps up), and a
 * new call is picked as soon as one ends. Returns each endpoint's share of the picks.
 */
function closedLoop(
  balancer: Balancer,
  health: HealthTracker,
  clock: ManualClock,
  list: readonly Endpoint[],
  concurrency: number,
  calls: number,
): number[] {
  const random = seededRandom(3);
  const counts = new Map<string, number>();
  const inFlight: { at: number; endpoint: Endpoint }[] = [];
  const launch = () => {
    const endpoint = balancer.pick()!;
    health.start(balancer.healthOf(endpoint));
    counts.set(endpoint.id, (counts.get(endpoint.id) ?? 0) + 1);
    // 8-12 ms: equal on average, not in lockstep.
    inFlight.push({ at: clock() + 8 + 4 * random(), endpoint });
  };
  for (let i = 0; i < concurrency; i++) launch();
  for (let n = concurrency; n < calls; n++) {
    inFlight.sort((a, b) => a.at - b.at);
    const done = inFlight.shift()!;
    clock.set(Math.max(clock(), done.at));
    health.success(balancer.healthOf(done.endpoint), 10);
    launch();
  }
  return list.map((e) => (counts.get(e.id) ?? 0) / calls);
}

describe("Balancer (inside a group)", () => {
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

  it("does not slow-start the endpoints of the first snapshot", () => {
    const h = home(2);
    const { balancer, health } = setup(h, { slowStart: { window: 10_000 } });
    balancer.pick();
    for (const e of h) expect(health.get(e.id).warmingSince).toBe(0);
  });

  it("splits traffic in proportion to weights when endpoints are equally fast", () => {
    for (const weights of [
      [3, 1],
      [1, 2, 3, 4],
    ]) {
      const list = weighted(weights);
      const { balancer, health } = setup(list);
      for (const e of list) health.observe(balancer.healthOf(e), 10);
      const total = weights.reduce((a, b) => a + b, 0);
      const counts = countBy(
        20_000,
        () => balancer.pick(),
        (e) => e.id,
      );
      list.forEach((e, i) => {
        expect((counts[e.id] ?? 0) / 20_000, `${weights} #${i}`).toBeCloseTo(weights[i]! / total, 1);
      });
    }
  });

  it("keeps weight proportions with many calls in flight", () => {
    // Comparing raw load would even out requests in flight (about 0.22-0.28
    // each here); dividing the whole cost by weight over-serves the heavy one.
    const weights = [1, 2, 3, 4];
    const list = weighted(weights);
    const { balancer, health, clock } = setup(list);
    const shares = closedLoop(balancer, health, clock, list, 16, 40_000);
    shares.forEach((share, i) => {
      expect(Math.abs(share - weights[i]! / 10), `#${i} ${shares}`).toBeLessThan(0.02);
    });
  });

  it("does not prefer a new endpoint whose first call was refused", () => {
    const old = home(2);
    const { balancer, health, watch } = setup(old);
    for (const e of old) health.observe(balancer.healthOf(e), 10);
    const added = home(1, 5)[0]!;
    watch.set([...old, added]);
    const h = balancer.healthOf(added);
    health.start(h);
    health.failure(h, "ECONNREFUSED", 0.1);
    const counts = countBy(
      3000,
      () => balancer.pick(),
      (e) => e.id,
    );
    expect((counts[added.id] ?? 0) / 3000).toBeLessThan(0.05);
  });

  it("ramps a new endpoint's weight up over the slow-start window, whatever the policy", () => {
    for (const policy of ["p2c", "round-robin", "random"] as const) {
      const h = home(2);
      const { balancer, watch, health, clock } = setup(h, { policy, slowStart: { window: 10_000 } });
      balancer.pick();
      const added = endpoints(1, { cluster: "home", region: "east", zone: "east-a" }, 3);
      watch.set([...h, ...added]);
      for (const e of [...h, ...added]) health.observe(balancer.healthOf(e), 10);
      clock.advance(1000);
      const share = () =>
        (countBy(
          6000,
          () => balancer.pick(),
          (e) => e.id,
        )[added[0]!.id] ?? 0) / 6000;
      const early = share();
      clock.advance(10_000);
      const late = share();
      // 1 s into 10 s: a tenth of its weight, 0.1 / 2.1 of the picks.
      expect(early, policy).toBeLessThan(0.08);
      expect(late, policy).toBeCloseTo(1 / 3, 1);
    }
  });
});

import { describe, expect, it } from "vitest";
import { priorityLoad } from "../../src/routing/load.js";

const round = (xs: number[]) => xs.map((x) => Math.round(x * 1000) / 1000);

describe("priorityLoad", () => {
  it("sends everything to the first tier while it is healthy", () => {
    const r = priorityLoad([
      { healthy: 10, total: 10 },
      { healthy: 10, total: 10 },
    ]);
    expect(round(r.load)).toEqual([1, 0]);
    expect(r.panic).toEqual([false, false]);
  });

  it("keeps all traffic home while healthy share × 1.4 reaches 100 %", () => {
    // 8 of 10 healthy: 0.8 × 1.4 = 1.12 → capped at 1.
    const r = priorityLoad([
      { healthy: 8, total: 10 },
      { healthy: 10, total: 10 },
    ]);
    expect(round(r.load)).toEqual([1, 0]);
  });

  it("spills the remainder to the next tier gradually", () => {
    // Envoy's documented example: P0 at 50 % healthy keeps 70 %, P1 takes 30 %.
    const half = priorityLoad([
      { healthy: 5, total: 10 },
      { healthy: 10, total: 10 },
    ]);
    expect(round(half.load)).toEqual([0.7, 0.3]);
    const fifth = priorityLoad([
      { healthy: 2, total: 10 },
      { healthy: 10, total: 10 },
    ]);
    expect(round(fifth.load)).toEqual([0.28, 0.72]);
    expect(fifth.panic).toEqual([false, false]);
  });

  it("cascades through several tiers in order", () => {
    const r = priorityLoad([
      { healthy: 2, total: 10 },
      { healthy: 3, total: 10 },
      { healthy: 10, total: 10 },
    ]);
    expect(round(r.load)).toEqual([0.28, 0.42, 0.3]);
  });

  it("treats a dead home tier beside a healthy next tier as failover, not panic", () => {
    const r = priorityLoad([
      { healthy: 0, total: 3 },
      { healthy: 3, total: 3 },
    ]);
    expect(round(r.load)).toEqual([0, 1]);
    expect(r.panic).toEqual([false, false]);
    expect(r.totalHealth).toBe(1);
  });

  it("scales up the loads when the tiers together fall short", () => {
    // 0.1×1.4 = 0.14 and 0.55×1.4 = 0.77: total 0.91, normalized.
    const r = priorityLoad([
      { healthy: 1, total: 10 },
      { healthy: 11, total: 20 },
    ]);
    expect(r.totalHealth).toBeCloseTo(0.91, 5);
    expect(r.load[0]).toBeCloseTo(0.14 / 0.91, 5);
    expect(r.load[1]).toBeCloseTo(0.77 / 0.91, 5);
    // Only the tier under the threshold panics.
    expect(r.panic).toEqual([true, false]);
  });

  it("splits by endpoint count when every tier is in panic", () => {
    const r = priorityLoad([
      { healthy: 1, total: 10 },
      { healthy: 1, total: 30 },
    ]);
    expect(r.panic).toEqual([true, true]);
    expect(round(r.load)).toEqual([0.25, 0.75]);
  });

  it("panics with nothing healthy, and routes nowhere when panic is off", () => {
    const on = priorityLoad([{ healthy: 0, total: 4 }]);
    expect(on.panic).toEqual([true]);
    expect(on.load).toEqual([1]);
    const off = priorityLoad([{ healthy: 0, total: 4 }], 1.4, 0);
    expect(off.panic).toEqual([false]);
    expect(off.load).toEqual([0]);
  });

  it("never panics a single tier at 40 % healthy when the threshold is 0.3", () => {
    const r = priorityLoad([{ healthy: 4, total: 10 }], 1.4, 0.3);
    expect(r.panic).toEqual([false]);
    expect(r.load).toEqual([1]);
  });

  it("honours another overprovisioning factor", () => {
    const r = priorityLoad(
      [
        { healthy: 5, total: 10 },
        { healthy: 10, total: 10 },
      ],
      1,
    );
    expect(round(r.load)).toEqual([0.5, 0.5]);
  });
});

import { describe, expect, it } from "vitest";
import { RetryBudget } from "../../src/resilience/budget.js";
import { manualClock } from "../helpers/routing.js";

function drain(budget: RetryBudget): number {
  let n = 0;
  while (budget.tryWithdraw()) n++;
  return n;
}

describe("RetryBudget", () => {
  it("starts with a reserve of ten retries per second over the ten-second window", () => {
    const budget = new RetryBudget({ now: manualClock() });
    expect(budget.balance).toBe(100);
    expect(drain(budget)).toBe(100);
    expect(budget.tryWithdraw()).toBe(false);
  });

  it("earns a fifth of a retry per request", () => {
    const budget = new RetryBudget({ now: manualClock(), minRetriesPerSecond: 0 });
    for (let i = 0; i < 50; i++) budget.deposit();
    expect(drain(budget)).toBe(10);
  });

  it("lets withdrawals expire after the window so that the reserve comes back", () => {
    const clock = manualClock();
    const budget = new RetryBudget({ now: clock, minRetriesPerSecond: 1 });
    expect(drain(budget)).toBe(10);
    clock.advance(5_000);
    expect(budget.tryWithdraw()).toBe(false);
    clock.advance(5_000);
    expect(drain(budget)).toBe(10);
  });

  it("lets deposits expire after the window", () => {
    const clock = manualClock();
    const budget = new RetryBudget({ now: clock, minRetriesPerSecond: 0, percent: 0.5 });
    for (let i = 0; i < 10; i++) budget.deposit();
    clock.advance(10_000);
    expect(budget.balance).toBe(0);
  });

  it("files a deposit under the time its caller read, without reading the clock", () => {
    let reads = 0;
    const clock = manualClock();
    const counted = () => {
      reads++;
      return clock();
    };
    const budget = new RetryBudget({ now: counted, minRetriesPerSecond: 0, percent: 0.5 });
    reads = 0;
    for (let i = 0; i < 10; i++) budget.deposit(clock());
    expect(reads).toBe(0);
    expect(budget.balance).toBe(5);
    // Filed under the time given: they expire a window after it.
    clock.advance(10_000);
    expect(budget.balance).toBe(0);
  });

  it("keeps retries to the share of requests under sustained failure", () => {
    const clock = manualClock();
    const budget = new RetryBudget({ now: clock });
    let retries = 0;
    // 100 requests per second for a minute, every one of them failing.
    for (let s = 0; s < 60; s++) {
      for (let i = 0; i < 100; i++) {
        budget.deposit();
        if (budget.tryWithdraw()) retries++;
        clock.advance(10);
      }
    }
    // 20 % of 6000 plus at most the reserve once per window.
    expect(retries).toBeLessThanOrEqual(1200 + 600);
    expect(retries).toBeGreaterThanOrEqual(1200);
  });
});

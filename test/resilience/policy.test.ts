import { describe, expect, it } from "vitest";
import { LatencyHistogram } from "../../src/resilience/latency.js";
import { CallPolicy, parseRetryAfter } from "../../src/resilience/policy.js";
import { manualClock } from "../helpers/routing.js";

describe("CallPolicy", () => {
  it("retries a connect failure for any method, the rest only when idempotent", () => {
    const p = new CallPolicy();
    expect(p.mayRetry("connect", false, 1)).toBe(true);
    expect(p.mayRetry("reset", false, 1)).toBe(false);
    expect(p.mayRetry("status", true, 1)).toBe(true);
    expect(p.mayRetry("timeout", true, 1)).toBe(true);
    expect(p.mayRetry("other", true, 1)).toBe(false);
    expect(p.mayRetry("connect", true, 2)).toBe(false);
  });

  it("treats 502/503/504 as endpoint failures and 429 as retryable only", () => {
    const p = new CallPolicy();
    expect([500, 502, 503, 504].map((s) => p.isFailureStatus(s))).toEqual([false, true, true, true]);
    expect(p.isFailureStatus(429)).toBe(false);
    expect(p.isRetryableStatus(429)).toBe(true);
    expect(new CallPolicy({ retryOnRateLimited: false }).isRetryableStatus(429)).toBe(false);
  });

  it("backs off with full jitter under an exponential ceiling capped at ten times the base", () => {
    expect(new CallPolicy({ random: () => 0.999999 }).backoff(1)).toBeCloseTo(25, 3);
    expect(new CallPolicy({ random: () => 0.999999 }).backoff(2)).toBeCloseTo(75, 3);
    expect(new CallPolicy({ random: () => 0.999999 }).backoff(10)).toBeCloseTo(250, 3);
    expect(new CallPolicy({ random: () => 0 }).backoff(3)).toBe(0);
  });

  it("keeps one call state per service, with a retry budget unless turned off", () => {
    const p = new CallPolicy({ hedging: { services: ["api.default"] } });
    const s = p.service("api.default", "api.default:80");
    expect(p.service("api.default", "api.default:80")).toBe(s);
    expect(s.budget?.balance).toBe(100);
    expect(s.hedgeByDefault).toBe(true);
    expect(p.service("other.default").hedgeByDefault).toBe(false);
    expect(new CallPolicy({ budget: false }).service("x.y").budget).toBeUndefined();
  });

  it("has no deadline by default and sends the per-try timeout as the header value", () => {
    const p = new CallPolicy();
    expect(p.deadline).toBe(Number.POSITIVE_INFINITY);
    expect(p.perTryTimeoutHeader).toBe("15000");
  });
});

describe("parseRetryAfter", () => {
  it("reads delay-seconds and HTTP dates", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:10 GMT", Date.parse("2026-01-01T00:00:00Z"))).toBe(10_000);
    expect(parseRetryAfter("later")).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});

describe("LatencyHistogram", () => {
  it("gives the 95th percentile within its bucket width", () => {
    const h = new LatencyHistogram({ now: manualClock() });
    for (let i = 1; i <= 100; i++) h.record(i);
    const p95 = h.percentile(0.95)!;
    expect(p95).toBeGreaterThanOrEqual(95);
    expect(p95).toBeLessThan(95 * 1.11);
  });

  it("needs a minimum of samples and forgets samples older than the window", () => {
    const clock = manualClock();
    const h = new LatencyHistogram({ now: clock, window: 10_000 });
    for (let i = 0; i < 10; i++) h.record(5);
    expect(h.percentile(0.95)).toBeUndefined();
    for (let i = 0; i < 30; i++) h.record(5);
    expect(h.count).toBe(40);
    clock.advance(20_000);
    expect(h.count).toBe(0);
  });
});

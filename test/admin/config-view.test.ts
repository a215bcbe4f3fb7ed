import { describe, expect, it } from "vitest";
import { configView, tierOrder } from "../../src/admin/config-view.js";
import { resolveConfig } from "../../src/config/config.js";
import {
  configInForce,
  OUTLIER_DEFAULTS,
  POLICY_DEFAULTS,
  ROUTING_DEFAULTS,
} from "../../src/config/defaults.js";
import { CallPolicy } from "../../src/resilience/policy.js";
import { HealthTracker } from "../../src/routing/health.js";
import { priorityLoad } from "../../src/routing/load.js";

describe("configInForce", () => {
  it("writes out the defaults the policy applies", () => {
    const p = new CallPolicy({ random: () => 0.999_999 });
    const d = POLICY_DEFAULTS;
    expect([p.attempts, p.perTryTimeout, p.propagateDeadline, p.retryOnRateLimited, p.maxRetryAfter]).toEqual(
      [d.attempts, d.perTryTimeout, d.propagateDeadline, d.retryOnRateLimited, d.maxRetryAfter],
    );
    for (const status of [500, 501, 502, 503, 504, 505]) {
      expect(p.isFailureStatus(status)).toBe(d.retryOn.includes(status));
    }
    // Full jitter under base × (2^n − 1), capped at 10 × base.
    expect(Math.round(p.backoff(1))).toBe(d.backoffBase);
    expect(Math.round(p.backoff(10))).toBe(10 * d.backoffBase);
    expect(p.hedging.delay ?? "p95").toBe(d.hedging.delay);
  });

  it("writes out the defaults outlier detection applies", () => {
    const now = 1_000_000;
    const health = new HealthTracker({ now: () => now, random: () => 0 });
    const h = health.track("c/10.0.0.1:80", () => {});
    for (let i = 0; i < OUTLIER_DEFAULTS.consecutiveFailures - 1; i++) health.failure(h, "x");
    expect(h.state).toBe("healthy");
    health.failure(h, "x");
    expect(h.state).toBe("ejected");
    expect(h.ejectedUntil - now).toBe(OUTLIER_DEFAULTS.baseEjectionTime);
    expect(health.ejectionTime(100)).toBe(OUTLIER_DEFAULTS.maxEjectionTime);
  });

  it("writes out the router's spill-over and panic defaults", () => {
    const { overprovisioningFactor, panicThreshold } = ROUTING_DEFAULTS;
    const tiers = [
      { healthy: 2, total: 4 },
      { healthy: 4, total: 4 },
    ];
    expect(priorityLoad(tiers)).toEqual(priorityLoad(tiers, overprovisioningFactor, panicThreshold));
  });

  it("keeps what was set, and leaves absent what has no default", () => {
    const c = configInForce(
      resolveConfig({
        env: {},
        policy: { attempts: 3, budget: false, backoff: { base: 10 } },
        outlierDetection: { failureRate: { window: 20 } },
        routing: { panicThreshold: 0 },
      }),
    );
    expect(c.policy).toMatchObject({ attempts: 3, budget: false, backoff: { base: 10, max: 100 } });
    expect(c.policy.deadline).toBeUndefined();
    expect(c.policy.bulkhead).toBeUndefined();
    expect(c.outlierDetection.failureRate).toEqual({ threshold: 0.85, window: 20, minimumRequests: 50 });
    expect(c.routing).toMatchObject({ panicThreshold: 0, overprovisioningFactor: 1.4 });
    expect(c.routing.slowStart).toBeUndefined();
  });
});

describe("configView", () => {
  it("lists the tiers in the router's order for this caller", () => {
    const base = { env: {}, failover: ["eu", "ap"] };
    expect(tierOrder(resolveConfig({ ...base, region: "us", zone: "us-a" }))).toEqual([
      "zone",
      "region",
      "failover:eu",
      "failover:ap",
      "other",
      "backup",
    ]);
    expect(tierOrder(resolveConfig({ ...base, routing: { failoverPriority: ["region", "zone"] } }))).toEqual([
      "priority:0",
      "priority:1",
      "failover:eu",
      "failover:ap",
      "other",
      "backup",
    ]);
    expect(
      tierOrder(
        resolveConfig({
          env: {},
          region: "us",
          routing: { distribute: [{ from: "us/*", to: { "us/*": 1 } }] },
        }),
      )[0],
    ).toBe("distribute");
  });

  it("is JSON with backends by name and nothing under a secret-named key", () => {
    const view = configView(resolveConfig({ env: {}, admin: "[::1]:15090" }), ["static"]);
    expect(view.discovery).toEqual([{ name: "static" }]);
    expect(view.admin).toBe("[::1]:15090");
    expect(JSON.parse(JSON.stringify(view))).toEqual(view);
  });
});

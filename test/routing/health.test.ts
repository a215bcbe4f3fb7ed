import { CircuitState } from "cockatiel";
import { describe, expect, it } from "vitest";
import { HealthTracker, OutlierBreaker } from "../../src/routing/health.js";
import { manualClock } from "../helpers/routing.js";

function tracker(extra: ConstructorParameters<typeof HealthTracker>[0] = {}) {
  const clock = manualClock();
  const health = new HealthTracker({ now: clock, random: () => 0, ...extra });
  const fail = (id: string, n = 1) => {
    const h = health.get(id);
    for (let i = 0; i < n; i++) {
      health.start(h);
      health.failure(h, "status 503");
    }
    return h;
  };
  const ok = (id: string, n = 1) => {
    const h = health.get(id);
    for (let i = 0; i < n; i++) {
      health.start(h);
      health.success(h);
    }
    return h;
  };
  return { clock, health, fail, ok };
}

describe("HealthTracker", () => {
  it("ejects an endpoint after five consecutive failures", () => {
    const { health, fail, ok } = tracker();
    fail("a", 4);
    ok("a");
    const h = fail("a", 4);
    expect(h.state).toBe("healthy");
    fail("a");
    expect(h.state).toBe("ejected");
    expect(health.available(h)).toBe(false);
  });

  it("ejects for base × times ejected, capped at the maximum", () => {
    const { health, fail, clock } = tracker({ failureRate: false });
    const times: number[] = [];
    const h = fail("a", 5);
    for (let n = 1; n <= 12; n++) {
      times.push(h.ejectedUntil - clock());
      clock.set(h.ejectedUntil);
      health.start(h); // the probe
      health.failure(h, "ECONNREFUSED");
    }
    expect(times).toEqual([
      30_000, 60_000, 90_000, 120_000, 150_000, 180_000, 210_000, 240_000, 270_000, 300_000, 300_000, 300_000,
    ]);
  });

  it("adds up to the jitter share on top of each ejection", () => {
    const { health, fail, clock } = tracker({ random: () => 0.5, ejectionJitter: 0.1 });
    const h = fail("a", 5);
    expect(h.ejectedUntil - clock()).toBe(31_500);
    expect(health.ejectionTime(20)).toBe(300_000);
  });

  it("lets one probe decide after the ejection: others stay away while it runs", () => {
    const { health, fail, clock } = tracker();
    const h = fail("a", 5);
    clock.advance(30_000);
    expect(health.available(h)).toBe(true);
    health.start(h);
    expect(h.state).toBe("probing");
    expect(health.available(h)).toBe(false);
    health.success(h);
    expect(h.state).toBe("healthy");
    expect(h.ejections).toBe(1);
  });

  it("ejects again for longer when the probe fails", () => {
    const { health, fail, clock } = tracker();
    const h = fail("a", 5);
    clock.advance(30_000);
    health.start(h);
    health.failure(h, "ECONNREFUSED");
    expect(h.state).toBe("ejected");
    expect(h.ejectedUntil - clock()).toBe(60_000);
  });

  it("returns a cancelled probe to ejected so that the next call probes", () => {
    const { health, fail, clock } = tracker();
    const h = fail("a", 5);
    clock.advance(30_000);
    health.start(h);
    health.release(h);
    expect(h.state).toBe("ejected");
    expect(health.available(h)).toBe(true);
  });

  it("ejects on the failure rate even without five failures in a row", () => {
    const { fail, ok, health } = tracker({
      failureRate: { threshold: 0.5, window: 20, minimumRequests: 10 },
    });
    for (let i = 0; i < 4; i++) {
      fail("a", 3);
      ok("a");
    }
    expect(health.get("a").state).toBe("ejected");
  });

  it("does not apply the failure rate before the minimum number of calls", () => {
    const { fail, ok, health } = tracker();
    for (let i = 0; i < 10; i++) {
      fail("a", 4);
      ok("a");
    }
    expect(health.get("a").state).toBe("healthy");
  });

  it("bumps its version on every state change, not on every call", () => {
    const { health, fail, ok } = tracker();
    ok("a", 10);
    expect(health.version).toBe(0);
    fail("a", 5);
    expect(health.version).toBe(1);
  });

  it("takes a higher latency at once and decays towards lower ones over ten seconds", () => {
    const { health, clock } = tracker();
    const h = health.get("a");
    health.observe(h, 10);
    expect(h.latency).toBe(10);
    health.observe(h, 100);
    expect(h.latency).toBe(100);
    clock.advance(10_000);
    health.observe(h, 10);
    // w = e^-1: 100·0.368 + 10·0.632
    expect(h.latency).toBeCloseTo(100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)), 6);
  });

  it("costs latency × (requests in flight + 1), decaying while idle", () => {
    const { health, clock } = tracker();
    const h = health.get("a");
    expect(health.cost(h, clock())).toBe(0);
    h.outstanding = 1;
    expect(health.cost(h, clock())).toBeGreaterThan(1e8);
    health.observe(h, 20);
    expect(health.cost(h, clock())).toBe(40);
    clock.advance(10_000);
    expect(health.cost(h, clock())).toBeCloseTo(40 * Math.exp(-1), 6);
  });

  it("counts a failure's latency at least twice the current cost", () => {
    const { health } = tracker();
    const h = health.get("a");
    health.observe(h, 10);
    health.start(h);
    health.failure(h, "ECONNREFUSED", 0.1);
    expect(h.latency).toBe(20);
  });

  it("starts a recovered endpoint's slow start when its probe succeeds", () => {
    const { health, fail, clock } = tracker();
    const h = fail("a", 5);
    clock.advance(30_000);
    health.start(h);
    health.success(h);
    expect(h.warmingSince).toBe(clock());
  });
});

describe("OutlierBreaker", () => {
  it("opens on either rule and resets after a half-open success", () => {
    const b = new OutlierBreaker(3, false);
    expect(b.failure(CircuitState.Closed)).toBe(false);
    expect(b.failure(CircuitState.Closed)).toBe(false);
    expect(b.failure(CircuitState.Closed)).toBe(true);
    b.success(CircuitState.HalfOpen);
    expect(b.failure(CircuitState.Closed)).toBe(false);
    const copy = new OutlierBreaker(3, false);
    copy.state = b.state;
    expect(copy.failure(CircuitState.Closed)).toBe(false);
    expect(copy.failure(CircuitState.Closed)).toBe(true);
  });
});

import { CircuitState } from "cockatiel";
import { describe, expect, it } from "vitest";
import { HealthTracker, OutlierBreaker } from "../../src/routing/health.js";
import { manualClock } from "../helpers/routing.js";

/** A holder that ignores state changes: keeps the records of the test alive. */
const holder = () => {};

function tracker(extra: ConstructorParameters<typeof HealthTracker>[0] = {}) {
  const clock = manualClock();
  const health = new HealthTracker({ now: clock, random: () => 0, ...extra });
  const get = (id: string) => health.track(id, holder);
  const fail = (id: string, n = 1) => {
    const h = get(id);
    for (let i = 0; i < n; i++) {
      health.start(h);
      health.failure(h, "status 503");
    }
    return h;
  };
  const ok = (id: string, n = 1) => {
    const h = get(id);
    for (let i = 0; i < n; i++) {
      health.start(h);
      health.success(h);
    }
    return h;
  };
  return { clock, health, get, fail, ok };
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
    const { fail, ok, get } = tracker({
      failureRate: { threshold: 0.5, window: 20, minimumRequests: 10 },
    });
    for (let i = 0; i < 4; i++) {
      fail("a", 3);
      ok("a");
    }
    expect(get("a").state).toBe("ejected");
  });

  it("does not apply the failure rate before the minimum number of calls", () => {
    const { fail, ok, get } = tracker();
    for (let i = 0; i < 10; i++) {
      fail("a", 4);
      ok("a");
    }
    expect(get("a").state).toBe("healthy");
  });

  it("bumps its version on every state change, not on every call", () => {
    const { health, fail, ok } = tracker();
    ok("a", 10);
    expect(health.version).toBe(0);
    fail("a", 5);
    expect(health.version).toBe(1);
  });

  it("takes a higher latency at once and decays towards lower ones over ten seconds", () => {
    const { health, clock, get } = tracker();
    const h = get("a");
    health.observe(h, 10);
    expect(h.latency).toBe(10);
    health.observe(h, 100);
    expect(h.latency).toBe(100);
    clock.advance(10_000);
    health.observe(h, 10);
    // w = e^-1: 100·0.368 + 10·0.632
    expect(h.latency).toBeCloseTo(100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)), 6);
  });

  it("decays with the time a success says it was measured, and never moves that time back", () => {
    const { health, clock, get } = tracker();
    const h = get("a");
    health.observe(h, 100);
    health.start(h);
    // Measured 10 s later (the caller read the clock): decays as if observed then, without a read of its own.
    health.success(h, 10, clock() + 10_000);
    expect(h.latency).toBeCloseTo(100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)), 6);
    expect(h.latencyAt).toBe(clock() + 10_000);
    // An older sample (its body ended later) weighs nothing and leaves the time where it was.
    const before = h.latency;
    health.start(h);
    health.success(h, 5, clock() + 1_000);
    expect(h.latency).toBe(before);
    expect(h.latencyAt).toBe(clock() + 10_000);
  });

  it("costs latency × (requests in flight + 1), decaying while idle", () => {
    const { health, clock, get } = tracker();
    const h = get("a");
    expect(health.cost(h, clock())).toBe(0);
    h.outstanding = 1;
    expect(health.cost(h, clock())).toBeGreaterThan(1e8);
    health.observe(h, 20);
    expect(health.cost(h, clock())).toBe(40);
    clock.advance(10_000);
    expect(health.cost(h, clock())).toBeCloseTo(40 * Math.exp(-1), 6);
  });

  it("counts a failure's latency at least twice the current cost", () => {
    const { health, get } = tracker();
    const h = get("a");
    health.observe(h, 10);
    health.start(h);
    health.failure(h, "ECONNREFUSED", 0.1);
    expect(h.latency).toBe(20);
  });

  it("lowers the ejection multiplier by one for each base ejection time out of ejection (Envoy)", () => {
    const { health, fail, clock } = tracker({ failureRate: false });
    const h = fail("a", 5);
    clock.set(h.ejectedUntil);
    health.start(h);
    health.failure(h, "ECONNREFUSED"); // the probe fails: 60 s
    expect(h.ejectedUntil - clock()).toBe(60_000);
    clock.set(h.ejectedUntil);
    health.start(h);
    health.success(h);
    // One base time out of ejection: 2 → 1, then this ejection makes it 2 again.
    clock.advance(30_000);
    fail("a", 5);
    expect(h.ejectedUntil - clock()).toBe(60_000);
    clock.set(h.ejectedUntil);
    health.start(h);
    health.success(h);
    // Two base times: 2 → 0, and the next ejection is the base time again.
    clock.advance(60_000);
    fail("a", 5);
    expect(h.ejectedUntil - clock()).toBe(30_000);
    expect(h.ejections).toBe(4);
  });

  it("counts the time after an ejection ended as clean even when no call probed it", () => {
    const { health, fail, clock } = tracker({ failureRate: false });
    const h = fail("a", 5);
    clock.set(h.ejectedUntil);
    health.start(h);
    health.failure(h, "ECONNREFUSED"); // 60 s, multiplier 2
    // Long after the ejection ended, the first call probes and fails.
    clock.set(h.ejectedUntil + 3_600_000);
    health.start(h);
    health.failure(h, "ECONNREFUSED");
    expect(h.ejectedUntil - clock()).toBe(30_000);
  });

  it("stops raising the multiplier once the ejection time reaches the maximum", () => {
    const { health, fail, clock } = tracker({ failureRate: false });
    const h = fail("a", 5);
    for (let n = 0; n < 20; n++) {
      clock.set(h.ejectedUntil);
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
    expect(h.ejectedUntil - clock()).toBe(300_000);
    clock.set(h.ejectedUntil);
    health.start(h);
    health.success(h);
    // 300 s / 30 s: ten base times bring it back to the base time.
    clock.advance(9 * 30_000);
    fail("a", 5);
    expect(h.ejectedUntil - clock()).toBe(60_000);
  });

  it("counts a failure of an endpoint with no latency yet as at least the default failure latency", () => {
    const { health, get } = tracker();
    const h = get("a");
    health.start(h);
    health.failure(h, "ECONNREFUSED", 0.1);
    expect(h.latency).toBe(30);
    const slow = get("b");
    health.start(slow);
    health.failure(slow, "timeout", 1500);
    expect(slow.latency).toBe(1500);
    const custom = tracker({ failureLatency: 100 });
    const c = custom.get("a");
    custom.health.start(c);
    custom.health.failure(c, "ECONNREFUSED", 0.1);
    expect(c.latency).toBe(100);
  });

  it("keeps a record while a holder tracks it, tells its holders of state changes, and forgets it after the last", () => {
    const health = new HealthTracker({ now: manualClock(), random: () => 0 });
    const heard: string[] = [];
    const one = (h: { state: string }) => heard.push(`one:${h.state}`);
    const two = (h: { state: string }) => heard.push(`two:${h.state}`);
    const h = health.track("a", one);
    expect(health.track("a", two)).toBe(h);
    expect(health.size).toBe(1);
    expect(health.get("a")).toBe(h);
    for (let i = 0; i < 5; i++) {
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
    expect(heard).toEqual(["one:ejected", "two:ejected"]);
    health.untrack(h, one);
    expect(health.size).toBe(1);
    health.untrack(h, two);
    health.untrack(h, two);
    expect(health.size).toBe(0);
    // Nobody holds it: a fresh record, not kept.
    const fresh = health.get("a");
    expect(fresh).not.toBe(h);
    expect(fresh.state).toBe("healthy");
    expect(health.size).toBe(0);
  });

  it("computes a view's state at the time of the view", () => {
    const { health, fail, clock } = tracker();
    const h = fail("a", 5);
    expect(health.view("a")).toMatchObject({ state: "ejected", ejections: 1 });
    expect(health.view("a").ejectedUntil).toBe(new Date(h.ejectedUntil).toISOString());
    clock.advance(30_000);
    expect(health.view("a")).toMatchObject({ state: "healthy", ejectedUntil: undefined, ejections: 1 });
    expect(health.available(h)).toBe(true);
    health.start(h);
    expect(health.view("a").state).toBe("probing");
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

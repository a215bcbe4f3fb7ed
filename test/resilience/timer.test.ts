import { describe, expect, it } from "vitest";
import { TimerEntry, TimerWheel } from "../../src/resilience/timer.js";
import { manualClock } from "../helpers/routing.js";

class Recorder extends TimerEntry {
  constructor(
    readonly name: string,
    readonly log: string[],
  ) {
    super();
  }
  onTimer(): void {
    this.log.push(this.name);
  }
}

function wheel() {
  const clock = manualClock(0);
  return { clock, wheel: new TimerWheel({ now: clock, manual: true, tick: 5, slots: 8 }) };
}

describe("TimerWheel", () => {
  it("fires entries once their time has come, not before", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    w.schedule(new Recorder("a", log), 12);
    w.schedule(new Recorder("b", log), 7);
    clock.set(6);
    w.advance();
    expect(log).toEqual([]);
    clock.set(10);
    w.advance();
    expect(log).toEqual(["b"]);
    clock.set(15);
    w.advance();
    expect(log).toEqual(["b", "a"]);
    expect(w.size).toBe(0);
  });

  it("does not fire a cancelled entry", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    const a = new Recorder("a", log);
    w.schedule(a, 10);
    expect(a.scheduled).toBe(true);
    w.cancel(a);
    expect(a.scheduled).toBe(false);
    clock.set(100);
    w.advance();
    expect(log).toEqual([]);
  });

  it("keeps entries beyond one turn of the wheel until their round", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    // 8 slots × 5 ms = 40 ms per turn.
    w.schedule(new Recorder("far", log), 95);
    for (let t = 5; t <= 95; t += 5) {
      clock.set(t);
      w.advance();
    }
    expect(log).toEqual([]);
    clock.set(100);
    w.advance();
    expect(log).toEqual(["far"]);
  });

  it("catches up on every slot it missed when it runs late", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    w.schedule(new Recorder("a", log), 20);
    w.schedule(new Recorder("b", log), 300);
    clock.set(1000);
    w.advance();
    expect(log.sort()).toEqual(["a", "b"]);
  });

  it("reschedules an entry that is already scheduled", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    const a = new Recorder("a", log);
    w.schedule(a, 10);
    w.schedule(a, 30);
    expect(w.size).toBe(1);
    clock.set(20);
    w.advance();
    expect(log).toEqual([]);
    clock.set(35);
    w.advance();
    expect(log).toEqual(["a"]);
  });

  it("fires an entry scheduled in the past on the next tick", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    clock.set(50);
    w.advance();
    w.schedule(new Recorder("late", log), 10);
    clock.set(55);
    w.advance();
    expect(log).toEqual(["late"]);
  });
});

describe("TimerWheel callbacks", () => {
  it("lets a callback cancel the next entry of the same slot: it does not fire, and the rest of the slot does", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    const c = new Recorder("c", log);
    const b = new Recorder("b", log);
    // Scheduled last, `a` heads the slot's list and fires first.
    const a = new (class extends Recorder {
      override onTimer(): void {
        super.onTimer();
        w.cancel(b);
      }
    })("a", log);
    w.schedule(c, 7);
    w.schedule(b, 7);
    w.schedule(a, 7);
    clock.set(10);
    w.advance();
    expect(log).toEqual(["a", "c"]);
    expect(w.size).toBe(0);
  });

  it("lets a callback reschedule an entry of the same slot for later", () => {
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    const b = new Recorder("b", log);
    const a = new (class extends Recorder {
      override onTimer(): void {
        super.onTimer();
        w.schedule(b, 22);
      }
    })("a", log);
    w.schedule(b, 7);
    w.schedule(a, 7);
    clock.set(10);
    w.advance();
    expect(log).toEqual(["a"]);
    clock.set(25);
    w.advance();
    expect(log).toEqual(["a", "b"]);
  });

  it("reports a throwing callback on meshlink:error and fires the others", async () => {
    const { subscribe, unsubscribe } = await import("node:diagnostics_channel");
    const { clock, wheel: w } = wheel();
    const log: string[] = [];
    const seen: unknown[] = [];
    const listener = (m: unknown) => seen.push(m);
    subscribe("meshlink:error", listener);
    try {
      w.schedule(new Recorder("after", log), 7);
      w.schedule(
        new (class extends TimerEntry {
          onTimer(): void {
            throw new Error("boom");
          }
        })(),
        7,
      );
      clock.set(10);
      expect(() => w.advance()).not.toThrow();
      expect(log).toEqual(["after"]);
      expect(seen).toEqual([{ where: "timer callback", error: new Error("boom") }]);
    } finally {
      unsubscribe("meshlink:error", listener);
    }
  });

  it("holds the process only while something is scheduled", async () => {
    const w = new TimerWheel({ tick: 5 });
    const entry = new Recorder("x", []);
    const active = () =>
      (process as unknown as { getActiveResourcesInfo(): string[] })
        .getActiveResourcesInfo()
        .filter((r) => r === "Timeout").length;
    const idle = active();
    w.schedule(entry, w.now() + 60_000);
    expect(active()).toBe(idle + 1);
    w.cancel(entry);
    expect(active()).toBe(idle);
    w.stop();
  });

  describe("on its own Node timer", () => {
    /** An entry that resolves with the wheel's time when it fires, and may run `then` in its callback. */
    class Waiter extends TimerEntry {
      firedAt = -1;
      readonly fired: Promise<number>;
      #resolve!: (t: number) => void;
      constructor(
        readonly w: TimerWheel,
        readonly then?: () => void,
      ) {
        super();
        this.fired = new Promise((resolve) => {
          this.#resolve = resolve;
        });
      }
      onTimer(): void {
        this.firedAt = this.w.now();
        this.then?.();
        this.#resolve(this.firedAt);
      }
    }

    it("fires an entry scheduled before the one the timer waits for at its own time", async () => {
      const w = new TimerWheel({ tick: 5 });
      const late = new Waiter(w);
      const early = new Waiter(w);
      const t0 = w.now();
      w.schedule(late, t0 + 400);
      w.schedule(early, t0 + 20);
      expect(await early.fired).toBeGreaterThanOrEqual(t0 + 20);
      expect(early.firedAt).toBeLessThan(t0 + 400);
      expect(late.firedAt).toBe(-1);
      expect(await late.fired).toBeGreaterThanOrEqual(t0 + 400);
    });

    it("fires the next entry when the one the timer was armed for is cancelled", async () => {
      const w = new TimerWheel({ tick: 5 });
      const cancelled = new Waiter(w);
      const next = new Waiter(w);
      const t0 = w.now();
      w.schedule(cancelled, t0 + 10);
      w.schedule(next, t0 + 40);
      w.cancel(cancelled);
      expect(await next.fired).toBeGreaterThanOrEqual(t0 + 40);
      expect(cancelled.firedAt).toBe(-1);
      expect(w.size).toBe(0);
    });

    it("does not let a callback that schedules a later entry delay an earlier one", async () => {
      const w = new TimerWheel({ tick: 5 });
      const t0 = w.now();
      const far = new Waiter(w);
      // Fires first and schedules an entry far away: the timer must still wake for `soon`.
      const first = new Waiter(w, () => w.schedule(far, t0 + 2_000));
      const soon = new Waiter(w);
      w.schedule(first, t0 + 10);
      w.schedule(soon, t0 + 60);
      expect(await soon.fired).toBeLessThan(t0 + 2_000);
      expect(far.firedAt).toBe(-1);
      w.cancel(far);
      w.stop();
    });
  });
});

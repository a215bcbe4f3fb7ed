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

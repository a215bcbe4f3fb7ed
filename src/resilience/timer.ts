/**
 * One shared timer for every call (per-try timeouts, deadlines, retry
 * back-off, hedge delays): a hashed timer wheel driven by a single Node
 * timer, so that a call never arms a `setTimeout` of its own. Entries are
 * intrusive (the wheel links the entry objects themselves): scheduling and
 * cancelling are O(1) and allocate nothing.
 *
 * The Node timer is armed for the earliest tick that holds an entry, not
 * every tick: calls that end before their per-try timeout (nearly all)
 * schedule and cancel an entry each, and the process is not woken every
 * few milliseconds for nothing — on a sequential path those wake-ups cost
 * more than the wheel itself (docs/performance.md, "The fetch path, third
 * pass"). An entry cancelled is not looked for: the timer fires at its time
 * anyway, finds nothing due, and is armed again for the earliest entry left.
 *
 * Every entry belongs to a call in progress, so the timer keeps the process
 * alive exactly while something is scheduled (a call waiting for a back-off
 * or a `Retry-After` must settle before the process exits) and is
 * unreferenced when the wheel is empty: an idle mesh does not hold the
 * process.
 *
 * @module
 */

import { monotonicNow } from "../clock.js";
import { reportInternalError } from "../diagnostics.js";

/** Something the wheel calls back. Subclass it and implement {@link TimerEntry.onTimer}. */
export abstract class TimerEntry {
  /** @internal When it fires (wheel clock, ms); -1 when not scheduled. */
  at = -1;
  /** @internal */
  next: TimerEntry | null = null;
  /** @internal */
  prev: TimerEntry | null = null;
  /** @internal The slot it is linked in; -1 when not scheduled, {@link FIRING} while in a sweep's due list. */
  slot = -1;
  /** Called once when the time comes, unless cancelled first. */
  abstract onTimer(): void;
  /** True while scheduled. */
  get scheduled(): boolean {
    return this.at >= 0;
  }
}

/** Options of {@link TimerWheel}. */
export interface TimerWheelOptions {
  /** Tick length in ms; default 5. Timers fire up to one tick (plus the interval's own lateness) late. */
  tick?: number;
  /** Slots in the wheel; default 512. Longer timers go round more than once. */
  slots?: number;
  /** Clock in ms; default a monotonic clock. */
  now?: () => number;
  /** Drive the wheel by hand (tests call {@link TimerWheel.advance}); default false. */
  manual?: boolean;
}

/** The slot of an entry taken out of the wheel by a sweep, about to fire. */
const FIRING = -2;

/** A hashed timer wheel with one shared interval. */
export class TimerWheel {
  readonly #tick: number;
  readonly #heads: (TimerEntry | null)[];
  readonly #manual: boolean;
  /** The clock. */
  readonly now: () => number;
  #size = 0;
  #processed: number;
  /** The Node timer, armed for tick {@link TimerWheel.#armedTick}. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedTick = Number.POSITIVE_INFINITY;
  #referenced = false;
  /** The entries a sweep is firing (reused between sweeps). */
  readonly #due: TimerEntry[] = [];

  constructor(options: TimerWheelOptions = {}) {
    this.#tick = options.tick ?? 5;
    this.#heads = new Array<TimerEntry | null>(options.slots ?? 512).fill(null);
    this.now = options.now ?? monotonicNow;
    this.#manual = options.manual ?? false;
    this.#processed = Math.floor(this.now() / this.#tick);
  }

  /** Entries scheduled. */
  get size(): number {
    return this.#size;
  }

  /** Schedules `entry` to fire at `at` (wheel clock, ms); reschedules it when already scheduled. */
  schedule(entry: TimerEntry, at: number): void {
    if (entry.at >= 0) this.cancel(entry);
    const n = this.#heads.length;
    // Never into a slot already swept: at least the next tick.
    const tick = Math.max(Math.floor(at / this.#tick), this.#processed + 1);
    const slot = tick % n;
    entry.at = at;
    entry.slot = slot;
    entry.prev = null;
    const head = this.#heads[slot]!;
    entry.next = head;
    if (head !== null) head.prev = entry;
    this.#heads[slot] = entry;
    this.#size++;
    if (this.#manual) return;
    if (tick < this.#armedTick) this.#arm(tick);
    else if (!this.#referenced) {
      this.#timer?.ref?.();
      this.#referenced = true;
    }
  }

  /** Cancels `entry` if scheduled (also while a sweep is about to fire it). */
  cancel(entry: TimerEntry): void {
    if (entry.at < 0) return;
    if (entry.slot === FIRING) {
      entry.at = -1;
      entry.slot = -1;
      return;
    }
    this.#unlink(entry);
  }

  #unlink(entry: TimerEntry): void {
    if (entry.prev !== null) entry.prev.next = entry.next;
    else this.#heads[entry.slot] = entry.next;
    if (entry.next !== null) entry.next.prev = entry.prev;
    entry.next = entry.prev = null;
    entry.at = -1;
    entry.slot = -1;
    if (--this.#size === 0 && this.#referenced) {
      this.#timer?.unref?.();
      this.#referenced = false;
    }
  }

  /**
   * Fires every entry whose tick has passed (so at most one tick late). The
   * wheel's timer calls it; tests with `manual` call it after moving their clock.
   */
  advance(): void {
    // Only whole ticks are swept: an entry in the current tick may not be due yet.
    const last = Math.floor(this.now() / this.#tick) - 1;
    const n = this.#heads.length;
    let from = this.#processed + 1;
    if (last - from >= n) from = last - n + 1;
    const due = this.#due;
    for (let t = from; t <= last; t++) {
      // Take the slot's due entries out first, then fire them: a callback may
      // cancel or schedule any entry, this slot's included.
      let e: TimerEntry | null = this.#heads[t % n]!;
      while (e !== null) {
        const next: TimerEntry | null = e.next;
        // Entries of a later turn of the wheel share the slot: leave them.
        if (Math.floor(e.at / this.#tick) <= t) {
          const at = e.at;
          this.#unlink(e);
          e.at = at;
          e.slot = FIRING;
          due.push(e);
        }
        e = next;
      }
    }
    this.#processed = Math.max(this.#processed, last);
    for (let i = 0; i < due.length; i++) {
      const entry = due[i]!;
      due[i] = undefined as unknown as TimerEntry;
      if (entry.slot !== FIRING) continue; // cancelled, or scheduled again, by an earlier callback
      entry.at = -1;
      entry.slot = -1;
      try {
        entry.onTimer();
      } catch (err) {
        // A callback's exception must not stop the wheel or reach the process.
        reportInternalError("timer callback", err);
      }
    }
    due.length = 0;
  }

  /** Cancels nothing but stops the timer; the next schedule arms it again. */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedTick = Number.POSITIVE_INFINITY;
    this.#referenced = false;
  }

  /** Arms the Node timer for the end of `tick` (when {@link TimerWheel.advance} sweeps it). */
  #arm(tick: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedTick = tick;
    const delay = Math.max(1, Math.ceil((tick + 1) * this.#tick - this.now()));
    this.#timer = setTimeout(this.#fire, delay);
    // Armed only with something scheduled: it holds the process until the wheel is empty.
    this.#referenced = true;
  }

  readonly #fire = (): void => {
    this.#timer = undefined;
    this.#armedTick = Number.POSITIVE_INFINITY;
    this.#referenced = false;
    this.advance();
    // A callback may have armed the timer for what it scheduled: an older entry may still come first.
    if (this.#size > 0) {
      const next = this.#nextTick();
      if (next < this.#armedTick) this.#arm(next);
    }
  };

  /**
   * The earliest tick that holds an entry due in it, looked for over one
   * turn of the wheel (an entry further away is found when that turn ends).
   */
  #nextTick(): number {
    const n = this.#heads.length;
    const first = this.#processed + 1;
    for (let t = first; t < first + n; t++) {
      for (let e = this.#heads[t % n]!; e !== null; e = e.next!) {
        if (Math.floor(e.at / this.#tick) <= t) return t;
      }
    }
    return first + n - 1;
  }
}

let shared: TimerWheel | undefined;

/** The process-wide wheel that calls share. */
export function sharedTimerWheel(): TimerWheel {
  shared ??= new TimerWheel();
  return shared;
}

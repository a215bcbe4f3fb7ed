/**
 * A balancer's change event: its listeners, a version that moves with each
 * change, and the one timer that tells the listeners when an ejection ends
 * (a change of plan that no health event announces).
 *
 * @module
 */

import type { Subscription } from "../subscription.js";

/** The longest delay `setTimeout` takes (2^31 − 1 ms). */
const MAX_DELAY = 2 ** 31 - 1;

/**
 * The listeners of one balancer. Calls them synchronously and contains
 * their errors: one that throws is reported as a process warning and the
 * others still run, so that a listener's bug never reaches health reporting
 * or discovery.
 */
export class ChangeEvents<T> {
  readonly #listeners = new Set<(subject: T) => void>();
  readonly #subject: T;
  readonly #now: () => number;
  /** Called when a wake is due, before the listeners run; returns when the next one is (∞ for none). */
  readonly #onWake: () => number;
  #version = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Number.POSITIVE_INFINITY;

  constructor(subject: T, now: () => number, onWake: () => number) {
    this.#subject = subject;
    this.#now = now;
    this.#onWake = onWake;
  }

  /** Moves with every change. */
  get version(): number {
    return this.#version;
  }

  /** Adds a listener; the subscription removes it (and the timer with the last one). */
  subscribe(listener: (subject: T) => void): Subscription {
    this.#listeners.add(listener);
    return {
      dispose: () => {
        this.#listeners.delete(listener);
        if (this.#listeners.size === 0) this.#disarm();
      },
    };
  }

  /** Something changed: bump the version and tell every listener. */
  emit(): void {
    this.#version++;
    for (const listener of this.#listeners) {
      try {
        listener(this.#subject);
      } catch (err) {
        process.emitWarning(err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  /** Wakes at `at` (clock ms), unless nobody listens or an earlier wake is set. */
  wakeAt(at: number): void {
    if (this.#listeners.size === 0 || at >= this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    // Node fires a longer delay at once: wake at the limit and set the timer again.
    this.#timer = setTimeout(() => this.#wake(), Math.min(MAX_DELAY, Math.max(0, at - this.#now())));
    // An idle mesh must not keep the process alive.
    this.#timer.unref?.();
  }

  /** Removes every listener and the timer. */
  clear(): void {
    this.#listeners.clear();
    this.#disarm();
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #wake(): void {
    const at = this.#timerAt;
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    // A timer may fire a little before the clock says it is time.
    if (this.#now() < at) {
      this.wakeAt(at);
      return;
    }
    const next = this.#onWake();
    this.emit();
    this.wakeAt(next);
  }
}

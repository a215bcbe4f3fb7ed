/**
 * The clock every time-keeping part shares (health, budgets, the timer
 * wheel): epoch milliseconds read from the monotonic high-resolution timer,
 * so that a wall-clock step never ejects an endpoint or fires a deadline.
 *
 * @module
 */

const perf = globalThis.performance;
const ORIGIN = perf.timeOrigin;

/** The default clock: epoch ms from the monotonic high-resolution timer. */
export const monotonicNow = (): number => ORIGIN + perf.now();

/**
 * Waits `ms` on an unreferenced timer (a background refresh must not keep a
 * process alive by itself), or until `signal` aborts, whichever is first.
 * Never rejects.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref?.();
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Exponential back-off with equal jitter for the `n`th failure in a row
 * (from 1): the ceiling `min(max, base × 2^(n−1))`, of which half is fixed
 * and half random, so that retries spread without hammering. Rounded to ms.
 */
export function equalJitterBackoff(n: number, base: number, max: number, random: () => number): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(n - 1, 30));
  return Math.round(ceiling * (0.5 + 0.5 * random()));
}

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

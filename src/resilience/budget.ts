/**
 * The retry budget (Finagle's `RetryBudget`): retries may add a share of the
 * requests made in the last `ttl`, plus a reserve of a few retries per
 * second, so that retries cannot multiply an outage. Deposits and
 * withdrawals expire after `ttl`. O(1) per operation, no allocation.
 *
 * @module
 */

import { monotonicNow } from "../clock.js";

/** Options of {@link RetryBudget}. */
export interface RetryBudgetOptions {
  /** Retries allowed as a share of requests, in [0, 1]; default 0.2 (Finagle). */
  percent?: number;
  /** Retries allowed per second whatever the request rate; default 10 (Finagle). */
  minRetriesPerSecond?: number;
  /** How long a deposit or withdrawal counts, in ms; default 10 000 (Finagle). */
  ttl?: number;
  /** Clock in ms; default a monotonic clock. */
  now?: () => number;
}

const SLICES = 10;
/** Tokens are integers (one retry is 1000) so that sums stay exact, as Finagle scales its own. */
const RETRY = 1000;

/**
 * A token budget over a sliding window of `ttl` split into ten slices:
 * balance = reserve + percent × requests − retries, counting only the
 * window.
 *
 * @example
 * ```ts
 * const budget = new RetryBudget();
 * budget.deposit();                 // one per request
 * if (budget.tryWithdraw()) retry(); // one per retry
 * ```
 */
export class RetryBudget {
  readonly #percent: number;
  readonly #reserve: number;
  readonly #slice: number;
  readonly #now: () => number;
  readonly #slots = new Float64Array(SLICES);
  #sum = 0;
  #current = 0;

  constructor(options: RetryBudgetOptions = {}) {
    const ttl = options.ttl ?? 10_000;
    this.#percent = Math.round((options.percent ?? 0.2) * RETRY);
    this.#reserve = Math.round((options.minRetriesPerSecond ?? 10) * (ttl / 1000) * RETRY);
    this.#slice = ttl / SLICES;
    this.#now = options.now ?? monotonicNow;
    this.#current = Math.floor(this.#now() / this.#slice);
  }

  /**
   * Records a request: it earns `percent` of a retry. `now`: the time on
   * the budget's clock, when the caller has just read it (saves a read).
   */
  deposit(now?: number): void {
    this.#add(this.#percent, now);
  }

  /** Takes one retry from the budget; false (and nothing taken) when it is spent. */
  tryWithdraw(): boolean {
    this.#advance();
    if (this.#reserve + this.#sum < RETRY) return false;
    this.#add(-RETRY);
    return true;
  }

  /** Retries available now. */
  get balance(): number {
    this.#advance();
    return Math.max(0, (this.#reserve + this.#sum) / RETRY);
  }

  #add(v: number, now?: number): void {
    this.#advance(now);
    this.#slots[this.#current % SLICES]! += v;
    this.#sum += v;
  }

  /** Expires the slices that fell out of the window. */
  #advance(now: number = this.#now()): void {
    const slice = Math.floor(now / this.#slice);
    let passed = slice - this.#current;
    if (passed <= 0) return;
    if (passed > SLICES) passed = SLICES;
    for (let i = 1; i <= passed; i++) {
      const at = (this.#current + i) % SLICES;
      this.#sum -= this.#slots[at]!;
      this.#slots[at] = 0;
    }
    this.#current = slice;
  }
}

/**
 * A windowed latency histogram for a service's percentiles (the hedge
 * delay): log-spaced buckets, O(1) per sample, two half-windows that rotate
 * so that old samples age out.
 *
 * @module
 */

import { monotonicNow } from "../clock.js";

const BUCKETS = 160;
/** Bucket growth: each bucket is 10 % wider than the last, from 0.05 ms. */
const GROWTH = Math.log(1.1);
const FLOOR = 0.05;

function bucketOf(ms: number): number {
  if (ms <= FLOOR) return 0;
  const b = Math.floor(Math.log(ms / FLOOR) / GROWTH) + 1;
  return b >= BUCKETS ? BUCKETS - 1 : b;
}

function upperOf(bucket: number): number {
  return FLOOR * Math.exp(bucket * GROWTH);
}

/** Options of {@link LatencyHistogram}. */
export interface LatencyHistogramOptions {
  /** How long samples count, in ms; default 30 000. */
  window?: number;
  /** Clock in ms; default a monotonic clock. */
  now?: () => number;
}

/** Latency percentiles over a sliding window, within 10 %. */
export class LatencyHistogram {
  readonly #half: number;
  readonly #now: () => number;
  #current = new Uint32Array(BUCKETS);
  #previous = new Uint32Array(BUCKETS);
  #count = 0;
  #previousCount = 0;
  #rotatedAt: number;
  #cacheAt = -1;
  #cacheQ = -1;
  #cacheValue: number | undefined;

  constructor(options: LatencyHistogramOptions = {}) {
    this.#half = (options.window ?? 30_000) / 2;
    this.#now = options.now ?? monotonicNow;
    this.#rotatedAt = this.#now();
  }

  /** Samples in the window. */
  get count(): number {
    this.#rotate();
    return this.#count + this.#previousCount;
  }

  /** Records one latency sample in ms. */
  record(ms: number): void {
    this.#rotate();
    this.#current[bucketOf(ms)]!++;
    this.#count++;
  }

  /**
   * The latency under which a share `q` of the window's samples fall (the
   * bucket's upper edge), or undefined with fewer than `minSamples`.
   * Recomputed at most every 100 ms.
   */
  percentile(q: number, minSamples = 20): number | undefined {
    const now = this.#now();
    if (q === this.#cacheQ && now - this.#cacheAt < 100) return this.#cacheValue;
    this.#rotate();
    const total = this.#count + this.#previousCount;
    let value: number | undefined;
    if (total >= minSamples) {
      const want = Math.ceil(q * total);
      let seen = 0;
      for (let b = 0; b < BUCKETS; b++) {
        seen += this.#current[b]! + this.#previous[b]!;
        if (seen >= want) {
          value = upperOf(b);
          break;
        }
      }
    }
    this.#cacheAt = now;
    this.#cacheQ = q;
    this.#cacheValue = value;
    return value;
  }

  #rotate(): void {
    const now = this.#now();
    const since = now - this.#rotatedAt;
    if (since < this.#half) return;
    if (since >= 2 * this.#half) {
      this.#previous.fill(0);
      this.#previousCount = 0;
    } else {
      const p = this.#previous;
      p.fill(0);
      this.#previous = this.#current;
      this.#current = p;
      this.#previousCount = this.#count;
    }
    this.#current.fill(0);
    this.#count = 0;
    this.#rotatedAt = now;
  }
}

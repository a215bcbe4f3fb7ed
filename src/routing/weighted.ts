/**
 * Weighted choice in O(1) or close to it, the primitives the in-group
 * pickers draw with: Vose's alias tables for weighted random sampling, and
 * nginx's smooth weighted round-robin.
 *
 * @module
 */

/** Vose's alias tables for O(1) weighted sampling (a uniform draw needs none). */
export function aliasTable(w: readonly number[]): { prob: Float64Array; alias: Int32Array } {
  const n = w.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i]!;
  const prob = new Float64Array(n);
  const alias = new Int32Array(n);
  const scaled = new Float64Array(n);
  // Two stacks of indices: below and at-or-above the average.
  const small = new Int32Array(n);
  const large = new Int32Array(n);
  let ns = 0;
  let nl = 0;
  for (let i = 0; i < n; i++) {
    const x = (w[i]! * n) / sum;
    scaled[i] = x;
    if (x < 1) small[ns++] = i;
    else large[nl++] = i;
  }
  while (ns > 0 && nl > 0) {
    const s = small[--ns]!;
    const l = large[--nl]!;
    prob[s] = scaled[s]!;
    alias[s] = l;
    scaled[l] = scaled[l]! + scaled[s]! - 1;
    if (scaled[l]! < 1) small[ns++] = l;
    else large[nl++] = l;
  }
  for (let i = 0; i < nl; i++) prob[large[i]!] = 1;
  for (let i = 0; i < ns; i++) prob[small[i]!] = 1;
  return { prob, alias };
}

/**
 * nginx's smooth weighted round-robin, one step per pick, over weights
 * scaled so that the largest is at most 64 (a cycle of at most 64 × n picks).
 *
 * nginx adds every weight to its endpoint's current value at each step and
 * picks the largest (the first on ties): O(n) a pick. Endpoints of equal
 * weight, though, differ only in how often they were picked, so among
 * themselves they take turns in index order, and it is enough to compare
 * the endpoint whose turn it is in each distinct weight: the same order,
 * step for step, in O(distinct weights) a pick — at most 64 after scaling,
 * usually one to three — with no schedule to build or hold.
 */
export class SmoothRoundRobin {
  /** Per distinct scaled weight (a class): the weight, and its endpoints in index order. */
  readonly #weight: number[] = [];
  readonly #members: number[][] = [];
  /** Per class: the member whose turn it is, and how often each member from it on has been picked this cycle. */
  readonly #turn: Int32Array;
  readonly #picked: Float64Array;
  /** Picks in a cycle (the sum of the scaled weights), after which every current value is 0 again. */
  readonly #cycle: number;
  #step = 0;

  constructor(weights: readonly number[]) {
    let max = 0;
    for (const w of weights) if (w > max) max = w;
    const scale = Math.min(1, 64 / max);
    const classOf = new Map<number, number>();
    let cycle = 0;
    for (let i = 0; i < weights.length; i++) {
      const w = Math.max(1, Math.round(weights[i]! * scale));
      cycle += w;
      let c = classOf.get(w);
      if (c === undefined) {
        c = this.#weight.length;
        classOf.set(w, c);
        this.#weight.push(w);
        this.#members.push([]);
      }
      this.#members[c]!.push(i);
    }
    this.#turn = new Int32Array(this.#weight.length);
    this.#picked = new Float64Array(this.#weight.length);
    this.#cycle = cycle;
  }

  /** The index of the next endpoint. */
  next(): number {
    const weight = this.#weight;
    const members = this.#members;
    const turn = this.#turn;
    const picked = this.#picked;
    let step = this.#step + 1;
    if (step > this.#cycle) {
      // Each endpoint has been picked its weight's times: every current value is back to 0.
      step = 1;
      turn.fill(0);
      picked.fill(0);
    }
    this.#step = step;
    // An endpoint's current value after `step` additions is step × weight − cycle × (times picked).
    let best = 0;
    let bestValue = Number.NEGATIVE_INFINITY;
    let bestIndex = 0;
    for (let c = 0; c < weight.length; c++) {
      const value = step * weight[c]! - this.#cycle * picked[c]!;
      const index = members[c]![turn[c]!]!;
      if (value > bestValue || (value === bestValue && index < bestIndex)) {
        best = c;
        bestValue = value;
        bestIndex = index;
      }
    }
    const t = turn[best]! + 1;
    if (t === members[best]!.length) {
      turn[best] = 0;
      picked[best]!++;
    } else {
      turn[best] = t;
    }
    return bestIndex;
  }
}

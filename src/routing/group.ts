/**
 * Inside a locality group: how one endpoint is chosen among those the plan
 * lets take traffic — the power of two choices over peak-EWMA load (Finagle,
 * Linkerd), nginx's smooth weighted round-robin, or weighted random — with
 * slow start's warm-up weight applied the same way by every policy.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { EndpointHealth, HealthTracker } from "./health.js";
import { aliasTable, SmoothRoundRobin } from "./weighted.js";

/** How a tier picks among its endpoints. */
export type BalancerPolicy = "p2c" | "round-robin" | "random";

/** Slow start: a new or recovered endpoint's weight ramps up over a window (Envoy's `slow_start_config`). */
export interface SlowStartOptions {
  /** The ramp's length in ms; 0 turns slow start off. */
  window: number;
  /** The ramp's shape: weight × (elapsed / window)^(1 / aggression); default 1 (linear). */
  aggression?: number;
  /** The least share of its weight an endpoint gets while ramping, in (0, 1]; default 0.1 (Envoy's 10 %). */
  minWeight?: number;
}

/** What a group must hold for a policy: alias tables to sample by weight, in-flight scales for P2C. */
export interface GroupNeeds {
  /** Vose alias tables (weighted random draws), when weights differ. */
  readonly alias: boolean;
  /** Per-endpoint in-flight scales (P2C's cost), when weights differ. */
  readonly scale: boolean;
}

/**
 * The endpoints of one locality group (a whole tier, or one `distribute`
 * target) that a pick chooses among, with what weighted picks need.
 * Immutable but for its round-robin state.
 */
export class Group {
  /** True when every endpoint has the same weight. */
  readonly uniform: boolean;
  /** Vose alias tables, when weights differ and a policy draws by weight. */
  readonly prob: Float64Array | undefined;
  readonly alias: Int32Array | undefined;
  /** Per endpoint, the group's mean weight over its own (P2C's in-flight scale), when weights differ. */
  readonly inflightScale: Float64Array | undefined;
  /** Smooth weighted round-robin, when weights differ; made on the group's first round-robin pick. */
  smooth: SmoothRoundRobin | undefined;
  /** Round-robin position, when weights are equal. */
  cursor = 0;

  constructor(
    readonly endpoints: readonly Endpoint[],
    readonly health: readonly EndpointHealth[],
    readonly weights: readonly number[],
    needs: GroupNeeds,
  ) {
    let uniform = true;
    for (let i = 1; i < weights.length && uniform; i++) uniform = weights[i] === weights[0];
    this.uniform = uniform;
    const alias = uniform || !needs.alias ? undefined : aliasTable(weights);
    this.prob = alias?.prob;
    this.alias = alias?.alias;
    if (!uniform && needs.scale) {
      let sum = 0;
      for (const w of weights) sum += w;
      const mean = sum / weights.length;
      const scale = new Float64Array(weights.length);
      for (let i = 0; i < weights.length; i++) scale[i] = mean / weights[i]!;
      this.inflightScale = scale;
    }
  }
}

/** A group with nothing to pick from. */
export const EMPTY_GROUP = new Group([], [], [], { alias: false, scale: false });

/**
 * Draws a slow-starting endpoint must survive before its draw stands; after
 * as many, the last draw stands (only when nearly every candidate ramps).
 */
const WARM_TRIES = 16;

/** Chooses inside groups for one balancer; holds the policy and slow start's settings. */
export class GroupPicker {
  readonly #policy: BalancerPolicy;
  readonly #health: HealthTracker;
  readonly #random: () => number;
  readonly #slowWindow: number;
  readonly #slowAggression: number;
  readonly #slowMin: number;

  constructor(
    policy: BalancerPolicy,
    health: HealthTracker,
    random: () => number,
    slowStart: SlowStartOptions | undefined,
  ) {
    this.#policy = policy;
    this.#health = health;
    this.#random = random;
    this.#slowWindow = slowStart?.window ?? 0;
    this.#slowAggression = slowStart?.aggression ?? 1;
    this.#slowMin = slowStart?.minWeight ?? 0.1;
  }

  /** True when slow start is on. */
  get slowStart(): boolean {
    return this.#slowWindow > 0;
  }

  /** What the groups of this policy must hold. */
  get needs(): GroupNeeds {
    // Round-robin draws at random only to hand on a ramping endpoint's skipped turn.
    return { alias: this.#policy !== "round-robin" || this.slowStart, scale: this.#policy === "p2c" };
  }

  /** The index in `g` of the endpoint chosen, or -1 when `g` is empty. Synchronous, O(1), allocates nothing. */
  pick(g: Group): number {
    const n = g.endpoints.length;
    if (n <= 1) return n - 1;
    switch (this.#policy) {
      case "round-robin": {
        const i = this.#turn(g);
        // A ramping endpoint keeps its turn with its share of the weight; a
        // skipped turn goes to a weighted draw, so that every other endpoint
        // gains in proportion to its weight (not only the next in turn).
        return this.#slowWindow > 0 && !this.#stands(g.health[i]!) ? this.#draw(g) : i;
      }
      case "random":
        return this.#draw(g);
      default: {
        // Weight decides how often an endpoint is a candidate; the cost
        // compares load, requests in flight scaled to the endpoint's weight.
        const a = this.#draw(g);
        let b = this.#draw(g);
        if (b === a) b = a + 1 >= n ? 0 : a + 1;
        const now = this.#health.now();
        const scale = g.inflightScale;
        const ca = this.#health.cost(g.health[a]!, now, scale === undefined ? 1 : scale[a]!);
        const cb = this.#health.cost(g.health[b]!, now, scale === undefined ? 1 : scale[b]!);
        return cb < ca ? b : a;
      }
    }
  }

  /** The next index in round-robin order (smooth weighted when weights differ). */
  #turn(g: Group): number {
    if (g.uniform) {
      const i = g.cursor;
      g.cursor = i + 1 >= g.endpoints.length ? 0 : i + 1;
      return i;
    }
    // Only round-robin needs this state, so only it pays for it.
    return (g.smooth ??= new SmoothRoundRobin(g.weights)).next();
  }

  /** A weighted random index; with slow start, a ramping endpoint's draw stands with its share of the weight. */
  #draw(g: Group): number {
    let i = this.#sample(g);
    if (this.#slowWindow > 0) {
      for (let k = 1; k < WARM_TRIES && !this.#stands(g.health[i]!); k++) i = this.#sample(g);
    }
    return i;
  }

  /** A weighted random index in O(1) (Vose's alias method; uniform when weights are equal). */
  #sample(g: Group): number {
    const x = this.#random() * g.endpoints.length;
    const i = x | 0;
    const prob = g.prob;
    if (prob === undefined) return i;
    return x - i < prob[i]! ? i : g.alias![i]!;
  }

  /** Slow start: true when a draw of this endpoint stands (always, unless it ramps). */
  #stands(h: EndpointHealth): boolean {
    if (h.warmingSince === 0) return true;
    return this.#random() < this.#warmFactor(h, this.#health.now());
  }

  /** The share of its weight a ramping endpoint takes now; ends the ramp when the window is over. */
  #warmFactor(h: EndpointHealth, now: number): number {
    const window = this.#slowWindow;
    const elapsed = now - h.warmingSince;
    if (elapsed >= window) {
      h.warmingSince = 0;
      return 1;
    }
    const f = (Math.max(elapsed, 1) / window) ** (1 / this.#slowAggression);
    return Math.max(this.#slowMin, f);
  }
}

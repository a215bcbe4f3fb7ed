/**
 * The priority-load math of Envoy's priority levels, as a pure function:
 * how much of the traffic each tier takes given how healthy each is, with
 * gradual spill-over (the overprovisioning factor) and the panic threshold.
 *
 * @module
 */

/** One tier's size for {@link priorityLoad}: healthy and total endpoint counts. */
export interface TierHealth {
  /** Endpoints that may take traffic now. */
  readonly healthy: number;
  /** Endpoints in the tier, healthy or not. */
  readonly total: number;
}

/** The outcome of {@link priorityLoad}. */
export interface PriorityLoad {
  /** The share of traffic each tier takes, in [0, 1], summing to 1 (or all 0 when nothing can take traffic). */
  readonly load: number[];
  /** Whether each tier is in panic: its picks ignore health and spread over all its endpoints. */
  readonly panic: boolean[];
  /** The normalized total health, in [0, 1]. */
  readonly totalHealth: number;
}

/**
 * Splits traffic between priority tiers as Envoy does.
 *
 * A tier's health is `min(1, overprovisioning × healthy / total)`; the
 * normalized total health is the sum of them, capped at 1. Tiers take, in
 * order, `health / totalHealth` of the traffic until it is all placed, so a
 * tier keeps all of its traffic while 1/1.4 ≈ 71 % of it is healthy and
 * sheds the rest gradually to the next tier.
 *
 * Panic applies only when the tiers together fall short (total health under
 * 1): then a tier whose healthy share (without the factor) is under
 * `panicThreshold` is in panic and picks among all its endpoints. When
 * every tier is in panic, traffic is split by endpoint count. A dead tier
 * beside a healthy one is therefore plain failover, never panic. With
 * `panicThreshold` 0 panic never happens and, when no tier is healthy,
 * every load is 0.
 *
 * @example
 * ```ts
 * priorityLoad([{ healthy: 2, total: 4 }, { healthy: 4, total: 4 }]).load // [0.7, 0.3]
 * ```
 */
export function priorityLoad(
  tiers: readonly TierHealth[],
  overprovisioning = 1.4,
  panicThreshold = 0.5,
): PriorityLoad {
  const n = tiers.length;
  const load = new Array<number>(n).fill(0);
  const panic = new Array<boolean>(n).fill(false);
  let sum = 0;
  const health = tiers.map((t) => {
    const h = t.total === 0 ? 0 : Math.min(1, (overprovisioning * t.healthy) / t.total);
    sum += h;
    return h;
  });
  const totalHealth = Math.min(1, sum);
  if (totalHealth < 1) {
    let all = n > 0;
    for (let i = 0; i < n; i++) {
      const t = tiers[i]!;
      panic[i] = panicThreshold > 0 && (t.total === 0 ? 0 : t.healthy / t.total) < panicThreshold;
      all &&= panic[i]!;
    }
    if (all) {
      // Total panic: every tier ignores health; traffic follows endpoint counts.
      let hosts = 0;
      for (const t of tiers) hosts += t.total;
      if (hosts > 0) for (let i = 0; i < n; i++) load[i] = tiers[i]!.total / hosts;
      return { load, panic, totalHealth };
    }
  }
  if (totalHealth === 0) return { load, panic, totalHealth };
  let remaining = 1;
  for (let i = 0; i < n; i++) {
    const l = Math.min(remaining, health[i]! / totalHealth);
    load[i] = l;
    remaining -= l;
  }
  // Rounding leftovers go to the first tier that takes traffic (Envoy does the same with its integers).
  if (remaining > 0) {
    const first = load.findIndex((l) => l > 0);
    if (first >= 0) load[first]! += remaining;
  }
  return { load, panic, totalHealth };
}

import type { Endpoint } from "../../src/discovery/endpoint.js";
import { type HealthOptions, HealthTracker } from "../../src/routing/health.js";
import { Balancer, type BalancerOptions } from "../../src/routing/router.js";
import { type RouterOptions, TierMap } from "../../src/routing/tiers.js";
import { endpoints, fixedWatch, manualClock, seededRandom } from "../helpers/routing.js";

/** The caller of the routing tests: zone east-a of region east, failing over to west. */
export const CALLER: RouterOptions = { region: "east", zone: "east-a", failover: ["west"] };

/** `n` endpoints in the caller's zone (cluster `home`). */
export const home = (n: number, first = 1) =>
  endpoints(n, { cluster: "home", region: "east", zone: "east-a" }, first);

/** `n` endpoints in the failover region (cluster `west`). */
export const west = (n: number) => endpoints(n, { cluster: "west", region: "west", zone: "west-a" }, 2);

/** One endpoint per weight, all in the caller's zone, in the order given. */
export const weighted = (weights: readonly number[]) =>
  weights.map(
    (weight, i) =>
      endpoints(1, {
        cluster: "home",
        region: "east",
        zone: "east-a",
        address: `10.9.${i >> 8}.${i & 255}`,
        weight,
      })[0]!,
  );

/** A balancer over a watch the test sets, a tracker on a manual clock (no jitter, no failure-rate rule). */
export function setup(
  eps: readonly Endpoint[],
  options: BalancerOptions = {},
  caller: RouterOptions = CALLER,
  healthOptions: HealthOptions = {},
) {
  const clock = manualClock();
  const health = new HealthTracker({ now: clock, random: () => 0, failureRate: false, ...healthOptions });
  const watch = fixedWatch(eps);
  const tiers = new TierMap(caller);
  const balancer = new Balancer(watch, tiers, health, { random: seededRandom(), ...options });
  /** Five failures in a row: ejects the endpoint. */
  const eject = (e: Endpoint) => {
    const h = balancer.healthOf(e);
    for (let i = 0; i < 5; i++) {
      health.start(h);
      health.failure(h, "ECONNREFUSED");
    }
  };
  return { clock, health, watch, tiers, balancer, eject };
}

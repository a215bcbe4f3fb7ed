/**
 * The words meshlink explains its decisions with, on spans, in metrics and
 * in events: why an attempt's endpoint was left, and why traffic left the
 * best tier. Protocol-neutral: the HTTP and gRPC transports say the same.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { AttemptOutcome } from "../resilience/attempt.js";
import type { Balancer, TierState } from "../routing/router.js";

/**
 * Why an attempt's endpoint was left, from its outcome and the reason the
 * engine recorded (an error code, `status 503`):
 * `refused` (connection refused), `connect_timeout`, `connect_failed`,
 * `egress_denied`, `timed_out` (no response within the per-try timeout),
 * `reset` (the connection broke), `stale_connection` (a reused keep-alive
 * connection the server had closed), `protocol_error` (a malformed
 * response), `status_<n>` (a failure status), `rate_limited` (429),
 * `other`.
 */
export function leaveReason(outcome: AttemptOutcome, reason: string, status: number): string {
  switch (outcome) {
    case "connect":
      if (reason === "ECONNREFUSED") return "refused";
      if (reason === "MESHLINK_ATTEMPT_TIMEOUT" || reason === "UND_ERR_CONNECT_TIMEOUT")
        return "connect_timeout";
      if (reason === "MESHLINK_ERR_EGRESS_DENIED") return "egress_denied";
      return "connect_failed";
    case "timeout":
      return "timed_out";
    case "reset":
      return "reset";
    case "stale":
      return "stale_connection";
    case "protocol":
      return "protocol_error";
    case "status":
      return `status_${status}`;
    case "success":
      // A retried success is a 429: the endpoint is alive, but asked to come back later.
      return status === 429 ? "rate_limited" : "success";
    default:
      return "other";
  }
}

/** How an attempt's endpoint stands against the service's tiers. */
export interface TierChoice {
  /** True when the endpoint is not in the best tier the service has. */
  readonly failover: boolean;
  /**
   * Why the better tiers were passed over: `ejected` (none of their
   * endpoints may take traffic: outlier detection opened their breakers),
   * `spillover` (too few are healthy, so part of the traffic spills
   * over), `panic`, `not_ready` (discovery lists them as not ready), or
   * `retried` / `hedged` when the call had already tried them.
   */
  readonly reason: string | undefined;
  /** True when the endpoint's tier was in panic: the router ignored health there. */
  readonly panic: boolean;
}

const NO_FAILOVER: TierChoice = Object.freeze({ failover: false, reason: undefined, panic: false });
const NO_FAILOVER_PANIC: TierChoice = Object.freeze({ failover: false, reason: undefined, panic: true });

/**
 * Where `endpoint` stands for a call that picked it (`again`: the call had
 * already tried other endpoints, `retried` or `hedged`). Reads the tiers,
 * which allocates: call it only when recording.
 */
export function tierChoice(
  balancer: Balancer,
  endpoint: Endpoint,
  again: "retried" | "hedged" | undefined,
): TierChoice {
  const rank = balancer.tierOf(endpoint).rank;
  const view = balancer.tiers();
  const mine = view.find((t) => t.tier.rank === rank);
  const panic = mine?.panic ?? false;
  if (rank <= bestRank(balancer)) return panic ? NO_FAILOVER_PANIC : NO_FAILOVER;
  const better = view.filter((t) => t.tier.rank < rank);
  return { failover: true, reason: passedOver(better, again), panic };
}

/** The last best rank of each balancer, and the version it was computed at (endpoints move the version). */
const bestRanks = new WeakMap<Balancer, { version: number; best: number }>();

/**
 * The best rank among every endpoint discovery lists for the service, ready
 * or not. O(endpoints) once per balancer version, then O(1).
 */
export function bestRank(balancer: Balancer): number {
  const version = balancer.version;
  const cached = bestRanks.get(balancer);
  if (cached !== undefined && cached.version === version) return cached.best;
  let best = Number.POSITIVE_INFINITY;
  for (const e of balancer.watch.snapshot.endpoints) {
    const r = balancer.tierOf(e).rank;
    if (r < best) best = r;
  }
  bestRanks.set(balancer, { version, best });
  return best;
}

/** Why the tiers in `better` (ranked before the one chosen) were passed over. */
export function passedOver(better: readonly TierState[], again?: "retried" | "hedged"): string {
  if (better.length === 0) return "not_ready";
  if (better.some((t) => t.panic)) return "panic";
  if (better.every((t) => t.healthy === 0)) return "ejected";
  return again ?? "spillover";
}

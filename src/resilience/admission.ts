/**
 * What every transport does before and after a call's attempts, whatever
 * drives them (the call engine, or the `node:http` agents): the service's
 * route as calls see it, admission (mesh closed? bulkhead full? then a
 * deposit into the retry budget) and its release, and the error a call gets
 * when no endpoint can take it.
 *
 * @module
 */

import type { ServiceName } from "../discovery/names.js";
import {
  type AttemptRecord,
  BulkheadFullError,
  MeshClosedError,
  NoHealthyEndpointError,
  ServiceNotFoundError,
} from "../errors.js";
import type { Balancer } from "../routing/router.js";
import type { CallPolicy, ServiceCallState } from "./policy.js";
import type { TimerWheel } from "./timer.js";

/** One service as calls to it see it: its name, balancer, call state and timer wheel. */
export interface ServiceRoute {
  /** The service. */
  readonly name: ServiceName;
  /** Its balancer. */
  readonly balancer: Balancer;
  /** Its call state (budgets, calls in flight). */
  readonly state: ServiceCallState;
  /** The wheel for per-try timeouts, deadlines, back-off and hedge delays. */
  readonly timers: TimerWheel;
}

/**
 * Admits a call to its service, for every transport: refused when the mesh
 * is closed or the service's bulkhead is full (the error says which);
 * otherwise counted as in flight, with a deposit into the retry budget.
 * A call admitted must be let go with {@link releaseCall} once it ends.
 * `now`: the policy's clock, when the caller has just read it.
 */
export function admitCall(
  route: ServiceRoute,
  policy: CallPolicy,
  meshClosed: boolean,
  now?: number,
): Error | undefined {
  if (meshClosed) return new MeshClosedError();
  const state = route.state;
  if (state.active >= policy.maxRequestsPerService) {
    return new BulkheadFullError(route.name.key, "service", policy.maxRequestsPerService);
  }
  state.active++;
  policy.admitted();
  state.budget?.deposit(now);
  return undefined;
}

/** Lets go of a call {@link admitCall} admitted. */
export function releaseCall(route: ServiceRoute, policy: CallPolicy): void {
  route.state.active--;
  policy.ended();
}

/**
 * Why a pick found no endpoint, as the error the caller gets: a full
 * bulkhead, the discovery error when every backend failed before it ever
 * answered, an unknown service, or no healthy endpoint (with the attempts
 * made so far). Shared by every transport.
 */
export function noEndpointError(
  route: Pick<ServiceRoute, "name" | "balancer">,
  policy: CallPolicy,
  records: readonly AttemptRecord[],
): Error {
  const balancer = route.balancer;
  const key = route.name.key;
  if (balancer.saturated) return new BulkheadFullError(key, "endpoint", policy.maxRequestsPerEndpoint);
  const snapshot = balancer.watch.snapshot;
  if (snapshot.endpoints.length === 0) {
    const failed = snapshot.sources.find((s) => s.error !== undefined);
    if (snapshot.state === "failed" && failed?.error !== undefined) return failed.error;
    if (snapshot.state === "not-found" || snapshot.state === "pending") {
      return new ServiceNotFoundError(
        key,
        snapshot.sources.map((s) => s.backend),
      );
    }
  }
  return new NoHealthyEndpointError(key, snapshot.endpoints.length, records);
}

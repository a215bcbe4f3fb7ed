/**
 * The configuration in force: a resolved configuration with every default
 * written out, as `mesh.config`, the admin endpoint and `meshlink describe`
 * show it. The defaults are those the policy, health and router apply when
 * an option is absent (test/telemetry/config-in-force.test.ts holds them
 * to that); the mesh itself is built from the configuration as given, so
 * that "not set" keeps its meaning where it has one (a per-try timeout that
 * was not chosen is not sent to the server).
 *
 * @module
 */

import type { OutlierConfig, PolicyConfig, ResolvedConfig, RoutingConfig } from "./config.js";

/** @internal The call policy's defaults. */
export const POLICY_DEFAULTS = Object.freeze({
  attempts: 2,
  perTryTimeout: 15_000,
  retryOn: Object.freeze([502, 503, 504]),
  propagateDeadline: true,
  retryOnRateLimited: true,
  maxRetryAfter: 10_000,
  backoffBase: 25,
  budget: Object.freeze({ percent: 0.2, minRetriesPerSecond: 10, ttl: 10_000 }),
  hedging: Object.freeze({ delay: "p95" as const, maxExtraLoad: 0.01, minPerSecond: 0 }),
});

/** @internal Outlier detection's defaults. */
export const OUTLIER_DEFAULTS = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionTime: 30_000,
  maxEjectionTime: 300_000,
  ejectionJitter: 0.1,
  failureRate: Object.freeze({ threshold: 0.85, window: 100, minimumRequests: 50 }),
});

/** @internal The router's defaults. */
export const ROUTING_DEFAULTS = Object.freeze({
  lbPolicy: "p2c" as const,
  overprovisioningFactor: 1.4,
  panicThreshold: 0.5,
  latencyDecay: 10_000,
});

function policyInForce(p: PolicyConfig): PolicyConfig {
  const d = POLICY_DEFAULTS;
  const base = p.backoff?.base ?? d.backoffBase;
  return {
    attempts: p.attempts ?? d.attempts,
    perTryTimeout: p.perTryTimeout ?? d.perTryTimeout,
    retryOn: [...(p.retryOn ?? d.retryOn)],
    // No deadline unless one is set: absent means none.
    ...(p.deadline !== undefined && { deadline: p.deadline }),
    propagateDeadline: p.propagateDeadline ?? d.propagateDeadline,
    retryOnRateLimited: p.retryOnRateLimited ?? d.retryOnRateLimited,
    maxRetryAfter: p.maxRetryAfter ?? d.maxRetryAfter,
    backoff: { base, max: p.backoff?.max ?? 10 * base },
    budget: p.budget === false ? false : { ...d.budget, ...defined(p.budget ?? {}) },
    hedging: { ...d.hedging, services: [], ...defined(p.hedging ?? {}) },
    // Unlimited unless set.
    ...(p.bulkhead !== undefined && { bulkhead: { ...p.bulkhead } }),
  };
}

function outlierInForce(o: OutlierConfig): OutlierConfig {
  const d = OUTLIER_DEFAULTS;
  return {
    consecutiveFailures: o.consecutiveFailures ?? d.consecutiveFailures,
    baseEjectionTime: o.baseEjectionTime ?? d.baseEjectionTime,
    maxEjectionTime: o.maxEjectionTime ?? d.maxEjectionTime,
    ejectionJitter: o.ejectionJitter ?? d.ejectionJitter,
    failureRate: o.failureRate === false ? false : { ...d.failureRate, ...defined(o.failureRate ?? {}) },
  };
}

function routingInForce(r: RoutingConfig): RoutingConfig {
  return { ...ROUTING_DEFAULTS, ...defined(r) };
}

/** The fields of `o` that are set. */
function defined<T extends object>(o: T): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as Partial<T>;
}

/**
 * The configuration with every default written out (policy, outlier
 * detection, routing); frozen. What is absent has no default: a deadline,
 * bulkheads, slow start, locality rules.
 */
export function configInForce(config: ResolvedConfig): ResolvedConfig {
  return Object.freeze({
    ...config,
    policy: policyInForce(config.policy),
    outlierDetection: outlierInForce(config.outlierDetection),
    routing: routingInForce(config.routing),
  });
}

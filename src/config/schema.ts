/**
 * The zod schemas of the option groups that options and the config file
 * share, and their types. `config.ts` merges the sources; this module says
 * what a valid value is.
 *
 * @module
 */

import { z } from "zod";

/** @internal A region, zone or sub-zone name. */
export const LOCALITY = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$/;
/** @internal The schema of a locality name. */
export const localityName = (what: string) =>
  z.string().regex(LOCALITY, `invalid ${what}: letters, digits, '.', '_' and '-' only`);

/** @internal */
export const policySchema: z.ZodType<PolicyConfig> = z.strictObject({
  attempts: z.number().int().min(1).max(10).optional(),
  perTryTimeout: z.number().int().positive().max(3_600_000).optional(),
  retryOn: z.array(z.number().int().min(100).max(599)).optional(),
  deadline: z.number().int().positive().max(86_400_000).optional(),
  propagateDeadline: z.boolean().optional(),
  headerControls: z.boolean().optional(),
  retryOnRateLimited: z.boolean().optional(),
  maxRetryAfter: z.number().int().min(0).max(3_600_000).optional(),
  backoff: z
    .strictObject({
      base: z.number().min(0).max(60_000).optional(),
      max: z.number().min(0).max(600_000).optional(),
    })
    .optional(),
  budget: z
    .union([
      z.literal(false),
      z.strictObject({
        percent: z.number().min(0).max(1).optional(),
        minRetriesPerSecond: z.number().min(0).max(1_000_000).optional(),
        ttl: z.number().int().min(1000).max(3_600_000).optional(),
      }),
    ])
    .optional(),
  hedging: z
    .strictObject({
      delay: z.union([z.number().int().min(1).max(3_600_000), z.literal("p95")]).optional(),
      maxExtraLoad: z.number().min(0).max(1).optional(),
      minPerSecond: z.number().min(0).max(1_000_000).optional(),
      services: z.array(z.string().min(1)).optional(),
    })
    .optional(),
  bulkhead: z
    .strictObject({
      maxRequestsPerEndpoint: z.number().int().positive().optional(),
      maxRequestsPerService: z.number().int().positive().optional(),
    })
    .optional(),
});

/** @internal */
export const routingSchema: z.ZodType<RoutingConfig> = z.strictObject({
  cluster: z.string().min(1).optional(),
  subzone: z.string().min(1).optional(),
  lbPolicy: z.enum(["p2c", "round-robin", "random"]).optional(),
  overprovisioningFactor: z.number().min(1).max(100).optional(),
  panicThreshold: z.number().min(0).max(1).optional(),
  latencyDecay: z.number().int().positive().max(3_600_000).optional(),
  slowStart: z
    .strictObject({
      window: z.number().int().min(0).max(3_600_000),
      aggression: z.number().positive().max(100).optional(),
      minWeight: z.number().gt(0).max(1).optional(),
    })
    .optional(),
  failoverPriority: z
    .array(z.enum(["region", "zone", "subzone", "cluster"]))
    .min(1)
    .max(4)
    .optional(),
  distribute: z
    .array(
      z.strictObject({
        from: z.string().min(1),
        to: z.record(z.string().min(1), z.number().min(0).max(1_000_000)),
      }),
    )
    .optional(),
});

/** @internal */
export const outlierSchema: z.ZodType<OutlierConfig> = z.strictObject({
  consecutiveFailures: z.number().int().min(1).max(1000).optional(),
  baseEjectionTime: z.number().int().positive().optional(),
  maxEjectionTime: z.number().int().positive().optional(),
  ejectionJitter: z.number().min(0).max(1).optional(),
  failureRate: z
    .union([
      z.literal(false),
      z.strictObject({
        threshold: z.number().gt(0).lt(1).optional(),
        window: z.number().int().min(1).max(100_000).optional(),
        minimumRequests: z.number().int().min(1).max(100_000).optional(),
      }),
    ])
    .optional(),
});

/** Call policy options: timeouts, retries, budget, hedging, bulkheads. See docs/routing.md §6. */
export interface PolicyConfig {
  /** Attempts per call, the first included; default 2. */
  attempts?: number | undefined;
  /** Per-try timeout on the response headers, ms; default 15 000. */
  perTryTimeout?: number | undefined;
  /** Statuses that are endpoint failures and retried; default 502, 503, 504. */
  retryOn?: number[] | undefined;
  /** Overall deadline of a call, ms, until the response ends; default none. */
  deadline?: number | undefined;
  /** Send `x-meshlink-timeout-ms` (the time left) with each attempt of a call that has a deadline or a configured per-try timeout; default true. */
  propagateDeadline?: boolean | undefined;
  /**
   * Read the per-request control headers (`x-meshlink-retryable`,
   * `x-meshlink-hedge`, `x-meshlink-timeout-ms`) of outgoing requests;
   * default true. Turn it off in a service that forwards its incoming
   * headers, so that its callers cannot force resends of its POSTs: the
   * headers are then stripped and ignored, and only the `meshlink` option
   * in code sets these controls.
   */
  headerControls?: boolean | undefined;
  /** Retry a 429 after its `Retry-After`; default true. */
  retryOnRateLimited?: boolean | undefined;
  /** The longest `Retry-After` waited for, ms; default 10 000. */
  maxRetryAfter?: number | undefined;
  /** Retry back-off, ms: full jitter under `base × (2^n − 1)`, capped at `max`; default 25 and 250. */
  backoff?:
    | {
        /** First ceiling, ms; default 25. */
        base?: number | undefined;
        /** Largest ceiling, ms; default 10 × base. */
        max?: number | undefined;
      }
    | undefined;
  /** Retry budget (Finagle), or `false` for none; default 20 % of requests + 10 retries/s over 10 s. */
  budget?:
    | false
    | {
        /** Retries as a share of requests; default 0.2. */
        percent?: number | undefined;
        /** Retries per second whatever the rate; default 10. */
        minRetriesPerSecond?: number | undefined;
        /** How long deposits and withdrawals count, ms; default 10 000. */
        ttl?: number | undefined;
      }
    | undefined;
  /** Hedging; off unless a service is listed or a call asks (`x-meshlink-hedge`). */
  hedging?:
    | {
        /** Delay before the second attempt: ms, or `p95`; default `p95`. */
        delay?: number | "p95" | undefined;
        /** Extra load hedges may add, as a share of requests; default 0.01. */
        maxExtraLoad?: number | undefined;
        /** Hedges per second allowed whatever the rate; default 0. */
        minPerSecond?: number | undefined;
        /** Services hedged by default. */
        services?: string[] | undefined;
      }
    | undefined;
  /** Most requests in flight; default unlimited. */
  bulkhead?:
    | {
        /** Per endpoint. */
        maxRequestsPerEndpoint?: number | undefined;
        /** Per service. */
        maxRequestsPerService?: number | undefined;
      }
    | undefined;
}

/** Outlier detection options. See docs/routing.md §5. */
export interface OutlierConfig {
  /** Consecutive failures that eject an endpoint; default 5. */
  consecutiveFailures?: number | undefined;
  /** Base ejection time, ms, multiplied by the times ejected; default 30 000. */
  baseEjectionTime?: number | undefined;
  /** Longest ejection, ms; default 300 000. */
  maxEjectionTime?: number | undefined;
  /** Random extra share of each ejection; default 0.1. */
  ejectionJitter?: number | undefined;
  /** The failure-rate rule, or `false` to turn it off; default 85 % of the last 100 calls, after 50. */
  failureRate?:
    | false
    | {
        /** Failure share above which the endpoint is ejected, in (0, 1); default 0.85. */
        threshold?: number | undefined;
        /** Calls counted; default 100. */
        window?: number | undefined;
        /** Calls needed before the rule applies; default 50. */
        minimumRequests?: number | undefined;
      }
    | undefined;
}

/** Routing options: tiers, spill-over, panic, locality rules, the in-tier policy. See docs/routing.md §1–4. */
export interface RoutingConfig {
  /** The caller's cluster, for `failoverPriority: ["cluster"]`. */
  cluster?: string | undefined;
  /** The caller's sub-zone, for `failoverPriority: ["subzone"]`. */
  subzone?: string | undefined;
  /** How a tier picks among its endpoints; default `p2c`. */
  lbPolicy?: "p2c" | "round-robin" | "random" | undefined;
  /** Envoy's overprovisioning factor; default 1.4. */
  overprovisioningFactor?: number | undefined;
  /** Envoy's panic threshold, in [0, 1]; default 0.5; 0 turns panic off. */
  panicThreshold?: number | undefined;
  /** Peak-EWMA latency decay, ms; default 10 000. */
  latencyDecay?: number | undefined;
  /** Slow start of new and recovered endpoints; default off. */
  slowStart?:
    | {
        /** Ramp length, ms; 0 turns it off. */
        window: number;
        /** Ramp shape; default 1 (linear). */
        aggression?: number | undefined;
        /** Least share of its weight while ramping; default 0.1. */
        minWeight?: number | undefined;
      }
    | undefined;
  /** Istio's `failoverPriority`: labels compared in order with the caller's. */
  failoverPriority?: ("region" | "zone" | "subzone" | "cluster")[] | undefined;
  /** Istio's `distribute`: fixed locality splits by caller locality. */
  distribute?:
    | {
        /** Callers the rule applies to, `region/zone/subzone` with `*`. */
        from: string;
        /** Target localities and their weights. */
        to: Record<string, number>;
      }[]
    | undefined;
}

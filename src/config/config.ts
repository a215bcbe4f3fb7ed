/**
 * Configuration: explicit options ⊕ environment ⊕ config file ⊕ defaults,
 * in that order of precedence, validated with zod. A bad value fails fast
 * with a {@link ConfigError} that names the option, variable or file field
 * and the value.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import type { DiscoveryBackend } from "../discovery/discovery.js";
import { ConfigError } from "../errors.js";
import { parseOptions } from "./validate.js";

/** The environment variables meshlink reads. Their names are part of the public contract. */
export const ENV = {
  /** The caller's region. */
  REGION: "MESHLINK_REGION",
  /** The caller's zone. */
  ZONE: "MESHLINK_ZONE",
  /** Failover regions, comma-separated, in order. */
  FAILOVER: "MESHLINK_FAILOVER",
  /** Path of a JSON or YAML config file. */
  CONFIG: "MESHLINK_CONFIG",
} as const;

const LOCALITY = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$/;
const localityName = (what: string) =>
  z.string().regex(LOCALITY, `invalid ${what}: letters, digits, '.', '_' and '-' only`);

const policySchema: z.ZodType<PolicyConfig> = z.strictObject({
  attempts: z.number().int().min(1).max(10).optional(),
  perTryTimeout: z.number().int().positive().max(3_600_000).optional(),
  retryOn: z.array(z.number().int().min(100).max(599)).optional(),
  deadline: z.number().int().positive().max(86_400_000).optional(),
  propagateDeadline: z.boolean().optional(),
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

const routingSchema: z.ZodType<RoutingConfig> = z.strictObject({
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

const outlierSchema: z.ZodType<OutlierConfig> = z.strictObject({
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

const fileSchema = z.strictObject({
  region: localityName("region").optional(),
  zone: localityName("zone").optional(),
  failover: z.array(localityName("region")).optional(),
  discovery: z
    .array(
      z
        .record(z.string(), z.unknown())
        .refine((o) => Object.keys(o).length === 1, "each discovery entry names exactly one backend kind"),
    )
    .optional(),
  policy: policySchema.optional(),
  outlierDetection: outlierSchema.optional(),
  routing: routingSchema.optional(),
  settleTimeout: z.number().int().positive().optional(),
});

const optionsSchema = z.object({
  region: localityName("region").optional(),
  zone: localityName("zone").optional(),
  failover: z.array(localityName("region")).optional(),
  discovery: z.array(z.custom<DiscoveryBackend>(isBackend, "not a discovery backend")).optional(),
  policy: policySchema.optional(),
  outlierDetection: outlierSchema.optional(),
  routing: routingSchema.optional(),
  settleTimeout: z.number().int().positive().optional(),
  config: z.string().min(1).optional(),
  env: z.record(z.string(), z.string().optional()).optional(),
});

function isBackend(v: unknown): v is DiscoveryBackend {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof (v as DiscoveryBackend).watch === "function" &&
    typeof (v as DiscoveryBackend).name === "string"
  );
}

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

/** Options of `createMesh`. Every one is optional: the environment, the config file and defaults fill in. */
export interface MeshOptions {
  /** The caller's region; default `MESHLINK_REGION`, then the config file, then unknown. */
  region?: string;
  /** The caller's zone; default `MESHLINK_ZONE`, then the config file. */
  zone?: string;
  /** Regions to fail over to, in order; default `MESHLINK_FAILOVER` (comma-separated). */
  failover?: string[];
  /** Discovery backends; default the config file's `discovery` list. Several may serve one name: their endpoints merge. */
  discovery?: DiscoveryBackend[];
  /** Attempts, per-try timeout and retryable statuses. */
  policy?: PolicyConfig;
  /** When an endpoint is ejected, and for how long. */
  outlierDetection?: OutlierConfig;
  /** Balancing: tiers, spill-over, panic, locality rules, the in-tier policy, slow start. See docs/routing.md. */
  routing?: RoutingConfig;
  /** How long a first call waits for discovery backends that have not answered yet, in ms; default 5 000. */
  settleTimeout?: number;
  /** Path of a JSON or YAML config file; default `MESHLINK_CONFIG`. */
  config?: string;
  /** The environment to read; default `process.env`. */
  env?: Record<string, string | undefined>;
}

/** One discovery backend described in the config file: its kind and raw options. */
export interface BackendSpec {
  /** The kind, e.g. `static`. */
  readonly kind: string;
  /** The backend's options as written. */
  readonly options: unknown;
  /** Where it was written, for error messages: `<file>: discovery[0].static`. */
  readonly source: string;
}

/** The configuration after merging every source. */
export interface ResolvedConfig {
  /** The caller's region ("" when unknown). */
  readonly region: string;
  /** The caller's zone ("" when unknown). */
  readonly zone: string;
  /** Failover regions, in order. */
  readonly failover: readonly string[];
  /** Backends given as options. */
  readonly backends: readonly DiscoveryBackend[];
  /** Backends described in the config file (used only when no backend was given as an option). */
  readonly backendSpecs: readonly BackendSpec[];
  /** Call policy. */
  readonly policy: PolicyConfig;
  /** Outlier detection. */
  readonly outlierDetection: OutlierConfig;
  /** Routing. */
  readonly routing: RoutingConfig;
  /** Discovery settle timeout, ms. */
  readonly settleTimeout: number;
}

function envLocality(
  env: Record<string, string | undefined>,
  name: string,
  what: string,
): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === "") return undefined;
  const value = raw.trim();
  if (!LOCALITY.test(value)) {
    throw new ConfigError(name, raw, `invalid ${what}: letters, digits, '.', '_' and '-' only`);
  }
  return value;
}

/** Parses `MESHLINK_FAILOVER`: comma-separated regions, in order. */
export function parseFailoverList(raw: string, source: string = ENV.FAILOVER): string[] {
  const items = raw.split(",").map((s) => s.trim());
  const seen = new Set<string>();
  items.forEach((item, i) => {
    if (item === "") throw new ConfigError(source, raw, `empty region at position ${i + 1}`);
    if (!LOCALITY.test(item))
      throw new ConfigError(source, raw, `invalid region ${JSON.stringify(item)} at position ${i + 1}`);
    if (seen.has(item)) throw new ConfigError(source, raw, `region ${JSON.stringify(item)} listed twice`);
    seen.add(item);
  });
  return items;
}

/** Reads and validates a JSON or YAML config file. */
export function loadConfigFile(path: string, source: string): z.infer<typeof fileSchema> & { path: string } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(source, path, `cannot read config file: ${(err as Error).message}`, { cause: err });
  }
  let data: unknown;
  try {
    data = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(
      source,
      path,
      `config file is not valid ${/\.json$/i.test(path) ? "JSON" : "YAML"}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  if (data === null || data === undefined) data = {};
  return { ...parseOptions(fileSchema, data, `${path}: `), path };
}

/**
 * Merges options, environment and config file into one validated
 * configuration.
 *
 * @throws {@link ConfigError} naming the option, variable or file field and the bad value.
 */
export function resolveConfig(options: MeshOptions = {}): ResolvedConfig {
  const opts = parseOptions(optionsSchema, options, "");
  const env = opts.env ?? process.env;
  const filePath = opts.config ?? (env[ENV.CONFIG] || undefined);
  const file =
    filePath === undefined ? undefined : loadConfigFile(filePath, opts.config ? "config" : ENV.CONFIG);

  const envFailover = env[ENV.FAILOVER] ? parseFailoverList(env[ENV.FAILOVER]!) : undefined;
  const failover = opts.failover ?? envFailover ?? file?.failover ?? [];
  const region = opts.region ?? envLocality(env, ENV.REGION, "region") ?? file?.region ?? "";
  const dup = failover.find((r, i) => failover.indexOf(r) !== i);
  if (dup !== undefined)
    throw new ConfigError("failover", failover, `region ${JSON.stringify(dup)} listed twice`);

  const backendSpecs = (file?.discovery ?? []).map((entry, i) => {
    const kind = Object.keys(entry)[0]!;
    return { kind, options: entry[kind], source: `${file!.path}: discovery[${i}].${kind}` };
  });

  return {
    region,
    zone: opts.zone ?? envLocality(env, ENV.ZONE, "zone") ?? file?.zone ?? "",
    failover,
    backends: opts.discovery ?? [],
    backendSpecs: opts.discovery ? [] : backendSpecs,
    policy: { ...file?.policy, ...opts.policy },
    outlierDetection: { ...file?.outlierDetection, ...opts.outlierDetection },
    routing: { ...file?.routing, ...opts.routing },
    settleTimeout: opts.settleTimeout ?? file?.settleTimeout ?? 5_000,
  };
}

/**
 * Configuration: explicit options ⊕ environment ⊕ config file ⊕ defaults,
 * in that order of precedence, validated with zod. A bad value fails fast
 * with a {@link ConfigError} that names the option, variable or file field
 * and shows at most a short excerpt of the value. Unknown keys are errors,
 * in code as in files.
 *
 * @module
 */

import { z } from "zod";
import type { DiscoveryBackend } from "../discovery/discovery.js";
import { ConfigError } from "../errors.js";
import { type ResolvedTls, resolveTlsOptions, type TlsOptions } from "../tls/options.js";
import { type EgressOptions, egressOptionsSchema } from "../transport/egress.js";
import { type AdminAddress, type AdminOption, parseAdminAddress } from "./admin.js";
import { parseConfigText, readConfigText } from "./file.js";
import {
  LOCALITY,
  localityName,
  type OutlierConfig,
  outlierSchema,
  type PolicyConfig,
  policySchema,
  type RoutingConfig,
  routingSchema,
} from "./schema.js";
import { parseOptions } from "./validate.js";

export type { AdminAddress, AdminOption } from "./admin.js";
export { MAX_CONFIG_FILE_BYTES } from "./file.js";
export type { OutlierConfig, PolicyConfig, RoutingConfig } from "./schema.js";

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
  /** `host:port` of the read-only admin endpoint (loopback only). */
  ADMIN: "MESHLINK_ADMIN",
} as const;

/** Options of `createMesh`. Every one is optional: the environment, the config file and defaults fill in. */
export interface MeshOptions {
  /** The caller's region; default `MESHLINK_REGION`, then the config file, then unknown. */
  region?: string;
  /** The caller's zone; default `MESHLINK_ZONE`, then the config file. */
  zone?: string;
  /** Regions to fail over to, in order; default `MESHLINK_FAILOVER` (comma-separated). */
  failover?: string[];
  /**
   * Discovery backends; default the config file's `discovery` list. Several
   * may serve one name: their endpoints merge. Given here, they replace the
   * config file's list (the two are not merged): describe every backend in
   * one place.
   */
  discovery?: DiscoveryBackend[];
  /** Attempts, per-try timeout and retryable statuses. */
  policy?: PolicyConfig;
  /** When an endpoint is ejected, and for how long. */
  outlierDetection?: OutlierConfig;
  /** Balancing: tiers, spill-over, panic, locality rules, the in-tier policy, slow start. See docs/routing.md. */
  routing?: RoutingConfig;
  /** How long a first call waits for discovery backends that have not answered yet, in ms; default 5 000. */
  settleTimeout?: number;
  /**
   * Connection pools (undici Agent options); each field defaults to undici's
   * own value. See docs/configuration.md.
   */
  agent?: {
    /** Most connections per endpoint; `null` (the default): no limit, as undici. */
    connections?: number | null | undefined;
    /** How long an idle keep-alive connection stays open when the server sends no `Keep-Alive: timeout`, ms; default 4 000. */
    keepAliveTimeout?: number | undefined;
    /** The longest `Keep-Alive: timeout` of a server that is honoured, ms; default 600 000. */
    keepAliveMaxTimeout?: number | undefined;
    /** Time to establish a connection (TCP and TLS), ms; default 10 000, as undici. */
    connectTimeout?: number | undefined;
    /** Requests in flight on one connection (HTTP/1.1 pipelining); default 1; 0 turns keep-alive off. */
    pipelining?: number | undefined;
    /** TLS sessions cached per endpoint for resumption; default 100; 0 turns resumption off. */
    maxCachedSessions?: number | undefined;
  };
  /**
   * How long a service nobody calls is kept, in ms: after it, its watch,
   * balancer, health records and counters are forgotten (a later call
   * resolves it afresh). Default 600 000 (10 minutes); 0 keeps every
   * service for the life of the mesh; otherwise at least 1 000.
   */
  serviceIdleTimeout?: number;
  /**
   * Mutual TLS: mode, trust bundles, client certificate and key (paths or
   * PEM), identity checks; the environment (`MESHLINK_TLS_*`) fills in.
   * See docs/security.md.
   */
  tls?: TlsOptions;
  /**
   * The egress guard: CIDR ranges an endpoint address must not (`deny`) or
   * must (`allow`) be in, whatever discovery says. Link-local (cloud
   * metadata) and unspecified addresses are denied by default.
   */
  egress?: EgressOptions;
  /**
   * The read-only admin endpoint (JSON describe, resolve and config, see
   * docs/observability.md): `host:port` on a loopback address, or
   * `{ address, allowRemote: true }` for another one; `false` turns it off
   * whatever `MESHLINK_ADMIN` says. Default `MESHLINK_ADMIN`, then the
   * config file; off when none sets it.
   */
  admin?: AdminOption;
  /** Path of a JSON or YAML config file; default `MESHLINK_CONFIG`. */
  config?: string;
  /** The environment to read; default `process.env`. */
  env?: Record<string, string | undefined>;
}

/** One discovery backend described in the config file: its kind and raw options. */
export interface BackendSpec {
  /** The kind, e.g. `static`: lowercase letters, digits and `-`; look it up with `discoveryKind()`. */
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
  /** Connection pool options, every default filled in (undici's own). */
  readonly agent: {
    /** Most connections per endpoint (undici `connections`); `null`: no limit. */
    readonly connections: number | null;
    /** Keep-alive timeout when the server sends none, ms (undici `keepAliveTimeout`). */
    readonly keepAliveTimeout: number;
    /** The longest server keep-alive timeout honoured, ms (undici `keepAliveMaxTimeout`). */
    readonly keepAliveMaxTimeout: number;
    /** Connect timeout, ms (undici `connect.timeout`). */
    readonly connectTimeout: number;
    /** Requests in flight per connection (undici `pipelining`). */
    readonly pipelining: number;
    /** TLS sessions cached per endpoint (undici `connect.maxCachedSessions`). */
    readonly maxCachedSessions: number;
  };
  /** How long an uncalled service is kept, ms; 0: for ever. */
  readonly serviceIdleTimeout: number;
  /** TLS settings and the material read at start-up. */
  readonly tls: ResolvedTls;
  /** The egress rules, and where they were written (for errors). */
  readonly egress: {
    /** The rules as given. */
    readonly options: EgressOptions;
    /** Where they were written: `egress`, or `<file>: egress`. */
    readonly source: string;
  };
  /**
   * What looks wrong but is allowed: the caller's own region listed in
   * `failover`, a zone that belongs to another region than `region`.
   * `createMesh` emits each as a process warning.
   */
  readonly warnings: readonly ConfigWarning[];
  /** Where the admin endpoint listens; undefined when it is off. */
  readonly admin: AdminAddress | undefined;
}

/** A configuration that is allowed but probably not what was meant. */
export interface ConfigWarning {
  /** A stable code: `MESHLINK_W_FAILOVER_OWN_REGION`, `MESHLINK_W_ZONE_OUTSIDE_REGION`. */
  readonly code: string;
  /** The option, variable or file field it is about. */
  readonly source: string;
  /** What is wrong and what follows from it. */
  readonly message: string;
}

/** @internal The defaults of `agent`: undici's own. */
export const AGENT_DEFAULTS: ResolvedConfig["agent"] = Object.freeze({
  connections: null,
  keepAliveTimeout: 4_000,
  keepAliveMaxTimeout: 600_000,
  connectTimeout: 10_000,
  pipelining: 1,
  maxCachedSessions: 100,
});

/** @internal The default `serviceIdleTimeout`: 10 minutes. */
export const SERVICE_IDLE_TIMEOUT_DEFAULT = 600_000;

const agentSchema = z.strictObject({
  connections: z.number().int().min(1).max(100_000).nullable().optional(),
  keepAliveTimeout: z.number().int().min(1).max(3_600_000).optional(),
  keepAliveMaxTimeout: z.number().int().min(1).max(3_600_000).optional(),
  connectTimeout: z.number().int().min(1).max(600_000).optional(),
  pipelining: z.number().int().min(0).max(128).optional(),
  maxCachedSessions: z.number().int().min(0).max(100_000).optional(),
});

// 0 is "never"; below a second a service would be forgotten between the calls
// of one burst; above 2^31 − 1 ms a Node.js timer fires at once.
const serviceIdleTimeoutSchema = z
  .number()
  .int()
  .min(0)
  .max(2_147_483_647)
  .refine((ms) => ms === 0 || ms >= 1_000, "0 (never) or at least 1000 ms");

/** What the config file and the options share. */
const shared = {
  region: localityName("region").optional(),
  zone: localityName("zone").optional(),
  failover: z.array(localityName("region")).optional(),
  policy: policySchema.optional(),
  outlierDetection: outlierSchema.optional(),
  routing: routingSchema.optional(),
  settleTimeout: z.number().int().positive().optional(),
  agent: agentSchema.optional(),
  serviceIdleTimeout: serviceIdleTimeoutSchema.optional(),
  // Checked, with its own redaction of key material, by resolveTlsOptions.
  tls: z.unknown().optional(),
  egress: egressOptionsSchema.optional(),
  admin: z
    .union([
      z.literal(false),
      z.string().min(1),
      z.strictObject({ address: z.string().min(1), allowRemote: z.boolean().optional() }),
    ])
    .optional(),
};

// Discovery entries are checked by `backendSpecsOf`, on the raw values: a
// zod record copies keys into a plain object, where `__proto__` vanishes.
/** @internal The schema of a config file (for `meshlink config check`). */
export const fileSchema = z.strictObject({ ...shared, discovery: z.array(z.unknown()).optional() });

const optionsSchema = z.strictObject({
  ...shared,
  discovery: z.array(z.custom<DiscoveryBackend>(isBackend, "not a discovery backend")).optional(),
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

/** The syntax of a discovery kind, as `registerDiscoveryKind` requires it. */
const KIND = /^[a-z][a-z0-9-]*$/;

/**
 * The backend specs of a config file's `discovery` list. Each entry is a
 * mapping of exactly one kind to its options. Kinds are read as own keys of
 * the entry as parsed and never looked up on an object: `constructor` or
 * `hasOwnProperty` is a kind name like any other (well-formed or not), and
 * an unknown one is reported where the kind registry is consulted.
 */
function backendSpecsOf(entries: readonly unknown[], file: string): BackendSpec[] {
  return entries.map((entry, i) => backendSpecOf(entry, `${file}: discovery[${i}]`));
}

/** @internal One entry of a `discovery` list; `at` names it (`<file>: discovery[0]`). */
export function backendSpecOf(entry: unknown, at: string): BackendSpec {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    throw new ConfigError(
      at,
      entry,
      "each discovery entry maps one backend kind to its options, e.g. `- static: {…}`",
    );
  }
  const keys = Object.keys(entry);
  if (keys.length !== 1) {
    throw new ConfigError(at, keys, `names ${keys.length} backend kinds; each entry names exactly one`);
  }
  const kind = keys[0]!;
  if (!KIND.test(kind)) {
    throw new ConfigError(at, kind, "not a discovery backend kind: lowercase letters, digits and '-' only");
  }
  const options = Object.getOwnPropertyDescriptor(entry, kind)?.value;
  return { kind, options, source: `${at}.${kind}` };
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

/**
 * Reads and validates a JSON or YAML config file: a regular file of at most
 * `MAX_CONFIG_FILE_BYTES`, whose errors name `source` (the variable or
 * option that named it) or the field, never repeating its text.
 */
export function loadConfigFile(
  path: string,
  source: string,
): Omit<z.infer<typeof fileSchema>, "discovery"> & { path: string; discovery?: BackendSpec[] } {
  const data = parseConfigText(readConfigText(path, source), path, source);
  const file = parseOptions(fileSchema, data, `${path}: `);
  const { discovery, ...rest } = file;
  return { ...rest, path, ...(discovery && { discovery: backendSpecsOf(discovery, path) }) };
}

/** `{...a, ...b}` without letting an `undefined` in `b` hide a value in `a`. */
function merge<T extends object>(...layers: (Partial<T> | undefined)[]): T {
  const out: Record<string, unknown> = {};
  for (const layer of layers) {
    if (layer === undefined) continue;
    for (const [key, value] of Object.entries(layer)) if (value !== undefined) out[key] = value;
  }
  return out as T;
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
  const envZone = envLocality(env, ENV.ZONE, "zone");
  const zone = opts.zone ?? envZone ?? file?.zone ?? "";
  const sourceOf = (option: unknown, envValue: unknown, variable: string, field: string) =>
    option !== undefined ? field : envValue !== undefined ? variable : `${file?.path}: ${field}`;
  const warnings = localityWarnings(
    region,
    zone,
    failover,
    sourceOf(opts.failover, envFailover, ENV.FAILOVER, "failover"),
    sourceOf(opts.zone, envZone, ENV.ZONE, "zone"),
  );

  return {
    region,
    zone,
    failover,
    backends: opts.discovery ?? [],
    backendSpecs: opts.discovery ? [] : (file?.discovery ?? []),
    policy: merge<PolicyConfig>(file?.policy, opts.policy),
    outlierDetection: merge<OutlierConfig>(file?.outlierDetection, opts.outlierDetection),
    routing: merge<RoutingConfig>(file?.routing, opts.routing),
    settleTimeout: opts.settleTimeout ?? file?.settleTimeout ?? 5_000,
    agent: Object.freeze(merge<ResolvedConfig["agent"]>(AGENT_DEFAULTS, file?.agent, opts.agent)),
    serviceIdleTimeout: opts.serviceIdleTimeout ?? file?.serviceIdleTimeout ?? SERVICE_IDLE_TIMEOUT_DEFAULT,
    tls: resolveTlsOptions(opts.tls as TlsOptions | undefined, env, file?.tls, file?.path ?? ENV.CONFIG),
    egress:
      opts.egress === undefined && file?.egress !== undefined
        ? { options: file.egress, source: `${file.path}: egress` }
        : { options: opts.egress ?? {}, source: "egress" },
    warnings,
    admin: resolveAdmin(opts.admin, env[ENV.ADMIN], file?.admin, file?.path),
  };
}

// --- Locality warnings (issue 14): allowed, but rarely what was meant.

/**
 * The region a zone name belongs to, when it has AWS's form (`us-east-1a`)
 * or Google Cloud's (`europe-west4-a`). Azure's (`eastus-1`) reads like
 * any `name-1`, so it is not guessed at.
 */
function regionOfZone(zone: string): string | undefined {
  return /^([a-z]{2}(?:-[a-z]+)+-\d+)[a-z]$/.exec(zone)?.[1] ?? /^([a-z]+-[a-z]+\d+)-[a-z]$/.exec(zone)?.[1];
}

/** The caller's own region among its failover regions; a zone of another region than the caller's. */
function localityWarnings(
  region: string,
  zone: string,
  failover: readonly string[],
  failoverSource: string,
  zoneSource: string,
): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  if (region !== "" && failover.includes(region)) {
    warnings.push({
      code: "MESHLINK_W_FAILOVER_OWN_REGION",
      source: failoverSource,
      message:
        `${failoverSource} lists ${region}, the caller's own region: the own region is always tried first ` +
        "(after the own zone), so that entry does nothing. List only the regions to fail over to.",
    });
  }
  const zoneRegion = regionOfZone(zone);
  if (region !== "" && zoneRegion !== undefined && zoneRegion !== region && !zone.startsWith(region)) {
    warnings.push({
      code: "MESHLINK_W_ZONE_OUTSIDE_REGION",
      source: zoneSource,
      message:
        `${zoneSource}=${zone} looks like a zone of ${zoneRegion}, not of the caller's region ${region}: ` +
        "the zone tier holds only endpoints of the caller's region, so it stays empty and calls spread " +
        "over the whole region. Check MESHLINK_REGION and MESHLINK_ZONE.",
    });
  }
  return warnings;
}

/** The admin address from the option, `MESHLINK_ADMIN` or the file, in that order; `false` anywhere first turns it off. */
function resolveAdmin(
  option: AdminOption | undefined,
  envValue: string | undefined,
  fileValue: AdminOption | undefined,
  filePath: string | undefined,
): AdminAddress | undefined {
  if (option !== undefined) return adminOf(option, "admin");
  if (envValue !== undefined && envValue.trim() !== "") return parseAdminAddress(envValue, ENV.ADMIN);
  if (fileValue !== undefined) return adminOf(fileValue, `${filePath}: admin`);
  return undefined;
}

function adminOf(value: AdminOption, source: string): AdminAddress | undefined {
  if (value === false) return undefined;
  if (typeof value === "string") return parseAdminAddress(value, source);
  return parseAdminAddress(value.address, `${source}.address`, value.allowRemote === true);
}

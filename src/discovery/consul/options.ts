/**
 * The Consul backend's options: their public shape, their zod schema and
 * defaults, and the agent address forms Consul's client accepts. How they
 * combine with Consul's environment variables is in `settings.ts`.
 *
 * @module
 */

import { z } from "zod";

const DC_NAME = /^[a-z0-9]([-_a-z0-9]{0,62}[a-z0-9])?$/;
const META_KEY = /^[A-Za-z0-9_-]{1,128}$/;
const SERVICE_CHARS = /^[A-Za-z0-9._-]+$/;
const TEMPLATE_FIELD = /\{([^}]*)\}/g;

/** Problems with a service name template, or undefined when it is fine. */
function templateProblem(template: string): string | undefined {
  for (const m of template.matchAll(TEMPLATE_FIELD)) {
    if (m[1] !== "service" && m[1] !== "namespace")
      return `unknown field {${m[1]}}: use {service} and {namespace}`;
  }
  const literal = template.replace(TEMPLATE_FIELD, "x");
  if (!SERVICE_CHARS.test(literal)) return "letters, digits, '.', '_', '-', {service} and {namespace} only";
  return undefined;
}

/** What an address option or `CONSUL_HTTP_ADDR` means. */
export interface ConsulAddress {
  /** The URL origin requests go to (`http://localhost` for a unix socket). */
  readonly origin: string;
  /** A path prefix, for an agent behind a reverse proxy (`http://host/consul`). */
  readonly prefix: string;
  /** The unix socket, for `unix:///path`. */
  readonly socketPath: string | undefined;
  /** True for HTTPS. */
  readonly tls: boolean;
  /** For messages: the address without credentials. */
  readonly where: string;
}

/**
 * Parses a Consul address as Consul's Go client does: `host[:port]` (HTTP,
 * or HTTPS when `ssl`), `http://host[:port][/prefix]`, `https://…`, or
 * `unix:///path/to/socket`. Returns a problem string for anything else.
 *
 * @internal
 */
export function parseConsulAddress(raw: string, ssl: boolean): ConsulAddress | string {
  const text = raw.trim();
  if (text === "") return "empty address";
  if (text.startsWith("unix://")) {
    const socketPath = text.slice("unix://".length);
    if (!socketPath.startsWith("/"))
      return "a unix socket address needs an absolute path: unix:///path/to/consul.sock";
    return { origin: "http://localhost", prefix: "", socketPath, tls: false, where: text };
  }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== "http" && scheme !== "https") {
    return `unknown scheme ${JSON.stringify(scheme)}: use http://, https:// or unix://`;
  }
  // Consul's client never goes back to plain HTTP once TLS was asked for.
  const tls = scheme === "https" || ssl;
  let url: URL;
  try {
    url = new URL(scheme === undefined ? `http://${text}` : `http://${text.slice(scheme.length + 3)}`);
  } catch {
    return "expected host:port, http(s)://host:port[/prefix] or unix:///path";
  }
  if (url.username !== "" || url.password !== "") return "credentials in the address: use the token option";
  if (url.search !== "" || url.hash !== "") return "no query or fragment allowed";
  const port = url.port === "" ? "" : `:${url.port}`;
  const origin = `${tls ? "https" : "http"}://${url.hostname}${port}`;
  const prefix = url.pathname === "/" ? "" : url.pathname.replace(/\/+$/, "");
  return { origin, prefix, socketPath: undefined, tls, where: `${origin}${prefix}` };
}

const durationMs = (min: number, max: number) => z.number().int().min(min).max(max);

const datacenterSchema = z.strictObject({
  name: z
    .string()
    .regex(DC_NAME, "expected a Consul datacenter name: lowercase letters, digits, '-' and '_'"),
  region: z.string(),
  zone: z.string().optional(),
  cluster: z.string().min(1, "cluster must not be empty").optional(),
  addresses: z.enum(["lan", "wan"]).optional(),
});

const tlsSchema = z.strictObject({
  ca: z.string().min(1).optional(),
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  serverName: z.string().min(1).optional(),
  verify: z.boolean().optional(),
});

const baseShape = {
  name: z.string().min(1).optional(),
  address: z
    .string()
    .refine((s) => typeof parseConsulAddress(s, false) !== "string", {
      error: (issue) => parseConsulAddress(String(issue.input), false) as string,
    })
    .optional(),
  token: z.string().min(1).optional(),
  tokenFile: z.string().min(1).optional(),
  tls: tlsSchema.optional(),
  datacenters: z.array(datacenterSchema).min(1).optional(),
  localDatacenter: z.string().regex(DC_NAME, "expected a Consul datacenter name").optional(),
  health: z.enum(["passing", "warning"]).optional(),
  tags: z.array(z.string().min(1)).optional(),
  nodeMeta: z
    .record(z.string().regex(META_KEY, "meta keys: letters, digits, '_' and '-' (at most 128)"), z.string())
    .optional(),
  zoneKeys: z
    .array(z.string().regex(META_KEY, "meta keys: letters, digits, '_' and '-' (at most 128)"))
    .optional(),
  serviceName: z
    .union([
      z.literal(false),
      z
        .string()
        .min(1)
        .refine((s) => templateProblem(s) === undefined, {
          error: (issue) => templateProblem(String(issue.input)),
        }),
    ])
    .optional(),
  // Consul caps a blocking query's wait at 10 minutes.
  wait: durationMs(1, 600_000).optional(),
  timeout: durationMs(1, 600_000).optional(),
  backoff: z
    .strictObject({ base: durationMs(1, 60_000).optional(), max: durationMs(1, 3_600_000).optional() })
    .optional(),
  rateLimit: z
    .strictObject({
      interval: durationMs(0, 3_600_000).optional(),
      burst: z.number().int().min(1).max(100).optional(),
    })
    .optional(),
};

function refineOptions(o: z.infer<z.ZodObject<typeof baseShape>>, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  o.datacenters?.forEach((dc, i) => {
    if (seen.has(dc.name)) {
      ctx.addIssue({ code: "custom", message: "datacenter listed twice", path: ["datacenters", i, "name"] });
    }
    seen.add(dc.name);
  });
  if ((o.tls?.cert === undefined) !== (o.tls?.key === undefined)) {
    ctx.addIssue({ code: "custom", message: "give both cert and key, or neither", path: ["tls"] });
  }
  if ((o.backoff?.base ?? DEFAULTS.backoffBase) > (o.backoff?.max ?? DEFAULTS.backoffMax)) {
    ctx.addIssue({
      code: "custom",
      message: "backoff.base must not exceed backoff.max",
      path: ["backoff", "base"],
    });
  }
}

/** @internal The options a config file may give (`discovery: [{ consul: … }]`). */
export const consulFileSchema = z.strictObject(baseShape).superRefine(refineOptions);

/** @internal The options code may give: the file's, plus the environment to read. */
export const consulOptionsSchema = z
  .strictObject({ ...baseShape, env: z.record(z.string(), z.string().optional()).optional() })
  .superRefine(refineOptions);

/** @internal Parsed options. */
export type ParsedConsulOptions = z.output<typeof consulOptionsSchema>;

/** @internal Defaults, ms where a duration. */
export const DEFAULTS = {
  name: "consul",
  address: "127.0.0.1:8500",
  wait: 300_000,
  timeout: 10_000,
  backoffBase: 250,
  backoffMax: 30_000,
  rateInterval: 1_000,
  rateBurst: 2,
  zoneKeys: ["zone"],
  serviceName: "{service}",
} as const;

/** One Consul datacenter: a cluster of its own, with its locality. */
export interface ConsulDatacenter {
  /** The datacenter's name in Consul (the `dc` query parameter, `svc.service.<name>.consul`). */
  name: string;
  /** The region its endpoints are in (`""` when unknown). */
  region: string;
  /** The zone of endpoints whose meta names none (see `zoneKeys`); default `""`. */
  zone?: string;
  /** The cluster name its endpoints carry (`endpoint.cluster`); default the datacenter's name. */
  cluster?: string;
  /**
   * Which addresses to connect to: `lan` (the service address, else the node
   * address) or `wan` (the `wan`/`wan_ipv4`/`wan_ipv6` tagged addresses
   * first, as Consul itself picks them across datacenters). Default: `lan`
   * for `localDatacenter`, `wan` for the others.
   */
  addresses?: "lan" | "wan";
}

/** TLS towards the Consul agent. Each file option takes a path or the PEM text itself. */
export interface ConsulTlsOptions {
  /** CA certificate(s) that signed the agent's certificate; default `CONSUL_CACERT`, then `CONSUL_CAPATH`, then the system's. */
  ca?: string;
  /** Client certificate, for agents with `verify_incoming`; default `CONSUL_CLIENT_CERT`. */
  cert?: string;
  /** The client certificate's key; default `CONSUL_CLIENT_KEY`. */
  key?: string;
  /** The name the agent's certificate must carry (SNI); default `CONSUL_TLS_SERVER_NAME`, then the address's host. */
  serverName?: string;
  /** Verify the agent's certificate; default true (`CONSUL_HTTP_SSL_VERIFY=false` turns it off). */
  verify?: boolean;
}

/** Options of `consulDiscovery`. Durations are in milliseconds. */
export interface ConsulDiscoveryOptions {
  /** Instance name shown in `describe()`, errors and `endpoint.backend`; default `consul`. */
  name?: string;
  /**
   * The agent's HTTP API: `host:port`, `http://host:port[/prefix]`,
   * `https://…` or `unix:///path/to/consul.sock`; default `CONSUL_HTTP_ADDR`,
   * then `127.0.0.1:8500`.
   */
  address?: string;
  /** ACL token, sent as `X-Consul-Token`; default `CONSUL_HTTP_TOKEN_FILE`'s content, then `CONSUL_HTTP_TOKEN`. */
  token?: string;
  /** A file holding the ACL token, read once when the backend is built; wins over `token`. */
  tokenFile?: string;
  /** TLS towards the agent (HTTPS addresses only). */
  tls?: ConsulTlsOptions;
  /** The datacenters to ask, each a cluster with a region; default the agent's own datacenter, region unknown. */
  datacenters?: ConsulDatacenter[];
  /** The agent's own datacenter (its endpoints use LAN addresses); default the first of `datacenters`. */
  localDatacenter?: string;
  /** Which instances to use: `passing` (every check passing; default) or `warning` (passing or warning). */
  health?: "passing" | "warning";
  /** Only instances carrying every one of these tags (`?tag=`). */
  tags?: string[];
  /** Only instances on nodes with these meta values (`?node-meta=key:value`). */
  nodeMeta?: Record<string, string>;
  /** Meta keys that name an instance's zone, looked up in service meta, then node meta; default `["zone"]`. */
  zoneKeys?: string[];
  /**
   * The Consul service a Kubernetes-style name (`svc.ns`,
   * `svc.ns.svc.cluster.local`) stands for: a template of `{service}` and
   * `{namespace}`, e.g. `{namespace}-{service}`; default `{service}`.
   * `false`: this backend does not answer Kubernetes-style names.
   */
  serviceName?: string | false;
  /** How long one blocking query may wait for a change (Consul's `wait`, at most 10 minutes); default 300 000 (5 minutes). */
  wait?: number;
  /** How long a query may take beyond its wait (connect, answer, Consul's wait/16 jitter); default 10 000. */
  timeout?: number;
  /** Back-off between failed queries: jittered, doubling from `base` (default 250) to `max` (default 30 000). */
  backoff?: {
    /** The first retry's delay, before jitter; default 250. */
    base?: number;
    /** The longest delay; default 30 000. */
    max?: number;
  };
  /**
   * The floor on the query loop when Consul's index moves without a change
   * of endpoints (Consul's "rate limit" rule): a token bucket of `burst`
   * queries (default 2), one more every `interval` (default 1 000; 0 turns
   * the limit off). A change of endpoints never waits.
   */
  rateLimit?: {
    /** One more query every `interval` ms once the burst is spent; default 1 000; 0 turns the limit off. */
    interval?: number;
    /** Queries that may follow each other without waiting; default 2. */
    burst?: number;
  };
  /** The environment to read `CONSUL_*` variables from; default `process.env`. */
  env?: Record<string, string | undefined>;
}

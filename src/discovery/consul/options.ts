/**
 * The Consul backend's options: their zod schema, their public shape, and
 * how they combine with Consul's own environment variables (the ones the
 * Consul CLI and Go API client read) into the settings the backend runs on.
 * Explicit options win over the environment, as in Consul's client.
 *
 * @module
 */

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { ConfigError } from "../../errors.js";

/** The environment variables the Consul backend reads: Consul's own names. */
export const CONSUL_ENV = {
  /** The agent's address: `host:port`, `http://…`, `https://…` or `unix:///path`. */
  ADDR: "CONSUL_HTTP_ADDR",
  /** The ACL token. */
  TOKEN: "CONSUL_HTTP_TOKEN",
  /** A file holding the ACL token; wins over `CONSUL_HTTP_TOKEN`, as in Consul's client. */
  TOKEN_FILE: "CONSUL_HTTP_TOKEN_FILE",
  /** `true`: HTTPS for an address without a scheme (and for `http://`, which never downgrades a request for TLS). */
  SSL: "CONSUL_HTTP_SSL",
  /** `false`: do not verify the agent's certificate. */
  SSL_VERIFY: "CONSUL_HTTP_SSL_VERIFY",
  /** The CA certificate file that signed the agent's certificate. */
  CACERT: "CONSUL_CACERT",
  /** A directory of CA certificate files. */
  CAPATH: "CONSUL_CAPATH",
  /** The client certificate file, for agents with `verify_incoming`. */
  CLIENT_CERT: "CONSUL_CLIENT_CERT",
  /** The client certificate's private key file. */
  CLIENT_KEY: "CONSUL_CLIENT_KEY",
  /** The name the agent's certificate is checked against (SNI). */
  TLS_SERVER_NAME: "CONSUL_TLS_SERVER_NAME",
  /** HTTP basic authentication, `user:password`, for an agent behind a proxy. */
  AUTH: "CONSUL_HTTP_AUTH",
} as const;

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

/** A datacenter as the backend asks it. */
export interface ResolvedDatacenter {
  /** The `dc` parameter; undefined: the agent's own datacenter (no parameter). */
  readonly name: string | undefined;
  /** Its name in `describe()` and errors. */
  readonly label: string;
  /** The region of its endpoints. */
  readonly region: string;
  /** The zone of endpoints whose meta names none. */
  readonly zone: string;
  /** The cluster its endpoints carry; undefined: each entry's `Node.Datacenter`. */
  readonly cluster: string | undefined;
  /** Prefer WAN tagged addresses. */
  readonly wan: boolean;
}

/** TLS material for the agent connection, read. */
export interface ConsulTlsMaterial {
  readonly ca: string | undefined;
  readonly cert: string | undefined;
  readonly key: string | undefined;
  readonly servername: string | undefined;
  readonly rejectUnauthorized: boolean;
}

/** Everything the backend runs on, after options, environment and defaults. */
export interface ConsulSettings {
  readonly name: string;
  readonly address: ConsulAddress;
  /** Headers every query carries (the token, basic auth). Never shown. */
  readonly headers: Readonly<Record<string, string>>;
  readonly tls: ConsulTlsMaterial | undefined;
  readonly datacenters: readonly ResolvedDatacenter[];
  readonly localDatacenter: string | undefined;
  readonly passingOnly: boolean;
  readonly tags: readonly string[];
  readonly nodeMeta: readonly (readonly [string, string])[];
  readonly zoneKeys: readonly string[];
  /** The template for Kubernetes-style names, or false. */
  readonly serviceName: string | false;
  readonly wait: number;
  readonly timeout: number;
  readonly backoffBase: number;
  readonly backoffMax: number;
  readonly rateInterval: number;
  readonly rateBurst: number;
}

/** Go's strconv.ParseBool, which Consul's client uses for its boolean variables. */
function parseGoBool(source: string, raw: string): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(raw)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(raw)) return false;
  throw new ConfigError(source, raw, "expected true or false");
}

/** A PEM option: the text itself, or a file to read. The content never goes into an error. */
function readPem(source: string, value: string): string {
  if (value.includes("-----BEGIN")) return value;
  try {
    return readFileSync(value, "utf8");
  } catch (err) {
    throw new ConfigError(source, value, `cannot read: ${(err as NodeJS.ErrnoException).code ?? "error"}`, {
      cause: err,
    });
  }
}

/** Every CA certificate file of a directory (`CONSUL_CAPATH`), concatenated. */
function readCaPath(source: string, dir: string): string {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (err) {
    throw new ConfigError(source, dir, `cannot read: ${(err as NodeJS.ErrnoException).code ?? "error"}`, {
      cause: err,
    });
  }
  const pems = names
    .map((n) => join(dir, n))
    .filter((p) => statSync(p, { throwIfNoEntry: false })?.isFile() === true)
    .map((p) => readFileSync(p, "utf8"))
    .filter((text) => text.includes("-----BEGIN CERTIFICATE-----"));
  if (pems.length === 0) throw new ConfigError(source, dir, "no PEM certificate in this directory");
  return pems.join("\n");
}

function readToken(source: string, path: string): string | undefined {
  try {
    const token = readFileSync(path, "utf8").trim();
    return token === "" ? undefined : token;
  } catch (err) {
    throw new ConfigError(
      source,
      path,
      `cannot read the token file: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Combines parsed options, the environment and defaults. `prefix` names
 * where the options were written, for errors.
 *
 * @throws {@link ConfigError} naming the option or variable and the value.
 * @internal
 */
export function resolveConsulSettings(options: ParsedConsulOptions, prefix: string): ConsulSettings {
  const env = options.env ?? process.env;
  const at = (field: string) => (prefix === "" ? field : `${prefix}.${field}`);
  const envValue = (name: string) => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };

  const sslRaw = envValue(CONSUL_ENV.SSL);
  const ssl = sslRaw === undefined ? false : parseGoBool(CONSUL_ENV.SSL, sslRaw);
  let address: ConsulAddress;
  if (options.address !== undefined) {
    address = parseConsulAddress(options.address, false) as ConsulAddress;
  } else {
    const raw = envValue(CONSUL_ENV.ADDR);
    const parsed = parseConsulAddress(raw ?? DEFAULTS.address, ssl);
    if (typeof parsed === "string") throw new ConfigError(CONSUL_ENV.ADDR, raw, parsed);
    address = parsed;
  }

  // Consul's precedence: the token file option, the token option, then the
  // file variable, then the token variable.
  let token: string | undefined;
  if (options.tokenFile !== undefined) token = readToken(at("tokenFile"), options.tokenFile);
  else if (options.token !== undefined) token = options.token;
  else if (envValue(CONSUL_ENV.TOKEN_FILE) !== undefined) {
    token = readToken(CONSUL_ENV.TOKEN_FILE, envValue(CONSUL_ENV.TOKEN_FILE)!);
  } else token = envValue(CONSUL_ENV.TOKEN);
  const headers: Record<string, string> = {};
  if (token !== undefined) headers["x-consul-token"] = token;
  const auth = envValue(CONSUL_ENV.AUTH);
  if (auth !== undefined)
    headers.authorization = `Basic ${Buffer.from(auth.includes(":") ? auth : `${auth}:`).toString("base64")}`;

  let tls: ConsulTlsMaterial | undefined;
  if (address.tls) {
    const o = options.tls ?? {};
    let ca: string | undefined;
    if (o.ca !== undefined) ca = readPem(at("tls.ca"), o.ca);
    else if (envValue(CONSUL_ENV.CACERT) !== undefined)
      ca = readPem(CONSUL_ENV.CACERT, envValue(CONSUL_ENV.CACERT)!);
    else if (envValue(CONSUL_ENV.CAPATH) !== undefined)
      ca = readCaPath(CONSUL_ENV.CAPATH, envValue(CONSUL_ENV.CAPATH)!);
    let cert: string | undefined;
    let key: string | undefined;
    if (o.cert !== undefined) {
      cert = readPem(at("tls.cert"), o.cert);
      key = readPem(at("tls.key"), o.key!);
    } else {
      const certFile = envValue(CONSUL_ENV.CLIENT_CERT);
      const keyFile = envValue(CONSUL_ENV.CLIENT_KEY);
      if ((certFile === undefined) !== (keyFile === undefined)) {
        const [missing, given] =
          certFile === undefined
            ? [CONSUL_ENV.CLIENT_CERT, CONSUL_ENV.CLIENT_KEY]
            : [CONSUL_ENV.CLIENT_KEY, CONSUL_ENV.CLIENT_CERT];
        throw new ConfigError(missing, undefined, `not set, but ${given} is: set both, or neither`);
      }
      if (certFile !== undefined) {
        cert = readPem(CONSUL_ENV.CLIENT_CERT, certFile);
        key = readPem(CONSUL_ENV.CLIENT_KEY, keyFile!);
      }
    }
    const verifyRaw = envValue(CONSUL_ENV.SSL_VERIFY);
    const verify =
      o.verify ?? (verifyRaw === undefined ? true : parseGoBool(CONSUL_ENV.SSL_VERIFY, verifyRaw));
    const serverName = o.serverName ?? envValue(CONSUL_ENV.TLS_SERVER_NAME);
    tls = {
      ca,
      cert,
      key,
      // Consul's client strips a port from CONSUL_TLS_SERVER_NAME.
      servername: serverName?.replace(/:\d+$/, ""),
      rejectUnauthorized: verify,
    };
  }

  const localDatacenter = options.localDatacenter ?? options.datacenters?.[0]?.name;
  const datacenters: ResolvedDatacenter[] = options.datacenters?.map((dc) => ({
    name: dc.name,
    label: dc.name,
    region: dc.region,
    zone: dc.zone ?? "",
    cluster: dc.cluster ?? dc.name,
    wan: dc.addresses === undefined ? dc.name !== localDatacenter : dc.addresses === "wan",
  })) ?? [{ name: undefined, label: "agent", region: "", zone: "", cluster: undefined, wan: false }];

  return {
    name: options.name ?? DEFAULTS.name,
    address,
    headers,
    tls,
    datacenters,
    localDatacenter,
    passingOnly: (options.health ?? "passing") === "passing",
    tags: options.tags ?? [],
    nodeMeta: Object.entries(options.nodeMeta ?? {}),
    zoneKeys: options.zoneKeys ?? DEFAULTS.zoneKeys,
    serviceName: options.serviceName ?? DEFAULTS.serviceName,
    wait: options.wait ?? DEFAULTS.wait,
    timeout: options.timeout ?? DEFAULTS.timeout,
    backoffBase: options.backoff?.base ?? DEFAULTS.backoffBase,
    backoffMax: options.backoff?.max ?? DEFAULTS.backoffMax,
    rateInterval: options.rateLimit?.interval ?? DEFAULTS.rateInterval,
    rateBurst: options.rateLimit?.burst ?? DEFAULTS.rateBurst,
  };
}

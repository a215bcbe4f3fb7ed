/**
 * The settings the Consul backend runs on: its parsed options combined with
 * Consul's own environment variables (the ones the Consul CLI and Go API
 * client read), TLS files and the token file read, and defaults filled in.
 * Explicit options win over the environment, as in Consul's client.
 *
 * @module
 */

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../../errors.js";
import { type ConsulAddress, DEFAULTS, type ParsedConsulOptions, parseConsulAddress } from "./options.js";

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
    // CONSUL_HTTP_SSL applies to an explicit address too, as in Consul's
    // client, where the scheme is a setting of its own.
    address = parseConsulAddress(options.address, ssl) as ConsulAddress;
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

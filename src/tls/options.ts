/**
 * The `tls` option: its schema, and its resolution from the explicit
 * option, the environment (`MESHLINK_TLS_*`) and the config file, in that
 * order of precedence, field by field. Material is read and checked here,
 * at start-up: a bad mode, an unreadable file or a mismatched pair fails
 * `createMesh` with a {@link ConfigError} that names the option or variable
 * — and shows at most a path or the kind and size of inline PEM, never its
 * content.
 *
 * @module
 */

import { z } from "zod";
import { parseOptions } from "../config/validate.js";
import { ConfigError, TlsMaterialError } from "../errors.js";
import { compileIdentityTemplate, DEFAULT_DNS_TEMPLATE, DEFAULT_SPIFFE_TEMPLATE } from "./identity.js";
import {
  buildMaterial,
  excerpt,
  isPem,
  type MaterialSpec,
  type MaterialSpecs,
  readTextsSync,
} from "./material.js";
import type { ReloadOptions } from "./source.js";
import type { IdentityMatch, IdentitySettings, TlsMaterial, TlsMode } from "./tls.js";

/** The environment variables of the `tls` option. Their names are part of the public contract. */
export const TLS_ENV = {
  /** Path of the CA bundle (PEM). */
  CA: "MESHLINK_TLS_CA",
  /** Path of the client certificate chain (PEM). */
  CERT: "MESHLINK_TLS_CERT",
  /** Path of the client private key (PEM). */
  KEY: "MESHLINK_TLS_KEY",
  /** `strict`, `permissive` or `disable` (case-insensitive). */
  MODE: "MESHLINK_TLS_MODE",
} as const;

/** The `tls` option and config file key. Every field is optional. */
export interface TlsOptions {
  /**
   * `strict`, `permissive` or `disable`. Default: `disable` when no material
   * is configured, else `permissive` (Istio's default).
   */
  mode?: "strict" | "permissive" | "disable" | undefined;
  /** The trust bundle: a path, or PEM text. Needed in `strict` and `permissive` modes. */
  ca?: string | undefined;
  /** The client certificate chain, leaf first: a path, or PEM text. Needed in `strict` mode. */
  cert?: string | undefined;
  /** The client private key: a path, or PEM text. Given with `cert`. */
  key?: string | undefined;
  /**
   * Clusters in other trust domains: a connection to an endpoint of such a
   * cluster trusts only that bundle, and the template's `{trustDomain}` is
   * the cluster's when given.
   */
  clusters?:
    | Record<
        string,
        {
          /** The cluster's trust bundle: a path, or PEM text. */
          ca: string;
          /** The cluster's SPIFFE trust domain; default the global one. */
          trustDomain?: string | undefined;
        }
      >
    | undefined;
  /** How servers' identities are expected and matched. */
  identity?:
    | {
        /**
         * The expected identity when discovery gives none. Placeholders:
         * `{trustDomain}`, `{namespace}`, `{service}`, `{cluster}`,
         * `{datacenter}`, `{host}`. Default
         * `spiffe://{trustDomain}/ns/{namespace}/sa/{service}` (`{host}` in `dns` mode).
         */
        template?: string | undefined;
        /** The SPIFFE trust domain; default `cluster.local`. */
        trustDomain?: string | undefined;
        /** `spiffe` (URI SAN, default) or `dns` (DNS SAN). */
        match?: "spiffe" | "dns" | undefined;
      }
    | undefined;
  /** How long before a certificate's not-after `onExpiring` fires, ms; default a fifth of its lifetime, at most 7 days. */
  expiryWarning?: number | undefined;
  /** Reloading of rotated files, or `false` to read them once. */
  reload?: false | ReloadOptions | undefined;
}

const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const material = z.string().min(1, "must not be empty").max(1_000_000);

/** The zod schema of {@link TlsOptions}. */
export const tlsOptionsSchema: z.ZodType<TlsOptions> = z.strictObject({
  mode: z.enum(["strict", "permissive", "disable"]).optional(),
  ca: material.optional(),
  cert: material.optional(),
  key: material.optional(),
  clusters: z
    .record(
      z.string().min(1),
      z.strictObject({
        ca: material,
        trustDomain: z
          .string()
          .regex(TRUST_DOMAIN, "lower-case letters, digits, '.', '_' and '-'")
          .optional(),
      }),
    )
    .optional(),
  identity: z
    .strictObject({
      template: z.string().min(1).max(1000).optional(),
      trustDomain: z.string().regex(TRUST_DOMAIN, "lower-case letters, digits, '.', '_' and '-'").optional(),
      match: z.enum(["spiffe", "dns"]).optional(),
    })
    .optional(),
  expiryWarning: z
    .number()
    .int()
    .min(0)
    .max(366 * 86_400_000)
    .optional(),
  reload: z
    .union([
      z.literal(false),
      z.strictObject({
        debounce: z.number().int().min(0).max(60_000).optional(),
        interval: z.number().int().min(100).max(86_400_000).optional(),
      }),
    ])
    .optional(),
});

/** The `tls` configuration after merging every source, with its material read and checked. */
export interface ResolvedTls {
  /** The mode in force. */
  readonly mode: TlsMode;
  /** Where the mode came from (`tls.mode`, `MESHLINK_TLS_MODE`, a file field, or `default`). */
  readonly modeSource: string;
  /** Where each piece of material comes from. */
  readonly specs: MaterialSpecs;
  /** The material as read at start-up; undefined when there is none (or in `disable` mode, where it is not read). */
  readonly material: TlsMaterial | undefined;
  /** Identity settings. */
  readonly identity: IdentitySettings;
  /** Trust domains of clusters that have their own. */
  readonly clusterTrustDomains: ReadonlyMap<string, string>;
  /** `onExpiring` lead time, ms; undefined for the default (a fifth of each certificate's lifetime, at most 7 days). */
  readonly expiryWarning: number | undefined;
  /** Reload settings, or false. */
  readonly reload: Required<ReloadOptions> | false;
}

/** Default debounce of file events before a reload, ms. */
export const DEFAULT_RELOAD_DEBOUNCE = 200;
/** Default polling interval for rotations that file events miss, ms. */
export const DEFAULT_RELOAD_INTERVAL = 10_000;

/** A copy with inline PEM replaced by its {@link excerpt}, for error messages. */
function redact(value: unknown): unknown {
  if (typeof value === "string") return isPem(value) ? excerpt(value) : value;
  if (Array.isArray(value)) return value.map(redact);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v)]));
  }
  return value;
}

/** Validates without ever putting inline PEM (a private key) into an error message. */
function parseTls(value: unknown, prefix: string): TlsOptions {
  const result = tlsOptionsSchema.safeParse(value);
  if (result.success) return result.data;
  parseOptions(tlsOptionsSchema, redact(value), prefix);
  throw new ConfigError(
    prefix.replace(/\.$/, ""),
    "<redacted>",
    result.error.issues[0]?.message ?? "invalid",
  );
}

function envValue(env: Record<string, string | undefined>, name: string): string | undefined {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? undefined : raw.trim();
}

function spec(value: string, source: string): MaterialSpec {
  return isPem(value) ? { source, pem: value } : { source, path: value };
}

interface Picked {
  readonly value: string;
  readonly source: string;
}

/**
 * Merges the `tls` option, the environment and the config file's `tls` key
 * (explicit option, then environment, then file, field by field), reads the
 * material and checks it.
 *
 * Defaults: mode `disable` when no material is configured anywhere, else
 * `permissive`; identity match `spiffe`, trust domain `cluster.local`,
 * template `spiffe://{trustDomain}/ns/{namespace}/sa/{service}`. In
 * `disable` mode the material is not read. `strict` needs a CA bundle, a
 * certificate and a key; `permissive` a CA bundle (a certificate and key
 * are sent when given).
 *
 * @param option The `tls` option of `createMesh`.
 * @param env The environment (`MESHLINK_TLS_CA`, `_CERT`, `_KEY` are paths or PEM; `MESHLINK_TLS_MODE`).
 * @param file The config file's `tls` key, unvalidated.
 * @param fileSource Names the file in errors (its path).
 * @throws {@link ConfigError} naming the option, variable or file field.
 * @example
 * ```ts
 * const resolved = resolveTlsOptions(options.tls, process.env, file?.tls, file?.path ?? "config file");
 * const policy = createTlsPolicy(resolved);
 * ```
 */
export function resolveTlsOptions(
  option: TlsOptions | undefined,
  env: Record<string, string | undefined>,
  file: unknown,
  fileSource: string,
): ResolvedTls {
  const opt = option === undefined ? {} : parseTls(option, "tls");
  const fromFile = file === undefined || file === null ? {} : parseTls(file, `${fileSource}: tls`);
  const filePrefix = `${fileSource}: tls`;

  const pick = (field: "ca" | "cert" | "key", envName: string): Picked | undefined => {
    if (opt[field] !== undefined) return { value: opt[field], source: `tls.${field}` };
    const e = envValue(env, envName);
    if (e !== undefined) return { value: e, source: envName };
    if (fromFile[field] !== undefined) return { value: fromFile[field], source: `${filePrefix}.${field}` };
    return undefined;
  };
  const ca = pick("ca", TLS_ENV.CA);
  const cert = pick("cert", TLS_ENV.CERT);
  const key = pick("key", TLS_ENV.KEY);
  const clustersOpt = opt.clusters !== undefined ? opt.clusters : fromFile.clusters;
  const clustersPrefix = opt.clusters !== undefined ? "tls.clusters" : `${filePrefix}.clusters`;

  let mode: TlsMode;
  let modeSource: string;
  const envMode = envValue(env, TLS_ENV.MODE);
  if (opt.mode !== undefined) {
    mode = opt.mode;
    modeSource = "tls.mode";
  } else if (envMode !== undefined) {
    const m = envMode.toLowerCase();
    if (m !== "strict" && m !== "permissive" && m !== "disable") {
      throw new ConfigError(TLS_ENV.MODE, env[TLS_ENV.MODE], "expected strict, permissive or disable");
    }
    mode = m;
    modeSource = TLS_ENV.MODE;
  } else if (fromFile.mode !== undefined) {
    mode = fromFile.mode;
    modeSource = `${filePrefix}.mode`;
  } else {
    const any = ca ?? cert ?? key ?? (clustersOpt && Object.keys(clustersOpt).length > 0 ? true : undefined);
    mode = any === undefined ? "disable" : "permissive";
    modeSource = "default";
  }

  const idOpt = { ...fromFile.identity, ...stripUndefined(opt.identity) };
  const match: IdentityMatch = idOpt.match ?? "spiffe";
  const idSource =
    opt.identity?.template !== undefined ? "tls.identity.template" : `${filePrefix}.identity.template`;
  const template = idOpt.template ?? (match === "spiffe" ? DEFAULT_SPIFFE_TEMPLATE : DEFAULT_DNS_TEMPLATE);
  compileIdentityTemplate(template, match, idSource);

  const clusters = new Map<string, MaterialSpec>();
  const clusterTrustDomains = new Map<string, string>();
  for (const [name, c] of Object.entries(clustersOpt ?? {})) {
    clusters.set(name, spec(c.ca, `${clustersPrefix}.${name}.ca`));
    if (c.trustDomain !== undefined) clusterTrustDomains.set(name, c.trustDomain);
  }
  const specs: MaterialSpecs = {
    ca: ca && spec(ca.value, ca.source),
    cert: cert && spec(cert.value, cert.source),
    key: key && spec(key.value, key.source),
    clusters,
  };

  const reloadOpt = opt.reload !== undefined ? opt.reload : fromFile.reload;
  const resolved = {
    mode,
    modeSource,
    specs,
    identity: { template, trustDomain: idOpt.trustDomain ?? "cluster.local", match },
    clusterTrustDomains,
    expiryWarning: opt.expiryWarning ?? fromFile.expiryWarning,
    reload:
      reloadOpt === false
        ? (false as const)
        : {
            debounce: reloadOpt?.debounce ?? DEFAULT_RELOAD_DEBOUNCE,
            interval: reloadOpt?.interval ?? DEFAULT_RELOAD_INTERVAL,
          },
  };
  if (mode === "disable") return { ...resolved, material: undefined };

  const need = (what: string, picked: unknown, option: string, variable: string) => {
    if (picked === undefined) {
      throw new ConfigError(modeSource, mode, `${mode} mode needs ${what} (${option} or ${variable})`);
    }
  };
  need("a CA bundle", ca, "tls.ca", TLS_ENV.CA);
  if (mode === "strict") {
    need("a client certificate", cert, "tls.cert", TLS_ENV.CERT);
    need("a client private key", key, "tls.key", TLS_ENV.KEY);
  }
  if ((cert === undefined) !== (key === undefined)) {
    const given = (cert ?? key)!;
    throw new ConfigError(
      given.source,
      excerpt(given.value),
      cert === undefined
        ? `a private key needs its certificate (tls.cert or ${TLS_ENV.CERT})`
        : `a certificate needs its private key (tls.key or ${TLS_ENV.KEY})`,
    );
  }

  let loaded: TlsMaterial;
  try {
    loaded = buildMaterial(specs, readTextsSync(specs), 1);
  } catch (err) {
    if (!(err instanceof TlsMaterialError)) throw err;
    throw configErrorFor(err, specs);
  }
  return { ...resolved, material: loaded };
}

/** Turns a material error into a ConfigError naming the option or variable and the path (or the kind of inline PEM). */
function configErrorFor(err: TlsMaterialError, specs: MaterialSpecs): ConfigError {
  const all = [specs.ca, specs.cert, specs.key, ...specs.clusters.values()].filter(
    (s): s is MaterialSpec => s !== undefined,
  );
  const s = all.find((x) => err.source === x.source || err.source.startsWith(`${x.source} (`));
  const value = s === undefined ? undefined : (s.path ?? excerpt(s.pem!));
  const problem = err.message.slice(err.source.length + 2);
  return new ConfigError(s?.source ?? err.source, value, problem, { cause: err });
}

function stripUndefined<T extends object>(o: T | undefined): Partial<T> {
  if (o === undefined) return {};
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

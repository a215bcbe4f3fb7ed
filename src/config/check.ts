/**
 * Checking a configuration for CI (`meshlink config check`): every problem
 * of the environment and the config file, not only the first that
 * `createMesh` would throw. Nothing is started: discovery backends are built
 * (their factories validate their options) and closed at once.
 *
 * @module
 */

import { registerBuiltinDiscoveryKinds } from "../discovery/builtins.js";
import { discoveryKind, discoveryKinds } from "../discovery/kinds.js";
import { ConfigError } from "../errors.js";
import { type AdminOption, parseAdminAddress } from "./admin.js";
import { backendSpecOf, ENV, fileSchema, parseFailoverList, resolveConfig } from "./config.js";
import { parseConfigText, readConfigText } from "./file.js";
import { validationErrors } from "./validate.js";

/** One problem found by {@link checkConfig}. */
export interface ConfigProblem {
  /** The option, variable or file field that is wrong. */
  readonly source: string;
  /** The whole message: source, value excerpt (redacted where secret) and problem. */
  readonly message: string;
}

/** What {@link checkConfig} checked and found. */
export interface ConfigCheck {
  /** The config file checked, if any. */
  readonly file: string | undefined;
  /** The `MESHLINK_*` variables that are set. */
  readonly variables: readonly string[];
  /** Every problem, in the order found; empty when the configuration is valid. */
  readonly problems: readonly ConfigProblem[];
}

const problemOf = (err: unknown, fallbackSource: string): ConfigProblem =>
  err instanceof ConfigError
    ? { source: err.source, message: err.message }
    : { source: fallbackSource, message: `${fallbackSource}: ${(err as Error)?.message ?? String(err)}` };

/**
 * Checks the environment and the config file (`file`, else
 * `MESHLINK_CONFIG`) as `createMesh` would read them, and returns every
 * problem found.
 */
export function checkConfig(env: Record<string, string | undefined>, file?: string): ConfigCheck {
  const problems: ConfigProblem[] = [];
  const seen = new Set<string>();
  const add = (p: ConfigProblem): void => {
    if (seen.has(p.message)) return;
    seen.add(p.message);
    problems.push(p);
  };
  const variables = Object.values(ENV).filter((name) => env[name] !== undefined && env[name] !== "");

  // The variables without the file: drop each one that fails and try again,
  // so that every bad variable is reported, and pairs are checked together.
  const vars: Record<string, string | undefined> = {};
  for (const name of variables) if (name !== ENV.CONFIG) vars[name] = env[name];
  for (let i = 0; i <= variables.length; i++) {
    try {
      resolveConfig({ env: vars, discovery: [] });
      break;
    } catch (err) {
      const p = problemOf(err, "environment");
      add(p);
      if (!(p.source in vars)) break;
      delete vars[p.source];
    }
  }

  const path = file ?? (env[ENV.CONFIG] || undefined);
  if (path !== undefined) checkFile(path, file === undefined ? ENV.CONFIG : "--config", add);

  // What only shows when the sources are merged (a region listed twice across them).
  if (problems.length === 0) {
    try {
      resolveConfig({ env: { ...env, [ENV.CONFIG]: path } });
    } catch (err) {
      add(problemOf(err, "configuration"));
    }
  }
  return { file: path, variables, problems };
}

function checkFile(path: string, source: string, add: (p: ConfigProblem) => void): void {
  let data: Record<string, unknown>;
  try {
    data = parseConfigText(readConfigText(path, source), path, source);
  } catch (err) {
    add(problemOf(err, source));
    return;
  }
  const issues = validationErrors(fileSchema, data, `${path}: `);
  for (const err of issues) add(problemOf(err, path));
  // What the loader checks beyond the schema, in fields the schema accepted.
  const failing = (key: string) => issues.some((e) => e.source.startsWith(`${path}: ${key}`));
  const later = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      add(problemOf(err, path));
    }
  };
  const failover = data.failover;
  if (Array.isArray(failover) && failover.length > 0 && !failing("failover")) {
    later(() => parseFailoverList(failover.join(","), `${path}: failover`));
  }
  const admin = data.admin as AdminOption | undefined;
  if (admin !== undefined && admin !== false && !failing("admin")) {
    later(() =>
      typeof admin === "string"
        ? parseAdminAddress(admin, `${path}: admin`)
        : parseAdminAddress(admin.address, `${path}: admin.address`, admin.allowRemote === true),
    );
  }
  const discovery = Object.hasOwn(data, "discovery") ? data.discovery : undefined;
  if (!Array.isArray(discovery)) return;
  registerBuiltinDiscoveryKinds();
  discovery.forEach((entry, i) => {
    const at = `${path}: discovery[${i}]`;
    try {
      const spec = backendSpecOf(entry, at);
      const factory = discoveryKind(spec.kind);
      if (factory === undefined) {
        throw new ConfigError(
          at,
          spec.kind,
          `unknown discovery backend kind; known: ${discoveryKinds().join(", ")}`,
        );
      }
      const backend = factory(spec.options, spec.source);
      void Promise.resolve(backend.close?.()).catch(() => {});
    } catch (err) {
      add(problemOf(err, at));
    }
  });
}

/**
 * The configuration in force as JSON, for the admin endpoint and the CLI:
 * every default written out, discovery backends by name and kind, and
 * every value under a secret-named key (`token`, `password`, `key`, …)
 * redacted, as configuration errors redact them.
 *
 * @module
 */

import type { ResolvedConfig } from "../config/config.js";
import { configInForce } from "../config/defaults.js";
import { matchLocality } from "../routing/tiers.js";
import type { MaterialSpec } from "../tls/material.js";
import type { ResolvedTls } from "../tls/options.js";
import { redactValue } from "../values.js";

/** The configuration in force, as the admin endpoint's `/config` returns it. */
export interface ConfigView {
  /** The caller's region ("" when unknown). */
  readonly region: string;
  /** The caller's zone ("" when unknown). */
  readonly zone: string;
  /** Failover regions, in order. */
  readonly failover: readonly string[];
  /** The tiers a call goes through, best first. */
  readonly tiers: readonly string[];
  /** The discovery backends: their names, and for those of the config file their kind and options (redacted). */
  readonly discovery: readonly { name?: string; kind?: string; source?: string; options?: unknown }[];
  /** Everything else, defaults included (policy, outlierDetection, routing, agent, …). */
  readonly [field: string]: unknown;
}

/**
 * The configuration in force as JSON-safe data, secrets redacted.
 * `backendNames` are the names of the backends the mesh runs (none when it
 * is not running: the CLI describing a config file).
 */
export function configView(config: ResolvedConfig, backendNames: readonly string[] = []): ConfigView {
  const c = configInForce(config);
  const discovery =
    c.backendSpecs.length > 0
      ? c.backendSpecs.map((s, i) => ({
          ...(backendNames[i] !== undefined && { name: backendNames[i] }),
          kind: s.kind,
          source: s.source,
          options: s.options,
        }))
      : (backendNames.length > 0 ? backendNames : c.backends.map((b) => b.name)).map((name) => ({ name }));
  const { backends: _backends, backendSpecs: _specs, admin, tls, ...rest } = c;
  const view = {
    ...rest,
    tls: tlsView(tls),
    tiers: tierOrder(c),
    discovery,
    admin:
      admin === undefined
        ? undefined
        : `${admin.host.includes(":") ? `[${admin.host}]` : admin.host}:${admin.port}`,
  };
  return redactValue(view) as ConfigView;
}

/** Where a piece of TLS material comes from: its source and path, never its content. */
function materialView(
  spec: MaterialSpec | undefined,
): { source: string; path: string | undefined } | undefined {
  if (spec === undefined) return undefined;
  return { source: spec.source, path: spec.path ?? (spec.pem !== undefined ? "<inline PEM>" : undefined) };
}

/** The TLS settings in force as JSON: mode, identity rules, where the material comes from (never the material). */
function tlsView(tls: ResolvedTls) {
  return {
    mode: tls.mode,
    modeSource: tls.modeSource,
    identity: tls.identity,
    ca: materialView(tls.specs.ca),
    cert: materialView(tls.specs.cert),
    key: materialView(tls.specs.key),
    clusters: Object.fromEntries([...tls.specs.clusters].map(([name, spec]) => [name, materialView(spec)])),
    clusterTrustDomains: Object.fromEntries(tls.clusterTrustDomains),
    expiryWarning: tls.expiryWarning ?? null,
    reload: tls.reload,
  };
}

/** The tier labels for this caller, best first, as the router ranks them. */
export function tierOrder(config: ResolvedConfig): string[] {
  const r = config.routing;
  const out: string[] = [];
  if (r.distribute?.some((d) => matchLocality(d.from, config.region, config.zone, r.subzone ?? ""))) {
    out.push("distribute");
  }
  if (r.failoverPriority !== undefined && r.failoverPriority.length > 0) {
    for (let i = 0; i < r.failoverPriority.length; i++) out.push(`priority:${i}`);
  } else {
    if (config.zone !== "") out.push("zone");
    if (config.region !== "") out.push("region");
  }
  for (const region of config.failover) out.push(`failover:${region}`);
  out.push("other", "backup");
  return out;
}

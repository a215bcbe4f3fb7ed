/**
 * `meshlink describe`: a running application's mesh through its admin
 * endpoint (`--admin <url>`, as `istioctl proxy-config` reads Envoy's admin
 * port) — services, tiers and their share of traffic, endpoints with
 * health, discovery freshness — or, without `--admin`, the configuration
 * this environment and config file give, defaults included.
 *
 * @module
 */

import { configView } from "../../admin/config-view.js";
import { resolveConfig } from "../../config/config.js";
import type { MeshDescription, ServiceDescription } from "../../telemetry/describe.js";
import type { Command, CommandContext, OptionValues } from "../command.js";
import { ExitCode, UnavailableError, UsageError } from "../exit.js";
import { formatMs, formatShare, type Output } from "../output.js";
import { healthCount, place, stateText } from "./resolve.js";

const USAGE = `Usage: meshlink describe [--admin <url>] [--service <name>] [--json]
       meshlink describe [--config <file>] [--json]

With --admin, describes a running application through its admin endpoint
(the application sets MESHLINK_ADMIN=127.0.0.1:15090, or the admin option):
every service it has called, each tier's endpoints, health and share of the
traffic (spill-over and panic as the router computes them), every endpoint
with its health, EWMA latency and requests in flight, and how fresh each
discovery backend's answer is.

Without --admin, describes the configuration this environment and config
file give: the caller's locality, the tier order, the discovery backends
and every setting in force, defaults included (secrets redacted).

  --admin <url>      the admin endpoint, e.g. http://127.0.0.1:15090
  --service <name>   only services whose name starts with this
  --timeout <ms>     how long to wait for the admin endpoint (default 5000)
  --config <file>    a config file instead of MESHLINK_CONFIG (without --admin)
  --json             one JSON document on standard output
  -h, --help         this help

Exit codes: 0 done, 2 bad usage, 3 invalid configuration, 5 the admin
endpoint cannot be reached.`;

/** `meshlink describe`. */
export const describeCommand: Command = {
  name: "describe",
  summary: "describe a running application (--admin <url>) or the configuration",
  usage: USAGE,
  options: {
    admin: { type: "string", short: "a" },
    service: { type: "string", short: "s" },
    timeout: { type: "string" },
    config: { type: "string", short: "c" },
  },
  async run(values: OptionValues, positionals: string[], ctx: CommandContext): Promise<number> {
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`, "describe");
    const admin = values.admin as string | undefined;
    if (admin === undefined) return describeConfig(values.config as string | undefined, ctx);
    if (values.config !== undefined)
      throw new UsageError("--config describes a file; not with --admin", "describe");
    const timeout = values.timeout === undefined ? 5000 : Number(values.timeout);
    if (!Number.isInteger(timeout) || timeout <= 0)
      throw new UsageError("--timeout takes ms, e.g. 5000", "describe");
    const description = (await fetchAdmin(admin, "describe", timeout)) as MeshDescription;
    const filter = values.service as string | undefined;
    const services = (description.services ?? []).filter(
      (s) => filter === undefined || s.service.startsWith(filter),
    );
    if (ctx.json) {
      ctx.out.json({ ...description, services });
      return ExitCode.OK;
    }
    printDescription(ctx.out, description, services);
    return ExitCode.OK;
  },
};

/** GETs `path` of an admin endpoint as JSON. */
export async function fetchAdmin(base: string, path: string, timeoutMs: number): Promise<unknown> {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new UsageError(
      `--admin ${JSON.stringify(base)}: not a URL, e.g. http://127.0.0.1:15090`,
      "describe",
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(
      `--admin ${JSON.stringify(base)}: an http:// URL, e.g. http://127.0.0.1:15090`,
      "describe",
    );
  }
  url.pathname = `${url.pathname.replace(/\/(describe|config|resolve)?\/?$/, "")}/${path}`;
  let res: Response;
  try {
    res = await fetch(url, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: { accept: "application/json" },
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    throw new UnavailableError(`cannot reach the admin endpoint at ${url.origin}: ${cause}`, { cause: err });
  }
  const text = await res.text();
  if (!res.ok) {
    throw new UnavailableError(
      `the admin endpoint at ${url.origin} answered ${res.status}: ${text.slice(0, 200)}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UnavailableError(`the admin endpoint at ${url.origin} did not answer JSON`);
  }
}

function printDescription(out: Output, d: MeshDescription, services: readonly ServiceDescription[]): void {
  const l = d.locality;
  out.line(
    `caller ${place(l.region, l.zone)}` +
      (l.failover.length > 0 ? `, failover ${l.failover.join(" → ")}` : "") +
      ` — backends ${d.backends.join(", ") || "none"}` +
      (d.time ? ` — at ${d.time}` : ""),
  );
  if (services.length === 0) {
    out.line("no services yet: the application has not called or resolved any");
    return;
  }
  for (const s of services) {
    out.line();
    printService(out, s);
  }
}

function printService(out: Output, s: ServiceDescription): void {
  const flags: string[] = [];
  if (s.failover) flags.push(out.style("yellow", "FAILOVER"));
  if (s.panic) flags.push(out.style("red", "PANIC"));
  out.line(
    `${out.style("bold", s.service)}  ${s.state}, updated ${s.ageMs === undefined ? "never" : `${formatMs(s.ageMs)} ago`}` +
      (flags.length > 0 ? `  ${flags.join(" ")}` : ""),
  );
  const tiers = s.tiers ?? [];
  if (tiers.length > 0) {
    out.table(
      ["  TIER", "ENDPOINTS", "HEALTHY", "LOAD", "PANIC"],
      tiers.map((t) => [
        `  ${t.tier}`,
        String(t.total),
        healthCount(out, t.healthy, t.total),
        formatShare(t.load),
        t.panic ? out.style("red", "yes") : "no",
      ]),
      [1, 2, 3],
    );
  }
  if (s.endpoints.length > 0) {
    out.line();
    out.table(
      [
        "  ENDPOINT",
        "TIER",
        "LOCALITY",
        "STATE",
        "AVAILABLE",
        "EJECTIONS",
        "LATENCY",
        "IN FLIGHT",
        "LAST FAILURE",
      ],
      s.endpoints.map((e) => [
        `  ${e.id}`,
        e.tier,
        place(e.region, e.zone),
        stateText(out, e.unavailableReason ?? e.health.state),
        e.available
          ? out.style("green", "yes")
          : out.style(
              "red",
              e.health.ejectedUntil !== undefined
                ? `no (until ${e.health.ejectedUntil.slice(11, 19)})`
                : "no",
            ),
        String(e.health.ejections),
        e.health.latencyMs > 0 ? formatMs(e.health.latencyMs) : "-",
        String(e.health.outstanding),
        e.health.lastFailure ?? "-",
      ]),
      [5, 6, 7],
    );
  }
  out.line();
  out.table(
    ["  BACKEND", "STATE", "ENDPOINTS", "STALE", "AGE", "ERROR"],
    s.sources.map((src) => [
      `  ${src.backend}`,
      src.state,
      String(src.endpoints),
      src.stale ? out.style("yellow", "yes") : "no",
      src.ageMs === undefined ? "-" : formatMs(src.ageMs),
      src.error === undefined ? "-" : out.style("red", src.error),
    ]),
    [2],
  );
}

function describeConfig(file: string | undefined, ctx: CommandContext): number {
  const config = resolveConfig({ env: ctx.env, ...(file !== undefined && { config: file }) });
  const view = configView(config);
  if (ctx.json) {
    ctx.out.json({ config: view });
    return ExitCode.OK;
  }
  const out = ctx.out;
  const policy = view.policy as Record<string, unknown>;
  const outlier = view.outlierDetection as Record<string, unknown>;
  const routing = view.routing as Record<string, unknown>;
  const budget = policy.budget as false | { percent: number; minRetriesPerSecond: number };
  const rows: [string, string][] = [
    ["caller", place(view.region, view.zone)],
    ["tiers", view.tiers.join(" → ")],
    [
      "discovery",
      view.discovery.length === 0
        ? out.style("yellow", "none: every mesh name will be not found")
        : view.discovery.map((d) => d.kind ?? d.name).join(", "),
    ],
    [
      "policy",
      `${policy.attempts} attempts, per-try timeout ${policy.perTryTimeout} ms, retry on ${(policy.retryOn as number[]).join("/")}` +
        (budget === false
          ? ", no retry budget"
          : `, budget ${formatShare(budget.percent)} + ${budget.minRetriesPerSecond}/s`) +
        (policy.deadline === undefined ? "" : `, deadline ${policy.deadline} ms`),
    ],
    [
      "outliers",
      `eject after ${outlier.consecutiveFailures} consecutive failures, for ${outlier.baseEjectionTime} ms × ejections (max ${outlier.maxEjectionTime} ms)`,
    ],
    [
      "routing",
      `${routing.lbPolicy}, overprovisioning ${routing.overprovisioningFactor}, panic below ${formatShare(routing.panicThreshold as number)} healthy`,
    ],
    ["admin", (view.admin as string | undefined) ?? "off"],
  ];
  // Settings added by later features (TLS) show as they are in force.
  const tls = view.tls as { mode?: unknown } | undefined;
  if (tls !== undefined)
    rows.push(["tls", typeof tls.mode === "string" ? `mode ${tls.mode}` : JSON.stringify(tls)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.line(`${out.style("bold", k.padEnd(width))}  ${v}`);
  for (const d of view.discovery) {
    if (d.source !== undefined)
      out.line(`${" ".repeat(width)}  ${out.style("dim", `${d.kind}: ${d.source}`)}`);
  }
  return ExitCode.OK;
}

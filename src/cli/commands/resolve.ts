/**
 * `meshlink resolve <name>`: what the library would resolve a service name
 * to from this environment and config file — every endpoint by cluster and
 * locality, its tier for this caller and whether the router may use it.
 *
 * @module
 */

import type { ResolvedEndpoint } from "../../mesh.js";
import type { Command, CommandContext, OptionValues } from "../command.js";
import { ExitCode, UsageError } from "../exit.js";
import { withMesh } from "../mesh.js";
import type { Output } from "../output.js";

const USAGE = `Usage: meshlink resolve <name> [--port <port>] [--config <file>] [--json]

Resolves a service name as the library would from this environment
(MESHLINK_REGION, MESHLINK_ZONE, MESHLINK_FAILOVER, MESHLINK_CONFIG) and
prints every endpoint by cluster and locality, in the router's order, with
its tier for this caller and whether a call may go to it.

  <name>            my-service.default, my-service.default.svc.cluster.local,
                    my-service.service.consul, …
  --port <port>     the port (a number or an SRV/named port), as in a URL
  --config <file>   a config file instead of MESHLINK_CONFIG
  --json            one JSON document on standard output
  -h, --help        this help

Exit codes: 0 found, 2 bad usage or name, 3 invalid configuration,
4 no backend knows the name, 5 discovery failed.`;

/** `meshlink resolve`. */
export const resolveCommand: Command = {
  name: "resolve",
  summary: "resolve a service name: endpoints by cluster and locality, with health",
  usage: USAGE,
  options: {
    port: { type: "string", short: "p" },
    config: { type: "string", short: "c" },
  },
  async run(values: OptionValues, positionals: string[], ctx: CommandContext): Promise<number> {
    if (positionals.length !== 1) {
      throw new UsageError(
        positionals.length === 0 ? "which service? give a name" : "one name at a time",
        "resolve",
      );
    }
    const name = positionals[0]!;
    const port = values.port as string | undefined;
    return withMesh(ctx, values.config as string | undefined, async (mesh) => {
      const resolved = await mesh.resolve(name, port);
      const locality = mesh.config;
      if (ctx.json) {
        ctx.out.json({
          service: name,
          caller: { region: locality.region, zone: locality.zone, failover: locality.failover },
          endpoints: resolved.map((r) => ({
            ...r.endpoint,
            tier: r.tier,
            available: r.available,
            unavailableReason: r.unavailableReason,
            health: r.health,
          })),
        });
        return ExitCode.OK;
      }
      const available = resolved.filter((r) => r.available).length;
      const out = ctx.out;
      out.line(
        `${out.style("bold", name)}: ${resolved.length} endpoint${resolved.length === 1 ? "" : "s"}, ` +
          `${available} available — caller ${place(locality.region, locality.zone)}` +
          (locality.failover.length > 0 ? `, failover ${locality.failover.join(" → ")}` : ""),
      );
      out.line();
      printClusters(out, resolved);
      out.line();
      printEndpoints(out, resolved);
      return ExitCode.OK;
    });
  },
};

/** `region/zone`, or `unknown locality`. */
export function place(region: string, zone: string): string {
  if (region === "" && zone === "") return "unknown locality";
  return [region || "?", zone].filter((s) => s !== "").join("/");
}

function printClusters(out: Output, resolved: readonly ResolvedEndpoint[]): void {
  const clusters = new Map<string, { localities: Set<string>; total: number; available: number }>();
  for (const r of resolved) {
    const e = r.endpoint;
    let c = clusters.get(e.cluster);
    if (c === undefined) {
      c = { localities: new Set(), total: 0, available: 0 };
      clusters.set(e.cluster, c);
    }
    c.localities.add(place(e.locality.region, e.locality.zone));
    c.total++;
    if (r.available) c.available++;
  }
  out.table(
    ["CLUSTER", "LOCALITY", "ENDPOINTS", "AVAILABLE"],
    [...clusters].map(([cluster, c]) => [
      cluster,
      [...c.localities].join(", "),
      String(c.total),
      healthCount(out, c.available, c.total),
    ]),
    [2, 3],
  );
}

function printEndpoints(out: Output, resolved: readonly ResolvedEndpoint[]): void {
  out.table(
    ["TIER", "ENDPOINT", "CLUSTER", "LOCALITY", "STATE", "AVAILABLE", "WEIGHT", "BACKEND"],
    resolved.map((r) => {
      const e = r.endpoint;
      return [
        r.tier,
        `${e.address}:${e.port}${e.backup ? " (backup)" : ""}`,
        e.cluster,
        place(e.locality.region, e.locality.zone),
        stateText(out, r.unavailableReason ?? r.health.state),
        r.available ? out.style("green", "yes") : out.style("red", `no (${r.unavailableReason})`),
        String(e.weight),
        e.backend,
      ];
    }),
  );
}

/** `n/total`, coloured by how many are up. */
export function healthCount(out: Output, n: number, total: number): string {
  const text = `${n}/${total}`;
  return out.style(n === total ? "green" : n === 0 ? "red" : "yellow", text);
}

/** A health state, coloured. */
export function stateText(out: Output, state: string): string {
  return out.style(state === "healthy" ? "green" : state === "probing" ? "yellow" : "red", state);
}

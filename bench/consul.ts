/**
 * Consul discovery: the time from a registration change on the agent to the
 * new endpoint being the one the router picks.
 *
 * Method: the protocol-faithful Consul test agent (test/helpers/consul-server.ts)
 * runs in this process on 127.0.70.1 with two datacenters; a real
 * `createMesh` with `consulDiscovery` (defaults but the address and the two
 * datacenters) serves `web.service.consul` to a caller in us-east-1a. Each
 * datacenter holds `n` instances in other zones, and dc-east holds one
 * instance in the caller's zone, which the router always picks first. Each
 * change re-registers that instance on a new port (one write, one index
 * step) while the backend's blocking query for dc-east is held; the time
 * runs from just before the write to the first `mesh.resolve()` whose first
 * endpoint — the router's pick — is the new one (`resolve` is polled between
 * turns of the event loop). Changes are 20–60 ms apart. Reported: median,
 * p99 and max per size.
 *
 * The agent shares the event loop with the mesh, so the figure includes the
 * agent's own work (waking the query, rendering the JSON): an upper bound.
 *
 *     npx tsx bench/consul.ts [--smoke] [--strict] [--changes=200] [--sizes=10,500]
 *
 * @module
 */

import { setImmediate as turn } from "node:timers/promises";
import { consulDiscovery, createMesh, type Mesh } from "meshlink";
import {
  type ConsulInstance,
  startConsulServer,
  type TestConsulServer,
} from "../test/helpers/consul-server.js";
import {
  finish,
  fmt,
  listFlag,
  median,
  numberFlag,
  parseFlags,
  printTable,
  printTargets,
  quantile,
  sleep,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";

const NAME = "consul";
const SERVICE = "web.service.consul";
const flags = parseFlags();
const smoke = flags.smoke;
const CHANGES = numberFlag(flags, "changes", smoke ? 20 : 200);
const SIZES = listFlag(flags, "sizes", smoke ? ["10"] : ["10", "500"]).map(Number);

interface SizeResult {
  readonly instances: number;
  readonly changes: number;
  readonly medianMs: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

function instance(dc: string, i: number, zone: string): ConsulInstance {
  const octet = dc === "dc-east" ? 10 : 20;
  return {
    node: `${dc}-node-${i}`,
    address: `127.0.${octet + Math.floor(i / 250)}.${(i % 250) + 2}`,
    service: "web",
    port: 8080,
    meta: { zone },
  };
}

async function measure(consul: TestConsulServer, mesh: Mesh, n: number): Promise<SizeResult> {
  const target = (port: number): ConsulInstance => ({
    node: "caller-zone-node",
    address: "127.0.70.2",
    service: "web",
    id: "web-target",
    port,
    meta: { zone: "us-east-1a" },
  });
  let index = consul.register("dc-east", target(20_000));
  const first = await mesh.resolve(SERVICE);
  if (first[0]?.endpoint.port !== 20_000) throw new Error(`unexpected first pick ${first[0]?.endpoint.id}`);
  const samples: number[] = [];
  for (let c = 1; c <= CHANGES; c++) {
    // The change lands on a waiting blocking query, as in steady state.
    await consul.held((r) => r.dc === "dc-east" && r.index >= index);
    const port = 20_000 + c;
    const t0 = performance.now();
    index = consul.register("dc-east", target(port));
    for (;;) {
      const pick = (await mesh.resolve(SERVICE))[0]!.endpoint;
      if (pick.port === port) break;
      await turn();
    }
    samples.push(performance.now() - t0);
    await sleep(20 + Math.random() * 40);
  }
  return {
    instances: n,
    changes: samples.length,
    medianMs: median(samples),
    p99Ms: quantile(samples, 0.99),
    maxMs: Math.max(...samples),
  };
}

async function runSize(n: number): Promise<SizeResult> {
  const consul = await startConsulServer({ datacenters: ["dc-east", "dc-west"], address: "127.0.70.1" });
  for (let i = 0; i < n; i++) {
    consul.register("dc-east", instance("dc-east", i, `us-east-1${i % 2 === 0 ? "b" : "c"}`));
    consul.register("dc-west", instance("dc-west", i, `us-west-2${"abc"[i % 3]}`));
  }
  const mesh = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [
      consulDiscovery({
        address: consul.url,
        datacenters: [
          { name: "dc-east", region: "us-east-1" },
          { name: "dc-west", region: "us-west-2" },
        ],
        env: {},
      }),
    ],
  });
  try {
    return await measure(consul, mesh, n);
  } finally {
    await mesh.close();
    await consul.stop();
  }
}

async function main(): Promise<void> {
  const results: SizeResult[] = [];
  for (const n of SIZES) results.push(await runSize(n));
  printTable(
    `registration change → router pick (${CHANGES} changes, ms)`,
    ["instances per datacenter", "median", "p99", "max"],
    results.map((r) => [String(r.instances), fmt(r.medianMs, 2), fmt(r.p99Ms, 2), fmt(r.maxMs, 2)]),
  );
  const targets: TargetResult[] = results.map((r) =>
    target(
      `consul-change-to-pick-p99-n${r.instances}`,
      `Consul registration change → router pick, p99, ${r.instances} instances per datacenter`,
      r.p99Ms,
      "<=",
      100,
      "ms",
      `${r.changes} changes on a held blocking query; from the write to the first mesh.resolve() whose first endpoint is the new one`,
    ),
  );
  printTargets(targets, smoke);
  const file = writeResults(NAME, { smoke, changes: CHANGES, sizes: SIZES, results, targets });
  finish(flags, targets, file);
}

await main();

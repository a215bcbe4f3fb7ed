/**
 * Consul discovery: the time from a registration change on the agent to the
 * new endpoint being the one the router picks.
 *
 * Method: the protocol-faithful Consul test agent (test/helpers/consul-server.ts)
 * runs in a child process on 127.0.70.1 with two datacenters, as a real agent
 * runs beside the application; a real `createMesh` with `consulDiscovery`
 * (defaults but the address and the two datacenters) serves
 * `web.service.consul` to a caller in us-east-1a. Each datacenter holds `n`
 * instances in other zones, and dc-east holds one instance in the caller's
 * zone, which the router always picks first. Each change re-registers that
 * instance on a new port (one write, one index step) once the backend's
 * blocking query for dc-east is held by the agent; the time runs from the
 * write (the agent's clock) to the first `mesh.resolve()` whose first
 * endpoint — the router's pick — is the new one. `resolve()` is asked each
 * time the registry has applied an update of the backend (a pass-through
 * wrapper around the backend says when), so that no polling loop competes
 * for the CPU; both processes read the same monotonic clock. Changes are
 * 20–60 ms apart. Reported: median, p99 and max per size.
 *
 *     npx tsx bench/consul.ts [--smoke] [--strict] [--changes=200] [--sizes=10,500]
 *
 * @module
 */

import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { consulDiscovery, createMesh, type DiscoveryBackend, type Mesh } from "meshlink";
import { type ConsulInstance, startConsulServer } from "../test/helpers/consul-server.js";
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
const FIRST_PORT = 20_000;

/** Messages between the benchmark and its agent process. */
type ToAgent = { type: "move"; port: number } | { type: "stop" };
type FromAgent = { type: "ready"; url: string } | { type: "moved"; at: string };

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

const target_ = (port: number): ConsulInstance => ({
  node: "caller-zone-node",
  address: "127.0.70.2",
  service: "web",
  id: "web-target",
  port,
  meta: { zone: "us-east-1a" },
});

/** The agent process: the test agent with `n` instances per datacenter, moving the target on request. */
async function agentMain(n: number): Promise<void> {
  const consul = await startConsulServer({ datacenters: ["dc-east", "dc-west"], address: "127.0.70.1" });
  for (let i = 0; i < n; i++) {
    consul.register("dc-east", instance("dc-east", i, `us-east-1${i % 2 === 0 ? "b" : "c"}`));
    consul.register("dc-west", instance("dc-west", i, `us-west-2${"abc"[i % 3]}`));
  }
  let index = consul.register("dc-east", target_(FIRST_PORT));
  const send = (m: FromAgent) => process.send!(m);
  process.on("message", async (m: ToAgent) => {
    if (m.type === "stop") {
      await consul.stop();
      process.disconnect();
      return;
    }
    // The change lands on a waiting blocking query, as in steady state.
    await consul.held((r) => r.dc === "dc-east" && r.index >= index);
    const at = process.hrtime.bigint();
    index = consul.register("dc-east", target_(m.port));
    send({ type: "moved", at: String(at) });
  });
  send({ type: "ready", url: consul.url });
}

/**
 * The backend, passed through, calling `applied` each time the registry has
 * taken an update (it asks for the next one only after applying the last).
 */
function observed(inner: DiscoveryBackend, applied: () => void): DiscoveryBackend {
  return {
    name: inner.name,
    claims: (service) => inner.claims?.(service) ?? false,
    close: () => inner.close?.(),
    async *watch(service, options) {
      for await (const update of inner.watch(service, options)) {
        yield update;
        applied();
      }
    },
  };
}

async function measure(
  agent: ChildProcess,
  mesh: Mesh,
  n: number,
  onApplied: (listener: () => void) => void,
): Promise<SizeResult> {
  const first = await mesh.resolve(SERVICE);
  if (first[0]?.endpoint.port !== FIRST_PORT)
    throw new Error(`unexpected first pick ${first[0]?.endpoint.id}`);
  const samples: number[] = [];
  for (let c = 1; c <= CHANGES; c++) {
    const port = FIRST_PORT + c;
    const picked = new Promise<bigint>((resolve) => {
      onApplied(() => {
        void mesh.resolve(SERVICE).then((order) => {
          if (order[0]!.endpoint.port === port) resolve(process.hrtime.bigint());
        });
      });
    });
    const moved = once(agent, "message") as Promise<[FromAgent]>;
    agent.send({ type: "move", port } satisfies ToAgent);
    const seen = await picked;
    const [m] = await moved;
    if (m.type !== "moved") throw new Error(`unexpected message ${m.type}`);
    samples.push(Number(seen - BigInt(m.at)) / 1e6);
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
  const agent = fork(fileURLToPath(import.meta.url), [`--agent=${n}`], { stdio: "inherit" });
  const [ready] = (await once(agent, "message")) as [FromAgent];
  if (ready.type !== "ready") throw new Error("the agent did not start");
  let listener: (() => void) | undefined;
  const mesh = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [
      observed(
        consulDiscovery({
          address: ready.url,
          datacenters: [
            { name: "dc-east", region: "us-east-1" },
            { name: "dc-west", region: "us-west-2" },
          ],
          env: {},
        }),
        () => listener?.(),
      ),
    ],
  });
  try {
    return await measure(agent, mesh, n, (l) => {
      listener = l;
    });
  } finally {
    await mesh.close();
    const exited = once(agent, "exit");
    agent.send({ type: "stop" } satisfies ToAgent);
    await exited;
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
      `${r.changes} changes on a held blocking query; from the agent's write to the first mesh.resolve() whose first endpoint is the new one`,
    ),
  );
  printTargets(targets, smoke);
  const file = writeResults(NAME, { smoke, changes: CHANGES, sizes: SIZES, results, targets });
  finish(flags, targets, file);
}

const agentSize = flags.values.get("agent");
if (agentSize !== undefined) await agentMain(Number(agentSize));
else await main();

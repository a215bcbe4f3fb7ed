/**
 * gRPC through the mesh against a raw grpc-js channel to the same server:
 * unary calls per second at concurrency 16 as a ratio, added client CPU per
 * call, and how soon a discovery change (an endpoint added, one removed)
 * reaches an open channel.
 *
 * Method: the server runs in its own process, and so does each client (a
 * raw channel to `127.0.0.1:<port>`, or a `meshlink://` target with the
 * mesh's credentials and interceptors); each round starts fresh clients
 * and runs them in alternating short blocks (raw, mesh, raw, mesh, … in a
 * seeded order), so that drifts of a shared machine hit both alike; the
 * ratio and the CPU difference are taken within each round, and the
 * median over rounds is reported. The discovery change is measured in this
 * process: a closed loop of calls runs while a test backend adds a second
 * server (time to its first call) and then removes the first (time to the
 * last call it receives), several times.
 *
 *     npx tsx bench/grpc.ts [--smoke] [--strict] [--rounds=7] [--blocks=6] [--block=400]
 *       [--warmup=600] [--concurrency=16] [--changes=10] [--seed=1]
 *
 * @module
 */

import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import type { DiscoveryBackend, DiscoveryUpdate } from "../src/discovery/discovery.js";
import { createEndpoint, type Endpoint } from "../src/discovery/endpoint.js";
import { staticDiscovery } from "../src/discovery/static.js";
import { createMesh } from "../src/mesh.js";
import {
  finish,
  fmt,
  median,
  numberFlag,
  parseFlags,
  printTable,
  printTargets,
  quantile,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";
import { prng, shuffle } from "./lib/interleave.js";

const NAME = "grpc";
const SELF = fileURLToPath(import.meta.url);
const PATH = "/meshlink.bench.Echo/Echo";
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const SERVICE: grpc.ServiceDefinition = {
  Echo: {
    path: PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
};
const Client = grpc.makeGenericClientConstructor(SERVICE, "Echo");
const PAYLOAD = Buffer.alloc(64, 1);

/** Serves `Echo` on a free loopback port; `onCall` sees each call's arrival. */
async function serve(address: string, onCall?: () => void): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(SERVICE, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      onCall?.();
      callback(null, call.request);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${address}:0`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, port };
}

function unary(client: grpc.Client): Promise<unknown> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(PATH, bytes.serialize, bytes.deserialize, PAYLOAD, (err, v) =>
      err ? reject(err) : resolve(v),
    ),
  );
}

// Child processes.

async function serverRole(): Promise<void> {
  const { port } = await serve("127.0.0.1");
  process.send?.({ type: "ready", port });
  process.on("disconnect", () => process.exit(0));
}

type Path = "raw" | "mesh";

async function clientRole(path: Path, port: number): Promise<void> {
  let client: grpc.Client;
  let close: () => Promise<void>;
  if (path === "raw") {
    client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    close = async () => client.close();
  } else {
    const mesh = createMesh({
      env: {},
      discovery: [
        staticDiscovery({ services: { "echo.bench": [{ address: "127.0.0.1", port, cluster: "c1" }] } }),
      ],
    });
    mesh.grpc.register(grpc);
    client = new Client(mesh.grpc.target("echo.bench", port), mesh.grpc.credentials(), {
      interceptors: mesh.grpc.interceptors,
    });
    close = async () => {
      client.close();
      await mesh.close();
    };
  }
  await unary(client);
  process.on("message", async (msg: { type: string; concurrency: number; ms: number }) => {
    if (msg.type !== "run") return;
    let calls = 0;
    let errors = 0;
    const end = performance.now() + msg.ms;
    const worker = async () => {
      while (performance.now() < end) {
        await unary(client).then(
          () => calls++,
          () => errors++,
        );
      }
    };
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await Promise.all(Array.from({ length: msg.concurrency }, worker));
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    process.send?.({ type: "result", calls, errors, elapsedMs, cpuUs: cpu.user + cpu.system });
  });
  process.on("disconnect", () => void close().finally(() => process.exit(0)));
  process.send?.({ type: "ready" });
}

// The parent.

interface Block {
  readonly calls: number;
  readonly errors: number;
  readonly elapsedMs: number;
  readonly cpuUs: number;
}

async function child(args: string[]): Promise<{ proc: ChildProcess; ready: Record<string, unknown> }> {
  const proc = fork(SELF, args, { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const [ready] = (await once(proc, "message")) as [Record<string, unknown>];
  return { proc, ready };
}

async function run(proc: ChildProcess, concurrency: number, ms: number): Promise<Block> {
  proc.send({ type: "run", concurrency, ms });
  const [msg] = (await once(proc, "message")) as [Block];
  return msg;
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = once(proc, "exit");
  proc.disconnect();
  await exited;
}

interface RoundResult {
  readonly cps: Record<Path, number>;
  readonly cpuPerCallUs: Record<Path, number>;
  readonly ratio: number;
  readonly addedCpuUs: number;
}

async function overhead(o: {
  rounds: number;
  blocks: number;
  blockMs: number;
  warmupMs: number;
  concurrency: number;
  seed: number;
}): Promise<RoundResult[]> {
  const server = await child(["--role=server"]);
  const port = Number(server.ready.port);
  const random = prng(o.seed);
  const out: RoundResult[] = [];
  try {
    for (let r = 0; r < o.rounds; r++) {
      const clients = {
        raw: (await child(["--role=client", "--path=raw", `--port=${port}`])).proc,
        mesh: (await child(["--role=client", "--path=mesh", `--port=${port}`])).proc,
      };
      try {
        const total: Record<Path, Block> = {
          raw: { calls: 0, errors: 0, elapsedMs: 0, cpuUs: 0 },
          mesh: { calls: 0, errors: 0, elapsedMs: 0, cpuUs: 0 },
        };
        for (const p of shuffle(["raw", "mesh"] as const, random))
          await run(clients[p], o.concurrency, o.warmupMs);
        let order = shuffle(["raw", "mesh"] as const, random);
        for (let b = 0; b < o.blocks; b++) {
          for (const p of order) {
            const s = await run(clients[p], o.concurrency, o.blockMs);
            if (s.errors > 0) throw new Error(`${p}: ${s.errors} failed calls`);
            const t = total[p];
            total[p] = {
              calls: t.calls + s.calls,
              errors: t.errors + s.errors,
              elapsedMs: t.elapsedMs + s.elapsedMs,
              cpuUs: t.cpuUs + s.cpuUs,
            };
          }
          order = [order[1]!, order[0]!];
        }
        const cps = (p: Path) => (total[p].calls / total[p].elapsedMs) * 1000;
        const cpu = (p: Path) => total[p].cpuUs / total[p].calls;
        out.push({
          cps: { raw: cps("raw"), mesh: cps("mesh") },
          cpuPerCallUs: { raw: cpu("raw"), mesh: cpu("mesh") },
          ratio: cps("mesh") / cps("raw"),
          addedCpuUs: cpu("mesh") - cpu("raw"),
        });
      } finally {
        await Promise.all([stop(clients.raw), stop(clients.mesh)]);
      }
      console.log(`  round ${r + 1}/${o.rounds} done`);
    }
  } finally {
    await stop(server.proc);
  }
  return out;
}

/** A discovery backend whose endpoint set the benchmark replaces. */
function settableBackend(): DiscoveryBackend & { set(endpoints: Endpoint[]): void } {
  let current: DiscoveryUpdate = { kind: "pending" };
  let wake: (() => void) | undefined;
  return {
    name: "bench",
    set(endpoints) {
      current = { kind: "bound", endpoints };
      wake?.();
    },
    async *watch(_name, { signal }) {
      let last: DiscoveryUpdate | undefined;
      while (!signal.aborted) {
        if (current !== last) {
          last = current;
          yield current;
          continue;
        }
        await new Promise<void>((resolve) => {
          const done = () => {
            signal.removeEventListener("abort", done);
            resolve();
          };
          wake = done;
          signal.addEventListener("abort", done);
        });
      }
    },
  };
}

/** Times from a discovery change to the channel acting on it, ms: a server added (its first call), one removed (its last call). */
async function discoveryChanges(
  changes: number,
  concurrency: number,
): Promise<{ added: number[]; removed: number[] }> {
  const arrivals = { a: [] as number[], b: [] as number[] };
  const a = await serve("127.0.0.1", () => arrivals.a.push(performance.now()));
  const b = await serve("127.0.0.1", () => arrivals.b.push(performance.now()));
  const ep = (port: number) =>
    createEndpoint({ address: "127.0.0.1", port, cluster: "c1", backend: "bench" });
  const backend = settableBackend();
  const mesh = createMesh({ env: {}, discovery: [backend] });
  mesh.grpc.register(grpc);
  const client = new Client(mesh.grpc.target("echo.bench", 50051), mesh.grpc.credentials(), {
    interceptors: mesh.grpc.interceptors,
  });
  backend.set([ep(a.port)]);
  let running = true;
  const loop = async () => {
    while (running) await unary(client).catch(() => {});
  };
  const loops = Array.from({ length: concurrency }, loop);
  const until = async (done: () => boolean) => {
    const give = performance.now() + 5000;
    while (!done() && performance.now() < give) await new Promise((r) => setImmediate(r));
  };
  const added: number[] = [];
  const removed: number[] = [];
  try {
    await until(() => arrivals.a.length > 100);
    for (let i = 0; i < changes; i++) {
      // a serves; add b: when does b get its first call?
      const seenB = arrivals.b.length;
      const t0 = performance.now();
      backend.set([ep(a.port), ep(b.port)]);
      await until(() => arrivals.b.length > seenB);
      added.push((arrivals.b[seenB] ?? Number.NaN) - t0);
      // remove a: when does a get its last call?
      const t1 = performance.now();
      backend.set([ep(b.port)]);
      await new Promise((r) => setTimeout(r, 200));
      removed.push(Math.max(0, (arrivals.a.at(-1) ?? t1) - t1));
      // back to a alone, for the next round (the same measurement the other way round is not needed)
      const seenA = arrivals.a.length;
      backend.set([ep(a.port)]);
      await until(() => arrivals.a.length > seenA + 50);
    }
  } finally {
    running = false;
    await Promise.all(loops);
    client.close();
    await mesh.close();
    a.server.forceShutdown();
    b.server.forceShutdown();
  }
  return { added, removed };
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const o = {
    rounds: numberFlag(flags, "rounds", smoke ? 1 : 7),
    blocks: numberFlag(flags, "blocks", smoke ? 2 : 6),
    blockMs: numberFlag(flags, "block", smoke ? 100 : 400),
    warmupMs: numberFlag(flags, "warmup", smoke ? 100 : 600),
    concurrency: numberFlag(flags, "concurrency", 16),
    seed: numberFlag(flags, "seed", 1),
  };
  const changes = numberFlag(flags, "changes", smoke ? 2 : 10);
  console.log(
    `${NAME}: raw channel vs mesh target, c=${o.concurrency}, ${o.rounds} round(s) of ${o.blocks} × ${o.blockMs} ms blocks` +
      ` per path (+${o.warmupMs} ms warm-up); ${changes} discovery change(s)${smoke ? " — smoke pass" : ""}`,
  );
  const rounds = await overhead(o);
  const ratio = median(rounds.map((r) => r.ratio));
  const addedCpu = median(rounds.map((r) => r.addedCpuUs));
  printTable(
    `unary calls at c=${o.concurrency} (per round)`,
    ["round", "raw calls/s", "mesh calls/s", "ratio", "raw CPU µs/call", "mesh CPU µs/call", "+CPU µs/call"],
    rounds.map((r, i) => [
      String(i + 1),
      fmt(r.cps.raw, 0),
      fmt(r.cps.mesh, 0),
      fmt(r.ratio, 3),
      fmt(r.cpuPerCallUs.raw, 1),
      fmt(r.cpuPerCallUs.mesh, 1),
      fmt(r.addedCpuUs, 2),
    ]),
  );
  const { added, removed } = await discoveryChanges(changes, 4);
  printTable(
    "discovery change → channel (ms)",
    ["change", "median", "p90", "max"],
    [
      [
        "endpoint added → its first call",
        fmt(median(added), 2),
        fmt(quantile(added, 0.9), 2),
        fmt(Math.max(...added), 2),
      ],
      [
        "endpoint removed → its last call",
        fmt(median(removed), 2),
        fmt(quantile(removed, 0.9), 2),
        fmt(Math.max(...removed), 2),
      ],
    ],
  );
  const how = `median over ${o.rounds} round(s) of interleaved ${o.blockMs} ms blocks, ratio or difference within each round`;
  const targets: TargetResult[] = [
    target(
      "grpc-mesh-cps-ratio-c16",
      `unary calls/s, mesh target / raw channel, c=${o.concurrency}`,
      ratio,
      ">=",
      0.9,
      "x",
      how,
    ),
    target(
      "grpc-added-cpu-c16",
      `added client CPU per unary call, mesh target against raw channel, c=${o.concurrency}`,
      addedCpu,
      "<=",
      5,
      "µs",
      `${how}; process.cpuUsage() of the client process / calls`,
    ),
    target(
      "grpc-discovery-add",
      "discovery adds an endpoint → its first call (max)",
      Math.max(...added),
      "<=",
      100,
      "ms",
      `${changes} changes under a closed loop of 4 callers`,
    ),
    target(
      "grpc-discovery-remove",
      "discovery removes an endpoint → its last call (max)",
      Math.max(...removed),
      "<=",
      100,
      "ms",
      `${changes} changes under a closed loop of 4 callers`,
    ),
  ];
  printTargets(targets, smoke);
  const file = writeResults(NAME, { smoke, config: { ...o, changes }, rounds, added, removed, targets });
  finish(flags, targets, file);
}

const role = process.argv.find((a) => a.startsWith("--role="))?.slice(7);
const argOf = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
if (role === "server") await serverRole();
else if (role === "client") await clientRole(argOf("path") as Path, Number(argOf("port")));
else await main();

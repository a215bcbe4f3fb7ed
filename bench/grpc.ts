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
import { constants, PerformanceObserver } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import type { DiscoveryBackend, DiscoveryUpdate } from "../src/discovery/discovery.js";
import { createEndpoint, type Endpoint } from "../src/discovery/endpoint.js";
import { parseServiceName } from "../src/discovery/names.js";
import { staticDiscovery } from "../src/discovery/static.js";
import { createMesh } from "../src/mesh.js";
import { ServiceBinding } from "../src/transport/grpc/binding.js";
import type { GrpcTransport } from "../src/transport/grpc/grpc.js";
import { kLeg, type PickedLeg } from "../src/transport/grpc/picker.js";
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
  // Scavenges and their time: what a call allocates shows here first.
  const gc = { minor: 0, ms: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.ms += e.duration;
      const kind = (e as { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
    }
  }).observe({ entryTypes: ["gc"] });
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
    const gc0 = { ...gc };
    await Promise.all(Array.from({ length: msg.concurrency }, worker));
    const elapsedMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    // GC entries arrive after the event loop turns: let them in.
    await new Promise((resolve) => setImmediate(resolve));
    process.send?.({
      type: "result",
      calls,
      errors,
      elapsedMs,
      cpuUs: cpu.user + cpu.system,
      scavenges: gc.minor - gc0.minor,
      gcMs: gc.ms - gc0.ms,
    });
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
  /** Scavenges (minor GCs) during the block. */
  readonly scavenges: number;
  /** Time in GC pauses on the main thread, ms. */
  readonly gcMs: number;
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
  /** Scavenges per 1 000 calls. */
  readonly scavengesPerK: Record<Path, number>;
  /** Main-thread GC pause per call, µs. */
  readonly gcPerCallUs: Record<Path, number>;
  readonly ratio: number;
  readonly addedCpuUs: number;
}

/** One mesh block and the raw block next to it. */
interface Pair {
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
}): Promise<{ rounds: RoundResult[]; pairs: Pair[] }> {
  const server = await child(["--role=server"]);
  const port = Number(server.ready.port);
  const random = prng(o.seed);
  const out: RoundResult[] = [];
  const pairs: Pair[] = [];
  const cps = (b: Block) => (b.calls / b.elapsedMs) * 1000;
  const cpu = (b: Block) => b.cpuUs / b.calls;
  try {
    for (let r = 0; r < o.rounds; r++) {
      const clients = {
        raw: (await child(["--role=client", "--path=raw", `--port=${port}`])).proc,
        mesh: (await child(["--role=client", "--path=mesh", `--port=${port}`])).proc,
      };
      try {
        const total: Record<Path, Block> = {
          raw: { calls: 0, errors: 0, elapsedMs: 0, cpuUs: 0, scavenges: 0, gcMs: 0 },
          mesh: { calls: 0, errors: 0, elapsedMs: 0, cpuUs: 0, scavenges: 0, gcMs: 0 },
        };
        for (const p of shuffle(["raw", "mesh"] as const, random))
          await run(clients[p], o.concurrency, o.warmupMs);
        let order = shuffle(["raw", "mesh"] as const, random);
        for (let b = 0; b < o.blocks; b++) {
          const block = {} as Record<Path, Block>;
          for (const p of order) {
            const s = await run(clients[p], o.concurrency, o.blockMs);
            if (s.errors > 0) throw new Error(`${p}: ${s.errors} failed calls`);
            block[p] = s;
            const t = total[p];
            total[p] = {
              calls: t.calls + s.calls,
              errors: t.errors + s.errors,
              elapsedMs: t.elapsedMs + s.elapsedMs,
              cpuUs: t.cpuUs + s.cpuUs,
              scavenges: t.scavenges + s.scavenges,
              gcMs: t.gcMs + s.gcMs,
            };
          }
          pairs.push({
            ratio: cps(block.mesh) / cps(block.raw),
            addedCpuUs: cpu(block.mesh) - cpu(block.raw),
          });
          order = [order[1]!, order[0]!];
        }
        out.push({
          cps: { raw: cps(total.raw), mesh: cps(total.mesh) },
          cpuPerCallUs: { raw: cpu(total.raw), mesh: cpu(total.mesh) },
          scavengesPerK: {
            raw: (total.raw.scavenges / total.raw.calls) * 1000,
            mesh: (total.mesh.scavenges / total.mesh.calls) * 1000,
          },
          gcPerCallUs: {
            raw: (total.raw.gcMs * 1000) / total.raw.calls,
            mesh: (total.mesh.gcMs * 1000) / total.mesh.calls,
          },
          ratio: cps(total.mesh) / cps(total.raw),
          addedCpuUs: cpu(total.mesh) - cpu(total.raw),
        });
      } finally {
        await Promise.all([stop(clients.raw), stop(clients.mesh)]);
      }
      console.log(`  round ${r + 1}/${o.rounds} done`);
    }
  } finally {
    await stop(server.proc);
  }
  return { rounds: out, pairs };
}

/**
 * meshlink's own work per call, without the network: a call through the
 * mesh's interceptor (controls, span checks, the engine's admission, pick,
 * per-try timer, health, the held unary response) against the same call
 * without interceptors, both over one stand-in for the grpc-js call below,
 * which binds the call as the picker would and answers on a microtask.
 * What grpc-js costs below the interceptor is the same on both sides.
 */
async function ownWork(calls: number, repeats: number): Promise<{ passthroughUs: number; meshUs: number }> {
  const mesh = createMesh({
    env: {},
    discovery: [
      staticDiscovery({ services: { "echo.bench": [{ address: "127.0.0.1", port: 1, cluster: "c1" }] } }),
    ],
  });
  mesh.grpc.register(grpc);
  await mesh.resolve("echo.bench", 50051);
  const binding = new ServiceBinding(mesh.grpc as GrpcTransport, parseServiceName("echo.bench", 50051));
  binding.view = { stateOf: () => grpc.connectivityState.READY, connect: () => {}, repick: () => {} };
  const ok = { code: grpc.status.OK, details: "OK", metadata: new grpc.Metadata() };
  const reply = Buffer.alloc(8);
  class Below {
    #listener: grpc.InterceptingListener | undefined;
    start(md: grpc.Metadata, listener: grpc.InterceptingListener) {
      this.#listener = listener;
      const leg = (md.getOptions() as { [kLeg]?: PickedLeg })[kLeg];
      if (leg !== undefined && !(leg.target(binding) instanceof Error)) leg.started(md);
    }
    sendMessageWithContext() {}
    sendMessage() {}
    halfClose() {
      queueMicrotask(() => {
        const l = this.#listener!;
        l.onReceiveMetadata(new grpc.Metadata());
        l.onReceiveMessage(reply);
        l.onReceiveStatus(ok);
      });
    }
    startRead() {}
    cancelWithStatus() {}
    getPeer() {
      return "";
    }
    getAuthContext() {
      return null;
    }
  }
  const method = SERVICE.Echo!;
  const next = (() => new Below()) as unknown as grpc.NextCall;
  // Without interceptors grpc-js's client starts the call below directly.
  const direct: grpc.Interceptor = (options, nextCall) => nextCall(options) as grpc.InterceptingCall;
  const meshed = mesh.grpc.interceptors[0]!;
  const one = (interceptor: grpc.Interceptor) =>
    new Promise<void>((resolve) => {
      const call = interceptor({ method_definition: method } as grpc.InterceptorOptions, next);
      // The listener as grpc-js's client writes it for a unary call (its shape changes what binding it costs).
      call.start(new grpc.Metadata(), {
        onReceiveMetadata: (_metadata: grpc.Metadata) => {},
        onReceiveMessage(_message: unknown) {},
        onReceiveStatus() {
          resolve();
        },
      });
      call.sendMessage(PAYLOAD);
      call.halfClose();
    });
  const measure = async (interceptor: grpc.Interceptor, n: number) => {
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i += 16) await Promise.all(Array.from({ length: 16 }, () => one(interceptor)));
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / n;
  };
  // Warm-up, alternating: both paths reach the optimizing compiler before anything is counted.
  for (let r = 0; r < 3; r++) {
    await measure(direct, calls / 2);
    await measure(meshed, calls / 2);
  }
  const p: number[] = [];
  const m: number[] = [];
  for (let r = 0; r < repeats; r++) {
    p.push(await measure(direct, calls));
    m.push(await measure(meshed, calls));
  }
  await mesh.close();
  return { passthroughUs: median(p), meshUs: median(m) };
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
    rounds: numberFlag(flags, "rounds", smoke ? 1 : 5),
    blocks: numberFlag(flags, "blocks", smoke ? 2 : 10),
    blockMs: numberFlag(flags, "block", smoke ? 100 : 300),
    warmupMs: numberFlag(flags, "warmup", smoke ? 100 : 600),
    concurrency: numberFlag(flags, "concurrency", 16),
    seed: numberFlag(flags, "seed", 1),
  };
  const changes = numberFlag(flags, "changes", smoke ? 2 : 10);
  console.log(
    `${NAME}: raw channel vs mesh target, c=${o.concurrency}, ${o.rounds} round(s) of ${o.blocks} × ${o.blockMs} ms blocks` +
      ` per path (+${o.warmupMs} ms warm-up); ${changes} discovery change(s)${smoke ? " — smoke pass" : ""}`,
  );
  const { rounds, pairs } = await overhead(o);
  const ratio = median(pairs.map((p) => p.ratio));
  const addedCpu = median(pairs.map((p) => p.addedCpuUs));
  printTable(
    `unary calls at c=${o.concurrency} (per round, all its blocks)`,
    [
      "round",
      "raw calls/s",
      "mesh calls/s",
      "ratio",
      "raw CPU µs/call",
      "mesh CPU µs/call",
      "+CPU µs/call",
      "scavenges/1k raw",
      "mesh",
      "GC µs/call raw",
      "mesh",
    ],
    rounds.map((r, i) => [
      String(i + 1),
      fmt(r.cps.raw, 0),
      fmt(r.cps.mesh, 0),
      fmt(r.ratio, 3),
      fmt(r.cpuPerCallUs.raw, 1),
      fmt(r.cpuPerCallUs.mesh, 1),
      fmt(r.addedCpuUs, 2),
      fmt(r.scavengesPerK.raw, 2),
      fmt(r.scavengesPerK.mesh, 2),
      fmt(r.gcPerCallUs.raw, 1),
      fmt(r.gcPerCallUs.mesh, 1),
    ]),
  );
  printTable(
    `adjacent block pairs (${pairs.length})`,
    ["", "p25", "median", "p75"],
    [
      [
        "calls/s ratio",
        ...[0.25, 0.5, 0.75].map((q) =>
          fmt(
            quantile(
              pairs.map((p) => p.ratio),
              q,
            ),
            3,
          ),
        ),
      ],
      [
        "+CPU µs/call",
        ...[0.25, 0.5, 0.75].map((q) =>
          fmt(
            quantile(
              pairs.map((p) => p.addedCpuUs),
              q,
            ),
            2,
          ),
        ),
      ],
    ],
  );
  // In a fresh process of its own: the parent's heap and JIT state would blur a figure of about 1 µs.
  const ownChild = await child([
    "--role=own",
    `--calls=${smoke ? 20_000 : 100_000}`,
    `--repeats=${smoke ? 2 : 7}`,
  ]);
  const own = ownChild.ready as unknown as { passthroughUs: number; meshUs: number };
  await stop(ownChild.proc);
  printTable(
    "meshlink's own work per call, no network (median)",
    ["interceptor", "CPU µs/call"],
    [
      ["none (the call below, as grpc-js starts it)", fmt(own.passthroughUs, 2)],
      ["mesh.grpc.interceptors", fmt(own.meshUs, 2)],
      ["added", fmt(own.meshUs - own.passthroughUs, 2)],
    ],
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
  const how = `median over ${pairs.length} adjacent pairs of ${o.blockMs} ms blocks (${o.rounds} round(s) of fresh processes), ratio or difference within each pair`;
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
      "grpc-own-cpu",
      "meshlink's own work per unary call (interceptor, engine, pick, health), no network",
      own.meshUs - own.passthroughUs,
      "<=",
      5,
      "µs",
      "CPU per call through mesh.grpc.interceptors minus the same call without interceptors, over one stand-in call below",
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
  const file = writeResults(NAME, {
    smoke,
    config: { ...o, changes },
    rounds,
    pairs,
    own,
    added,
    removed,
    targets,
  });
  finish(flags, targets, file);
}

const role = process.argv.find((a) => a.startsWith("--role="))?.slice(7);
const argOf = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
if (role === "server") await serverRole();
else if (role === "own") {
  const result = await ownWork(Number(argOf("calls")), Number(argOf("repeats")));
  if (process.send === undefined) console.log(result);
  else process.send(result);
  process.on("disconnect", () => process.exit(0));
} else if (role === "client") await clientRole(argOf("path") as Path, Number(argOf("port")));
else await main();

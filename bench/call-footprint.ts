/**
 * The footprint of one call through the mesh, without a network or an HTTP
 * client around it: what meshlink's own code costs per call when it is hot
 * and when the caches are cold, and how much optimised machine code it runs.
 *
 * Why: at concurrency 1 a call through the mesh costs 10–35 µs of client CPU
 * more than its twin in `http-overhead` (also under `undici.request`), but
 * 1–2 µs at concurrency 16, where requests follow each other in one turn of
 * the event loop and meshlink's code and data stay in the caches. Between two
 * sequential requests the process waits for the server, and the kernel, the
 * server and the HTTP client's own machinery evict meshlink's code and data:
 * its cost at c=1 is set by how many cache lines of code and data a call
 * touches. End to end, that is buried in ±6 µs of run-to-run noise; here it
 * is measured directly, so that work on the call's footprint can be judged.
 *
 * Measured, in one process with a synchronous scripted agent (it answers each
 * attempt at once: 200, one body chunk, the end), for the options and handler
 * shapes of Node's `fetch` and of `undici.request`:
 * - **hot**: calls back to back, µs per call (the median over blocks);
 * - **cold**: a 32 MiB sweep of memory before each call (more than the L2 and
 *   this machine's share of L3: code and data both come from memory again),
 *   µs per call, the sweep not counted;
 * - **code**: the optimised (TurboFan) machine code of meshlink's functions
 *   that the calls ran, from V8's `--perf-basic-prof` map: functions and bytes
 *   (an upper bound of the instruction footprint of one call: a function
 *   optimised once counts with its whole code);
 * - **work**: how many of meshlink's functions one call runs and how many
 *   calls of them it makes, from V8's precise coverage with call counts over
 *   1 000 calls of each shape after the timed blocks. Exact, with no noise:
 *   the gauge of a change to what a call executes, which at concurrency 1
 *   costs 10–20 × its hot time (docs/performance.md, second and sixth passes).
 *
 *     npx tsx bench/call-footprint.ts [--smoke] [--blocks=16]
 *
 * @module
 */

import { fork } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Dispatcher } from "undici";
import { MeshDispatcher } from "../src/transport/http/dispatcher.js";
import { meshRoutes } from "../test/transport/mesh-routes.js";
import {
  finish,
  fmt,
  median,
  numberFlag,
  parseFlags,
  printTable,
  type TargetResult,
  writeResults,
} from "./lib/common.js";
import { rewriteDispatcher } from "./lib/paths.js";

const NAME = "call-footprint";

/** An agent that answers every attempt at once, in the legacy handler API: what the call's own code costs, alone. */
class ScriptedAgent extends Dispatcher {
  static readonly BODY = Buffer.from('{"ok":true}');
  override dispatch(_opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const h = handler as unknown as {
      onConnect(abort: () => void): void;
      onHeaders(status: number, headers: Buffer[], resume: () => void, text: string): boolean;
      onData(chunk: Buffer): boolean;
      onComplete(trailers: Buffer[]): void;
    };
    h.onConnect(noop);
    h.onHeaders(200, [], noop, "OK");
    h.onData(ScriptedAgent.BODY);
    h.onComplete([]);
    return true;
  }
  override async close(): Promise<void> {}
  override async destroy(): Promise<void> {}
}

function noop(): void {}

const ORIGIN = "http://api.default.svc.cluster.local:8080";

/** The options and handler Node's fetch (undici 6) hands a dispatcher: an object of headers, a handler literal. */
function fetchCall(): [Dispatcher.DispatchOptions, Dispatcher.DispatchHandler] {
  const opts = {
    path: "/",
    origin: ORIGIN,
    method: "GET",
    body: null,
    headers: {
      accept: "*/*",
      "accept-language": "*",
      "sec-fetch-mode": "cors",
      "user-agent": "node",
      "accept-encoding": "gzip, deflate",
    },
    maxRedirections: 0,
    upgrade: undefined,
  };
  const handler = {
    body: null,
    abort: null as unknown,
    onConnect(abort: unknown) {
      this.abort = abort;
    },
    onResponseStarted() {},
    onHeaders() {
      return true;
    },
    onData() {
      return true;
    },
    onComplete() {},
    onError(err: Error) {
      throw err;
    },
    onUpgrade() {},
  };
  return [opts as unknown as Dispatcher.DispatchOptions, handler as unknown as Dispatcher.DispatchHandler];
}

/** What `undici.request` hands a dispatcher: its options, and a handler of a class of its own. */
class RequestLikeHandler {
  abort: unknown = null;
  onConnect(abort: unknown): void {
    this.abort = abort;
  }
  onHeaders(): boolean {
    return true;
  }
  onData(): boolean {
    return true;
  }
  onComplete(): void {}
  onError(err: Error): void {
    throw err;
  }
}

function requestCall(): [Dispatcher.DispatchOptions, Dispatcher.DispatchHandler] {
  const opts = { origin: ORIGIN, path: "/", method: "GET", headers: undefined, body: null };
  return [
    opts as unknown as Dispatcher.DispatchOptions,
    new RequestLikeHandler() as unknown as Dispatcher.DispatchHandler,
  ];
}

const SHAPES = { fetch: fetchCall, request: requestCall } as const;
type Shape = keyof typeof SHAPES;

/** What the measuring child reports. */
interface Measured {
  readonly hot: Record<Shape, number>;
  readonly cold: Record<Shape, number>;
  /** The same for the floor: a dispatcher that copies the options with another origin and hands the caller's handler to the agent. */
  readonly floorHot: Record<Shape, number>;
  readonly floorCold: Record<Shape, number>;
  readonly code: { functions: number; bytes: number; top: { name: string; bytes: number }[] } | undefined;
  /** Per call of each shape: meshlink's functions run, and the calls made of them. */
  readonly work: Record<Shape, { functions: number; calls: number }>;
}

/** Counts, with V8's precise coverage, meshlink's functions that `calls` calls of `shape` run and how often. */
async function countWork(
  d: Dispatcher,
  shape: Shape,
  calls: number,
): Promise<{ functions: number; calls: number }> {
  const session = new Session();
  session.connect();
  try {
    await session.post("Profiler.enable");
    await session.post("Profiler.startPreciseCoverage", { callCount: true, detailed: false });
    await session.post("Profiler.takePreciseCoverage"); // zero the counts
    const make = SHAPES[shape];
    for (let i = 0; i < calls; i++) d.dispatch(...make());
    const { result } = await session.post("Profiler.takePreciseCoverage");
    await session.post("Profiler.stopPreciseCoverage");
    const src = new URL("../src/", import.meta.url).href;
    let functions = 0;
    let count = 0;
    for (const script of result) {
      if (!script.url.startsWith(src)) continue;
      for (const f of script.functions) {
        // A function's first range is the whole function; its count is how often it ran.
        const n = f.ranges[0]?.count ?? 0;
        if (n === 0) continue;
        functions++;
        count += n;
      }
    }
    return { functions, calls: count / calls };
  } finally {
    session.disconnect();
  }
}

const SWEEP = new Float64Array((32 * 1024 * 1024) / 8);
let sink = 0;
/** Reads one value per cache line of 32 MiB. */
function sweep(): void {
  for (let i = 0; i < SWEEP.length; i += 8) sink += SWEEP[i]!;
}

function measureBlock(d: Dispatcher, shape: Shape, calls: number, cold: boolean): number {
  const make = SHAPES[shape];
  let ns = 0n;
  for (let i = 0; i < calls; i++) {
    const [opts, handler] = make();
    if (cold) sweep();
    const t0 = process.hrtime.bigint();
    d.dispatch(opts, handler);
    ns += process.hrtime.bigint() - t0;
  }
  return Number(ns) / calls / 1000;
}

/** The optimised code of meshlink's own functions created since `from` bytes of the map: the last version of each. */
function optimisedCode(mapFile: string, from: number): Measured["code"] {
  if (!existsSync(mapFile)) return undefined;
  const text = readFileSync(mapFile, "latin1").slice(from);
  const src = fileURLToPath(new URL("../src/", import.meta.url));
  const byName = new Map<string, number>();
  for (const line of text.split("\n")) {
    // <address> <size> <name>: `JS:*` is TurboFan code.
    const [, size, name] = /^[0-9a-f]+ ([0-9a-f]+) (JS:\*.*)$/.exec(line) ?? [];
    if (size === undefined || name === undefined || !name.includes(src)) continue;
    byName.set(name.slice(4).replace(`file://${src}`, ""), Number.parseInt(size, 16));
  }
  const top = [...byName].sort((a, b) => b[1] - a[1]).map(([name, bytes]) => ({ name, bytes }));
  return { functions: top.length, bytes: top.reduce((s, f) => s + f.bytes, 0), top: top.slice(0, 8) };
}

async function child(blocks: number, hotCalls: number, coldCalls: number): Promise<Measured> {
  const routes = meshRoutes({
    "api.default": [{ address: "10.0.0.1", port: 8080, cluster: "east", region: "east", zone: "east-a" }],
  });
  const d = new MeshDispatcher(routes, { agent: new ScriptedAgent(), plainAgent: true });
  // The first call waits for discovery; let it settle before anything is counted.
  d.dispatch(...fetchCall());
  await new Promise((resolve) => setTimeout(resolve, 20));
  const mapFile = `/tmp/perf-${process.pid}.map`;
  const from = existsSync(mapFile) ? statSync(mapFile).size : 0;
  const { dispatcher: floor } = await rewriteDispatcher("http://10.0.0.1:8080", new ScriptedAgent());
  const series = () => ({ fetch: [] as number[], request: [] as number[] });
  const hot = series();
  const cold = series();
  const floorHot = series();
  const floorCold = series();
  const shapes = Object.keys(SHAPES) as Shape[];
  for (let b = -2; b < blocks; b++) {
    for (const shape of b % 2 === 0 ? shapes : [...shapes].reverse()) {
      // The mesh and the floor alternate, each hot then cold; the first two cycles warm the JIT up.
      const m = [measureBlock(d, shape, hotCalls, false), measureBlock(d, shape, coldCalls, true)];
      const f = [measureBlock(floor, shape, hotCalls, false), measureBlock(floor, shape, coldCalls, true)];
      if (b < 0) continue;
      hot[shape].push(m[0]!);
      cold[shape].push(m[1]!);
      floorHot[shape].push(f[0]!);
      floorCold[shape].push(f[1]!);
    }
  }
  const code = optimisedCode(mapFile, from);
  rmSync(mapFile, { force: true });
  const work = { fetch: await countWork(d, "fetch", 1000), request: await countWork(d, "request", 1000) };
  await routes.close();
  const med = (r: Record<Shape, number[]>) => ({ fetch: median(r.fetch), request: median(r.request) });
  return { hot: med(hot), cold: med(cold), floorHot: med(floorHot), floorCold: med(floorCold), code, work };
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const blocks = numberFlag(flags, "blocks", smoke ? 1 : 16);
  const hotCalls = smoke ? 500 : 20_000;
  const coldCalls = smoke ? 20 : 400;
  console.log(
    `${NAME}: ${blocks} block(s) per shape of ${hotCalls} hot calls and ${coldCalls} cold calls (32 MiB sweep before each)` +
      `${smoke ? " — smoke pass" : ""}`,
  );
  // A child of its own, with V8's perf map on, so that the code it optimises can be read back. The
  // perf map also turns V8's code log on: it goes to a file of our own, removed after.
  const log = join(tmpdir(), `meshlink-${NAME}-${process.pid}.v8.log`);
  const m = await new Promise<Measured>((resolve, reject) => {
    const c = fork(
      fileURLToPath(import.meta.url),
      ["--child", String(blocks), String(hotCalls), String(coldCalls)],
      {
        execArgv: [...process.execArgv, "--perf-basic-prof", "--no-logfile-per-isolate", `--logfile=${log}`],
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    c.once("message", (msg) => resolve(msg as Measured));
    c.once("exit", (code) => reject(new Error(`the measuring child exited with ${code}`)));
  }).finally(() => rmSync(log, { force: true }));
  printTable(
    "µs per call: dispatch → scripted agent → the caller's handler (median over blocks)",
    [
      "shape",
      "mesh hot",
      "floor hot",
      "mesh cold (32 MiB sweep)",
      "floor cold",
      "meshlink's share hot",
      "cold",
    ],
    (Object.keys(SHAPES) as Shape[]).map((s) => [
      s,
      fmt(m.hot[s], 2),
      fmt(m.floorHot[s], 2),
      fmt(m.cold[s], 2),
      fmt(m.floorCold[s], 2),
      fmt(m.hot[s] - m.floorHot[s], 2),
      fmt(m.cold[s] - m.floorCold[s], 2),
    ]),
  );
  if (m.code === undefined) console.log("\noptimised code: no perf map (not Linux, or V8 wrote none)");
  else {
    console.log(
      `\noptimised meshlink code the calls ran: ${m.code.functions} functions, ${m.code.bytes} bytes`,
    );
    for (const f of m.code.top) console.log(`  ${String(f.bytes).padStart(6)}  ${f.name}`);
  }
  console.log("\nmeshlink's work per call (V8 precise coverage over 1 000 calls of each shape):");
  for (const s of Object.keys(SHAPES) as Shape[]) {
    console.log(`  ${s.padEnd(8)} ${m.work[s].functions} functions, ${fmt(m.work[s].calls, 1)} calls`);
  }
  const targets: TargetResult[] = [];
  const file = writeResults(NAME, { config: { blocks, hotCalls, coldCalls }, ...m, targets });
  finish(flags, targets, file);
}

if (process.argv[2] === "--child") {
  const [blocks, hot, cold] = process.argv.slice(3).map(Number) as [number, number, number];
  const m = await child(blocks, hot, cold);
  // The sweep's sum is read once, so that nothing may drop the sweep as dead code.
  process.send?.(m, () => process.exit(Number.isNaN(sink) ? 1 : 0));
} else {
  await main();
}

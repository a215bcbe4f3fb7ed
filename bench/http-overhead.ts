/**
 * HTTP overhead of the mesh on one loopback server with keep-alive: every
 * client path of `lib/paths.ts` against its unmeshed twin, at concurrency 1,
 * 16 and 64 — requests per second as a ratio, added p50/p99 latency and added
 * client CPU per request — plus CPU profiles of the meshed paths.
 *
 * Method (`lib/interleave.ts`): the server runs in its own process, and so
 * does every client path (no shared JIT state, garbage or global
 * dispatcher). A run starts fresh client processes; in it, each group of
 * paths compared with each other takes turns in short blocks (250 ms, the
 * order reversed every cycle), and a ratio or a difference is taken between
 * the totals of a path and its twin over their blocks. Runs are repeated:
 * the median over runs is the figure, the interquartile range its spread.
 *
 *     npx tsx bench/http-overhead.ts [--smoke] [--strict] [--runs=5] [--blocks=16] [--block=250]
 *       [--warmup-cycles=1] [--concurrency=1,16,64] [--set=all|targets] [--paths=request+Pool,request+mesh]
 *       [--profile=3000|off] [--profile-c=1,16] [--seed=1]
 *
 * @module
 */

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  finish,
  fmt,
  listFlag,
  numberFlag,
  parseFlags,
  printTable,
  printTargets,
  RESULTS_DIR,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";
import { aggregate, compare, fmtSpread, interleaveBlocks, type Spread } from "./lib/interleave.js";
import { type ClientSpec, MESH_LOCALITY, PATHS, type PathId } from "./lib/paths.js";
import { startServer } from "./lib/procs.js";
import type { ProfileSummary } from "./lib/profile.js";

const NAME = "http-overhead";

/** The groups the targets are read from: each meshed path alone with its twin, so that they alternate block by block. */
const TARGET_GROUPS: readonly (readonly PathId[])[] = [
  ["request+Pool", "request+mesh"],
  ["fetch+Agent", "mesh.fetch"],
  ["fetch(global=Agent)", "fetch(global=mesh)"],
];

/** Groups that explain the figures (`--set=all`, the default). */
const DIAGNOSTIC_GROUPS: readonly (readonly PathId[])[] = [
  ["request+Pool", "request+noop", "request+rewrite", "pool.request"],
  ["request+Agent", "request+mesh(other host)"],
  ["fetch+Agent", "fetch+rewrite"],
  ["fetch(global=Agent)", "fetch(global)"],
];

/** Pairs compared: a path and its unmeshed twin (or another reference), from the first group that has both. */
const COMPARISONS: readonly { path: PathId; twin: PathId; why: string }[] = [
  { path: "request+mesh", twin: "request+Pool", why: "target: the meshed dispatcher against a raw Pool" },
  { path: "mesh.fetch", twin: "fetch+Agent", why: "target: mesh.fetch against fetch with a raw Agent" },
  {
    path: "fetch(global=mesh)",
    twin: "fetch(global=Agent)",
    why: "target: global fetch, mesh.dispatcher against undici's Agent",
  },
  { path: "request+noop", twin: "request+Pool", why: "undici's compose() alone (Wrap/UnwrapHandler)" },
  {
    path: "request+rewrite",
    twin: "request+Pool",
    why: "the floor: an origin-rewriting Dispatcher, no compose()",
  },
  { path: "pool.request", twin: "request+Pool", why: "undici.request's own layer over Pool.request" },
  {
    path: "request+mesh(other host)",
    twin: "request+Agent",
    why: "a host that is not a mesh name, through mesh.dispatcher",
  },
  {
    path: "fetch+rewrite",
    twin: "fetch+Agent",
    why: "the floor under fetch: an origin-rewriting Dispatcher",
  },
  {
    path: "fetch(global)",
    twin: "fetch(global=Agent)",
    why: "Node's own bundled dispatcher against npm undici's Agent",
  },
];

/** Paths profiled, with what they are compared with. */
const PROFILED: readonly PathId[] = [
  "request+Pool",
  "request+mesh",
  "fetch+Agent",
  "mesh.fetch",
  "fetch(global=Agent)",
  "fetch(global=mesh)",
];

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const concurrencies = listFlag(flags, "concurrency", ["1", "16", "64"]).map(Number);
  const runs = numberFlag(flags, "runs", smoke ? 1 : 5);
  const blocks = numberFlag(flags, "blocks", smoke ? 2 : 16);
  const blockMs = numberFlag(flags, "block", smoke ? 50 : 250);
  const warmupCycles = numberFlag(flags, "warmup-cycles", 1);
  const profileOff = flags.values.get("profile") === "off";
  const profileMs = profileOff ? 0 : numberFlag(flags, "profile", smoke ? 300 : 3000);
  const profileCs = listFlag(flags, "profile-c", smoke ? ["16"] : ["1", "16"]).map(Number);
  const set = flags.values.get("set") ?? "all";
  if (set !== "all" && set !== "targets") throw new Error(`--set=${set}: expected all or targets`);
  const wanted = new Set(listFlag(flags, "paths", Object.keys(PATHS)) as PathId[]);
  const seed = numberFlag(flags, "seed", 1);
  for (const p of wanted)
    if (!(p in PATHS)) throw new Error(`unknown path ${p}; known: ${Object.keys(PATHS)}`);
  let groups = [...TARGET_GROUPS, ...(set === "all" ? DIAGNOSTIC_GROUPS : [])]
    .map((g) => g.filter((p) => wanted.has(p)))
    .filter((g) => g.length >= 2);
  // One path alone (or paths of no common group): each runs by itself.
  if (groups.length === 0) groups = [...wanted].map((p) => [p]);
  const paths = [...new Set(groups.flat())];

  console.log(
    `${NAME}: ${groups.length} group(s) of ${paths.length} paths × concurrency ${concurrencies.join("/")} × ${runs} run(s);` +
      ` each series ${blocks} measured block(s) of ${blockMs} ms per path after ${warmupCycles} warm-up cycle(s)` +
      `${smoke ? " — smoke pass" : ""}`,
  );
  const server = await startServer(["a"]);
  const port = server.ports.a!;
  const origin = `http://127.0.0.1:${port}`;
  const endpoints = [{ address: "127.0.0.1", port, cluster: "bench-c1", ...MESH_LOCALITY }];
  const specs = new Map<string, ClientSpec>(
    paths.map((path): [string, ClientSpec] => {
      if (!PATHS[path].meshed) return [path, { path, origin }];
      return [path, path === "request+mesh(other host)" ? { path, endpoints, origin } : { path, endpoints }];
    }),
  );
  try {
    const profiles: Record<string, ProfileSummary> = {};
    mkdirSync(RESULTS_DIR, { recursive: true });
    const started = Date.now();
    const data = await interleaveBlocks({
      specs,
      server,
      groups,
      concurrencies,
      runs,
      blocks,
      blockMs,
      warmupCycles,
      jitWarmupMs: smoke ? 100 : 500,
      seed,
      afterLastRun: async (clients) => {
        if (profileOff) return;
        for (const c of profileCs) {
          for (const path of PROFILED) {
            const client = clients.get(path);
            if (client === undefined) continue;
            const file = join(RESULTS_DIR, `${NAME}.${path.replace(/[^a-z0-9.+-]/gi, "_")}.c${c}.cpuprofile`);
            profiles[`${path} c=${c}`] = await client.profile(c, profileMs, file);
          }
        }
      },
      onRun: (r) =>
        console.log(`  run ${r + 1}/${runs} done (${((Date.now() - started) / 1000).toFixed(0)} s)`),
    });
    const aggregates = aggregate(data);
    const comparisons = compare(data, COMPARISONS);

    for (const c of concurrencies) {
      printTable(
        `concurrency ${c}: median [quartiles] over ${runs} run(s)`,
        ["path", "req/s", "p50 µs", "p99 µs", "client CPU µs/req", "server busy %"],
        aggregates
          .filter((a) => a.concurrency === c)
          .map((a) => [
            a.path,
            fmtSpread(a.rps, 0),
            fmtSpread(a.p50Us),
            fmtSpread(a.p99Us),
            fmtSpread(a.cpuUs),
            fmt(a.serverBusy.median, 0),
          ]),
      );
    }
    printTable(
      "path against twin, paired within each run's series: median [quartiles] over runs",
      ["c", "path", "twin", "req/s ratio", "+p50 µs", "+p99 µs", "+CPU µs/req"],
      comparisons.map((x) => [
        String(x.concurrency),
        x.path,
        x.twin,
        fmtSpread(x.rpsRatio, 3),
        fmtSpread(x.addedP50Us),
        fmtSpread(x.addedP99Us),
        fmtSpread(x.addedCpuUs, 1),
      ]),
    );

    printProfiles(profiles);

    const cmp = (path: PathId, twin: PathId, c: number) =>
      comparisons.find((x) => x.path === path && x.twin === twin && x.concurrency === c);
    const targets: TargetResult[] = [];
    const how = `median over ${runs} run(s) of the ratio or difference within each run (${blocks} interleaved blocks of ${blockMs} ms per path)`;
    const add = (
      id: string,
      description: string,
      value: Spread | undefined,
      op: ">=" | "<=",
      limit: number,
      unit: string,
    ) => {
      if (value !== undefined) {
        targets.push(
          target(
            id,
            description,
            value.median,
            op,
            limit,
            unit,
            `${how}; quartiles ${fmt(value.q1, 2)} to ${fmt(value.q3, 2)}`,
          ),
        );
      }
    };
    const request = (c: number) => cmp("request+mesh", "request+Pool", c);
    for (const c of [16, 64]) {
      add(
        `request-mesh-rps-c${c}`,
        `undici.request via mesh.dispatcher / via raw Pool, req/s at c=${c}`,
        request(c)?.rpsRatio,
        ">=",
        0.9,
        "x",
      );
    }
    add(
      "request-mesh-p50-c1",
      "undici.request via mesh.dispatcher, added p50 at c=1",
      request(1)?.addedP50Us,
      "<=",
      15,
      "µs",
    );
    add(
      "request-mesh-cpu-c16",
      "undici.request via mesh.dispatcher, added client CPU per request at c=16",
      request(16)?.addedCpuUs,
      "<=",
      2.5,
      "µs",
    );
    for (const [path, twin, label] of [
      ["mesh.fetch", "fetch+Agent", "mesh.fetch / fetch with a raw Agent as dispatcher"],
      [
        "fetch(global=mesh)",
        "fetch(global=Agent)",
        "global fetch, mesh.dispatcher / a raw Agent as global dispatcher",
      ],
    ] as const) {
      const id = path === "mesh.fetch" ? "mesh-fetch" : "global-fetch";
      add(`${id}-p50-c1`, `${label}: added p50 at c=1`, cmp(path, twin, 1)?.addedP50Us, "<=", 15, "µs");
      add(
        `${id}-p99-c1`,
        `${label}: added p99 at c=1 (goal)`,
        cmp(path, twin, 1)?.addedP99Us,
        "<=",
        50,
        "µs",
      );
      add(
        `${id}-cpu-c1`,
        `${label}: added client CPU per request at c=1`,
        cmp(path, twin, 1)?.addedCpuUs,
        "<=",
        5,
        "µs",
      );
      for (const c of [16, 64]) {
        add(`${id}-rps-c${c}`, `${label}: req/s at c=${c}`, cmp(path, twin, c)?.rpsRatio, ">=", 0.95, "x");
      }
    }
    printTargets(targets, smoke);
    const file = writeResults(NAME, {
      smoke,
      config: { concurrencies, runs, blocks, blockMs, warmupCycles, profileMs, profileCs, groups, seed },
      paths: Object.fromEntries(paths.map((p) => [p, PATHS[p]])),
      aggregates,
      comparisons,
      targets,
      profiles,
      series: data,
    });
    finish(flags, targets, file);
  } finally {
    await server.close();
  }
}

function printProfiles(profiles: Record<string, ProfileSummary>): void {
  const names = Object.keys(profiles);
  if (names.length === 0) return;
  const categories = [...new Set(names.flatMap((n) => Object.keys(profiles[n]!.categories)))].filter(
    (c) => c !== "idle" && c !== "root",
  );
  printTable(
    "CPU profiles: self time by category, µs per request (inspector sampling; inflates absolute costs)",
    ["category", ...names],
    [
      ...categories.map((cat) => [cat, ...names.map((n) => fmt(profiles[n]!.categories[cat] ?? 0, 2))]),
      [
        "total (busy)",
        ...names.map((n) =>
          fmt(
            categories.reduce((s, cat) => s + (profiles[n]!.categories[cat] ?? 0), 0),
            2,
          ),
        ),
      ],
    ],
  );
  for (const name of names.filter((n) => !n.startsWith("request+Pool") && !n.includes("Agent"))) {
    const p = profiles[name]!;
    printTable(
      `${name}: meshlink's own frames (self and inclusive µs per request; ${p.requests} requests, ${p.samples} samples)`,
      ["frame", "location", "self µs", "total µs"],
      p.meshlink.slice(0, 15).map((f) => [f.name, f.location, fmt(f.selfUs, 3), fmt(f.totalUs, 3)]),
    );
    printTable(
      `${name}: undici's compose() machinery`,
      ["frame", "location", "self µs", "total µs"],
      p.undiciCompose.map((f) => [f.name, f.location, fmt(f.selfUs, 3), fmt(f.totalUs, 3)]),
    );
  }
  for (const name of names.filter((n) => n.startsWith("mesh.fetch") || n.startsWith("fetch(global=mesh)"))) {
    const mesh = profiles[name]!;
    printTable(
      `${name}: top frames by self time`,
      ["frame", "location", "category", "self µs", "total µs"],
      mesh.topSelf
        .slice(0, 20)
        .map((f) => [f.name, f.location, f.category, fmt(f.selfUs, 3), fmt(f.totalUs, 3)]),
    );
  }
}

await main();

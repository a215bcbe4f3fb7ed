/**
 * HTTP overhead of the mesh on one loopback server with keep-alive: every
 * client path of `lib/paths.ts` against its unmeshed twin, at concurrency 1,
 * 16 and 64 — requests per second as a ratio, added p50/p99 latency and added
 * client CPU per request — plus a CPU profile of the meshed path.
 *
 * Method: the server runs in its own process, and so does every client path
 * (no shared JIT state, garbage or global dispatcher), and each round
 * starts fresh client processes. Runs are interleaved: each round runs every
 * path once per concurrency, families of paths back to back in a seeded
 * random order, and a ratio or a difference is taken between a path and its
 * twin within the same round; the figure reported is the median over rounds.
 *
 *     npx tsx bench/http-overhead.ts [--smoke] [--strict] [--rounds=7] [--duration=1000]
 *       [--warmup=250] [--concurrency=1,16,64] [--paths=request+Pool,request+mesh] [--profile=3000] [--seed=1]
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
import { aggregate, compare, interleave } from "./lib/interleave.js";
import { type ClientSpec, MESH_LOCALITY, PATHS, type PathId } from "./lib/paths.js";
import { startServer } from "./lib/procs.js";
import type { ProfileSummary } from "./lib/profile.js";

const NAME = "http-overhead";

/** Pairs compared: a path and its unmeshed twin (or another reference). */
const COMPARISONS: readonly { path: PathId; twin: PathId; why: string }[] = [
  { path: "request+mesh", twin: "request+Pool", why: "target: the meshed dispatcher against a raw Pool" },
  {
    path: "request+mesh",
    twin: "request+Agent",
    why: "the meshed dispatcher against the raw Agent it wraps",
  },
  { path: "request+noop", twin: "request+Pool", why: "undici's compose() alone (Wrap/UnwrapHandler)" },
  { path: "request+mesh", twin: "request+noop", why: "meshlink's own logic, compose() tax removed" },
  {
    path: "request+rewrite",
    twin: "request+Pool",
    why: "the floor: an origin-rewriting Dispatcher, no compose()",
  },
  {
    path: "request+mesh(other host)",
    twin: "request+Agent",
    why: "a host that is not a mesh name, through mesh.dispatcher",
  },
  { path: "mesh.fetch", twin: "fetch+Agent", why: "target: mesh.fetch against fetch with a raw Agent" },
  { path: "mesh.fetch", twin: "pool.request", why: "mesh.fetch against raw undici (not like for like)" },
  {
    path: "fetch(global=mesh)",
    twin: "fetch(global=Agent)",
    why: "global fetch, mesh against undici's Agent",
  },
  {
    path: "fetch(global=mesh)",
    twin: "fetch(global)",
    why: "global fetch, mesh against Node's own dispatcher",
  },
];

/** Paths profiled at concurrency 16: the meshed path and what it is compared with. */
const PROFILED: readonly PathId[] = [
  "request+Pool",
  "request+noop",
  "request+mesh",
  "fetch+Agent",
  "mesh.fetch",
];

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const concurrencies = listFlag(flags, "concurrency", ["1", "16", "64"]).map(Number);
  const rounds = numberFlag(flags, "rounds", smoke ? 1 : 7);
  const durationMs = numberFlag(flags, "duration", smoke ? 150 : 1000);
  const warmupMs = numberFlag(flags, "warmup", smoke ? 50 : 250);
  const profileMs = numberFlag(flags, "profile", smoke ? 300 : 3000);
  const paths = listFlag(flags, "paths", Object.keys(PATHS)) as PathId[];
  const seed = numberFlag(flags, "seed", 1);
  for (const p of paths)
    if (!(p in PATHS)) throw new Error(`unknown path ${p}; known: ${Object.keys(PATHS)}`);

  console.log(
    `${NAME}: ${paths.length} paths × concurrency ${concurrencies.join("/")} × ${rounds} round(s) of ${durationMs} ms` +
      ` (+${warmupMs} ms warm-up each)${smoke ? " — smoke pass" : ""}`,
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
    const families = new Map<string, PathId[]>();
    for (const p of paths) families.set(PATHS[p].family, [...(families.get(PATHS[p].family) ?? []), p]);
    // CPU profiles at concurrency 16, taken with the last round's processes.
    const profiles: Record<string, ProfileSummary> = {};
    mkdirSync(RESULTS_DIR, { recursive: true });
    const rounds_ = await interleave({
      specs,
      server,
      groups: [...families.values()],
      concurrencies,
      rounds,
      durationMs,
      warmupMs,
      jitWarmupMs: smoke ? 100 : 500,
      seed,
      afterLastRound: async (clients) => {
        for (const path of PROFILED) {
          const client = clients.get(path);
          if (client === undefined) continue;
          const file = join(RESULTS_DIR, `${NAME}.${path.replace(/[^a-z0-9.+-]/gi, "_")}.cpuprofile`);
          profiles[path] = await client.profile(16, profileMs, file);
        }
      },
    });
    const aggregates = aggregate(rounds_);
    const comparisons = compare(rounds_, COMPARISONS);

    for (const c of concurrencies) {
      printTable(
        `concurrency ${c} (median of ${rounds} round(s))`,
        ["path", "req/s", "p50 µs", "p99 µs", "client CPU µs/req", "server busy %"],
        aggregates
          .filter((a) => a.concurrency === c)
          .map((a) => [
            a.path,
            fmt(a.rps, 0),
            fmt(a.p50Us),
            fmt(a.p99Us),
            fmt(a.cpuUs, 2),
            fmt(a.serverBusy, 0),
          ]),
      );
    }
    printTable(
      "path against twin (median over rounds of the per-round ratio or difference)",
      ["c", "path", "twin", "req/s ratio", "+p50 µs", "+p99 µs", "+CPU µs/req"],
      comparisons.map((x) => [
        String(x.concurrency),
        x.path,
        x.twin,
        fmt(x.rpsRatio, 3),
        fmt(x.addedP50Us),
        fmt(x.addedP99Us),
        fmt(x.addedCpuUs, 2),
      ]),
    );

    printProfiles(profiles);

    const cmp = (path: PathId, twin: PathId, c: number) =>
      comparisons.find((x) => x.path === path && x.twin === twin && x.concurrency === c);
    const targets: TargetResult[] = [];
    const how = `median over ${rounds} interleaved round(s) of ${durationMs} ms, ratio or difference within each round`;
    for (const c of [16, 64]) {
      const x = cmp("request+mesh", "request+Pool", c);
      if (x) {
        targets.push(
          target(
            `request-mesh-rps-c${c}`,
            `undici.request via mesh.dispatcher / via raw Pool, req/s at c=${c}`,
            x.rpsRatio,
            ">=",
            0.9,
            "x",
            how,
          ),
        );
      }
    }
    const c1 = cmp("request+mesh", "request+Pool", 1);
    if (c1) {
      targets.push(
        target(
          "request-mesh-p50-c1",
          "undici.request via mesh.dispatcher, added p50 at c=1",
          c1.addedP50Us,
          "<=",
          15,
          "µs",
          how,
        ),
      );
    }
    for (const c of [16, 64]) {
      const x = cmp("mesh.fetch", "fetch+Agent", c);
      if (x) {
        targets.push(
          target(
            `mesh-fetch-rps-c${c}`,
            `mesh.fetch / fetch with a raw Agent, req/s at c=${c}`,
            x.rpsRatio,
            ">=",
            0.95,
            "x",
            how,
          ),
        );
      }
    }
    for (const [path, twin] of [
      ["request+mesh", "request+Pool"],
      ["mesh.fetch", "fetch+Agent"],
      ["fetch(global=mesh)", "fetch(global=Agent)"],
    ] as const) {
      const x = cmp(path, twin, 16);
      if (x) {
        targets.push(
          target(
            `added-cpu-${path}`,
            `added client CPU per request, ${path} against ${twin}, c=16`,
            x.addedCpuUs,
            "<=",
            2.5,
            "µs",
            `${how}; process.cpuUsage() of the client process (all threads) / requests`,
          ),
        );
      }
    }
    printTargets(targets, smoke);
    const file = writeResults(NAME, {
      smoke,
      config: { concurrencies, rounds, durationMs, warmupMs, profileMs, paths, seed },
      paths: Object.fromEntries(paths.map((p) => [p, PATHS[p]])),
      aggregates,
      comparisons,
      targets,
      profiles,
      rounds: rounds_,
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
    "CPU profile at c=16: self time by category, µs per request (inspector sampling; inflates absolute costs)",
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
  for (const name of ["request+mesh", "mesh.fetch"]) {
    const p = profiles[name];
    if (p === undefined) continue;
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
  const mesh = profiles["request+mesh"];
  if (mesh) {
    printTable(
      "request+mesh: top frames by self time",
      ["frame", "location", "category", "self µs", "total µs"],
      mesh.topSelf
        .slice(0, 20)
        .map((f) => [f.name, f.location, f.category, fmt(f.selfUs, 3), fmt(f.totalUs, 3)]),
    );
  }
}

await main();

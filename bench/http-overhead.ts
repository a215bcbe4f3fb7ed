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
 *       [--warmup-cycles=1] [--jit-warmup=500] [--concurrency=1,16,64] [--set=all|targets] [--paths=request+Pool,request+mesh]
 *       [--profile=3000|off] [--profile-c=1,16] [--seed=1] [--baseline=<commit>[,…]]
 *
 * `--jit-warmup=<ms>`: how long each fresh client process runs at
 * concurrency 16 before its first series (JIT warm-up; default 500 ms).
 *
 * `--baseline=<commit>` runs every meshed path a second time with that
 * commit's `src/` in the same groups, so that a change is measured against
 * the code before it within one run (or `--baseline=<dir>`: the `src/` in
 * that directory, which must be inside this checkout for its node_modules).
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { loadavg } from "node:os";
import { basename, join } from "node:path";
import {
  BENCH_DIR,
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
import {
  aggregate,
  compare,
  cycleOrder,
  fmtSpread,
  interleaveBlocks,
  type Spread,
} from "./lib/interleave.js";
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
  // The twin with meshlink loaded: the meshed path's cost split into carrying meshlink and calling through it.
  ["request+Pool", "request+Pool(mesh loaded)", "request+mesh"],
  ["fetch+Agent", "fetch+Agent(mesh loaded)", "mesh.fetch"],
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
  {
    path: "request+mesh",
    twin: "request+Pool(mesh loaded)",
    why: "a call through the mesh, against the twin in a process with meshlink loaded",
  },
  {
    path: "request+Pool(mesh loaded)",
    twin: "request+Pool",
    why: "what having meshlink loaded costs the twin's own calls",
  },
  {
    path: "mesh.fetch",
    twin: "fetch+Agent(mesh loaded)",
    why: "mesh.fetch, against the twin in a process with meshlink loaded",
  },
  {
    path: "fetch+Agent(mesh loaded)",
    twin: "fetch+Agent",
    why: "what having meshlink loaded costs the twin's own calls",
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
  const loadStart = loadavg().map((x) => Number(x.toFixed(2)));
  const smoke = flags.smoke;
  const concurrencies = listFlag(flags, "concurrency", ["1", "16", "64"]).map(Number);
  const runs = numberFlag(flags, "runs", smoke ? 1 : 5);
  const blocks = numberFlag(flags, "blocks", smoke ? 2 : 16);
  const blockMs = numberFlag(flags, "block", smoke ? 50 : 250);
  const warmupCycles = numberFlag(flags, "warmup-cycles", 1);
  const jitWarmupMs = numberFlag(flags, "jit-warmup", smoke ? 100 : 500);
  const profileOff = flags.values.get("profile") === "off";
  const profileMs = profileOff ? 0 : numberFlag(flags, "profile", smoke ? 300 : 3000);
  const profileCs = listFlag(flags, "profile-c", smoke ? ["16"] : ["1", "16"]).map(Number);
  const set = flags.values.get("set") ?? "all";
  if (set !== "all" && set !== "targets") throw new Error(`--set=${set}: expected all or targets`);
  const wanted = new Set(listFlag(flags, "paths", Object.keys(PATHS)) as PathId[]);
  const seed = numberFlag(flags, "seed", 1);
  for (const p of wanted)
    if (!(p in PATHS)) throw new Error(`unknown path ${p}; known: ${Object.keys(PATHS)}`);
  let groups: string[][] = [...TARGET_GROUPS, ...(set === "all" ? DIAGNOSTIC_GROUPS : [])]
    .map((g) => g.filter((p) => wanted.has(p)))
    .filter((g) => g.length >= 2);
  // One path alone (or paths of no common group): each runs by itself.
  if (groups.length === 0) groups = [...wanted].map((p) => [p]);
  const paths = [...new Set(groups.flat())] as PathId[];
  // --baseline=<commit>[,<commit or dir>…]: each meshed path runs again with each of those src/ trees, in
  // the same groups: `path@base` for the first, `path@<label>` for the others.
  const baselines = listFlag(flags, "baseline", []).map((rev, i) => {
    const b = exportSource(rev);
    return { ...b, suffix: i === 0 ? "@base" : `@${basename(rev)}` };
  });
  const comparisons_ = [...COMPARISONS] as { path: string; twin: string; why: string }[];
  const meshed = paths.filter((x) => PATHS[x].meshed);
  for (const b of baselines) {
    groups = groups.map((g) => [
      ...g,
      ...g.filter((p) => PATHS[p as PathId]?.meshed === true).map((p) => `${p}${b.suffix}`),
    ]);
    for (const p of meshed) {
      comparisons_.push({ path: p, twin: `${p}${b.suffix}`, why: `this source against ${b.commit}` });
      const twin = COMPARISONS.find((x) => x.path === p)?.twin;
      if (twin !== undefined)
        comparisons_.push({ path: `${p}${b.suffix}`, twin, why: `${b.commit} against the twin` });
    }
  }

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
      // Unmeshed paths get the endpoints too: a twin with meshlink loaded makes a mesh.
      if (!PATHS[path].meshed) return [path, { path, origin, endpoints }];
      return [path, path === "request+mesh(other host)" ? { path, endpoints, origin } : { path, endpoints }];
    }),
  );
  for (const b of baselines) {
    for (const p of meshed) specs.set(`${p}${b.suffix}`, { ...specs.get(p)!, meshlink: b.index });
  }
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
      jitWarmupMs,
      seed,
      afterLastRun: async (clients) => {
        if (profileOff) return;
        // Each profiled path with the members of its first group, in alternating blocks as measured.
        const done = new Set<string>();
        for (const g of groups) {
          const members = g.filter(
            (p) => PROFILED.includes(p.replace(/@base$/, "") as PathId) && !done.has(p),
          );
          if (members.length === 0) continue;
          for (const p of members) done.add(p);
          for (const c of profileCs) {
            const name = (p: string) => `${NAME}.${p.replace(/[^a-z0-9.+-]/gi, "_")}.c${c}.cpuprofile`;
            for (const p of members) await clients.get(p)!.block(c, blockMs, false);
            for (const p of members) await clients.get(p)!.profileStart();
            const cycles = Math.max(1, Math.round(profileMs / blockMs));
            for (let i = 0; i < cycles; i++) {
              for (const p of cycleOrder(members, i)) {
                await clients.get(p)!.block(c, blockMs, false);
              }
            }
            for (const p of members) {
              profiles[`${p} c=${c}`] = await clients.get(p)!.profileStop(join(RESULTS_DIR, name(p)));
            }
          }
        }
      },
      onRun: (r) =>
        console.log(`  run ${r + 1}/${runs} done (${((Date.now() - started) / 1000).toFixed(0)} s)`),
    });
    const load = { start: loadStart, end: loadavg().map((x) => Number(x.toFixed(2))) };
    console.log(
      `\nload average (1/5/15 min) at the start ${load.start.join(" ")}, at the end ${load.end.join(" ")}`,
    );
    const aggregates = aggregate(data);
    const comparisons = compare(data, comparisons_);

    for (const c of concurrencies) {
      printTable(
        `concurrency ${c}: median [quartiles] over ${runs} run(s)`,
        [
          "path",
          "req/s",
          "p50 µs",
          "p99 µs",
          "client CPU µs/req",
          "main thread",
          "GC pause",
          "GCs minor/major per 1k",
          "promoted B/req",
          "server busy %",
        ],
        aggregates
          .filter((a) => a.concurrency === c)
          .map((a) => [
            a.path,
            fmtSpread(a.rps, 0),
            fmtSpread(a.p50Us),
            fmtSpread(a.p99Us),
            fmtSpread(a.cpuUs),
            fmtSpread(a.mainCpuUs),
            fmt(a.gcPauseUs.median),
            `${fmt(a.minorGcs.median, 1)}/${fmt(a.majorGcs.median, 2)}`,
            fmtSpread(a.promotedBytes, 0),
            fmt(a.serverBusy.median, 0),
          ]),
      );
    }
    printTable(
      "path against twin, paired within each run's series: median [quartiles] over runs",
      ["c", "path", "twin", "req/s ratio", "+p50 µs", "+p99 µs", "+CPU µs/req", "+main thread", "+GC pause"],
      comparisons.map((x) => [
        String(x.concurrency),
        x.path,
        x.twin,
        fmtSpread(x.rpsRatio, 3),
        fmtSpread(x.addedP50Us),
        fmtSpread(x.addedP99Us),
        fmtSpread(x.addedCpuUs, 1),
        fmtSpread(x.addedMainCpuUs, 1),
        fmt(x.addedGcPauseUs.median),
      ]),
    );

    printProfiles(profiles);

    const cmp = (path: string, twin: string, c: number) =>
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
      load,
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

/**
 * Exports `rev`'s `src/` under bench/results/ (git-ignored) and returns the
 * path of its `index.ts`: a client process given it runs that version of
 * meshlink, with this checkout's node_modules.
 */
function exportSource(rev: string): { commit: string; index: string } {
  const root = join(BENCH_DIR, "..");
  // A directory with a src/ of its own (an experiment kept under bench/results/), as it is.
  if (existsSync(join(rev, "src", "index.ts"))) return { commit: rev, index: join(rev, "src", "index.ts") };
  const commit = execFileSync("git", ["rev-parse", "--short", "--verify", `${rev}^{commit}`], {
    cwd: root,
    encoding: "utf8",
  }).trim();
  const dir = join(RESULTS_DIR, `baseline-${commit}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tar = execFileSync("git", ["archive", commit, "src"], { cwd: root, maxBuffer: 1 << 30 });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  return { commit, index: join(dir, "src", "index.ts") };
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
  for (const name of names.filter((n) => n.includes("mesh"))) {
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
  // What a path's profile has more of than its twin's, frame by frame (same blocks, same concurrency).
  for (const { path, twin } of COMPARISONS) {
    for (const name of names.filter((n) => n.startsWith(`${path} c=`))) {
      const c = name.slice(path.length + 1);
      const other = profiles[`${twin} ${c}`];
      if (other === undefined) continue;
      const key = (f: { name: string; location: string }) => `${f.name} ${f.location}`;
      const diff = new Map<string, { f: (typeof other.frames)[number]; d: number }>();
      for (const f of profiles[name]!.frames) diff.set(key(f), { f, d: f.selfUs });
      for (const f of other.frames) {
        const x = diff.get(key(f));
        if (x === undefined) diff.set(key(f), { f, d: -f.selfUs });
        else x.d -= f.selfUs;
      }
      printTable(
        `${name} − ${twin}: frames whose self time differs most, µs per request`,
        ["frame", "location", "category", "Δ self µs"],
        [...diff.values()]
          .sort((a, b) => Math.abs(b.d) - Math.abs(a.d))
          .slice(0, 25)
          .map(({ f, d }) => [f.name, f.location, f.category, fmt(d, 2)]),
      );
    }
  }
  for (const name of names.filter((n) => n.includes("fetch") && n.includes("mesh"))) {
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

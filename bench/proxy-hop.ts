/**
 * The alternative to an in-process mesh: a proxy hop. Client → nginx
 * (upstream with weights, a backup server and keep-alive to the upstreams)
 * → server, against meshlink direct (static discovery with the same servers,
 * weights and backup), with raw undici direct to one server as the floor.
 * Requests per second, latency, and CPU per request of the client, of nginx
 * and of the server: on one machine the proxy's CPU is paid by someone.
 *
 * Without nginx the benchmark is skipped with the reason, unless `CI=true`,
 * where it fails (CI installs nginx).
 *
 *     npx tsx bench/proxy-hop.ts [--smoke] [--strict] [--rounds=5] [--duration=1000] [--warmup=250]
 *       [--concurrency=1,16,64] [--seed=1]
 *
 * @module
 */

import {
  finish,
  fmt,
  listFlag,
  numberFlag,
  parseFlags,
  printTable,
  printTargets,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";
import { aggregate, compare, interleave } from "./lib/interleave.js";
import { findNginx, type Nginx, startNginx } from "./lib/nginx.js";
import { type ClientSpec, MESH_LOCALITY } from "./lib/paths.js";
import { type ServerProcess, startServer } from "./lib/procs.js";

const NAME = "proxy-hop";

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const concurrencies = listFlag(flags, "concurrency", ["1", "16", "64"]).map(Number);
  const rounds = numberFlag(flags, "rounds", smoke ? 1 : 5);
  const durationMs = numberFlag(flags, "duration", smoke ? 150 : 1000);
  const warmupMs = numberFlag(flags, "warmup", smoke ? 50 : 250);
  const seed = numberFlag(flags, "seed", 1);

  const found = findNginx();
  if (found.bin === undefined) {
    if (process.env.CI === "true") {
      console.error(`${NAME}: FAIL — ${found.reason} (CI=true: nginx is required)`);
      process.exitCode = 1;
      return;
    }
    console.log(`${NAME}: SKIPPED — ${found.reason}`);
    writeResults(NAME, { smoke, skipped: found.reason, targets: [] });
    return;
  }

  console.log(
    `${NAME}: nginx ${found.version}; concurrency ${concurrencies.join("/")} × ${rounds} round(s) of ${durationMs} ms` +
      `${smoke ? " — smoke pass" : ""}`,
  );
  // Three servers in one process: two primaries weighted 2:1 and a backup.
  let server: ServerProcess | undefined;
  let nginx: Nginx | undefined;
  try {
    server = await startServer(["a", "b", "backup"]);
    const { a, b, backup } = server.ports as { a: number; b: number; backup: number };
    nginx = await startNginx(found, [
      { port: a, weight: 2 },
      { port: b, weight: 1 },
      { port: backup, backup: true },
    ]);
    const endpoint = (port: number, cluster: string) => ({
      address: "127.0.0.1",
      port,
      cluster,
      ...MESH_LOCALITY,
    });
    const endpoints = [
      { ...endpoint(a, "bench-c1"), weight: 2 },
      { ...endpoint(b, "bench-c1"), weight: 1 },
      { ...endpoint(backup, "bench-c2"), backup: true },
    ];
    const specs = new Map<string, ClientSpec>([
      ["nginx hop", { path: "request+Pool", origin: `http://127.0.0.1:${nginx.port}` }],
      ["meshlink direct", { path: "request+mesh", endpoints }],
      ["raw direct", { path: "request+Pool", origin: `http://127.0.0.1:${a}` }],
    ]);
    const names = [...specs.keys()];
    const data = await interleave({
      specs,
      jitWarmupMs: smoke ? 100 : 500,
      server,
      groups: [names],
      concurrencies,
      rounds,
      durationMs,
      warmupMs,
      seed,
      proxyCpu: () => nginx!.cpuUs(),
      proxied: new Set(["nginx hop"]),
    });
    const aggregates = aggregate(data);
    const comparisons = compare(data, [
      { path: "meshlink direct", twin: "nginx hop", why: "target: the mesh in process against a proxy hop" },
      { path: "meshlink direct", twin: "raw direct", why: "the mesh against raw undici to one server" },
      { path: "nginx hop", twin: "raw direct", why: "what the hop costs" },
    ]);
    for (const c of concurrencies) {
      printTable(
        `concurrency ${c} (median of ${rounds} round(s)); CPU in µs per request`,
        [
          "path",
          "req/s",
          "p50 µs",
          "p99 µs",
          "client CPU",
          "nginx CPU",
          "server CPU",
          "total CPU",
          "1-core ceiling req/s",
          "a:b:backup",
        ],
        aggregates
          .filter((x) => x.concurrency === c)
          .map((x) => {
            const share = data[c]![x.path]!.at(-1)!.byListener;
            const total = x.cpuUs + (x.proxyCpuUs ?? 0) + x.serverCpuUs;
            return [
              x.path,
              fmt(x.rps, 0),
              fmt(x.p50Us),
              fmt(x.p99Us),
              fmt(x.cpuUs),
              x.proxyCpuUs === undefined ? "-" : fmt(x.proxyCpuUs),
              fmt(x.serverCpuUs),
              fmt(total),
              fmt(1e6 / (x.cpuUs + (x.proxyCpuUs ?? 0)), 0),
              `${share.a ?? 0}:${share.b ?? 0}:${share.backup ?? 0}`,
            ];
          }),
      );
    }
    printTable(
      "path against twin (median over rounds of the per-round ratio or difference)",
      ["c", "path", "twin", "req/s ratio", "+p50 µs", "+p99 µs", "+client CPU µs/req"],
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
    const targets: TargetResult[] = [];
    for (const c of [16, 64]) {
      const x = comparisons.find(
        (y) => y.path === "meshlink direct" && y.twin === "nginx hop" && y.concurrency === c,
      );
      if (x) {
        targets.push(
          target(
            `mesh-vs-nginx-rps-c${c}`,
            `meshlink direct / client → nginx → server, req/s at c=${c}`,
            x.rpsRatio,
            ">=",
            1.8,
            "x",
            `median over ${rounds} interleaved round(s) of ${durationMs} ms of the per-round ratio; nginx 1 worker`,
          ),
        );
      }
    }
    printTargets(targets, smoke);
    const file = writeResults(NAME, {
      smoke,
      nginx: { version: nginx.version, config: nginx.config },
      config: { concurrencies, rounds, durationMs, warmupMs, seed, specs: Object.fromEntries(specs) },
      aggregates,
      comparisons,
      targets,
      rounds: data,
    });
    finish(flags, targets, file);
  } finally {
    await nginx?.close();
    await server?.close();
  }
}

await main();

/**
 * Failover: how long after a cluster dies until the traffic has moved to
 * another cluster, and how many calls fail meanwhile — for a cluster whose
 * servers are stopped (connections refused) and one that is blackholed
 * (connections accepted, requests never answered).
 *
 * Method: two clusters of three HTTP servers each on loopback addresses,
 * `home` (the caller's zone) and `west` (its failover region), in this
 * process. An open-loop generator sends idempotent GETs at a fixed rate
 * through the mesh's own parts (registry, router, health, call policy and
 * HTTP interceptor, each with its defaults but the per-try timeout), with a
 * recording interceptor underneath that sees every attempt. At t0 the home
 * servers are stopped (or replaced by blackholes on the same addresses).
 * Figures, from t0, over windows of 50 ms of request start times:
 *
 * - moved: the first window from which on ≥ 99 % of requests are sent to
 *   `west` on their first attempt (the router has moved the traffic);
 * - served: the same for the cluster that answered (a retry counts);
 * - failed: requests that failed, in all;
 * - retried: requests whose first attempt went home and that a retry
 *   served from `west`;
 * - p99: the latency of requests started in the first second after t0.
 *
 * The blackholed case is bounded by the per-try timeout (each call sent
 * home waits for it before its retry) and by the retry budget (20 % of
 * requests + 10 retries/s: the calls stuck at t0 may exceed it).
 *
 *     npx tsx bench/failover.ts [--smoke] [--rate=400] [--runs=3] [--per-try=1000]
 *
 * @module
 */

import { once } from "node:events";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { Agent, type Dispatcher, request } from "undici";
import { parseServiceName } from "../src/discovery/names.js";
import { Registry } from "../src/discovery/registry.js";
import { staticDiscovery } from "../src/discovery/static.js";
import { CallPolicy } from "../src/resilience/policy.js";
import { HealthTracker } from "../src/routing/health.js";
import { Balancer } from "../src/routing/router.js";
import { TierMap } from "../src/routing/tiers.js";
import { meshInterceptor } from "../src/transport/http/interceptor.js";
import type { HttpRoutes } from "../src/transport/http/routes.js";
import {
  fmt,
  median,
  numberFlag,
  parseFlags,
  printTable,
  quantile,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";

const NAME = "failover";
const flags = parseFlags();
const smoke = flags.smoke;
const RATE = numberFlag(flags, "rate", smoke ? 200 : 400);
const RUNS = numberFlag(flags, "runs", smoke ? 1 : 3);
const PER_TRY = numberFlag(flags, "per-try", smoke ? 300 : 1000);
const BEFORE = smoke ? 500 : 2000;
const AFTER = smoke ? 1500 : 5000;
const WINDOW = 50;

type Kind = "refused" | "blackholed";

interface Sample {
  start: number;
  end: number;
  first: string | undefined;
  served: string | undefined;
  error: string | undefined;
}

interface Server {
  readonly address: string;
  port: number;
  stop(): Promise<void>;
}

/** An HTTP server answering `{ "cluster": … }` at once; `stop()` closes it and its connections. */
async function startHttp(address: string, cluster: string): Promise<Server> {
  const sockets = new Set<Socket>();
  const body = JSON.stringify({ cluster });
  const server: HttpServer = createHttpServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(0, address);
  await once(server, "listening");
  return {
    address,
    port: (server.address() as { port: number }).port,
    async stop() {
      const closed = once(server, "close");
      server.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** Accepts connections on `address:port`, reads, never answers. */
async function startBlackhole(address: string, port: number): Promise<Server> {
  const sockets = new Set<Socket>();
  const server: NetServer = createNetServer((s) => {
    sockets.add(s);
    s.on("data", () => {});
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  server.listen(port, address);
  await once(server, "listening");
  return {
    address,
    port,
    async stop() {
      const closed = once(server, "close");
      server.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

function headerOf(headers: Dispatcher.DispatchOptions["headers"], name: string): string | undefined {
  if (headers == null) return undefined;
  if (Array.isArray(headers)) {
    // The mesh hands undici a flat [name, value, …] list.
    for (let i = 0; i + 1 < headers.length; i += 2) if (headers[i] === name) return String(headers[i + 1]);
    return undefined;
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === "function") return undefined;
  const v = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(v) ? v[0] : v;
}

async function runCase(kind: Kind, run: number) {
  // 127.0.60.x and up: clear of the ranges the test suite uses.
  const octet = 60 + run * 2 + (kind === "refused" ? 0 : 10);
  const home = await Promise.all([1, 2, 3].map((i) => startHttp(`127.0.${octet}.${i}`, "home")));
  const west = await Promise.all([1, 2, 3].map((i) => startHttp(`127.0.${octet + 1}.${i}`, "west")));
  const clusterOf = new Map<string, string>();
  for (const s of home) clusterOf.set(`http://${s.address}:${s.port}`, "home");
  for (const s of west) clusterOf.set(`http://${s.address}:${s.port}`, "west");

  // The mesh's parts with their defaults, as createMesh wires them, plus a recorder under the interceptor.
  const registry = new Registry([
    staticDiscovery({
      services: {
        "api.default": [
          ...home.map((s) => ({
            address: s.address,
            port: s.port,
            cluster: "home",
            region: "east",
            zone: "east-a",
          })),
          ...west.map((s) => ({
            address: s.address,
            port: s.port,
            cluster: "west",
            region: "west",
            zone: "west-a",
          })),
        ],
      },
    }),
  ]);
  const health = new HealthTracker();
  const tiers = new TierMap({ region: "east", zone: "east-a", failover: ["west"] });
  const policy = new CallPolicy({ perTryTimeout: PER_TRY });
  const balancer = new Balancer(registry.watch(parseServiceName("api.default", 80)), tiers, health);
  const routes: HttpRoutes = { policy, closed: false, balancerFor: () => balancer };
  const first = new Map<string, string>();
  const recorder: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) => {
    const id = headerOf(opts.headers, "x-bench-id");
    if (id !== undefined && !first.has(id)) first.set(id, clusterOf.get(String(opts.origin)) ?? "?");
    return dispatch(opts, handler);
  };
  const agent = new Agent();
  const dispatcher = agent.compose(recorder, meshInterceptor(routes, { explicit: true }));
  await balancer.watch.settled();

  const samples: Sample[] = [];
  const t = () => performance.now();
  let seq = 0;
  const inflight = new Set<Promise<void>>();
  const fire = () => {
    const id = String(seq++);
    const s: Sample = { start: t(), end: 0, first: undefined, served: undefined, error: undefined };
    samples.push(s);
    const p = request("http://api.default.svc.cluster.local/", { dispatcher, headers: { "x-bench-id": id } })
      .then(async (res) => {
        const body = (await res.body.json()) as { cluster?: string };
        s.served = res.statusCode === 200 ? body.cluster : undefined;
        if (s.served === undefined) s.error = `status ${res.statusCode}`;
      })
      .catch((err: Error & { code?: string }) => {
        s.error = err.code ?? err.message;
      })
      .finally(() => {
        s.end = t();
        s.first = first.get(id);
        first.delete(id);
        inflight.delete(p);
      });
    inflight.add(p);
  };
  // Open loop: requests go out at RATE whatever the latency.
  const tick = 5;
  let owed = 0;
  const timer = setInterval(() => {
    owed += (RATE * tick) / 1000;
    while (owed >= 1) {
      owed--;
      fire();
    }
  }, tick);

  await new Promise((r) => setTimeout(r, BEFORE));
  const t0 = t();
  const holes: Server[] = [];
  await Promise.all(home.map((s) => s.stop()));
  if (kind === "blackholed")
    holes.push(...(await Promise.all(home.map((s) => startBlackhole(s.address, s.port)))));
  await new Promise((r) => setTimeout(r, AFTER));
  clearInterval(timer);
  await Promise.all(inflight);
  await Promise.all([...holes, ...west].map((s) => s.stop()));
  await registry.close();
  await agent.close();

  const after = samples.filter((s) => s.start >= t0);
  const settle = (pick: (s: Sample) => string | undefined): number => {
    // The first window from which on every window has ≥ 99 % of its requests on west.
    const windows = Math.ceil(AFTER / WINDOW);
    let lastBad = -1;
    for (let w = 0; w < windows; w++) {
      const inW = after.filter((s) => s.start - t0 >= w * WINDOW && s.start - t0 < (w + 1) * WINDOW);
      if (inW.length === 0) continue;
      const share = inW.filter((s) => pick(s) === "west").length / inW.length;
      if (share < 0.99) lastBad = w;
    }
    return (lastBad + 1) * WINDOW;
  };
  const firstSecond = after.filter((s) => s.start - t0 < 1000).map((s) => s.end - s.start);
  const before = samples.filter((s) => s.start < t0 && s.end <= t0);
  return {
    kind,
    requests: after.length,
    movedMs: settle((s) => s.first),
    servedMs: settle((s) => s.served),
    failed: samples.filter((s) => s.error !== undefined && s.end >= t0).length,
    retried: after.filter((s) => s.first === "home" && s.served === "west").length,
    p99Ms: quantile(firstSecond, 0.99),
    p50Ms: quantile(firstSecond, 0.5),
    baselineP99Ms: quantile(
      before.map((s) => s.end - s.start),
      0.99,
    ),
    errors: [...new Set(samples.filter((s) => s.error !== undefined).map((s) => s.error))],
  };
}

async function main(): Promise<void> {
  console.log(
    `failover: ${RATE} req/s open loop, per-try timeout ${PER_TRY} ms, ${RUNS} run(s) per case${smoke ? " (smoke)" : ""}`,
  );
  const results: Awaited<ReturnType<typeof runCase>>[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const kind of ["refused", "blackholed"] as const) results.push(await runCase(kind, run));
  }
  const byKind = (kind: Kind) => results.filter((r) => r.kind === kind);
  const summary = (["refused", "blackholed"] as const).map((kind) => {
    const rs = byKind(kind);
    return {
      kind,
      runs: rs.length,
      movedMs: median(rs.map((r) => r.movedMs)),
      servedMs: median(rs.map((r) => r.servedMs)),
      failed: median(rs.map((r) => r.failed)),
      retried: median(rs.map((r) => r.retried)),
      p50Ms: median(rs.map((r) => r.p50Ms)),
      p99Ms: median(rs.map((r) => r.p99Ms)),
      baselineP99Ms: median(rs.map((r) => r.baselineP99Ms)),
      requests: median(rs.map((r) => r.requests)),
    };
  });
  printTable(
    "Failover from a dead home cluster to the failover region (medians over runs)",
    ["case", "moved ms", "served ms", "failed", "retried", "p50 ms", "p99 ms", "p99 before", "requests"],
    summary.map((s) => [
      s.kind,
      fmt(s.movedMs, 0),
      fmt(s.servedMs, 0),
      fmt(s.failed, 0),
      fmt(s.retried, 0),
      fmt(s.p50Ms, 1),
      fmt(s.p99Ms, 1),
      fmt(s.baselineP99Ms, 1),
      fmt(s.requests, 0),
    ]),
  );
  const refused = summary[0]!;
  const blackholed = summary[1]!;
  const targets: TargetResult[] = [
    target(
      "failover-refused-moved",
      "refused: ms from death until ≥ 99 % of first attempts go elsewhere",
      refused.movedMs,
      "<=",
      1000,
      "ms",
      "50 ms windows of request start times; median over runs",
    ),
    target(
      "failover-refused-failed",
      "refused: failed idempotent requests",
      refused.failed,
      "<=",
      0,
      "requests",
      "every request started or ending after the death",
    ),
    target(
      "failover-blackholed-moved",
      "blackholed: ms from death until ≥ 99 % of first attempts go elsewhere",
      blackholed.movedMs,
      "<=",
      PER_TRY * 2 + 1000,
      "ms",
      "bounded by the per-try timeout",
    ),
  ];
  for (const t of targets)
    console.log(
      `${t.pass ? "PASS" : "MISS"}  ${t.description}: ${fmt(t.value, 0)} ${t.unit} (${t.op} ${t.limit})`,
    );
  const file = writeResults(NAME, {
    smoke,
    config: {
      rate: RATE,
      runs: RUNS,
      perTryTimeoutMs: PER_TRY,
      beforeMs: BEFORE,
      afterMs: AFTER,
      windowMs: WINDOW,
    },
    summary,
    runs: results,
    targets,
  });
  console.log(`\nresults: ${file}`);
}

await main();

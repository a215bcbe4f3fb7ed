/**
 * Kubernetes discovery: how long from the API server emitting a change
 * (an EndpointSlice MODIFIED event on the watch stream) until the router
 * picks accordingly.
 *
 * Method: the test API server (test/helpers/kube-apiserver.ts, HTTPS with
 * HTTP/2, or HTTPS/1.1) and a mesh (`createMesh` + `kubernetesDiscovery`,
 * defaults) in one process. The service has `n` endpoints in slices of 100
 * (as the EndpointSlice controller cuts them); one endpoint in the caller's
 * zone, A, leads the router's order while ready; another one, B, is the
 * only other endpoint in that zone. Each iteration flips A's `ready` in its
 * slice: t0 just before the server writes the event, t1 when
 * `mesh.resolve()` (the router's order) first shows the expected endpoint
 * as the first available one — polled once per event-loop turn. The figure
 * includes the server's own serialising, the TLS write, the client's
 * parsing and validation of the slice, the mapping of every endpoint of
 * the cluster, the registry's snapshot and the router's rebuild.
 *
 *     npx tsx bench/kubernetes.ts [--smoke] [--strict] [--iterations=200] [--sizes=10,1000]
 *
 * @module
 */

import { performance } from "node:perf_hooks";
import { createMesh, kubernetesDiscovery, type Mesh } from "meshlink";
import type { EndpointSpec, SliceSpec } from "../test/fixtures/kubernetes/objects.js";
import { createTestCa } from "../test/helpers/certs.js";
import { type KubeApiServer, startKubeApiServer } from "../test/helpers/kube-apiserver.js";
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
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";

const NAME = "kubernetes";
const flags = parseFlags();
const smoke = flags.smoke;
const ITERATIONS = numberFlag(flags, "iterations", smoke ? 20 : 200);
const SIZES = listFlag(flags, "sizes", smoke ? ["10"] : ["10", "1000"]).map(Number);
const LIMIT_MS = 100;
const ZONE = "us-east-1a";
const A = "10.0.0.1";
const B = "10.0.0.2";

/** `n` endpoints: A and B in the caller's zone, the rest in two other zones; slices of 100. */
function slices(n: number, aReady: boolean): SliceSpec[] {
  const endpoints: EndpointSpec[] = [
    { address: A, zone: ZONE, ready: aReady, serving: aReady },
    { address: B, zone: ZONE },
  ];
  for (let i = 2; i < n; i++) {
    endpoints.push({
      address: `10.${1 + Math.floor(i / 250)}.${Math.floor(i / 250) % 250}.${i % 250}`,
      zone: i % 2 ? "us-east-1b" : "us-east-1c",
    });
  }
  const out: SliceSpec[] = [];
  for (let i = 0; i < endpoints.length; i += 100) {
    out.push({
      name: `web-${i / 100}`,
      service: "web",
      endpoints: endpoints.slice(i, i + 100),
      ports: [{ name: "http", port: 8080 }],
    });
  }
  return out;
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

async function leader(mesh: Mesh): Promise<string | undefined> {
  const order = await mesh.resolve("web.default.svc.cluster.local", 80);
  return order.find((r) => r.available)?.endpoint.address;
}

interface Case {
  protocol: "h2" | "http/1.1";
  endpoints: number;
  samples: number[];
}

async function measure(ca: ReturnType<typeof createTestCa>, http2: boolean, n: number): Promise<Case> {
  const server: KubeApiServer = await startKubeApiServer({ ca, http2 });
  server.applyService("default", { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] });
  for (const s of slices(n, true)) server.applySlice("default", s);
  const mesh = createMesh({
    env: {},
    region: "us-east-1",
    zone: ZONE,
    discovery: [
      kubernetesDiscovery({
        clusters: [
          { name: "east", region: "us-east-1", server: server.url, token: server.token, ca: server.caPem },
        ],
      }),
    ],
  });
  const samples: number[] = [];
  try {
    if ((await leader(mesh)) !== A) throw new Error("A does not lead at the start");
    while (server.openWatches < 2) await new Promise((resolve) => server.once("watch", resolve));
    for (let i = 0; i < ITERATIONS + 5; i++) {
      const aReady = i % 2 === 1;
      const expected = aReady ? A : B;
      // The slice that holds A, with A's readiness flipped (100 endpoints when n ≥ 100).
      const slice = slices(n, aReady)[0]!;
      const t0 = performance.now();
      server.applySlice("default", slice);
      while ((await leader(mesh)) !== expected) await nextTurn();
      const ms = performance.now() - t0;
      if (i >= 5) samples.push(ms); // the first few warm the JIT up
      await nextTurn();
    }
  } finally {
    await mesh.close();
    await server.close();
  }
  return { protocol: http2 ? "h2" : "http/1.1", endpoints: n, samples };
}

async function main(): Promise<void> {
  const ca = createTestCa("bench CA");
  const cases: Case[] = [];
  try {
    for (const n of SIZES) {
      for (const http2 of [true, false]) cases.push(await measure(ca, http2, n));
    }
  } finally {
    ca.dispose();
  }
  const rows = cases.map((c) => ({
    protocol: c.protocol,
    endpoints: c.endpoints,
    iterations: c.samples.length,
    medianMs: median(c.samples),
    p99Ms: quantile(c.samples, 0.99),
    maxMs: Math.max(...c.samples),
  }));
  printTable(
    "API server change → router pick (ms)",
    ["protocol", "endpoints", "iterations", "median", "p99", "max"],
    rows.map((r) => [
      r.protocol,
      String(r.endpoints),
      String(r.iterations),
      fmt(r.medianMs, 2),
      fmt(r.p99Ms, 2),
      fmt(r.maxMs, 2),
    ]),
  );
  const targets: TargetResult[] = rows.flatMap((r) => [
    target(
      `kubernetes-change-median-${r.protocol}-${r.endpoints}`,
      `change → pick, median (${r.protocol}, ${r.endpoints} endpoints)`,
      r.medianMs,
      "<=",
      LIMIT_MS,
      "ms",
      "slice MODIFIED written → first mesh.resolve() showing the new leader",
    ),
    target(
      `kubernetes-change-p99-${r.protocol}-${r.endpoints}`,
      `change → pick, p99 (${r.protocol}, ${r.endpoints} endpoints)`,
      r.p99Ms,
      "<=",
      LIMIT_MS,
      "ms",
      "slice MODIFIED written → first mesh.resolve() showing the new leader",
    ),
  ]);
  printTargets(targets, smoke);
  const file = writeResults(NAME, {
    smoke,
    config: { iterations: ITERATIONS, sizes: SIZES },
    cases: rows,
    targets,
  });
  finish(flags, targets, file);
}

await main();

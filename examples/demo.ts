/**
 * The meshlink demo: three simulated clusters on loopback, two servers each,
 * static discovery, and a caller in us-east-1 (MESHLINK_REGION, overridable).
 *
 *   1. steady state: calls stay in the caller's region;
 *   2. the us-east-1 servers stop: calls move to us-west-2, none fails;
 *   3. they come back: calls return home once each home endpoint's ejection
 *      ends (shortened to 1.5 s here; 30 s by default) and a probe succeeds.
 *
 * Traces: the demo registers the OpenTelemetry SDK, as an application would,
 * and shows for a sample call its span and the trace id the server received.
 *
 * Run: npm run demo   (MESHLINK_REGION=us-west-2 npm run demo to move the caller)
 */

import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { createMesh, staticDiscovery } from "meshlink";

// --- Tracing, as the application sets it up (meshlink uses @opentelemetry/api only).
const spans = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

// --- Three clusters, two servers each, on distinct loopback addresses.
interface Pod {
  name: string;
  cluster: string;
  region: string;
  zone: string;
  address: string;
  port: number;
  server: Server;
  sockets: Set<Socket>;
  traceparents: string[];
}

const layout = [
  { cluster: "aws-east", region: "us-east-1", zones: ["us-east-1a", "us-east-1b"], net: 10 },
  { cluster: "aws-west", region: "us-west-2", zones: ["us-west-2a", "us-west-2b"], net: 20 },
  { cluster: "gcp-dev", region: "europe-west4", zones: ["europe-west4-a", "europe-west4-b"], net: 30 },
];

function listen(pod: Pod): Promise<void> {
  pod.server = createServer((req, res) => {
    pod.traceparents.push(String(req.headers.traceparent ?? ""));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ pod: pod.name }));
  });
  pod.server.on("connection", (s: Socket) => {
    pod.sockets.add(s);
    s.on("close", () => pod.sockets.delete(s));
  });
  pod.server.listen(pod.port, pod.address);
  return once(pod.server, "listening").then(() => {
    pod.port = (pod.server.address() as AddressInfo).port;
  });
}

async function stop(pod: Pod): Promise<void> {
  const closed = once(pod.server, "close");
  pod.server.close();
  for (const s of pod.sockets) s.destroy();
  await closed;
}

const EJECTION_MS = 1_500;
const pods: Pod[] = [];
for (const c of layout) {
  for (let i = 0; i < 2; i++) {
    const pod: Pod = {
      name: `${c.cluster}-${i + 1}`,
      cluster: c.cluster,
      region: c.region,
      zone: c.zones[i]!,
      address: `127.0.0.${c.net + i + 1}`,
      port: 0,
      server: undefined as unknown as Server,
      sockets: new Set(),
      traceparents: [],
    };
    await listen(pod);
    pods.push(pod);
  }
}

// --- The mesh. Region and failover come from the environment, as in a deployment.
process.env.MESHLINK_REGION ??= "us-east-1";
// The regions after the caller's own, which always comes first.
process.env.MESHLINK_FAILOVER ??= layout
  .map((c) => c.region)
  .filter((r) => r !== process.env.MESHLINK_REGION)
  .join(",");
const mesh = createMesh({
  discovery: [
    staticDiscovery({
      services: {
        "orders.shop": pods.map((p) => ({
          address: p.address,
          port: p.port,
          cluster: p.cluster,
          region: p.region,
          zone: p.zone,
        })),
      },
    }),
  ],
  // Short ejections so that the demo shows the way home within seconds (the default is 30 s, as Envoy's).
  outlierDetection: { baseEjectionTime: EJECTION_MS },
});
const URL = "http://orders.shop.svc.cluster.local:8080/api/orders";
const home = mesh.config.region;

// --- Load: N calls with a few in flight, counting where each landed.
interface Tally {
  byPod: Map<string, number>;
  failed: number;
  calls: number;
}

async function load(
  calls: number,
  concurrency = 8,
  tally: Tally = { byPod: new Map(), failed: 0, calls: 0 },
) {
  let next = 0;
  const worker = async () => {
    while (next < calls) {
      next++;
      tally.calls++;
      try {
        const res = await mesh.fetch(URL);
        const { pod } = (await res.json()) as { pod: string };
        tally.byPod.set(pod, (tally.byPod.get(pod) ?? 0) + 1);
      } catch {
        tally.failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return tally;
}

function table(title: string | undefined, tally: Tally): void {
  if (title !== undefined) console.log(`\n${title}`);
  const rows = pods.map((p) => [
    p.cluster,
    p.region,
    p.zone,
    p.name,
    p.region === home ? "home" : "",
    String(tally.byPod.get(p.name) ?? 0),
  ]);
  const head = ["cluster", "region", "zone", "pod", "", "calls"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join("  ")}`;
  console.log(line(head));
  for (const r of rows) console.log(line(r));
  const homeShare = pods
    .filter((p) => p.region === home)
    .reduce((n, p) => n + (tally.byPod.get(p.name) ?? 0), 0);
  console.log(
    `  ${tally.calls} calls, ${tally.failed} failed, ${((100 * homeShare) / Math.max(1, tally.calls)).toFixed(0)}% served in ${home}`,
  );
}

function showTrace(label: string): void {
  const finished = spans.getFinishedSpans();
  const span: ReadableSpan | undefined =
    finished.find((s) => Number(s.attributes["meshlink.attempts"]) > 1) ?? finished[finished.length - 1];
  if (span === undefined) return;
  const a = span.attributes;
  const pod = pods.find((p) => p.traceparents.some((t) => t.includes(span.spanContext().spanId)));
  console.log(`  trace (${label}): span "${span.name}" ${span.spanContext().traceId}`);
  console.log(
    `    endpoint ${a["meshlink.endpoint"]} tier ${a["meshlink.tier"]} attempts ${a["meshlink.attempts"]}` +
      (span.events.length
        ? `; failover after ${span.events.map((e) => e.attributes?.["error.type"]).join(", ")}`
        : ""),
  );
  if (pod)
    console.log(
      `    ${pod.name} received traceparent ${pod.traceparents.find((t) => t.includes(span.spanContext().spanId))}`,
    );
  spans.reset();
}

const started = performance.now();
console.log(`meshlink demo: caller in ${home}, failover ${mesh.config.failover.join(" → ")}`);
console.log(
  `(an endpoint that fails is ejected for ${EJECTION_MS / 1000} s here, so that calls come home within seconds;` +
    " the default is 30 s, as Envoy's: outlierDetection.baseEjectionTime)",
);

// Phase 1: steady state.
table("1. steady state", await load(200));
showTrace("steady");

// Phase 2: the home region's servers stop.
const homePods = pods.filter((p) => p.region === home);
await Promise.all(homePods.map(stop));
table(`2. ${home} servers stopped`, await load(200));
showTrace("failover");
console.log("  endpoints as the router sees them now:");
for (const r of await mesh.resolve("orders.shop", 8080)) {
  console.log(
    `    ${r.endpoint.id.padEnd(28)} ${r.tier.padEnd(24)} ${r.available ? "available" : `unavailable (${r.unavailableReason})`}`,
  );
}

// Phase 3: they come back; calls return home once their ejection ends and a probe succeeds.
await Promise.all(homePods.map(listen));
const back = performance.now();
const returning: Tally = { byPod: new Map(), failed: 0, calls: 0 };
let returnedAfter: number | undefined;
while (performance.now() - back < 10_000) {
  const window = await load(40, 4);
  const homeCalls = homePods.reduce((n, p) => n + (window.byPod.get(p.name) ?? 0), 0);
  if (homeCalls === window.calls) {
    returnedAfter = performance.now() - back;
    break;
  }
  for (const [pod, n] of window.byPod) returning.byPod.set(pod, (returning.byPod.get(pod) ?? 0) + n);
  returning.calls += window.calls;
  returning.failed += window.failed;
  await new Promise((r) => setTimeout(r, 100));
}
const alreadyHome = homePods.reduce((n, p) => n + (returning.byPod.get(p.name) ?? 0), 0);
console.log(`\n3. ${home} servers back`);
console.log(
  `  calls return as each home endpoint's ejection ends (${EJECTION_MS / 1000} s here) and a probe succeeds`,
);
console.log(
  `  on the way back: ${returning.calls} calls, ${returning.failed} failed` +
    ` (${returning.calls - alreadyHome} still served away, ${alreadyHome} already home)`,
);
if (returnedAfter === undefined) console.log("  calls did not return home within 10 s");
else {
  console.log(
    `  all calls home again ${(returnedAfter / 1000).toFixed(1)} s after the servers came back; the next 200:`,
  );
  table(undefined, await load(200));
}
showTrace("home again");

await mesh.close();
await Promise.all(pods.map(stop));
console.log(`\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`);
if (returnedAfter === undefined) process.exitCode = 1;

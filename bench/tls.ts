/**
 * What mutual TLS costs a mesh call, and what the TLS policy saves:
 *
 * - handshakes: a new TLS connection with the policy's cached
 *   `SecureContext` against one built per connection (what passing `ca`,
 *   `cert` and `key` to `tls.connect` does), and with a resumed session;
 *   client CPU and wall time per handshake;
 * - requests per second over mutual TLS with keep-alive against a new
 *   connection per request (cached context, and a new context each time),
 *   at concurrency 1 and 8, with client and server CPU per request;
 * - the policy's own cost per connection (`connectOptions()`), and building
 *   one `SecureContext`.
 *
 * ECDSA P-256 certificates (made with the openssl CLI), a node:https server
 * requiring a client certificate in a child process on 127.0.90.41. Each
 * round runs every variant once for a short block, in a seeded random
 * order, so that the drift of a shared 2-core machine hits every variant
 * alike; medians over rounds are reported.
 *
 *     npx tsx bench/tls.ts [--smoke] [--strict] [--rounds=9] [--block=400] [--seed=1]
 *
 * @module
 */

import { fork } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { type ConnectionOptions, createSecureContext, type TLSSocket, connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { Client, Pool } from "undici";
import { createEndpoint } from "../src/discovery/endpoint.js";
import { parseServiceName } from "../src/discovery/names.js";
import { createTlsPolicy, resolveTlsOptions } from "../src/tls/tls.js";
import { createTestCa, type Pem } from "../test/helpers/certs.js";
import {
  finish,
  fmt,
  median,
  numberFlag,
  parseFlags,
  printTable,
  printTargets,
  type TargetResult,
  target,
  writeResults,
} from "./lib/common.js";
import { prng, shuffle } from "./lib/interleave.js";

const NAME = "tls";
const ADDRESS = "127.0.90.41";
const HOST = "api.bench.svc.cluster.local";
const API_ID = "spiffe://cluster.local/ns/bench/sa/api";

interface ServerMsg {
  type: "ready" | "cpu";
  port?: number;
  usage?: { user: number; system: number };
  requests?: number;
}

/** The server process: a node:https server that requires a client certificate. */
async function serve(): Promise<void> {
  const [init] = (await once(process, "message")) as [{ server: Pem; ca: string }];
  let requests = 0;
  const body = Buffer.from('{"ok":true}');
  const server = createServer(
    { ...init.server, ca: init.ca, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      requests++;
      req.resume();
      res.writeHead(200, { "content-type": "application/json", "content-length": body.length });
      res.end(body);
    },
  );
  server.keepAliveTimeout = 600_000;
  server.listen(0, ADDRESS);
  await once(server, "listening");
  process.send!({ type: "ready", port: (server.address() as AddressInfo).port } satisfies ServerMsg);
  process.on("message", (m: { type: string }) => {
    if (m.type === "cpu")
      process.send!({ type: "cpu", usage: process.cpuUsage(), requests } satisfies ServerMsg);
  });
  process.once("disconnect", () => process.exit(0));
}

interface ServerHandle {
  port: number;
  cpu(): Promise<{ us: number; requests: number }>;
  close(): void;
}

async function startServerProcess(server: Pem, ca: string): Promise<ServerHandle> {
  const child = fork(fileURLToPath(import.meta.url), ["--serve"], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  process.once("exit", () => child.kill("SIGKILL"));
  child.send({ server, ca });
  const [ready] = (await once(child, "message")) as [ServerMsg];
  return {
    port: ready.port!,
    async cpu() {
      child.send({ type: "cpu" });
      const [m] = (await once(child, "message")) as [ServerMsg];
      return { us: m.usage!.user + m.usage!.system, requests: m.requests! };
    },
    close: () => child.disconnect(),
  };
}

const cpuNow = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

/** One TLS connection: connect, handshake, close. Resolves with the session ticket, if one came. */
function handshake(options: ConnectionOptions): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined;
    const s: TLSSocket = tlsConnect(options);
    s.once("session", (t: Buffer) => {
      session = t;
      s.end();
    });
    s.once("secureConnect", () => {
      // TLS 1.3 tickets come after the handshake; a resumed session needs none.
      if (s.isSessionReused()) s.end();
    });
    s.once("error", reject);
    s.once("close", () => resolve(session));
  });
}

interface HandshakeBlock {
  perHandshakeUs: number;
  cpuUs: number;
  count: number;
}

async function handshakeBlock(
  make: (session: Buffer | undefined) => ConnectionOptions,
  ms: number,
  resume: boolean,
): Promise<HandshakeBlock> {
  const times: number[] = [];
  let session: Buffer | undefined;
  const c0 = cpuNow();
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t0 = performance.now();
    const s = await handshake(make(resume ? session : undefined));
    times.push((performance.now() - t0) * 1000);
    if (s) session = s;
  }
  return { perHandshakeUs: median(times), cpuUs: (cpuNow() - c0) / times.length, count: times.length };
}

interface RequestBlock {
  rps: number;
  cpuUs: number;
  serverCpuUs: number;
}

async function requestBlock(
  server: ServerHandle,
  connect: (options: unknown, cb: (err: Error | null, socket: TLSSocket | null) => void) => void,
  concurrency: number,
  reset: boolean,
  ms: number,
): Promise<RequestBlock> {
  const dispatcher =
    concurrency === 1
      ? new Client(`http://${HOST}:8080`, { connect: connect as never })
      : new Pool(`http://${HOST}:8080`, { connections: concurrency, connect: connect as never });
  try {
    // Warm the connections (and the JIT) before counting.
    await Promise.all(
      Array.from({ length: concurrency }, () =>
        dispatcher.request({ path: "/", method: "GET" }).then((r) => r.body.dump()),
      ),
    );
    const s0 = await server.cpu();
    const c0 = cpuNow();
    let done = 0;
    const end = performance.now() + ms;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const res = await dispatcher.request({ path: "/", method: "GET", reset });
          await res.body.dump();
          done++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const c1 = cpuNow();
    const s1 = await server.cpu();
    return {
      rps: done / elapsed,
      cpuUs: (c1 - c0) / done,
      serverCpuUs: (s1.us - s0.us) / (s1.requests - s0.requests),
    };
  } finally {
    await dispatcher.destroy();
  }
}

function connectWith(make: () => ConnectionOptions, port: number) {
  return (_o: unknown, cb: (err: Error | null, socket: TLSSocket | null) => void) => {
    const s = tlsConnect({ ...make(), host: ADDRESS, port, ALPNProtocols: ["http/1.1"] });
    s.once("secureConnect", () => cb(null, s));
    s.once("error", (err) => cb(err, null));
  };
}

function nsPerCall(fn: () => unknown, calls: number): number {
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) fn();
    runs.push(((performance.now() - t0) * 1e6) / calls);
  }
  return median(runs);
}

async function main(): Promise<void> {
  const flags = parseFlags();
  const smoke = flags.smoke;
  const rounds = numberFlag(flags, "rounds", smoke ? 1 : 9);
  const blockMs = numberFlag(flags, "block", smoke ? 100 : 400);
  const random = prng(numberFlag(flags, "seed", 1));

  const ca = createTestCa("bench CA");
  const client = ca.issue({ cn: "client", uris: ["spiffe://cluster.local/ns/bench/sa/client"] });
  const serverPem = ca.issue({ cn: "api", uris: [API_ID] });
  const server = await startServerProcess(serverPem, ca.cert);
  const policy = createTlsPolicy(
    resolveTlsOptions(
      { mode: "strict", ca: ca.cert, cert: client.cert, key: client.key },
      {},
      undefined,
      "bench",
    ),
  );
  const tgt = {
    endpoint: createEndpoint({ address: ADDRESS, port: server.port, cluster: "bench", backend: "static" }),
    service: parseServiceName(HOST, 8080),
    servername: HOST,
  };
  const cached = policy.connectOptions(tgt);
  // What a caller without the policy does: the material on every connect, so Node builds a context each time.
  const freshOptions = (): ConnectionOptions => ({
    ca: ca.cert,
    cert: client.cert,
    key: client.key,
    servername: HOST,
    checkServerIdentity: cached.checkServerIdentity,
  });
  console.log(
    `${NAME}: ECDSA P-256, server on ${ADDRESS} in a child process; ${rounds} round(s) of ${blockMs} ms blocks${smoke ? " — smoke pass" : ""}`,
  );

  // The policy's own cost per new connection, and a context build.
  const connectOptionsNs = nsPerCall(() => policy.connectOptions(tgt), smoke ? 10_000 : 200_000);
  const contextUs =
    nsPerCall(
      () => createSecureContext({ ca: ca.cert, cert: client.cert, key: client.key }),
      smoke ? 20 : 300,
    ) / 1000;

  const hsVariants: Record<string, { make: (s: Buffer | undefined) => ConnectionOptions; resume: boolean }> =
    {
      "cached context": { make: () => ({ ...cached, host: ADDRESS, port: server.port }), resume: false },
      "new context per connection": {
        make: () => ({ ...freshOptions(), host: ADDRESS, port: server.port }),
        resume: false,
      },
      "cached context, session resumed": {
        make: (session) => ({ ...cached, host: ADDRESS, port: server.port, session }),
        resume: true,
      },
    };
  const rqVariants: Record<string, { make: () => ConnectionOptions; reset: boolean }> = {
    "keep-alive": { make: () => cached, reset: false },
    "new connection per request, cached context": { make: () => cached, reset: true },
    "new connection per request, new context": { make: freshOptions, reset: true },
  };
  const concurrencies = [1, 8];

  const hs: Record<string, HandshakeBlock[]> = {};
  const rq: Record<string, RequestBlock[]> = {};
  // Warm-up block of everything, not counted.
  for (const v of Object.values(hsVariants)) await handshakeBlock(v.make, Math.min(blockMs, 100), v.resume);
  for (let r = 0; r < rounds; r++) {
    for (const name of shuffle(Object.keys(hsVariants), random)) {
      const v = hsVariants[name]!;
      (hs[name] ??= []).push(await handshakeBlock(v.make, blockMs, v.resume));
    }
    for (const c of concurrencies) {
      for (const name of shuffle(Object.keys(rqVariants), random)) {
        const v = rqVariants[name]!;
        const block = await requestBlock(server, connectWith(v.make, server.port), c, v.reset, blockMs);
        (rq[`${name} @c=${c}`] ??= []).push(block);
      }
    }
    console.log(`  round ${r + 1}/${rounds} done`);
  }
  server.close();
  policy.close();
  ca.dispose();

  const hsRows = Object.entries(hs).map(([name, blocks]) => ({
    name,
    wallUs: median(blocks.map((b) => b.perHandshakeUs)),
    cpuUs: median(blocks.map((b) => b.cpuUs)),
    count: blocks.reduce((s, b) => s + b.count, 0),
  }));
  const rqRows = Object.entries(rq).map(([name, blocks]) => ({
    name,
    rps: median(blocks.map((b) => b.rps)),
    cpuUs: median(blocks.map((b) => b.cpuUs)),
    serverCpuUs: median(blocks.map((b) => b.serverCpuUs)),
  }));
  printTable(
    "handshakes (sequential; median over rounds)",
    ["variant", "wall µs", "client CPU µs", "handshakes"],
    hsRows.map((r) => [r.name, fmt(r.wallUs, 0), fmt(r.cpuUs, 0), String(r.count)]),
  );
  printTable(
    "requests over mutual TLS (median over rounds)",
    ["variant", "req/s", "client CPU µs/req", "server CPU µs/req"],
    rqRows.map((r) => [r.name, fmt(r.rps, 0), fmt(r.cpuUs, 1), fmt(r.serverCpuUs, 1)]),
  );
  printTable(
    "costs of their own",
    ["what", "µs"],
    [
      ["policy.connectOptions() (cached)", fmt(connectOptionsNs / 1000, 3)],
      ["tls.createSecureContext({ ca, cert, key })", fmt(contextUs, 0)],
    ],
  );

  // Differences and ratios are taken within each round (the variants ran seconds apart), then the median.
  const paired = <T>(a: T[], b: T[], f: (x: T, y: T) => number) => median(a.map((x, i) => f(x, b[i]!)));
  const savedUs = paired(
    hs["new context per connection"]!,
    hs["cached context"]!,
    (x, y) => x.cpuUs - y.cpuUs,
  );
  const resumedSavedUs = paired(
    hs["cached context"]!,
    hs["cached context, session resumed"]!,
    (x, y) => x.cpuUs - y.cpuUs,
  );
  const rqPair = (a: string, b: string, c: number, f: (x: RequestBlock, y: RequestBlock) => number) =>
    paired(rq[`${a} @c=${c}`]!, rq[`${b} @c=${c}`]!, f);
  const NEW_CACHED = "new connection per request, cached context";
  const NEW_FRESH = "new connection per request, new context";
  const comparisons = concurrencies.map((c) => ({
    concurrency: c,
    reuseRpsRatio: rqPair("keep-alive", NEW_CACHED, c, (x, y) => x.rps / y.rps),
    reuseCpuSavedUs: rqPair(NEW_CACHED, "keep-alive", c, (x, y) => x.cpuUs - y.cpuUs),
    contextRpsRatio: rqPair(NEW_CACHED, NEW_FRESH, c, (x, y) => x.rps / y.rps),
    contextCpuSavedUs: rqPair(NEW_FRESH, NEW_CACHED, c, (x, y) => x.cpuUs - y.cpuUs),
  }));
  printTable(
    "paired within rounds (median over rounds)",
    [
      "concurrency",
      "keep-alive / new conn req/s",
      "client CPU saved µs/req",
      "cached / new context req/s",
      "client CPU saved µs/req",
    ],
    comparisons.map((r) => [
      String(r.concurrency),
      fmt(r.reuseRpsRatio, 1),
      fmt(r.reuseCpuSavedUs, 0),
      fmt(r.contextRpsRatio, 2),
      fmt(r.contextCpuSavedUs, 0),
    ]),
  );
  console.log(
    `\nper handshake, client CPU: a cached context saves ${fmt(savedUs, 0)} µs over a new one; resuming the session saves ${fmt(resumedSavedUs, 0)} µs more`,
  );
  const reuse = (c: number) => comparisons.find((r) => r.concurrency === c)!.reuseRpsRatio;
  const targets: TargetResult[] = [
    target(
      "tls-connect-options",
      "policy.connectOptions() per new connection (cached)",
      connectOptionsNs / 1000,
      "<=",
      2,
      "µs",
      "median of 5 batches of calls for one target",
    ),
    target(
      "tls-context-saving",
      "client CPU saved per handshake by the cached SecureContext",
      savedUs,
      ">=",
      200,
      "µs",
      "median over rounds of the within-round difference of client CPU per sequential handshake, new context minus cached",
    ),
    target(
      "tls-reuse-c1",
      "keep-alive / new connection per request, req/s at c=1",
      reuse(1),
      ">=",
      3,
      "x",
      "median over rounds of the within-round ratio; both with the cached context",
    ),
  ];
  printTargets(targets, smoke);
  const file = writeResults(NAME, {
    smoke,
    rounds,
    blockMs,
    handshakes: hsRows,
    requests: rqRows,
    comparisons,
    savedUs,
    resumedSavedUs,
    connectOptionsNs,
    contextUs,
    targets,
  });
  finish(flags, targets, file);
}

if (process.argv.includes("--serve")) await serve();
else await main();

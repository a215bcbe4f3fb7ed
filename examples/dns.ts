/**
 * DNS-based discovery across two clusters, against a real DNS server.
 *
 * Each "cluster" gets its own dnsmasq (standing in for its CoreDNS) on a
 * loopback address, answering A and SRV records for `web.default`, and its
 * own HTTP servers ("pods") on other loopback addresses. A caller in
 * us-east-1 then:
 *
 *   1. resolves the service through both clusters' DNS (A records, then SRV
 *      records with their priorities and weights) — the west cluster over
 *      TCP, on one connection to its server shared by every lookup, with
 *      the SRV targets' addresses taken from the answer itself;
 *   2. calls it with mesh.fetch: the calls stay in its own region;
 *   3. loses the east cluster's DNS server: the east endpoints are kept
 *      (last-known-good, marked stale) and calls keep working;
 *   4. loses the east pods too: calls fail over to us-west-2.
 *
 * Needs dnsmasq (apt-get install dnsmasq). Run: npx tsx examples/dns.ts
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMesh, dnsDiscovery } from "meshlink";

const DNSMASQ = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/usr/local/sbin/dnsmasq"].find((p) =>
  existsSync(p),
);
if (DNSMASQ === undefined) {
  console.error("This example needs dnsmasq: apt-get install dnsmasq");
  process.exit(1);
}
const WEB = "web.default.svc.cluster.local";
const dir = await mkdtemp(join(tmpdir(), "meshlink-dns-example-"));

// --- Pods: one HTTP server per loopback address, all on the same port (an A
// record carries no port: the caller's URL names it).
interface Pod {
  name: string;
  address: string;
  server: Server;
  sockets: Set<Socket>;
}

async function startPod(name: string, address: string, port: number): Promise<Pod> {
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ pod: name }));
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(port, address);
  await once(server, "listening");
  return { name, address, server, sockets };
}

async function stopPod(pod: Pod): Promise<void> {
  const closed = once(pod.server, "close");
  pod.server.close();
  for (const s of pod.sockets) s.destroy();
  await closed;
}

// Retried with another port in the rare case one address already holds it.
async function startPods(): Promise<{ port: number; pods: Pod[] }> {
  for (let attempt = 0; ; attempt++) {
    const first = await startPod("east-1", "127.0.30.2", 0);
    const port = (first.server.address() as AddressInfo).port;
    const pods = [first];
    try {
      for (const [name, address] of [
        ["east-2", "127.0.30.3"],
        ["west-1", "127.0.30.4"],
        ["west-2", "127.0.30.5"],
      ] as const) {
        pods.push(await startPod(name, address, port));
      }
      return { port, pods };
    } catch (err) {
      for (const pod of pods) await stopPod(pod);
      if (attempt >= 4) throw err;
    }
  }
}

const { port, pods } = await startPods();

// --- One dnsmasq per cluster: A records from a hosts file, SRV records from
// the command line, TTL 1 s, NXDOMAIN for unknown names under cluster.local.
interface Dns {
  address: string;
  port: number;
  process: ChildProcess;
}

async function startDns(
  cluster: string,
  address: string,
  hosts: [string, string][],
  srv: string[],
): Promise<Dns> {
  const hostsFile = join(dir, `${cluster}.hosts`);
  await writeFile(hostsFile, hosts.map(([ip, name]) => `${ip} ${name}\n`).join(""));
  // Any port that is free on this address: the kernel picks one for a probe.
  const probe = createServer().listen(0, address);
  await once(probe, "listening");
  const dnsPort = (probe.address() as AddressInfo).port;
  probe.close();
  const args = [
    "--keep-in-foreground",
    "--log-facility=-",
    `--port=${dnsPort}`,
    `--listen-address=${address}`,
    "--bind-interfaces",
    "--no-resolv",
    "--no-hosts",
    "--conf-file=/dev/null",
    "--pid-file=",
    "--user=root",
    "--local-ttl=1",
    "--local=/cluster.local/",
    `--addn-hosts=${hostsFile}`,
    ...srv.map((s) => `--srv-host=${s}`),
  ];
  const child = spawn(DNSMASQ!, args, { stdio: ["ignore", "ignore", "pipe"] });
  // dnsmasq answers once it has read its hosts file.
  await new Promise<void>((resolve, reject) => {
    let log = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      log += chunk;
      if (log.includes(`read ${hostsFile}`)) resolve();
    });
    child.once("exit", () => reject(new Error(`dnsmasq for ${cluster} exited: ${log}`)));
  });
  return { address, port: dnsPort, process: child };
}

async function stopDns(dns: Dns): Promise<void> {
  if (dns.process.exitCode !== null) return;
  const exited = once(dns.process, "exit");
  dns.process.kill("SIGTERM");
  await exited;
}

const eastDns = await startDns(
  "east",
  "127.0.30.53",
  [
    ["127.0.30.2", WEB],
    ["127.0.30.3", WEB],
    ["127.0.30.2", `east-1.${WEB}`],
    ["127.0.30.3", `east-2.${WEB}`],
  ],
  [`_http._tcp.${WEB},east-1.${WEB},${port},10,3`, `_http._tcp.${WEB},east-2.${WEB},${port},10,1`],
);
const westDns = await startDns(
  "west",
  "127.0.30.54",
  [
    ["127.0.30.4", WEB],
    ["127.0.30.5", WEB],
    ["127.0.30.4", `west-1.${WEB}`],
    ["127.0.30.5", `west-2.${WEB}`],
  ],
  // west-2 has a higher priority value: a backup.
  [`_http._tcp.${WEB},west-1.${WEB},${port},10,1`, `_http._tcp.${WEB},west-2.${WEB},${port},20,1`],
);

// --- The caller, in us-east-1, failing over to us-west-2.
const mesh = createMesh({
  env: {},
  region: "us-east-1",
  failover: ["us-west-2"],
  discovery: [
    dnsDiscovery({
      clusters: [
        { name: "east", region: "us-east-1", servers: [`${eastDns.address}:${eastDns.port}`] },
        { name: "west", region: "us-west-2", servers: [`${westDns.address}:${westDns.port}`], tcp: true },
      ],
      // Short bounds so that the example shows a DNS outage in about a second.
      minTtl: 200,
      maxTtl: 1000,
      timeout: 300,
      tries: 1,
    }),
  ],
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function calls(label: string, n = 6): Promise<void> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await mesh.fetch(`http://${WEB}:${port}/hello`);
    seen.push(((await res.json()) as { pod: string }).pod);
  }
  console.log(`${label}: ${seen.join(" ")}`);
}

try {
  console.log(`1. web.default:${port} through both clusters' DNS (A records):`);
  for (const r of await mesh.resolve("web.default", port)) {
    console.log(`   ${r.endpoint.id.padEnd(24)} ${r.endpoint.locality.region.padEnd(10)} tier ${r.tier}`);
  }
  console.log("   web.default, port name http (SRV records):");
  for (const r of await mesh.resolve("web.default", "http")) {
    console.log(
      `   ${r.endpoint.id.padEnd(24)} weight ${r.endpoint.weight}${r.endpoint.backup ? "  backup (higher SRV priority)" : ""}`,
    );
  }

  await calls("2. calls from us-east-1");

  await stopDns(eastDns);
  // The next refresh (within maxTtl) finds the server gone.
  const sourceOf = () =>
    mesh.describe().services.find((s) => s.service === `web.default:${port}`)!.sources[0]!;
  for (let i = 0; i < 50 && !sourceOf().stale; i++) await sleep(100);
  const source = sourceOf();
  console.log(`3. east DNS down: stale=${source.stale}`);
  for (const c of source.clusters ?? []) {
    console.log(`   cluster ${c.cluster}: fresh=${c.fresh}${c.error ? ` error=${c.error}` : ""}`);
  }
  await calls("   calls (east endpoints kept)");

  await stopPod(pods[0]!);
  await stopPod(pods[1]!);
  await calls("4. east pods down too, calls fail over");
} finally {
  await mesh.close();
  await stopDns(eastDns);
  await stopDns(westDns);
  for (const pod of pods) if (pod.server.listening) await stopPod(pod);
  await rm(dir, { recursive: true, force: true });
}

/**
 * Consul discovery across two datacenters, with blocking queries.
 *
 * A small stand-in for a Consul agent (the one endpoint meshlink reads,
 * `/v1/health/service/<name>`, with Consul's blocking queries) knows two
 * datacenters: dc-east (us-east-1) and dc-west (us-west-2), two instances
 * of `web` each, every instance a real HTTP server on its own loopback
 * address. A caller in us-east-1a then:
 *
 *   1. resolves web.service.consul: each datacenter is a cluster with its
 *      region, in the router's tiers;
 *   2. calls it: the calls stay in its own zone;
 *   3. sees a new instance registered in Consul within milliseconds (the
 *      blocking query returns at once);
 *   4. loses every east server (Consul's checks have not noticed yet):
 *      calls fail over to dc-west, none fails;
 *   5. sees Consul deregister them: dc-west only.
 *
 * With a real agent, drop the stand-in and point CONSUL_HTTP_ADDR (or the
 * address option) at it. Run: npx tsx examples/consul.ts
 */

import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { consulDiscovery, createMesh } from "meshlink";

// --- Instances: one HTTP server per loopback address.
interface Pod {
  name: string;
  address: string;
  port: number;
  server: Server;
  sockets: Set<Socket>;
}

async function startPod(name: string, address: string): Promise<Pod> {
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ pod: name }));
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.listen(0, address);
  await once(server, "listening");
  return { name, address, port: (server.address() as AddressInfo).port, server, sockets };
}

async function stopPod(pod: Pod): Promise<void> {
  const closed = once(pod.server, "close");
  pod.server.close();
  for (const s of pod.sockets) s.destroy();
  await closed;
}

// --- A stand-in Consul agent: the catalog of two datacenters, one raft
// index, and blocking queries (a query with ?index=N waits until the index
// passes N or ?wait runs out). The JSON has the fields of Consul's ServiceEntry
// that meshlink reads.
class StandInAgent {
  index = 1;
  readonly catalog = new Map<string, Map<string, Pod & { dc: string; zone: string }>>();
  readonly #waiting = new Set<() => void>();
  readonly server = createServer((req, res) => this.#handle(req, res));

  register(dc: string, pod: Pod, zone: string): void {
    if (!this.catalog.has(dc)) this.catalog.set(dc, new Map());
    this.catalog.get(dc)!.set(pod.name, { ...pod, dc, zone });
    this.#changed();
  }

  deregister(dc: string, name: string): void {
    this.catalog.get(dc)?.delete(name);
    this.#changed();
  }

  #changed(): void {
    this.index++;
    for (const wake of [...this.#waiting]) wake();
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://agent");
    const service = /^\/v1\/health\/service\/(.+)$/.exec(url.pathname)?.[1];
    const dc = url.searchParams.get("dc") ?? "dc-east";
    const index = Number(url.searchParams.get("index") ?? 0);
    const wait = Number(/^(\d+)ms$/.exec(url.searchParams.get("wait") ?? "")?.[1] ?? 300_000);
    const answer = () => {
      const entries = [...(this.catalog.get(dc)?.values() ?? [])]
        .filter(() => service === "web")
        .map((p) => ({
          Node: {
            Node: p.name,
            Address: p.address,
            Datacenter: p.dc,
            TaggedAddresses: { lan: p.address },
            Meta: {},
          },
          Service: {
            ID: `web-${p.name}`,
            Service: "web",
            Tags: [],
            Address: "",
            Meta: { zone: p.zone },
            Port: p.port,
          },
          Checks: [{ CheckID: "serfHealth", Status: "passing" }],
        }));
      res.writeHead(200, { "content-type": "application/json", "x-consul-index": String(this.index) });
      res.end(JSON.stringify(entries));
    };
    if (index === 0 || index < this.index) {
      answer();
      return;
    }
    const wake = () => {
      this.#waiting.delete(wake);
      clearTimeout(timer);
      if (!res.destroyed) answer();
    };
    const timer = setTimeout(wake, wait);
    this.#waiting.add(wake);
    res.on("close", wake);
  }
}

const pods = {
  "east-1": await startPod("east-1", "127.0.70.2"),
  "east-2": await startPod("east-2", "127.0.70.3"),
  "west-1": await startPod("west-1", "127.0.70.4"),
  "west-2": await startPod("west-2", "127.0.70.5"),
};
const agent = new StandInAgent();
agent.server.listen(0, "127.0.70.1");
await once(agent.server, "listening");
agent.register("dc-east", pods["east-1"], "us-east-1a");
agent.register("dc-east", pods["east-2"], "us-east-1b");
agent.register("dc-west", pods["west-1"], "us-west-2a");
agent.register("dc-west", pods["west-2"], "us-west-2b");

// --- The caller, in us-east-1a, failing over to us-west-2.
const mesh = createMesh({
  env: {},
  region: "us-east-1",
  zone: "us-east-1a",
  failover: ["us-west-2"],
  discovery: [
    consulDiscovery({
      address: `http://127.0.70.1:${(agent.server.address() as AddressInfo).port}`,
      datacenters: [
        { name: "dc-east", region: "us-east-1" },
        { name: "dc-west", region: "us-west-2" },
      ],
      env: {},
    }),
  ],
});

const WEB = "http://web.service.consul/hello";

async function calls(label: string, n = 8): Promise<void> {
  const seen: string[] = [];
  let failed = 0;
  for (let i = 0; i < n; i++) {
    try {
      const res = await mesh.fetch(WEB);
      seen.push(((await res.json()) as { pod: string }).pod);
    } catch {
      failed++;
    }
  }
  console.log(`${label}: ${seen.join(" ")} (${failed} failed)`);
}

async function order(label: string): Promise<void> {
  console.log(label);
  for (const r of await mesh.resolve("web.service.consul")) {
    console.log(`   ${r.endpoint.id.padEnd(28)} ${r.endpoint.locality.region.padEnd(10)} tier ${r.tier}`);
  }
}

try {
  await order("1. web.service.consul, one cluster per datacenter:");
  await calls("2. calls from us-east-1a");

  const east3 = await startPod("east-3", "127.0.70.6");
  Object.assign(pods, { "east-3": east3 });
  const t0 = performance.now();
  agent.register("dc-east", east3, "us-east-1a");
  while (!(await mesh.resolve("web.service.consul")).some((r) => r.endpoint.address === east3.address)) {
    await new Promise((resolve) => setImmediate(resolve));
  }
  console.log(`3. east-3 registered: in the router ${(performance.now() - t0).toFixed(1)} ms later`);
  await calls("   calls");

  for (const name of ["east-1", "east-2", "east-3"] as const) await stopPod(pods[name as keyof typeof pods]);
  await calls("4. every east server down, Consul not told yet", 12);

  for (const name of ["east-1", "east-2", "east-3"]) agent.deregister("dc-east", name);
  while ((await mesh.resolve("web.service.consul")).some((r) => r.endpoint.cluster === "dc-east")) {
    await new Promise((resolve) => setImmediate(resolve));
  }
  await order("5. Consul deregistered them:");
} finally {
  await mesh.close();
  agent.server.close();
  agent.server.closeAllConnections();
  for (const pod of Object.values(pods)) if (pod.server.listening) await stopPod(pod);
}

/**
 * Kubernetes discovery across three clusters: EndpointSlices listed and
 * watched on each cluster's API server, calls kept in the caller's region,
 * a terminating pod drained, and a failover when a whole cluster's pods stop
 * being ready.
 *
 * So that it runs anywhere (and in CI), the three "API servers" are the
 * protocol-faithful test server from test/helpers/kube-apiserver.ts (HTTPS,
 * bearer tokens, list + chunked watch), and the "pods" are HTTP servers on
 * loopback addresses. Against real clusters, only the `clusters` entries
 * change: a kubeconfig context per cluster, or `inCluster: true` for the
 * pod's own cluster (see docs/discovery/kubernetes.md).
 *
 * Needs the openssl command (for the test certificates). Run: npx tsx examples/kubernetes.ts
 */

import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMesh, type KubernetesClusterStatus, kubernetesDiscovery } from "meshlink";
import { createTestCa } from "../test/helpers/certs.js";
import { type KubeApiServer, startKubeApiServer } from "../test/helpers/kube-apiserver.js";

const WEB = "http://web.shop.svc.cluster.local:80";
const dir = await mkdtemp(join(tmpdir(), "meshlink-kubernetes-example-"));
const ca = createTestCa("example cluster CA");

// --- Pods: one HTTP server per loopback address, each on its own port (its EndpointSlice says which).
interface Pod {
  name: string;
  address: string;
  port: number;
  server: Server;
}
async function startPod(name: string, address: string): Promise<Pod> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ pod: name }));
  });
  server.listen(0, address);
  await once(server, "listening");
  return { name, address, port: (server.address() as AddressInfo).port, server };
}

// --- Three clusters, each with an API server that knows the Service `web` in namespace `shop`.
interface Cluster {
  name: string;
  region: string;
  api: KubeApiServer;
  pods: Pod[];
}
async function startCluster(
  name: string,
  region: string,
  zones: string[],
  addresses: string[],
): Promise<Cluster> {
  const api = await startKubeApiServer({ ca, http2: true });
  const pods = await Promise.all(addresses.map((a, i) => startPod(`${name}-${i + 1}`, a)));
  api.applyService("shop", { name: "web", ports: [{ name: "http", port: 80, targetPort: "http" }] });
  pods.forEach((pod, i) => {
    publish(api, pod, zones[i % zones.length]!);
  });
  return { name, region, api, pods };
}
function publish(
  api: KubeApiServer,
  pod: Pod,
  zone: string,
  state: { ready?: boolean; serving?: boolean; terminating?: boolean } = {},
) {
  api.applySlice("shop", {
    name: `web-${pod.name}`,
    service: "web",
    endpoints: [{ address: pod.address, zone, nodeName: `node-${pod.name}`, ...state }],
    ports: [{ name: "http", port: pod.port }],
  });
}

const east = await startCluster(
  "east",
  "us-east-1",
  ["us-east-1a", "us-east-1b"],
  ["127.0.80.51", "127.0.80.52"],
);
const west = await startCluster("west", "us-west-2", ["us-west-2a"], ["127.0.80.61", "127.0.80.62"]);
const eu = await startCluster("eu", "eu-west-1", ["eu-west-1a"], ["127.0.80.71"]);

// West is reached through a kubeconfig (as a remote cluster's Secret would be mounted);
// east and eu are given directly, eu with a token file (rotated tokens are re-read).
const kubeconfig = join(dir, "west.kubeconfig");
await writeFile(
  kubeconfig,
  `apiVersion: v1
kind: Config
current-context: west
clusters:
- name: west
  cluster:
    server: ${west.api.url}
    certificate-authority-data: ${Buffer.from(ca.cert).toString("base64")}
users:
- name: meshlink
  user:
    token: ${west.api.token}
contexts:
- name: west
  context: { cluster: west, user: meshlink }
`,
);
await writeFile(join(dir, "eu.token"), eu.api.token);

// --- The caller runs in us-east-1a and fails over to us-west-2, then eu-west-1.
const mesh = createMesh({
  env: {},
  region: "us-east-1",
  zone: "us-east-1a",
  failover: ["us-west-2", "eu-west-1"],
  discovery: [
    kubernetesDiscovery({
      clusters: [
        { name: "east", region: "us-east-1", server: east.api.url, token: east.api.token, ca: ca.cert },
        { name: "west", region: "us-west-2", kubeconfig, context: "west" },
        {
          name: "eu",
          region: "eu-west-1",
          server: eu.api.url,
          tokenFile: join(dir, "eu.token"),
          ca: ca.cert,
        },
      ],
    }),
  ],
});

async function calls(label: string, n = 8): Promise<void> {
  const seen: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await mesh.fetch(`${WEB}/hello`);
    seen.push(((await res.json()) as { pod: string }).pod);
  }
  console.log(`${label}: ${seen.join(" ")}`);
}

async function until(what: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await what()); i++) await new Promise((r) => setTimeout(r, 10));
}

try {
  console.log("1. web.shop, Service port 80, through three API servers (router order):");
  for (const r of await mesh.resolve("web.shop.svc.cluster.local", 80)) {
    const e = r.endpoint;
    console.log(
      `   ${e.id.padEnd(26)} ${e.locality.region.padEnd(10)} ${e.locality.zone.padEnd(11)} tier ${r.tier}`,
    );
  }

  await calls("2. calls from us-east-1a");

  // The pod in the caller's zone is being deleted: serving while it drains, but terminating.
  publish(east.api, east.pods[0]!, "us-east-1a", { ready: false, serving: true, terminating: true });
  await until(async () =>
    (await mesh.resolve("web.shop", 80)).some((r) => r.unavailableReason === "terminating"),
  );
  await calls("3. east-1 terminating, drained");

  // Every east pod stops being ready (a bad rollout): the calls move to us-west-2.
  for (const pod of east.pods) publish(east.api, pod, "us-east-1a", { ready: false, serving: false });
  await until(async () =>
    (await mesh.resolve("web.shop", 80)).every((r) => r.endpoint.cluster !== "east" || !r.available),
  );
  await calls("4. nothing ready in east, failover");

  // West's API server stops answering: its endpoints are kept (last-known-good) and still used.
  west.api.fault = () => ({
    status: 503,
    body: {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "etcd cluster is unavailable",
      reason: "ServiceUnavailable",
      code: 503,
    },
  });
  west.api.endWatches();
  const source = () => mesh.describe().services.find((s) => s.service === "web.shop:80")!.sources[0]!;
  await until(async () => source().stale);
  console.log("5. west's API server failing; per cluster:");
  for (const c of source().clusters as KubernetesClusterStatus[]) {
    console.log(`   ${c.cluster.padEnd(5)} fresh=${c.fresh}${c.reason ? ` reason=${c.reason}` : ""}`);
  }
  await calls("   calls (west endpoints kept)");
} finally {
  await mesh.close();
  for (const c of [east, west, eu]) {
    await c.api.close();
    for (const pod of c.pods) pod.server.close();
  }
  ca.dispose();
  await rm(dir, { recursive: true, force: true });
}

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  createKubernetesBackend,
  type KubernetesClusterStatus,
} from "../../src/discovery/kubernetes/kubernetes.js";
import type { ParsedKubernetesOptions } from "../../src/discovery/kubernetes/options.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry, type ServiceSnapshot, type ServiceWatch } from "../../src/discovery/registry.js";
import { createTestCa, type TestCa } from "../helpers/certs.js";
import {
  type KubeApiServer,
  type KubeApiServerOptions,
  startKubeApiServer,
} from "../helpers/kube-apiserver.js";
import { until } from "../helpers/watch.js";

const PLUGIN = join(import.meta.dirname, "..", "fixtures", "kubernetes", "exec-plugin.mjs");

let ca: TestCa;
let dir: string;
const servers: KubeApiServer[] = [];
const registries: Registry[] = [];

beforeAll(() => {
  ca = createTestCa("kube test CA");
});
afterAll(() => ca.dispose());
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "meshlink-kube-auth-"));
});
afterEach(async () => {
  for (const r of registries.splice(0)) await r.close();
  for (const s of servers.splice(0)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function server(options: Partial<KubeApiServerOptions> = {}): Promise<KubeApiServer> {
  const s = await startKubeApiServer({ ca, ...options });
  servers.push(s);
  s.applyService("default", { name: "web", ports: [{ name: "http", port: 80, targetPort: 8080 }] });
  s.applySlice("default", {
    name: "web-1",
    service: "web",
    endpoints: [{ address: "10.0.0.1" }],
    ports: [{ name: "http", port: 8080 }],
  });
  return s;
}

function watch(
  options: ParsedKubernetesOptions,
  deps: Parameters<typeof createKubernetesBackend>[1] = {},
): ServiceWatch {
  const backend = createKubernetesBackend(
    { backoff: { base: 20, max: 100 }, requestTimeout: 2_000, ...options },
    { random: () => 0.5, ...deps },
  );
  const registry = new Registry([backend]);
  registries.push(registry);
  return registry.watch(parseServiceName("web.default", 80));
}

const status = (s: ServiceSnapshot) => (s.sources[0]!.clusters as readonly KubernetesClusterStatus[])[0]!;
const bound = (w: ServiceWatch) => until(w, (x) => x.state === "bound" && status(x).fresh);

/** A kubeconfig whose user runs the test exec plugin. */
function execKubeconfig(s: KubeApiServer, env: Record<string, string>): string {
  const path = join(dir, "config");
  writeFileSync(
    path,
    `apiVersion: v1
kind: Config
current-context: test
clusters:
- name: test
  cluster:
    server: ${s.url}
    certificate-authority-data: ${Buffer.from(s.caPem).toString("base64")}
users:
- name: plugin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ${JSON.stringify(process.execPath)}
      args: [${JSON.stringify(PLUGIN)}]
      env:
${Object.entries(env)
  .map(([name, value]) => `      - { name: ${name}, value: ${JSON.stringify(value)} }`)
  .join("\n")}
      interactiveMode: Never
contexts:
- name: test
  context: { cluster: test, user: plugin }
`,
  );
  return path;
}

describe("kubernetesDiscovery credentials", () => {
  it("authenticates with the token an exec plugin prints, and runs it again after a 401", async () => {
    const s = await server();
    const tokenFile = join(dir, "token");
    const log = join(dir, "runs.log");
    writeFileSync(tokenFile, s.token);
    writeFileSync(log, "");
    const kubeconfig = execKubeconfig(s, { TOKEN_FILE: tokenFile, RUN_LOG: log });
    const w = watch({ clusters: [{ name: "east", region: "us-east-1", kubeconfig }] });
    await bound(w);
    const runs = () => readFileSync(log, "utf8").trim().split("\n").length;
    expect(runs()).toBe(1);

    // The server rotates its token; the plugin now hands out the new one.
    s.tokens.clear();
    s.tokens.add("rotated-token");
    writeFileSync(tokenFile, "rotated-token");
    s.endWatches();
    await until(w, (x) => status(x).reason === "unauthorized");
    await bound(w);
    expect(runs()).toBeGreaterThanOrEqual(2);
    expect(s.requests.at(-1)!.authorization).toBe("Bearer rotated-token");
  });

  it("re-reads a token file on every request, so a rotated token is used", async () => {
    const s = await server();
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${s.token}\n`);
    const w = watch({
      clusters: [{ name: "east", region: "us-east-1", server: s.url, tokenFile, ca: s.caPem }],
    });
    await bound(w);
    s.tokens.clear();
    s.tokens.add("next-token");
    s.endWatches();
    await until(w, (x) => status(x).reason === "unauthorized");
    writeFileSync(tokenFile, "next-token");
    await bound(w);
  });

  it("works in-cluster from KUBERNETES_SERVICE_HOST/PORT and the service account's token and CA", async () => {
    const s = await server();
    const sa = join(dir, "serviceaccount");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(sa);
    writeFileSync(join(sa, "ca.crt"), s.caPem);
    writeFileSync(join(sa, "token"), s.token);
    const w = watch(
      { clusters: [{ name: "local", region: "us-east-1", inCluster: true }] },
      {
        env: { KUBERNETES_SERVICE_HOST: s.address, KUBERNETES_SERVICE_PORT: String(s.port) },
        serviceAccountDir: sa,
      },
    );
    const snapshot = await bound(w);
    expect(snapshot.endpoints[0]!.id).toBe("local/10.0.0.1:8080");
    // The kubelet rotates the projected token.
    s.tokens.clear();
    s.tokens.add("projected-2");
    writeFileSync(join(sa, "token"), "projected-2");
    s.endWatches();
    s.applySlice("default", {
      name: "web-1",
      service: "web",
      endpoints: [{ address: "10.0.0.2" }],
      ports: [{ name: "http", port: 8080 }],
    });
    await until(w, (x) => x.endpoints[0]?.address === "10.0.0.2");
  });

  it("authenticates with a client certificate, given directly or by an exec plugin", async () => {
    const s = await server({ clientCa: ca.cert, tokens: ["unused"] });
    const client = ca.issue({ cn: "system:serviceaccount:default:meshlink" });
    await bound(
      watch({
        clusters: [
          { name: "east", region: "r", server: s.url, ca: s.caPem, cert: client.cert, key: client.key },
        ],
      }),
    );

    writeFileSync(join(dir, "c.pem"), client.cert);
    writeFileSync(join(dir, "k.pem"), client.key);
    const kubeconfig = execKubeconfig(s, {
      MODE: "cert",
      CERT_FILE: join(dir, "c.pem"),
      KEY_FILE: join(dir, "k.pem"),
    });
    await bound(watch({ clusters: [{ name: "east", region: "r", kubeconfig }] }));
    expect(s.requests.every((r) => r.authorization === undefined)).toBe(true);
  });

  it("refuses a server its CA did not sign, unless told to skip verification", async () => {
    const s = await server();
    const other = createTestCa("another CA");
    try {
      const strict = watch({
        clusters: [{ name: "east", region: "r", server: s.url, token: s.token, ca: other.cert }],
      });
      const failed = await until(strict, (x) => x.state === "failed");
      expect(status(failed).reason).toBe("network");
      expect(s.requests).toHaveLength(0);
      await bound(
        watch({
          clusters: [
            { name: "east", region: "r", server: s.url, token: s.token, insecureSkipTlsVerify: true },
          ],
        }),
      );
    } finally {
      other.dispose();
    }
  });
});

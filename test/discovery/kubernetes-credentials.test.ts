import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ConnectionEnvironment, resolveConnection } from "../../src/discovery/kubernetes/connection.js";
import { execCredentials } from "../../src/discovery/kubernetes/exec.js";
import type { ExecConfig } from "../../src/discovery/kubernetes/kubeconfig.js";
import { createKubernetesBackend, kubernetesDiscovery } from "../../src/discovery/kubernetes/kubernetes.js";
import { type ConfigError, ErrorCodes, KubernetesError } from "../../src/errors.js";

const PLUGIN = join(import.meta.dirname, "..", "fixtures", "kubernetes", "exec-plugin.mjs");

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "meshlink-kube-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, text: string) => {
  const path = join(dir, name);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, text);
  return path;
};

const io = (env: Record<string, string | undefined> = {}): ConnectionEnvironment => ({
  env,
  home: dir,
  readFile: (p) => readFileSync(p, "utf8"),
  serviceAccountDir: join(dir, "sa"),
  now: Date.now,
  execTimeout: 10_000,
});

function thrown(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    return err as ConfigError;
  }
  throw new Error("did not throw");
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

const KUBECONFIG_A = `apiVersion: v1
kind: Config
current-context: east
clusters:
- name: east
  cluster:
    server: https://10.0.0.1:6443/prefix/
    certificate-authority: certs/east-ca.pem
- name: shared
  cluster:
    server: https://a.example:443
    certificate-authority-data: ${b64("CA FROM A")}
users:
- name: east-admin
  user:
    client-certificate: certs/admin.crt
    client-key: certs/admin.key
- name: robot
  user:
    tokenFile: tokens/robot
contexts:
- name: east
  context: { cluster: east, user: east-admin, namespace: shop }
- name: robot
  context: { cluster: shared, user: robot }
`;

const KUBECONFIG_B = `apiVersion: v1
kind: Config
current-context: ignored-because-a-sets-one
clusters:
- name: shared
  cluster:
    server: https://b.example:443
- name: west
  cluster:
    server: https://10.1.0.1:6443
    insecure-skip-tls-verify: true
    tls-server-name: kubernetes.default
users:
- name: eks
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./bin/get-token
      args: [eks, get-token]
      env: [{ name: AWS_PROFILE, value: prod }]
      interactiveMode: Never
      provideClusterInfo: true
contexts:
- name: west
  context: { cluster: west, user: eks }
`;

describe("kubeconfig", () => {
  beforeEach(() => {
    file("a/certs/east-ca.pem", "EAST CA");
    file("a/certs/admin.crt", "ADMIN CERT");
    file("a/certs/admin.key", "ADMIN KEY");
    file("a/tokens/robot", "robot-token\n");
    file("a/config", KUBECONFIG_A);
    file("b/config", KUBECONFIG_B);
  });

  const cluster = (extra: object) => ({ name: "c", region: "r", ...extra });

  it("selects the current context, reads files relative to the kubeconfig, and keeps a server's path prefix", async () => {
    const c = resolveConnection(cluster({ kubeconfig: join(dir, "a/config") }), "clusters[0]", io());
    expect(c.origin).toBe("https://10.0.0.1:6443");
    expect(c.basePath).toBe("/prefix");
    expect(c.tls).toMatchObject({ ca: "EAST CA", cert: "ADMIN CERT", key: "ADMIN KEY", insecure: false });
    expect(await c.credentials.get()).toMatchObject({ token: undefined });
  });

  it("merges a KUBECONFIG list as kubectl does: the first file to name an entry wins, missing files are skipped", async () => {
    const env = { KUBECONFIG: `~/a/config:${join(dir, "missing")}:~/b/config` };
    const robot = resolveConnection(cluster({ context: "robot" }), "clusters[0]", io(env));
    expect(robot.origin).toBe("https://a.example");
    expect(robot.tls.ca).toBe("CA FROM A");
    expect((await robot.credentials.get()).token).toBe("robot-token");
    const west = resolveConnection(cluster({ context: "west" }), "clusters[0]", io(env));
    expect(west.tls).toMatchObject({ insecure: true, servername: "kubernetes.default" });
    // current-context comes from the first file that sets one.
    expect(
      resolveConnection(cluster({ context: undefined, kubeconfig: env.KUBECONFIG }), "x", io()).origin,
    ).toBe("https://10.0.0.1:6443");
  });

  it("reads ~/.kube/config when neither KUBECONFIG nor a path is given", () => {
    file(".kube/config", KUBECONFIG_B);
    expect(resolveConnection(cluster({ context: "west" }), "clusters[0]", io()).origin).toBe(
      "https://10.1.0.1:6443",
    );
  });

  it("names the option and the context, never the file's content, when a context is missing", () => {
    const err = thrown(() =>
      resolveConnection(cluster({ kubeconfig: join(dir, "a/config"), context: "nope" }), "clusters[2]", io()),
    );
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.source).toBe("clusters[2].context");
    expect(err.value).toBe("nope");
    expect(err.message).toContain("contexts: east, robot");
    expect(err.message).not.toContain("CA FROM A");
  });

  it("refuses a missing kubeconfig, legacy auth providers and proxies with a configuration error", () => {
    expect(
      thrown(() => resolveConnection(cluster({ kubeconfig: join(dir, "none") }), "clusters[0]", io())).source,
    ).toBe("clusters[0].kubeconfig");
    file(
      "c/config",
      KUBECONFIG_A.replace(
        "client-certificate: certs/admin.crt\n    client-key: certs/admin.key",
        "auth-provider: { name: gcp }",
      ),
    );
    expect(
      thrown(() => resolveConnection(cluster({ kubeconfig: join(dir, "c/config") }), "clusters[0]", io()))
        .message,
    ).toContain("auth-provider");
    file("d/config", KUBECONFIG_B.replace("insecure-skip-tls-verify: true", "proxy-url: http://proxy:3128"));
    expect(
      thrown(() =>
        resolveConnection(cluster({ kubeconfig: join(dir, "d/config"), context: "west" }), "c", io()),
      ).message,
    ).toContain("proxy-url");
    file("e/config", "clusters: [ { name: 1 ");
    expect(
      thrown(() => resolveConnection(cluster({ kubeconfig: join(dir, "e/config") }), "clusters[0]", io()))
        .message,
    ).toContain("not valid YAML");
  });
});

describe("kubernetesDiscovery options", () => {
  const bad: [string, unknown, string][] = [
    ["no way to reach the cluster", { clusters: [{ name: "a", region: "r" }] }, "clusters[0].server"],
    [
      "server and kubeconfig together",
      { clusters: [{ name: "a", region: "r", server: "https://x", context: "c" }] },
      "clusters[0].server",
    ],
    [
      "token and tokenFile together",
      { clusters: [{ name: "a", region: "r", server: "https://x", token: "t", tokenFile: "/t" }] },
      "clusters[0].tokenFile",
    ],
    [
      "a certificate without its key",
      { clusters: [{ name: "a", region: "r", server: "https://x", cert: "C" }] },
      "clusters[0].key",
    ],
    [
      "a token with a kubeconfig",
      { clusters: [{ name: "a", region: "r", context: "c", token: "t" }] },
      "clusters[0].token",
    ],
    [
      "a server that is not a URL",
      { clusters: [{ name: "a", region: "r", server: "10.0.0.1:6443" }] },
      "clusters[0].server",
    ],
    [
      "a cluster named twice",
      {
        clusters: [
          { name: "a", region: "r", server: "https://x" },
          { name: "a", region: "r", server: "https://y" },
        ],
      },
      "clusters[1].name",
    ],
    [
      "an unknown option",
      { clusters: [{ name: "a", region: "r", server: "https://x" }], watchTimeout: 5 },
      "watchTimeout",
    ],
    [
      "backoff.base above backoff.max",
      { clusters: [{ name: "a", region: "r", server: "https://x" }], backoff: { base: 10, max: 5 } },
      "backoff.base",
    ],
  ];
  for (const [what, options, source] of bad) {
    it(`refuses ${what}, naming ${source}`, () => {
      const err = thrown(() => kubernetesDiscovery(options as never));
      expect(err.code).toBe(ErrorCodes.CONFIG);
      expect(err.source).toBe(source);
    });
  }

  it("names the file entry in errors from a config file", () => {
    const err = thrown(() =>
      kubernetesDiscovery(
        { clusters: [{ name: "a", region: "r", server: "https://x", caFile: join(dir, "none.pem") }] },
        "/etc/mesh.yaml: discovery[1].kubernetes",
      ),
    );
    expect(err.source).toBe("/etc/mesh.yaml: discovery[1].kubernetes.clusters[0].caFile");
  });

  it("defaults to the pod's own cluster, named local, in MESHLINK_REGION", () => {
    file("sa/ca.crt", "SA CA");
    file("sa/token", "sa-token");
    const backend = createKubernetesBackend(
      {},
      {
        env: {
          KUBERNETES_SERVICE_HOST: "10.96.0.1",
          KUBERNETES_SERVICE_PORT: "443",
          MESHLINK_REGION: "eu-west-1",
        },
        serviceAccountDir: join(dir, "sa"),
      },
    );
    expect(backend.name).toBe("kubernetes");
    const err = thrown(() => createKubernetesBackend({}, { env: {}, serviceAccountDir: join(dir, "sa") }));
    expect(err.source).toBe("KUBERNETES_SERVICE_HOST");
  });
});

describe("execCredentials", () => {
  let log: string;
  const config = (env: Record<string, string>, extra: Partial<ExecConfig> = {}): ExecConfig => ({
    apiVersion: "client.authentication.k8s.io/v1",
    command: process.execPath,
    args: [PLUGIN],
    env: Object.entries({ RUN_LOG: log, TOKEN_FILE: join(dir, "token"), ...env }).map(([name, value]) => ({
      name,
      value,
    })),
    interactiveMode: "Never",
    provideClusterInfo: false,
    installHint: undefined,
    ...extra,
  });
  const options = (now: () => number = Date.now) => ({
    cluster: "east",
    clusterInfo: {
      server: "https://10.0.0.1:6443",
      ca: "THE CA",
      insecure: false,
      servername: undefined,
      config: { region: "x" },
    },
    timeout: 10_000,
    env: { PATH: process.env.PATH },
    now,
  });
  const runs = () =>
    readFileSync(log, "utf8")
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l));

  beforeEach(() => {
    log = join(dir, "runs.log");
    writeFileSync(log, "");
    writeFileSync(join(dir, "token"), "exec-token-1");
  });

  async function rejection(p: Promise<unknown>): Promise<KubernetesError> {
    try {
      await p;
    } catch (err) {
      return err as KubernetesError;
    }
    throw new Error("did not reject");
  }

  it("runs the plugin with KUBERNETES_EXEC_INFO and caches its token until expirationTimestamp", async () => {
    let now = Date.now();
    const source = execCredentials(
      config({ EXPIRES_IN: "600" }, { provideClusterInfo: true }),
      options(() => now),
    );
    const [a, b] = await Promise.all([source.get(), source.get()]);
    expect(a.token).toBe("exec-token-1");
    expect(b).toBe(a);
    expect(runs()).toHaveLength(1);
    const info = runs()[0];
    expect(info).toMatchObject({
      apiVersion: "client.authentication.k8s.io/v1",
      kind: "ExecCredential",
      spec: { interactive: false },
    });
    expect(info.spec.cluster).toEqual({
      server: "https://10.0.0.1:6443",
      "certificate-authority-data": b64("THE CA"),
      config: { region: "x" },
    });

    writeFileSync(join(dir, "token"), "exec-token-2");
    now += 599_000;
    expect((await source.get()).token).toBe("exec-token-1");
    now += 2_000;
    expect((await source.get()).token).toBe("exec-token-2");
    expect(runs()).toHaveLength(2);
  });

  it("runs the plugin again after a 401 invalidates the token", async () => {
    const source = execCredentials(config({}), options());
    await source.get();
    await source.get();
    expect(runs()).toHaveLength(1);
    source.invalidate();
    await source.get();
    expect(runs()).toHaveLength(2);
    expect(runs()[0].spec.cluster).toBeUndefined();
  });

  it("hands out a client certificate and key", async () => {
    writeFileSync(join(dir, "c.pem"), "CERT");
    writeFileSync(join(dir, "k.pem"), "KEY");
    const credential = await execCredentials(
      config({ MODE: "cert", CERT_FILE: join(dir, "c.pem"), KEY_FILE: join(dir, "k.pem") }),
      options(),
    ).get();
    expect(credential).toEqual({ token: undefined, cert: "CERT", key: "KEY" });
  });

  const failures: [string, Record<string, string>, Partial<ExecConfig>, string][] = [
    ["exits non-zero", { MODE: "fail" }, {}, "AccessDenied"],
    ["prints no JSON", { MODE: "garbage" }, {}, "no JSON"],
    ["answers another apiVersion", { MODE: "wrong-version" }, {}, "v1beta1"],
    ["needs a terminal", {}, { interactiveMode: "Always" }, "interactive"],
    [
      "does not exist",
      {},
      { command: "/nonexistent/meshlink-no-such-plugin", installHint: "install it with: brew install it" },
      "brew install",
    ],
  ];
  for (const [what, env, extra, says] of failures) {
    it(`fails with a credentials error when the plugin ${what}`, async () => {
      const err = await rejection(execCredentials(config(env, extra), options()).get());
      expect(err).toBeInstanceOf(KubernetesError);
      expect(err.code).toBe(ErrorCodes.KUBERNETES);
      expect(err.reason).toBe("credentials");
      expect(err.message).toContain(says);
    });
  }
});

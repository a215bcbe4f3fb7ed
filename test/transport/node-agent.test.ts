import { once } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh, type MeshOptions } from "../../src/index.js";
import { scriptedBackend } from "../helpers/backend.js";
import { createTestCa } from "../helpers/certs.js";
import { answerAfter, startUnaccepting } from "../helpers/faults.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Every server of this file is on 127.0.110.0/24: home (the caller's region) on .1–.2, west on .11–.12.
const NAME = "api.default.svc.cluster.local";
const URL_ = `http://${NAME}:8080/hello`;

interface Reply {
  status: number;
  body: string;
  reused: boolean;
}

type ReqError = Error & { code?: string; cause?: Error & { code?: string }; tried?: { endpoint: string }[] };

/** One request through `agent` with node:http itself. */
function send(
  url: string,
  agent: http.Agent,
  options: https.RequestOptions = {},
  body?: string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith("https:") ? https : http).request(
      url,
      { agent, ...options } as http.RequestOptions,
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (data += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data, reused: req.reusedSocket }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function failure(p: Promise<unknown>): Promise<ReqError> {
  return p.then(
    () => {
      throw new Error("expected the request to fail");
    },
    (err: unknown) => err as ReqError,
  );
}

let servers: TestServer[];
let mesh: Mesh | undefined;

async function cluster(prefix: string, first: number): Promise<TestServer[]> {
  return Promise.all(
    [0, 1].map((i) => startServer(`${prefix}-${i + 1}`, { address: `127.0.110.${first + i}` })),
  );
}

function meshOver(home: TestServer[], west: TestServer[], extra: MeshOptions = {}): Mesh {
  const ep = (s: TestServer, cluster: string, region: string) => ({
    address: s.address,
    port: s.port,
    cluster,
    region,
    zone: `${region}a`,
  });
  mesh = createMesh({
    env: {},
    region: "us-east-1",
    zone: "us-east-1a",
    failover: ["us-west-2"],
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [
            ...home.map((s) => ep(s, "home", "us-east-1")),
            ...west.map((s) => ep(s, "west", "us-west-2")),
          ],
        },
      }),
    ],
    ...extra,
  });
  return mesh;
}

beforeEach(() => {
  servers = [];
  mesh = undefined;
});

afterEach(async () => {
  await mesh?.close();
  await Promise.all(servers.filter((s) => s.listening).map((s) => s.stop()));
});

describe("Mesh.httpAgent", () => {
  it("sends a mesh name to an endpoint of the caller's region, keeping the Host header", async () => {
    const home = await cluster("home", 1);
    const west = await cluster("west", 11);
    servers.push(...home, ...west);
    const m = meshOver(home, west);
    for (let i = 0; i < 10; i++) {
      const reply = await send(URL_, m.httpAgent);
      expect(reply.status).toBe(200);
      expect(JSON.parse(reply.body).server).toMatch(/^home-/);
    }
    const seen = home.flatMap((s) => s.requests);
    expect(seen).toHaveLength(10);
    expect(seen.every((r) => r.headers.host === `${NAME}:8080` && r.url === "/hello")).toBe(true);
    expect(west.flatMap((s) => s.requests)).toHaveLength(0);
  });

  it("passes a host that is not a mesh name through, as Node's own Agent", async () => {
    const other = await startServer("other", { address: "127.0.110.50" });
    servers.push(other);
    const m = meshOver([], []);
    const reply = await send(`http://127.0.110.50:${other.port}/x`, m.httpAgent);
    expect(JSON.parse(reply.body)).toMatchObject({ server: "other", url: "/x" });
    expect(other.requests[0]!.headers.host).toBe(`127.0.110.50:${other.port}`);
  });

  it("reuses a keep-alive connection to the endpoint the router picks again", async () => {
    const only = await startServer("only", { address: "127.0.110.1" });
    servers.push(only);
    const ports: number[] = [];
    only.handler = (req, res) => {
      ports.push(req.socket.remotePort!);
      res.end("ok");
    };
    const m = meshOver([only], []);
    const first = await send(URL_, m.httpAgent);
    const second = await send(URL_, m.httpAgent);
    expect([first.reused, second.reused]).toEqual([false, true]);
    expect(new Set(ports).size).toBe(1);
  });

  it("fails over at connect time to another cluster when the home endpoints are dead, and reports them to health", async () => {
    const home = await cluster("home", 1);
    const west = await cluster("west", 11);
    servers.push(...home, ...west);
    const m = meshOver(home, west, { outlierDetection: { consecutiveFailures: 2 } });
    await Promise.all(home.map((s) => s.stop()));
    for (let i = 0; i < 20; i++) {
      // A POST too: nothing was sent to a host that refused the connection.
      const reply = await send(URL_, m.httpAgent, { method: "POST" }, `call ${i}`);
      expect(JSON.parse(reply.body).server).toMatch(/^west-/);
    }
    const view = await m.resolve("api.default", 8080);
    const homeViews = view.filter((r) => r.endpoint.cluster === "home");
    expect(homeViews.map((r) => r.health.state)).toEqual(["ejected", "ejected"]);
    expect(homeViews.every((r) => r.health.lastFailure === "ECONNREFUSED")).toBe(true);
    expect(view.every((r) => r.health.outstanding === 0)).toBe(true);
  });

  it("gives up connecting to an endpoint that does not accept after the per-try timeout, and fails over", async () => {
    const hole = await startUnaccepting("127.0.110.3");
    const west = await cluster("west", 11);
    servers.push(...west);
    try {
      const m = createMesh({
        env: {},
        region: "us-east-1",
        failover: ["us-west-2"],
        policy: { perTryTimeout: 200 },
        discovery: [
          staticDiscovery({
            services: {
              "api.default": [
                { address: hole.address, port: hole.port, cluster: "home", region: "us-east-1" },
                ...west.map((s) => ({
                  address: s.address,
                  port: s.port,
                  cluster: "west",
                  region: "us-west-2",
                })),
              ],
            },
          }),
        ],
      });
      mesh = m;
      const reply = await send(URL_, m.httpAgent);
      expect(JSON.parse(reply.body).server).toMatch(/^west-/);
      const [home] = (await m.resolve("api.default", 8080)).filter((r) => r.endpoint.cluster === "home");
      expect(home!.health).toMatchObject({ lastFailure: "MESHLINK_ATTEMPT_TIMEOUT", outstanding: 0 });
    } finally {
      await hole.close();
    }
  });

  it("fails with RequestFailedError listing every endpoint when none accepts a connection", async () => {
    const home = await cluster("home", 1);
    servers.push(...home);
    const m = meshOver(home, []);
    await Promise.all(home.map((s) => s.stop()));
    const err = await failure(send(URL_, m.httpAgent));
    expect(err.code).toBe(ErrorCodes.REQUEST_FAILED);
    expect(err.tried?.map((t) => t.endpoint).sort()).toEqual(home.map((s) => `home/${s.address}:${s.port}`));
    expect(err.cause?.code).toBe("ECONNREFUSED");
  });

  it("counts a 503 against the endpoint and moves calls away once it is ejected", async () => {
    const home = await cluster("home", 1);
    const west = await cluster("west", 11);
    servers.push(...home, ...west);
    home[0]!.status = 503;
    const m = meshOver([home[0]!], west, { outlierDetection: { consecutiveFailures: 3 } });
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) statuses.push((await send(URL_, m.httpAgent)).status);
    // The agent hands the 503 to the client (no resend), three times; then the endpoint is ejected.
    expect(statuses).toEqual([503, 503, 503, 200, 200, 200, 200, 200, 200, 200]);
    const [h] = (await m.resolve("api.default", 8080)).filter((r) => r.endpoint.cluster === "home");
    expect(h!.health).toMatchObject({ state: "ejected", lastFailure: "status 503" });
  });

  it("does not resend a POST whose endpoint broke the connection after it was sent", async () => {
    const home = await cluster("home", 1);
    servers.push(...home);
    for (const s of home) s.handler = (req) => req.socket.destroy();
    const m = meshOver(home, []);
    const err = await failure(send(URL_, m.httpAgent, { method: "POST" }, "once"));
    expect(err.code).toBe("ECONNRESET");
    expect(home.flatMap((s) => s.requests)).toHaveLength(1);
    const view = await m.resolve("api.default", 8080);
    expect(view.map((r) => r.health.lastFailure).filter(Boolean)).toEqual(["ECONNRESET"]);
  });

  it("waits for discovery to answer before it picks", async () => {
    const home = await cluster("home", 1);
    servers.push(...home);
    const backend = scriptedBackend("scripted");
    const m = createMesh({ env: {}, region: "us-east-1", discovery: [backend] });
    mesh = m;
    const pending = send(URL_, m.httpAgent);
    await new Promise((r) => setImmediate(r));
    expect(home[0]!.requests).toHaveLength(0);
    backend.push({
      kind: "bound",
      endpoints: [
        createEndpoint({
          address: home[0]!.address,
          port: home[0]!.port,
          cluster: "home",
          region: "us-east-1",
          backend: "scripted",
        }),
      ],
    });
    expect(JSON.parse((await pending).body).server).toBe("home-1");
  });

  it("fails with ServiceNotFoundError for a name no backend knows and for an empty endpoint list", async () => {
    const none = createMesh({ env: {}, discovery: [staticDiscovery({ services: {} })] });
    try {
      const unknown = await failure(send("http://nope.default.svc.cluster.local/", none.httpAgent));
      expect(unknown.code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
    } finally {
      await none.close();
    }
    const backend = scriptedBackend("scripted");
    const m = createMesh({ env: {}, discovery: [backend] });
    mesh = m;
    backend.push({ kind: "bound", endpoints: [] });
    // An empty list reads as "no endpoints" to the registry, as a name it does not know.
    const empty = await failure(send(URL_, m.httpAgent));
    expect(empty.code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
  });

  it("says nothing about the endpoint when its caller cancels a request", async () => {
    const home = await cluster("home", 1);
    servers.push(...home);
    for (const s of home) s.handler = answerAfter(s.name, 5_000);
    const m = meshOver(home, []);
    const controller = new AbortController();
    const sent = failure(send(URL_, m.httpAgent, { signal: controller.signal }));
    while (home.every((s) => s.requests.length === 0)) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    expect((await sent).code).toBe("ABORT_ERR");
    for (const r of await m.resolve("api.default", 8080)) {
      expect(r.health).toMatchObject({ state: "healthy", outstanding: 0, lastFailure: undefined });
    }
  });

  it("fails mesh names with MeshClosedError once the mesh is closed, and keeps other hosts working", async () => {
    const home = await cluster("home", 1);
    const other = await startServer("other", { address: "127.0.110.50" });
    servers.push(...home, other);
    const m = meshOver(home, []);
    await send(URL_, m.httpAgent);
    await m.close();
    expect((await failure(send(URL_, m.httpAgent))).code).toBe(ErrorCodes.CLOSED);
    const reply = await send(`http://127.0.110.50:${other.port}/`, m.httpAgent);
    expect(JSON.parse(reply.body).server).toBe("other");
    // The mesh's own connections are gone.
    expect(Object.keys(m.httpAgent.freeSockets).filter((k) => k.startsWith("127.0.110.1"))).toEqual([]);
  });
});

describe("Mesh.httpsAgent", () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((c) => c()));
  });

  async function listenTls(server: TlsServer | https.Server, address: string): Promise<number> {
    server.listen(0, address);
    await once(server, "listening");
    closers.push(async () => {
      const closed = once(server, "close");
      server.close();
      (server as https.Server).closeAllConnections?.();
      await closed;
    });
    return (server.address() as { port: number }).port;
  }

  it("passes another host through with the request's own TLS options", async () => {
    const ca = createTestCa();
    closers.push(async () => ca.dispose());
    const leaf = ca.issue({ cn: "other", ips: ["127.0.110.21"] });
    const server = https.createServer({ key: leaf.key, cert: leaf.cert }, (_req, res) => res.end("tls ok"));
    const port = await listenTls(server, "127.0.110.21");
    const m = meshOver([], []);
    const reply = await send(`https://127.0.110.21:${port}/`, m.httpsAgent, { ca: ca.cert });
    expect(reply).toMatchObject({ status: 200, body: "tls ok" });
  });

  it("connects to the endpoint with the service's name for TLS and verifies the certificate", async () => {
    const ca = createTestCa();
    closers.push(async () => ca.dispose());
    const leaf = ca.issue({ cn: NAME, dns: [NAME] });
    const names: string[] = [];
    const tls = createTlsServer({
      key: leaf.key,
      cert: leaf.cert,
      SNICallback: (servername, cb) => {
        names.push(servername);
        cb(null, undefined);
      },
    });
    tls.on("tlsClientError", () => {});
    const port = await listenTls(tls, "127.0.110.20");
    const m = createMesh({
      env: {},
      discovery: [
        staticDiscovery({
          services: { "api.default": [{ address: "127.0.110.20", port, cluster: "home", region: "" }] },
        }),
      ],
    });
    mesh = m;
    // The mesh does not trust the test CA (no mesh TLS yet), and the request's `ca` is not used for a
    // mesh name: the handshake fails on the certificate, which says nothing about the endpoint's health.
    const err = await failure(send(`https://${NAME}:8443/`, m.httpsAgent, { ca: ca.cert }));
    expect(err.code).toMatch(/CERT|SIGNATURE|ISSUER/);
    expect(names).toEqual([NAME]);
    const [r] = await m.resolve("api.default", 8443);
    expect(r!.health).toMatchObject({ state: "healthy", outstanding: 0, lastFailure: undefined });
  });
});

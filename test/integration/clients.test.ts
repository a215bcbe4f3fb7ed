import axios, { type AxiosError } from "axios";
import got, { type RequestError } from "got";
import nodeFetch from "node-fetch";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/index.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Real axios, got and node-fetch against loopback servers on 127.0.110.0/24: two clusters, home
// (the caller's region, .31–.32) and west (the failover region, .41–.42), and a host outside the mesh (.60).
const URL_ = "http://orders.shop.svc.cluster.local:8080/api/orders";

let home: TestServer[];
let west: TestServer[];
let outside: TestServer;
let mesh: Mesh;

const serverOf = (body: unknown) => (body as { server: string }).server;

beforeEach(async () => {
  home = await Promise.all([1, 2].map((i) => startServer(`home-${i}`, { address: `127.0.110.${30 + i}` })));
  west = await Promise.all([1, 2].map((i) => startServer(`west-${i}`, { address: `127.0.110.${40 + i}` })));
  outside = await startServer("outside", { address: "127.0.110.60" });
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
    failover: ["us-west-2"],
    discovery: [
      staticDiscovery({
        services: {
          "orders.shop": [
            ...home.map((s) => ep(s, "home", "us-east-1")),
            ...west.map((s) => ep(s, "west", "us-west-2")),
          ],
        },
      }),
    ],
  });
});

afterEach(async () => {
  await mesh.close();
  await Promise.all([...home, ...west, outside].filter((s) => s.listening).map((s) => s.stop()));
});

const stopHome = () => Promise.all(home.map((s) => s.stop()));

describe("axios", () => {
  // proxy: false — axios would otherwise send a mesh name to an HTTP_PROXY from the environment.
  const client = () => axios.create({ httpAgent: mesh.httpAgent, httpsAgent: mesh.httpsAgent, proxy: false });

  it("routes a mesh name through mesh.httpAgent to the caller's region and passes another host through", async () => {
    const http = client();
    for (let i = 0; i < 5; i++) expect(serverOf((await http.get(URL_)).data)).toMatch(/^home-/);
    const other = await http.get(`http://127.0.110.60:${outside.port}/x`);
    expect(other.data).toMatchObject({ server: "outside", url: "/x" });
  });

  it("fails over to the other cluster when the home endpoints are dead, for GET and POST", async () => {
    const http = client();
    await stopHome();
    for (let i = 0; i < 10; i++) {
      expect(serverOf((await http.get(URL_)).data)).toMatch(/^west-/);
      const posted = await http.post(URL_, { order: i });
      expect(posted.data).toMatchObject({ method: "POST", body: JSON.stringify({ order: i }) });
      expect(serverOf(posted.data)).toMatch(/^west-/);
    }
    const homeViews = (await mesh.resolve("orders.shop", 8080)).filter((r) => r.endpoint.cluster === "home");
    expect(homeViews.every((r) => r.health.lastFailure === "ECONNREFUSED")).toBe(true);
  });

  it("rejects with the mesh's error code for a name no backend knows", async () => {
    const err = (await client()
      .get("http://nope.shop.svc.cluster.local/")
      .catch((e: unknown) => e)) as AxiosError;
    expect(err.code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
    expect((err.cause as { code?: string }).code).toBe(ErrorCodes.SERVICE_NOT_FOUND);
  });

  it("resends a POST marked retryable through its fetch adapter and mesh.fetch", async () => {
    // Every home endpoint breaks the connection of the first POST it reads; west answers.
    for (const s of home) s.handler = (req) => req.socket.destroy();
    const http = axios.create({ adapter: "fetch", env: { fetch: mesh.fetch } });
    const marked = await http.post(URL_, { order: 1 }, { fetchOptions: { meshlink: { retryable: true } } });
    expect(marked.status).toBe(200);
    expect(serverOf(marked.data)).toMatch(/^west-/);
    const unmarked = (await http.post(URL_, { order: 2 }).catch((e: unknown) => e)) as AxiosError;
    // axios unwraps fetch's TypeError: its cause is the mesh's error, which says why the POST was not resent.
    expect(unmarked.cause).toMatchObject({ code: ErrorCodes.REQUEST_FAILED, notRetried: "not-idempotent" });
  });
});

describe("got", () => {
  const client = () => got.extend({ agent: { http: mesh.httpAgent, https: mesh.httpsAgent } });

  it("routes a mesh name through mesh.httpAgent and passes another host through", async () => {
    const http = client();
    for (let i = 0; i < 5; i++) expect(serverOf(await http.get(URL_).json())).toMatch(/^home-/);
    expect(await http.get(`http://127.0.110.60:${outside.port}/y`).json()).toMatchObject({
      server: "outside",
    });
  });

  it("fails over to the other cluster when the home endpoints are dead, for GET and POST", async () => {
    // got's own retries off: the agent's connect-time failover is what serves these calls.
    const http = client().extend({ retry: { limit: 0 } });
    await stopHome();
    for (let i = 0; i < 10; i++) {
      expect(serverOf(await http.get(URL_).json())).toMatch(/^west-/);
      expect(serverOf(await http.post(URL_, { json: { order: i } }).json())).toMatch(/^west-/);
    }
  });

  it("rejects with the mesh's error code when every endpoint refuses", async () => {
    await stopHome();
    await Promise.all(west.map((s) => s.stop()));
    const err = (await client()
      .extend({ retry: { limit: 0 } })
      .get(URL_)
      .catch((e: unknown) => e)) as RequestError;
    expect(err.code).toBe(ErrorCodes.REQUEST_FAILED);
  });
});

describe("node-fetch", () => {
  const agent = (url: URL) => (url.protocol === "https:" ? mesh.httpsAgent : mesh.httpAgent);

  it("routes a mesh name through mesh.httpAgent and fails over when the home endpoints are dead", async () => {
    expect(serverOf(await (await nodeFetch(URL_, { agent })).json())).toMatch(/^home-/);
    await stopHome();
    for (let i = 0; i < 5; i++) {
      const res = await nodeFetch(URL_, { agent, method: "POST", body: `order ${i}` });
      expect(serverOf(await res.json())).toMatch(/^west-/);
    }
    const other = await nodeFetch(`http://127.0.110.60:${outside.port}/z`, { agent });
    expect(await other.json()).toMatchObject({ server: "outside" });
  });
});

import type { IncomingMessage, ServerResponse } from "node:http";
import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh, type MeshOptions } from "../../src/index.js";
import { readDeadline, TIMEOUT_HEADER } from "../../src/resilience/deadline.js";
import { rejection } from "../helpers/assert.js";
import { startServer, type TestServer } from "../helpers/servers.js";

let servers: TestServer[] = [];
let mesh: Mesh | undefined;

const URL_ = "http://api.default.svc.cluster.local/";

/** Two servers: `near` in the caller's zone, `far` in the failover region. */
async function setup(options: Partial<MeshOptions> = {}) {
  const near = await startServer("near", { address: "127.0.21.1" });
  const far = await startServer("far", { address: "127.0.22.1" });
  servers = [near, far];
  mesh = createMesh({
    env: {},
    region: "east",
    zone: "east-a",
    failover: ["west"],
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [
            { address: near.address, port: near.port, cluster: "east", region: "east", zone: "east-a" },
            { address: far.address, port: far.port, cluster: "west", region: "west", zone: "west-a" },
          ],
        },
      }),
    ],
    ...options,
  });
  return { near, far, mesh };
}

function status(code: number, headers: Record<string, string> = {}) {
  return (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(code, headers);
    res.end("{}");
  };
}

afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
  await Promise.all(servers.filter((s) => s.listening).map((s) => s.stop()));
  servers = [];
});

describe("deadline propagation", () => {
  it("tells the server how long the caller waits: the per-try timeout by default", async () => {
    const { near, mesh } = await setup({ policy: { perTryTimeout: 1234 } });
    await (await mesh.fetch(URL_)).text();
    expect(near.requests[0]!.headers[TIMEOUT_HEADER]).toBe("1234");
  });

  it("takes a caller-set x-meshlink-timeout-ms as the call's deadline and sends what is left", async () => {
    const { near, mesh } = await setup();
    await (await mesh.fetch(URL_, { headers: { [TIMEOUT_HEADER]: "800" } })).text();
    const sent = Number(near.requests[0]!.headers[TIMEOUT_HEADER]);
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThanOrEqual(800);
    const deadline = readDeadline(near.requests[0]!.headers, 0);
    expect(deadline?.timeoutMs).toBe(sent);
  });

  it("fails with MESHLINK_ERR_DEADLINE_EXCEEDED when the deadline passes before the answer", async () => {
    const { near, far, mesh } = await setup({ policy: { deadline: 150 } });
    for (const s of [near, far]) s.handler = () => {};
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe(ErrorCodes.DEADLINE_EXCEEDED);
  });

  it("cuts a streaming body at the deadline", async () => {
    const { near, mesh } = await setup({ policy: { deadline: 200 } });
    near.handler = (_req, res) => {
      res.writeHead(200);
      res.write("partial");
    };
    const res = await mesh.fetch(URL_);
    const err = await rejection(res.text());
    expect((err as { code?: string }).code ?? err.cause?.code).toBe(ErrorCodes.DEADLINE_EXCEEDED);
  });
});

describe("retries", () => {
  it("retries a POST marked x-meshlink-retryable after a 503, and strips the marker", async () => {
    const { near, far, mesh } = await setup();
    near.handler = status(503);
    const res = await mesh.fetch(URL_, {
      method: "POST",
      body: "payload",
      headers: { "x-meshlink-retryable": "true" },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { server: string }).server).toBe("far");
    expect(far.requests[0]!.body).toBe("payload");
    expect(near.requests[0]!.headers["x-meshlink-retryable"]).toBeUndefined();
    expect(far.requests[0]!.headers["x-meshlink-retryable"]).toBeUndefined();
  });

  it("does not retry a GET marked x-meshlink-retryable: false", async () => {
    const { near, mesh } = await setup();
    near.handler = status(503);
    const res = await mesh.fetch(URL_, { headers: { "x-meshlink-retryable": "false" } });
    expect(res.status).toBe(503);
  });

  it("retries a 429 on another endpoint after its Retry-After", async () => {
    const { near, mesh } = await setup();
    near.handler = status(429, { "retry-after": "0" });
    const res = await mesh.fetch(URL_);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { server: string }).server).toBe("far");
  });

  it("passes a 429 through when its Retry-After is longer than maxRetryAfter", async () => {
    const { near, far, mesh } = await setup({ policy: { maxRetryAfter: 1000 } });
    near.handler = status(429, { "retry-after": "60" });
    const res = await mesh.fetch(URL_);
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("60");
    expect(far.requests).toHaveLength(0);
  });

  it("stops retrying once the retry budget is spent", async () => {
    const { near, far, mesh } = await setup({
      policy: { budget: { percent: 0, minRetriesPerSecond: 0.1 } },
    });
    near.handler = status(503);
    far.handler = status(503);
    for (let i = 0; i < 3; i++) await (await mesh.fetch(URL_)).text();
    // One retry in reserve (0.1/s over 10 s): four requests in all for three calls.
    expect(near.requests.length + far.requests.length).toBe(4);
  });

  it("never sends the retry to the endpoint that just failed when another is healthy", async () => {
    const { near, far, mesh } = await setup({ routing: { failoverPriority: ["region"] } });
    near.handler = status(502);
    for (let i = 0; i < 3; i++) await (await mesh.fetch(URL_)).text();
    expect(near.requests).toHaveLength(3);
    expect(far.requests).toHaveLength(3);
  });
});

describe("hedging", () => {
  it("races a second endpoint after the delay, answers with the first response and cancels the other", async () => {
    const { near, mesh } = await setup({ policy: { hedging: { minPerSecond: 10 } } });
    let cancelled = 0;
    near.handler = (_req, res) => {
      const timer = setTimeout(() => res.end("{}"), 5000);
      res.on("close", () => {
        clearTimeout(timer);
        cancelled++;
      });
    };
    const res = await mesh.fetch(URL_, { headers: { "x-meshlink-hedge": "30" } });
    expect(((await res.json()) as { server: string }).server).toBe("far");
    await expect.poll(() => cancelled).toBe(1);
  });

  it("hedges only within the extra-load budget", async () => {
    const { near, far, mesh } = await setup({
      policy: { hedging: { delay: 20, services: ["api.default"] } },
    });
    near.handler = (_req, res) => setTimeout(() => res.end(JSON.stringify({ server: "near" })), 100);
    // 1 % of a handful of calls, and no per-second floor: no hedge is allowed.
    for (let i = 0; i < 3; i++) await (await mesh.fetch(URL_)).text();
    expect(far.requests).toHaveLength(0);
  });
});

describe("bulkheads", () => {
  it("fails a call over the service limit with MESHLINK_ERR_BULKHEAD_FULL", async () => {
    const { near, mesh } = await setup({ policy: { bulkhead: { maxRequestsPerService: 1 } } });
    let release: () => void = () => {};
    near.handler = (_req, res) => {
      release = () => res.end("{}");
    };
    const first = mesh.fetch(URL_);
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe(ErrorCodes.BULKHEAD_FULL);
    expect((err.cause as unknown as { scope: string }).scope).toBe("service");
    await expect.poll(() => near.requests.length).toBe(1);
    near.handler = undefined;
    release();
    expect((await first).status).toBe(200);
    expect((await mesh.fetch(URL_)).status).toBe(200);
  });

  it("skips a full endpoint and fails with scope endpoint when every one is full", async () => {
    const { near, far, mesh } = await setup({ policy: { bulkhead: { maxRequestsPerEndpoint: 1 } } });
    const pending: (() => void)[] = [];
    for (const s of [near, far]) s.handler = (_req, res) => pending.push(() => res.end("{}"));
    const a = request(URL_, { dispatcher: mesh.dispatcher });
    const b = request(URL_, { dispatcher: mesh.dispatcher });
    await expect.poll(() => pending.length).toBe(2);
    expect(near.requests).toHaveLength(1);
    expect(far.requests).toHaveLength(1);
    const err = await rejection(request(URL_, { dispatcher: mesh.dispatcher }));
    expect((err as { code?: string }).code).toBe(ErrorCodes.BULKHEAD_FULL);
    for (const p of pending) p();
    await Promise.all([(await a).body.text(), (await b).body.text()]);
  });
});

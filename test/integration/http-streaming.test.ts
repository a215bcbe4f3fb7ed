import { Writable } from "node:stream";
import { type Dispatcher, errors, getGlobalDispatcher, request, setGlobalDispatcher, stream } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { rejection } from "../helpers/assert.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import {
  BIG_BODY_SHA256,
  readSlowly,
  readWebSlowly,
  sha256,
  stallAfterFirstChunk,
  streamBody,
  yieldTurns,
} from "../transport/streams.js";

// `api.default` answers from one server; `gone.default` has a dead endpoint in the caller's zone
// (connections refused) and a live one in the failover region.
let api: TestServer;
let far: TestServer;
let deadPort: number;
let mesh: Mesh;

const API = "http://api.default.svc.cluster.local";
const GONE = "http://gone.default.svc.cluster.local";

beforeAll(async () => {
  api = await startServer("api", { address: "127.0.75.1" });
  far = await startServer("far", { address: "127.0.75.2" });
  const dead = await startServer("dead", { address: "127.0.75.3" });
  deadPort = dead.port;
  await dead.stop();
  mesh = createMesh({
    env: {},
    region: "east",
    zone: "east-a",
    failover: ["west"],
    discovery: [
      staticDiscovery({
        services: {
          "api.default": [
            { address: api.address, port: api.port, cluster: "east", region: "east", zone: "east-a" },
          ],
          "gone.default": [
            { address: "127.0.75.3", port: deadPort, cluster: "east", region: "east", zone: "east-a" },
            { address: far.address, port: far.port, cluster: "west", region: "west", zone: "west-a" },
          ],
        },
      }),
    ],
  });
});

afterAll(async () => {
  await mesh.close();
  await Promise.all([api.stop(), far.stop()]);
});

afterEach(() => {
  api.handler = undefined;
  api.requests.length = 0;
  far.requests.length = 0;
});

/** A new-API handler; `onChunk` may pause the call's controller. */
function newApiCall(
  dispatcher: Dispatcher,
  opts: Dispatcher.DispatchOptions,
  onChunk: (controller: Dispatcher.DispatchController, chunk: Buffer) => void = () => {},
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let status = 0;
    dispatcher.dispatch(opts, {
      onRequestStart() {},
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData(controller, chunk) {
        chunks.push(chunk);
        onChunk(controller, chunk);
      },
      onResponseEnd() {
        resolve({ status, body: Buffer.concat(chunks) });
      },
      onResponseError(_controller, err) {
        reject(err);
      },
    });
  });
}

/** Resolves when `server` sees its connection close. */
function closedBy(server: TestServer): Promise<void> {
  return new Promise((resolve) => {
    server.handler = stallAfterFirstChunk(resolve);
  });
}

describe("mesh.dispatcher", () => {
  it("streams a large response intact to undici.request read slowly, and holds the rest back", async () => {
    api.handler = streamBody();
    const res = await request(`${API}/big`, { dispatcher: mesh.dispatcher });
    const { data, maxBuffered } = await readSlowly(res.body);
    expect(sha256(data)).toBe(BIG_BODY_SHA256);
    expect(maxBuffered).toBeLessThan(1 << 20);
  });

  it("streams a large response intact into a slow undici.stream writable", async () => {
    api.handler = streamBody();
    const chunks: Buffer[] = [];
    await stream(
      `${API}/big`,
      { dispatcher: mesh.dispatcher, method: "GET" },
      () =>
        new Writable({
          highWaterMark: 64 << 10,
          write(chunk, _encoding, callback) {
            chunks.push(chunk);
            setImmediate(callback);
          },
        }),
    );
    expect(sha256(Buffer.concat(chunks))).toBe(BIG_BODY_SHA256);
  });

  it("streams a large response intact to a new-API handler that pauses on every chunk", async () => {
    api.handler = streamBody();
    let pauses = 0;
    const res = await newApiCall(
      mesh.dispatcher,
      { origin: API, path: "/big", method: "GET" },
      (controller) => {
        pauses++;
        controller.pause();
        void yieldTurns().then(() => controller.resume());
      },
    );
    expect(res.status).toBe(200);
    expect(sha256(res.body)).toBe(BIG_BODY_SHA256);
    expect(pauses).toBeGreaterThan(1);
  });

  it("aborts undici.request in the middle of the body, without counting it against the endpoint", async () => {
    const closed = closedBy(api);
    const controller = new AbortController();
    const res = await request(`${API}/stall`, { dispatcher: mesh.dispatcher, signal: controller.signal });
    const iterator = res.body[Symbol.asyncIterator]();
    expect(String((await iterator.next()).value)).toBe("first chunk;");
    controller.abort();
    const err = await rejection(iterator.next());
    expect(err.name).toBe("AbortError");
    await closed;
    const [endpoint] = await mesh.resolve("api.default");
    expect(endpoint!.health.lastFailure).toBeUndefined();
  });

  it("aborts a new-API call in the middle of the body through its controller", async () => {
    const closed = closedBy(api);
    const reason = new errors.RequestAbortedError("enough");
    const err = await rejection(
      newApiCall(mesh.dispatcher, { origin: API, path: "/stall", method: "GET" }, (controller) =>
        controller.abort(reason),
      ),
    );
    expect(err).toBe(reason);
    await closed;
  });

  it("retries a connect failure on another cluster for a legacy caller and a new-API caller", async () => {
    const legacy = await request(`${GONE}/legacy`, { dispatcher: mesh.dispatcher });
    expect(((await legacy.body.json()) as { server: string }).server).toBe("far");
    const modern = await newApiCall(mesh.dispatcher, { origin: GONE, path: "/modern", method: "GET" });
    expect(JSON.parse(modern.body.toString())).toMatchObject({ server: "far", url: "/modern" });
    expect(far.requests.map((r) => r.url)).toEqual(["/legacy", "/modern"]);
  });
});

describe("mesh.fetch", () => {
  it("streams a large response intact to a slow reader", async () => {
    api.handler = streamBody();
    const res = await mesh.fetch(`${API}/big`);
    expect(sha256(await readWebSlowly(res.body!))).toBe(BIG_BODY_SHA256);
  });

  it("streams a large response intact to Node's global fetch through the global dispatcher", async () => {
    api.handler = streamBody();
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(mesh.dispatcher);
    try {
      const res = await fetch(`${API}/big`);
      expect(sha256(await readWebSlowly(res.body!))).toBe(BIG_BODY_SHA256);
    } finally {
      setGlobalDispatcher(previous);
    }
  });

  it("aborts in the middle of the body", async () => {
    const closed = closedBy(api);
    const controller = new AbortController();
    const res = await mesh.fetch(`${API}/stall`, { signal: controller.signal });
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe("first chunk;");
    controller.abort();
    const err = await rejection(reader.read());
    expect(err.name).toBe("AbortError");
    await closed;
  });

  it("retries a connect failure on another cluster", async () => {
    const res = await mesh.fetch(`${GONE}/fetch`);
    expect(((await res.json()) as { server: string }).server).toBe("far");
  });
});

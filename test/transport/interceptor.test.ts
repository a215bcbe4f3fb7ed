import { Agent, type Dispatcher, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { meshInterceptor } from "../../src/transport/http/interceptor.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import { meshRoutes } from "./mesh-routes.js";
import { BIG_BODY_SHA256, readSlowly, sha256, streamBody } from "./streams.js";

const MESH_ORIGIN = "http://api.default.svc.cluster.local";

let near: TestServer;
let far: TestServer;
let other: TestServer;
let deadPort: number;
let routes: ReturnType<typeof meshRoutes>;
let agent: Agent;
let dispatcher: Dispatcher;

beforeAll(async () => {
  near = await startServer("near", { address: "127.0.73.1" });
  far = await startServer("far", { address: "127.0.73.2" });
  other = await startServer("other", { address: "127.0.73.3" });
  const dead = await startServer("dead", { address: "127.0.73.4" });
  deadPort = dead.port;
  await dead.stop();
  routes = meshRoutes({
    "api.default": [
      { address: near.address, port: near.port, cluster: "east", region: "east", zone: "east-a" },
      { address: far.address, port: far.port, cluster: "west", region: "west", zone: "west-a" },
    ],
    "gone.default": [
      { address: "127.0.73.4", port: deadPort, cluster: "east", region: "east", zone: "east-a" },
      { address: far.address, port: far.port, cluster: "west", region: "west", zone: "west-a" },
    ],
  });
  agent = new Agent();
  dispatcher = agent.compose(meshInterceptor(routes));
});

afterAll(async () => {
  await agent.close();
  await routes.close();
  await Promise.all([near, far, other].map((s) => s.stop()));
});

describe("meshInterceptor", () => {
  it("routes a mesh name inside a compose() chain and passes other hosts on", async () => {
    const routed = await request(`${MESH_ORIGIN}/chain`, { dispatcher });
    expect(JSON.parse(await routed.body.text()).server).toBe("near");
    expect(near.requests.at(-1)!.headers.host).toBe("api.default.svc.cluster.local");
    const passed = await request(`http://${other.address}:${other.port}/plain`, { dispatcher });
    expect(JSON.parse(await passed.body.text()).server).toBe("other");
  });

  it("retries a connect failure on another cluster", async () => {
    const res = await request("http://gone.default.svc.cluster.local/retry", { dispatcher });
    expect(JSON.parse(await res.body.text())).toMatchObject({ server: "far", url: "/retry" });
  });

  it("delivers a large response intact to a caller that reads it slowly, holding back the rest", async () => {
    near.handler = streamBody();
    try {
      const res = await request(`${MESH_ORIGIN}/big`, { dispatcher });
      const { data, maxBuffered } = await readSlowly(res.body);
      expect(sha256(data)).toBe(BIG_BODY_SHA256);
      // The caller's pause reached the connection: what waits in its stream stays near its high-water mark.
      expect(maxBuffered).toBeLessThan(1 << 20);
    } finally {
      near.handler = undefined;
    }
  });
});

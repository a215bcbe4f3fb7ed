import { request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import type { MeshOptions } from "../../src/config/config.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { TIMEOUT_HEADER } from "../../src/resilience/deadline.js";
import { startServer, type TestServer } from "../helpers/servers.js";

const URL_ = "http://api.default.svc.cluster.local/";

let server: TestServer | undefined;
let mesh: Mesh | undefined;

async function setup(options: Partial<MeshOptions> = {}) {
  server = await startServer("api", { address: "127.0.71.1" });
  mesh = createMesh({
    env: {},
    discovery: [
      staticDiscovery({
        services: { "api.default": [{ address: server.address, port: server.port, cluster: "c" }] },
      }),
    ],
    ...options,
  });
  return { server, mesh };
}

afterEach(async () => {
  await mesh?.close();
  await server?.stop();
  mesh = undefined;
  server = undefined;
});

describe("TIMEOUT_HEADER", () => {
  it("is not sent when only the default per-try timeout bounds the attempt", async () => {
    const { server, mesh } = await setup();
    await (await mesh.fetch(URL_)).text();
    await (await request(URL_, { dispatcher: mesh.dispatcher })).body.text();
    expect(server.requests.map((r) => r.headers[TIMEOUT_HEADER])).toEqual([undefined, undefined]);
  });

  it("carries the request's own headersTimeout", async () => {
    const { server, mesh } = await setup();
    await (await request(URL_, { dispatcher: mesh.dispatcher, headersTimeout: 2500 })).body.text();
    expect(server.requests[0]!.headers[TIMEOUT_HEADER]).toBe("2500");
  });

  it("carries what is left of the policy's deadline", async () => {
    const { server, mesh } = await setup({ policy: { deadline: 5000 } });
    await (await mesh.fetch(URL_)).text();
    const sent = Number(server.requests[0]!.headers[TIMEOUT_HEADER]);
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThanOrEqual(5000);
  });

  it("is not sent when propagation is off", async () => {
    const { server, mesh } = await setup({ policy: { perTryTimeout: 1000, propagateDeadline: false } });
    await (await mesh.fetch(URL_)).text();
    expect(server.requests[0]!.headers[TIMEOUT_HEADER]).toBeUndefined();
  });
});

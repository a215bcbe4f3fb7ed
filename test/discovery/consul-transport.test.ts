import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getGlobalDispatcher, MockAgent, setGlobalDispatcher } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConsulBackend, createConsulBackend } from "../../src/discovery/consul/consul.js";
import { createTestCa, type TestCa } from "../helpers/certs.js";
import { ids, watchOf } from "../helpers/consul-backend.js";
import { startConsulServer, type TestConsulServer } from "../helpers/consul-server.js";

let dir: string;
let ca: TestCa;
let files: { ca: string; cert: string; key: string; otherCa: string };

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "meshlink-consul-tls-"));
  ca = createTestCa("consul test CA");
  const client = ca.issue({ cn: "meshlink client" });
  const other = createTestCa("another CA");
  files = {
    ca: join(dir, "ca.pem"),
    cert: join(dir, "client.pem"),
    key: join(dir, "client.key"),
    otherCa: join(dir, "other.pem"),
  };
  writeFileSync(files.ca, ca.cert);
  writeFileSync(files.cert, client.cert);
  writeFileSync(files.key, client.key);
  writeFileSync(files.otherCa, other.cert);
  other.dispose();
});

afterAll(() => {
  ca.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function backendFromEnv(env: Record<string, string>): ConsulBackend {
  return createConsulBackend({
    env,
    datacenters: [{ name: "dc1", region: "us-east-1" }],
    backoff: { base: 5, max: 20 },
  } as Parameters<typeof createConsulBackend>[0]);
}

async function withServer(
  server: TestConsulServer,
  env: Record<string, string>,
  check: (backend: ConsulBackend) => Promise<void>,
): Promise<void> {
  server.register("dc1", { node: "n1", address: "127.0.70.2", service: "web", port: 8080 });
  const backend = backendFromEnv(env);
  try {
    await check(backend);
  } finally {
    await backend.close();
    await server.stop();
  }
}

describe("consulDiscovery transport", () => {
  it("talks HTTPS with CONSUL_CACERT and presents CONSUL_CLIENT_CERT/KEY to an agent that verifies clients", async () => {
    const leaf = ca.issue({ cn: "server.dc1.consul", ips: ["127.0.70.1"] });
    const server = await startConsulServer({ address: "127.0.70.1", tls: { ...leaf, ca: ca.cert } });
    const env = {
      CONSUL_HTTP_ADDR: `127.0.70.1:${server.port}`,
      CONSUL_HTTP_SSL: "true",
      CONSUL_CACERT: files.ca,
      CONSUL_CLIENT_CERT: files.cert,
      CONSUL_CLIENT_KEY: files.key,
    };
    await withServer(server, env, async (backend) => {
      expect(ids(await watchOf(backend, "web.service.consul").next())).toEqual(["dc1/127.0.70.2:8080"]);
    });
  });

  it("fails, naming the connection error, without a client certificate or with the wrong CA", async () => {
    const leaf = ca.issue({ cn: "server.dc1.consul", ips: ["127.0.70.1"] });
    const envs: Record<string, string>[] = [
      { CONSUL_CACERT: files.ca },
      { CONSUL_CACERT: files.otherCa, CONSUL_CLIENT_CERT: files.cert, CONSUL_CLIENT_KEY: files.key },
    ];
    for (const env of envs) {
      const server = await startConsulServer({ address: "127.0.70.1", tls: { ...leaf, ca: ca.cert } });
      await withServer(
        server,
        { CONSUL_HTTP_ADDR: `https://127.0.70.1:${server.port}`, ...env },
        async (backend) => {
          const update = await watchOf(backend, "web.service.consul").next();
          expect(update.kind).toBe("failed");
          expect(update.kind === "failed" && update.clusters?.[0]?.error).toMatch(/^ECONNECT /);
        },
      );
    }
  });

  it("talks to an agent on a unix socket (CONSUL_HTTP_ADDR=unix:///…)", async () => {
    const socketPath = join(dir, "consul.sock");
    const server = await startConsulServer({ socketPath });
    await withServer(server, { CONSUL_HTTP_ADDR: `unix://${socketPath}` }, async (backend) => {
      expect(ids(await watchOf(backend, "web.service.consul").next())).toEqual(["dc1/127.0.70.2:8080"]);
    });
  });

  it("uses its own connection pool, not the global dispatcher an application may have set", async () => {
    const previous = getGlobalDispatcher();
    const mock = new MockAgent();
    mock.disableNetConnect();
    setGlobalDispatcher(mock);
    try {
      const server = await startConsulServer({ address: "127.0.70.1" });
      await withServer(server, { CONSUL_HTTP_ADDR: `127.0.70.1:${server.port}` }, async (backend) => {
        expect(ids(await watchOf(backend, "web.service.consul").next())).toEqual(["dc1/127.0.70.2:8080"]);
        expect(server.requests).toHaveLength(1);
      });
    } finally {
      setGlobalDispatcher(previous);
      await mock.close();
    }
  });
});

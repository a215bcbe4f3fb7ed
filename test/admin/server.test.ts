import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_CHANNEL } from "../../src/diagnostics.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ConfigError, ErrorCodes } from "../../src/errors.js";
import { registerDiscoveryKind } from "../../src/index.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { rejection } from "../helpers/assert.js";

// The admin endpoint of a real mesh, on loopback.
let mesh: Mesh;
let url: string;
let dir: string;

/** Whatever JSON the endpoint answered. */
type Json = ReturnType<typeof JSON.parse>;

/** GET (or another method) with a chosen Host header; resolves status and parsed body. */
function get(
  path: string,
  init: { method?: string; host?: string } = {},
): Promise<{ status: number; body: Json }> {
  const target = new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = request(
      target,
      { method: init.method ?? "GET", headers: init.host === undefined ? {} : { host: init.host } },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (c: string) => (text += c));
        res.on("end", () =>
          resolve({ status: res.statusCode!, body: text === "" ? undefined : JSON.parse(text) }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

beforeAll(async () => {
  // A backend kind whose options hold a secret, as a Consul or Kubernetes backend's do.
  registerDiscoveryKind("secretive", (options) => ({
    ...staticDiscovery({
      services: { "api.default": [{ address: "127.0.100.92", port: 8080, cluster: "c", region: "r" }] },
    }),
    name: `secretive(${typeof options})`,
  }));
  dir = mkdtempSync(join(tmpdir(), "meshlink-admin-"));
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `region: r
discovery:
  - secretive: { address: "http://127.0.100.99:8500", token: "s3cret-token", nested: { password: hunter2 } }
`,
  );
  mesh = createMesh({ env: { MESHLINK_CONFIG: config, MESHLINK_ADMIN: "127.0.100.91:0" } });
  url = (await mesh.adminUrl())!;
});

afterAll(async () => {
  await mesh.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("the admin endpoint", () => {
  it("listens on the loopback address MESHLINK_ADMIN names", () => {
    expect(url).toMatch(/^http:\/\/127\.0\.100\.91:\d+$/);
    expect(mesh.config.admin).toEqual({ host: "127.0.100.91", port: 0, allowRemote: false });
  });

  it("serves describe(), resolve and an index as JSON", async () => {
    const resolved = await get("/resolve?service=api.default&port=8080");
    expect(resolved.status).toBe(200);
    expect(resolved.body).toMatchObject([
      {
        id: "c/127.0.100.92:8080",
        address: "127.0.100.92",
        tier: "region",
        available: true,
        health: { state: "healthy" },
      },
    ]);
    const described = await get("/describe");
    expect(described.status).toBe(200);
    expect(described.body.services.map((s: { service: string }) => s.service)).toEqual(["api.default:8080"]);
    expect(described.body.backends).toEqual(["secretive(object)"]);
    const index = await get("/");
    expect(index.body.paths).toContain("/describe");
  });

  it("serves the configuration in force with secrets redacted", async () => {
    const { status, body } = await get("/config");
    expect(status).toBe(200);
    expect(body.discovery).toEqual([
      {
        name: "secretive(object)",
        kind: "secretive",
        source: expect.stringContaining("discovery[0].secretive"),
        options: {
          address: "http://127.0.100.99:8500",
          token: "[redacted]",
          nested: { password: "[redacted]" },
        },
      },
    ]);
    expect(JSON.stringify(body)).not.toContain("s3cret");
    expect(JSON.stringify(body)).not.toContain("hunter2");
    expect(body.policy).toMatchObject({ attempts: 2, perTryTimeout: 15_000 });
    expect(body.admin).toBe("127.0.100.91:0");
  });

  it("answers errors with their codes: a bad name, an unknown service, a missing parameter, an unknown path", async () => {
    expect(await get("/resolve?service=not%20a%20name")).toMatchObject({
      status: 400,
      body: { error: { code: ErrorCodes.SERVICE_NAME } },
    });
    expect(await get("/resolve?service=nosuch.default")).toMatchObject({
      status: 404,
      body: { error: { code: ErrorCodes.SERVICE_NOT_FOUND } },
    });
    expect((await get("/resolve")).status).toBe(400);
    expect((await get("/metrics")).status).toBe(404);
  });

  it("is read-only and refuses a Host that is not an address (DNS rebinding)", async () => {
    const post = await get("/describe", { method: "POST" });
    expect(post.status).toBe(405);
    expect((await get("/describe", { host: "attacker.example" })).status).toBe(403);
    expect((await get("/describe", { host: "localhost:1234" })).status).toBe(200);
    const head = await get("/describe", { method: "HEAD" });
    expect(head).toEqual({ status: 200, body: undefined });
  });
});

describe("the admin endpoint's life", () => {
  it("is off by default", async () => {
    const m = createMesh({ env: {} });
    expect(await m.adminUrl()).toBeUndefined();
    await m.close();
  });

  it("stops with the mesh", async () => {
    const m = createMesh({ env: {}, admin: "127.0.100.93:0" });
    const u = (await m.adminUrl())!;
    expect((await fetch(`${u}/describe`)).status).toBe(200);
    await m.close();
    await expect(fetch(`${u}/describe`)).rejects.toThrow();
  });

  it("reports an address in use as a ConfigError, on adminUrl() and meshlink:error, without an unhandled rejection", async () => {
    const taken = createServer().listen(0, "127.0.100.94");
    await once(taken, "listening");
    const port = (taken.address() as { port: number }).port;
    const published: unknown[] = [];
    const onError = (m: unknown) => published.push(m);
    subscribe(ERROR_CHANNEL, onError);
    try {
      const m = createMesh({ env: {}, admin: `127.0.100.94:${port}` });
      const err = await rejection(m.adminUrl());
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
      expect((err as ConfigError).source).toBe("admin");
      expect(published).toHaveLength(1);
      await m.close();
    } finally {
      unsubscribe(ERROR_CHANNEL, onError);
      taken.close();
    }
  });
});

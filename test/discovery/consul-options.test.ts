import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  consulDiscovery,
  consulDiscoveryKind,
  createConsulBackend,
} from "../../src/discovery/consul/consul.js";
import type { ConsulDiscoveryOptions } from "../../src/discovery/consul/options.js";
import { type ConfigError, ErrorCodes, isMeshError } from "../../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "meshlink-consul-options-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function settings(options: ConsulDiscoveryOptions, env: Record<string, string> = {}) {
  const backend = createConsulBackend({ env, ...options } as Parameters<typeof createConsulBackend>[0]);
  void backend.close();
  return backend.settings;
}

function configError(fn: () => unknown): ConfigError {
  try {
    const b = fn() as { close?: () => unknown };
    void b?.close?.();
  } catch (err) {
    expect(isMeshError(err, ErrorCodes.CONFIG)).toBe(true);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("consulDiscovery options", () => {
  it.each([
    ["127.0.0.1:8500", {}, "http://127.0.0.1:8500", ""],
    ["consul.internal:8501", { CONSUL_HTTP_SSL: "true" }, "https://consul.internal:8501", ""],
    // Consul's client never downgrades an address to HTTP once TLS was asked for.
    ["http://10.0.0.5:8500", { CONSUL_HTTP_SSL: "1" }, "https://10.0.0.5:8500", ""],
    ["https://consul.internal:8501/consul/", {}, "https://consul.internal:8501", "/consul"],
    ["[::1]:8500", {}, "http://[::1]:8500", ""],
  ])("reads CONSUL_HTTP_ADDR=%s", (addr, env, origin, prefix) => {
    const s = settings({}, { CONSUL_HTTP_ADDR: addr, ...env });
    expect(s.address.origin).toBe(origin);
    expect(s.address.prefix).toBe(prefix);
    expect(s.address.socketPath).toBeUndefined();
  });

  it("reads a unix socket address", () => {
    const s = settings({}, { CONSUL_HTTP_ADDR: "unix:///var/run/consul/consul.sock" });
    expect(s.address).toMatchObject({
      origin: "http://localhost",
      socketPath: "/var/run/consul/consul.sock",
    });
  });

  it("applies CONSUL_HTTP_SSL to an explicit address without scheme, as Consul's client does", () => {
    expect(settings({ address: "consul:8501" }, { CONSUL_HTTP_SSL: "true" }).address.origin).toBe(
      "https://consul:8501",
    );
  });

  it("defaults to 127.0.0.1:8500 and lets an explicit address win over the environment", () => {
    expect(settings({}).address.origin).toBe("http://127.0.0.1:8500");
    expect(
      settings({ address: "http://10.1.1.1:8500" }, { CONSUL_HTTP_ADDR: "10.2.2.2:8500" }).address.origin,
    ).toBe("http://10.1.1.1:8500");
  });

  it.each([
    ["ftp://consul:21", /unknown scheme "ftp"/],
    ["unix://relative.sock", /absolute path/],
    ["http://user:pw@consul:8500", /credentials/],
  ])("rejects CONSUL_HTTP_ADDR=%s naming the variable", (addr, pattern) => {
    const err = configError(() => consulDiscovery({ env: { CONSUL_HTTP_ADDR: addr } }));
    expect(err.source).toBe("CONSUL_HTTP_ADDR");
    expect(err.message).toMatch(pattern);
  });

  it("rejects a bad address option naming the option", () => {
    expect(configError(() => consulDiscovery({ address: "gopher://x" })).source).toBe("address");
  });

  it("rejects CONSUL_HTTP_SSL that is not a boolean", () => {
    expect(configError(() => consulDiscovery({ env: { CONSUL_HTTP_SSL: "yes please" } })).source).toBe(
      "CONSUL_HTTP_SSL",
    );
  });

  it("takes the token as Consul's client does: token file option, token option, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN", () => {
    const fileA = join(dir, "a.token");
    const fileB = join(dir, "b.token");
    writeFileSync(fileA, "from-option-file\n");
    writeFileSync(fileB, "  from-env-file\n");
    const env = { CONSUL_HTTP_TOKEN_FILE: fileB, CONSUL_HTTP_TOKEN: "from-env" };
    expect(settings({ tokenFile: fileA, token: "from-option" }, env).headers["x-consul-token"]).toBe(
      "from-option-file",
    );
    expect(settings({ token: "from-option" }, env).headers["x-consul-token"]).toBe("from-option");
    expect(settings({}, env).headers["x-consul-token"]).toBe("from-env-file");
    expect(settings({}, { CONSUL_HTTP_TOKEN: "from-env" }).headers["x-consul-token"]).toBe("from-env");
    expect(settings({}).headers["x-consul-token"]).toBeUndefined();
  });

  it("names CONSUL_HTTP_TOKEN_FILE when the token file cannot be read", () => {
    const err = configError(() => consulDiscovery({ env: { CONSUL_HTTP_TOKEN_FILE: join(dir, "missing") } }));
    expect(err.source).toBe("CONSUL_HTTP_TOKEN_FILE");
    expect(err.message).toMatch(/ENOENT/);
  });

  it("sends CONSUL_HTTP_AUTH as basic authentication", () => {
    expect(settings({}, { CONSUL_HTTP_AUTH: "ops:pw" }).headers.authorization).toBe(
      `Basic ${Buffer.from("ops:pw").toString("base64")}`,
    );
  });

  it("reads TLS files only for HTTPS and names the variable that points nowhere", () => {
    expect(settings({}, { CONSUL_CACERT: join(dir, "missing.pem") }).tls).toBeUndefined();
    const env = { CONSUL_HTTP_ADDR: "https://consul:8501", CONSUL_CACERT: join(dir, "missing.pem") };
    expect(configError(() => consulDiscovery({ env })).source).toBe("CONSUL_CACERT");
    const half = { CONSUL_HTTP_ADDR: "https://consul:8501", CONSUL_CLIENT_CERT: join(dir, "a.token") };
    expect(configError(() => consulDiscovery({ env: half })).source).toBe("CONSUL_CLIENT_KEY");
  });

  it("turns verification off only when told, and takes the server name from CONSUL_TLS_SERVER_NAME", () => {
    const env = {
      CONSUL_HTTP_ADDR: "https://10.0.0.1:8501",
      CONSUL_TLS_SERVER_NAME: "server.dc1.consul:8501",
    };
    expect(settings({}, env).tls).toMatchObject({
      rejectUnauthorized: true,
      servername: "server.dc1.consul",
    });
    expect(settings({}, { ...env, CONSUL_HTTP_SSL_VERIFY: "false" }).tls?.rejectUnauthorized).toBe(false);
    expect(
      settings({ tls: { verify: true } }, { ...env, CONSUL_HTTP_SSL_VERIFY: "false" }).tls
        ?.rejectUnauthorized,
    ).toBe(true);
  });

  it("uses LAN addresses in the local datacenter (the first listed) and WAN addresses in the others", () => {
    const datacenters = [
      { name: "dc-east", region: "us-east-1" },
      { name: "dc-west", region: "us-west-2" },
      { name: "dc-eu", region: "eu-west-1", addresses: "lan" as const },
    ];
    expect(settings({ datacenters }).datacenters.map((d) => d.wan)).toEqual([false, true, false]);
    expect(settings({ datacenters, localDatacenter: "dc-west" }).datacenters.map((d) => d.wan)).toEqual([
      true,
      false,
      false,
    ]);
  });

  it.each([
    [{ bogus: 1 }, "bogus"],
    [
      {
        datacenters: [
          { name: "dc1", region: "a" },
          { name: "dc1", region: "b" },
        ],
      },
      "datacenters[1].name",
    ],
    [{ datacenters: [{ name: "DC 1", region: "a" }] }, "datacenters[0].name"],
    [{ serviceName: "{svc}-x" }, "serviceName"],
    [{ serviceName: "web/{service}" }, "serviceName"],
    [{ wait: 600_001 }, "wait"],
    [{ tls: { cert: "c.pem" } }, "tls"],
    [{ zoneKeys: ["topology.kubernetes.io/zone"] }, "zoneKeys[0]"],
    [{ backoff: { base: 5000, max: 100 } }, "backoff.base"],
  ])("rejects %j naming the option", (options, source) => {
    expect(configError(() => consulDiscovery(options as ConsulDiscoveryOptions)).source).toBe(source);
  });

  it("prefixes errors with where a config file wrote the options, and takes no env there", () => {
    const err = configError(() =>
      consulDiscoveryKind({ datacenters: [{ name: "dc1" }] }, "/etc/mesh.yaml: discovery[2].consul"),
    );
    expect(err.source).toBe("/etc/mesh.yaml: discovery[2].consul.datacenters[0].region");
    expect(configError(() => consulDiscoveryKind({ env: {} }, "f: discovery[0].consul")).source).toBe(
      "f: discovery[0].consul.env",
    );
  });
});

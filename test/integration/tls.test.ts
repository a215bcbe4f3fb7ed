import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createEndpoint, type EndpointInit } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { ErrorCodes, TlsIdentityError } from "../../src/errors.js";
import { resolveTlsOptions, type TlsOptions } from "../../src/tls/options.js";
import { createTlsPolicy } from "../../src/tls/policy.js";
import { classifyTlsRejection, type TlsPolicy } from "../../src/tls/tls.js";
import { rejection } from "../helpers/assert.js";
import {
  createTestCa,
  type Pem,
  policyConnector,
  type SeenRequest,
  startTlsServer,
  type TestCa,
  type TlsTestServer,
} from "../helpers/certs.js";

// Every server listens on 127.0.90.0/24; no traffic leaves loopback.
const API_ID = "spiffe://cluster.local/ns/default/sa/api";
const CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client";
const HOST = "api.default.svc.cluster.local";
const api = parseServiceName(HOST, 8080);

let ca: TestCa;
let westCa: TestCa;
let rogueCa: TestCa;
let client: Pem;
let dir: string;
let good: TlsTestServer;
let impostor: TlsTestServer;
let unknownCa: TlsTestServer;
let expired: TlsTestServer;
let west: TlsTestServer;
let dnsServer: TlsTestServer;
const policies: TlsPolicy[] = [];
const clients: Client[] = [];

beforeAll(async () => {
  ca = createTestCa("mesh CA");
  westCa = createTestCa("west CA");
  rogueCa = createTestCa("rogue CA");
  client = ca.issue({ cn: "client", uris: [CLIENT_ID] });
  dir = mkdtempSync(join(tmpdir(), "meshlink-tls-it-"));
  writeFileSync(join(dir, "ca.pem"), ca.cert);
  writeFileSync(join(dir, "tls.crt"), client.cert);
  writeFileSync(join(dir, "tls.key"), client.key);
  good = await startTlsServer("127.0.90.1", ca.issue({ cn: "api", uris: [API_ID] }), ca.cert);
  impostor = await startTlsServer(
    "127.0.90.2",
    ca.issue({ cn: "impostor", uris: ["spiffe://cluster.local/ns/default/sa/impostor"] }),
    ca.cert,
  );
  unknownCa = await startTlsServer("127.0.90.3", rogueCa.issue({ cn: "api", uris: [API_ID] }), ca.cert);
  expired = await startTlsServer(
    "127.0.90.4",
    ca.issue({ cn: "api", uris: [API_ID], notBefore: "20200101000000Z", notAfter: "20200201000000Z" }),
    ca.cert,
  );
  west = await startTlsServer(
    "127.0.90.5",
    westCa.issue({ cn: "api-west", uris: ["spiffe://west.example/ns/default/sa/api"] }),
    ca.cert,
  );
  dnsServer = await startTlsServer("127.0.90.6", ca.issue({ cn: "api", dns: [HOST] }), ca.cert);
});

afterAll(async () => {
  await Promise.all([good, impostor, unknownCa, expired, west, dnsServer].map((s) => s?.close()));
  for (const c of [ca, westCa, rogueCa]) c.dispose();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.destroy()));
  for (const p of policies.splice(0)) p.close();
});

function policy(options: TlsOptions | undefined, env: Record<string, string | undefined> = {}): TlsPolicy {
  const p = createTlsPolicy(resolveTlsOptions(options, env, undefined, "config"));
  policies.push(p);
  return p;
}

const inline = (extra: TlsOptions = {}): TlsOptions => ({
  mode: "strict",
  ca: ca.cert,
  cert: client.cert,
  key: client.key,
  ...extra,
});

function endpointOf(server: { address: string; port: number }, init: Partial<EndpointInit> = {}) {
  return createEndpoint({
    address: server.address,
    port: server.port,
    cluster: "east",
    backend: "static",
    ...init,
  });
}

/** An undici client for `http://api.default.svc.cluster.local:8080` whose connections go to `server` through the policy. */
function clientFor(
  p: TlsPolicy,
  server: { address: string; port: number },
  init: Partial<EndpointInit> = {},
) {
  const c = new Client(`http://${HOST}:8080`, {
    connect: policyConnector(p, { endpoint: endpointOf(server, init), service: api, servername: HOST }),
  });
  clients.push(c);
  return c;
}

async function get(c: Client): Promise<SeenRequest> {
  const res = await c.request({ path: "/", method: "GET" });
  return (await res.body.json()) as SeenRequest;
}

describe("mutual TLS through the policy (integration)", () => {
  it("carries an http:// mesh URL over mutual TLS in strict mode configured from the environment", async () => {
    const p = policy(undefined, {
      MESHLINK_TLS_MODE: "strict",
      MESHLINK_TLS_CA: join(dir, "ca.pem"),
      MESHLINK_TLS_CERT: join(dir, "tls.crt"),
      MESHLINK_TLS_KEY: join(dir, "tls.key"),
    });
    expect(p.describe().files).toEqual([join(dir, "ca.pem"), join(dir, "tls.crt"), join(dir, "tls.key")]);
    const seen = await get(clientFor(p, good));
    expect(seen).toMatchObject({ cn: "client", uris: [CLIENT_ID] });
  });

  it("refuses a server whose SPIFFE ID is not the expected one, before any request is sent", async () => {
    const p = policy(inline());
    const err = await rejection(get(clientFor(p, impostor)));
    expect(err).toBeInstanceOf(TlsIdentityError);
    expect(err).toMatchObject({
      code: ErrorCodes.TLS_IDENTITY,
      expected: API_ID,
      presented: ["spiffe://cluster.local/ns/default/sa/impostor"],
    });
    expect(classifyTlsRejection(err)).toBe("identity");
    expect(impostor.seen).toEqual([]);
  });

  it("expects the identity that discovery gave the endpoint over the template's", async () => {
    const p = policy(inline());
    const seen = await get(
      clientFor(p, impostor, { identity: "spiffe://cluster.local/ns/default/sa/impostor" }),
    );
    expect(seen.cn).toBe("client");
    const err = await rejection(
      get(clientFor(p, good, { identity: "spiffe://cluster.local/ns/default/sa/api-v2" })),
    );
    expect(err).toMatchObject({ code: ErrorCodes.TLS_IDENTITY, presented: [API_ID] });
  });

  it("refuses a server certificate from an unknown CA", async () => {
    const err = await rejection(get(clientFor(policy(inline()), unknownCa)));
    expect(err.code).toBe("UNABLE_TO_VERIFY_LEAF_SIGNATURE");
    expect(classifyTlsRejection(err)).toBe("certificate");
    expect(unknownCa.seen).toEqual([]);
  });

  it("refuses an expired server certificate", async () => {
    const err = await rejection(get(clientFor(policy(inline()), expired)));
    expect(err.code).toBe("CERT_HAS_EXPIRED");
    expect(classifyTlsRejection(err)).toBe("certificate");
    expect(expired.seen).toEqual([]);
  });

  it("is rejected by a server that requires a client certificate when it has none", async () => {
    const p = policy({ mode: "permissive", ca: ca.cert });
    const before = good.tlsErrors.length;
    const err = await rejection(get(clientFor(p, good, { identity: API_ID })));
    // TLS 1.3: the server's alert arrives after the client's side of the handshake, as a closed socket.
    expect(err.code).toBe("UND_ERR_SOCKET");
    expect(classifyTlsRejection(err)).toBeUndefined();
    expect(good.seen.filter((s) => s.cn === undefined)).toEqual([]);
    await vi.waitFor(() => expect(good.tlsErrors.length).toBeGreaterThan(before));
    expect(String(good.tlsErrors.at(-1)?.message)).toMatch(/certificate/i);
  });

  it("never downgrades: strict mode speaks TLS to a plaintext server and fails", async () => {
    let requests = 0;
    const plain = createHttpServer((_req, res) => {
      requests++;
      res.end("plaintext");
    });
    plain.listen(0, "127.0.90.7");
    await once(plain, "listening");
    try {
      const port = (plain.address() as { port: number }).port;
      const err = await rejection(get(clientFor(policy(inline()), { address: "127.0.90.7", port })));
      expect(err.code).toBe("ERR_SSL_WRONG_VERSION_NUMBER");
      expect(requests).toBe(0);
    } finally {
      plain.closeAllConnections();
      plain.close();
    }
  });

  it("speaks plaintext in permissive mode to an unmarked endpoint and TLS to a marked one", async () => {
    const p = policy(inline({ mode: "permissive" }));
    const before = good.tlsErrors.length;
    const unmarked = await rejection(get(clientFor(p, good)));
    // The TLS server saw plaintext where a ClientHello belongs, and closed.
    expect(unmarked.code).toBe("UND_ERR_SOCKET");
    await vi.waitFor(() => expect(good.tlsErrors.length).toBeGreaterThan(before));
    expect((await get(clientFor(p, good, { identity: API_ID }))).cn).toBe("client");
  });

  it("trusts a cluster's own bundle for its endpoints only, with its trust domain", async () => {
    const p = policy(inline({ clusters: { west: { ca: westCa.cert, trustDomain: "west.example" } } }));
    expect((await get(clientFor(p, west, { cluster: "west" }))).cn).toBe("client");
    // The same server reached as an endpoint of the caller's own cluster: its CA is not trusted there.
    const err = await rejection(get(clientFor(p, west, { cluster: "east" })));
    expect(err.code).toBe("UNABLE_TO_VERIFY_LEAF_SIGNATURE");
  });

  it("matches DNS SANs in dns mode", async () => {
    const p = policy(inline({ identity: { match: "dns" } }));
    expect((await get(clientFor(p, dnsServer))).cn).toBe("client");
    const err = await rejection(get(clientFor(p, good)));
    expect(err).toMatchObject({ code: ErrorCodes.TLS_IDENTITY, expected: HOST });
  });

  it("resumes TLS sessions within one material version", async () => {
    const p = policy(inline());
    const c = clientFor(p, good);
    const res = await c.request({ path: "/", method: "GET", reset: true });
    const first = (await res.body.json()) as SeenRequest;
    const second = await get(c);
    expect(first.reused).toBe(false);
    expect(second.reused).toBe(true);
    expect(second.connection).not.toBe(first.connection);
  });
});

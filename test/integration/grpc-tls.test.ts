import { createSecureContext } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { GRPC_ERROR_METADATA, type GrpcTlsSource } from "../../src/transport/grpc/grpc.js";
import { createTestCa, type Pem, type TestCa } from "../helpers/certs.js";
import { EchoClient, echo, type GrpcTestServer, startGrpcServer } from "../helpers/grpc.js";

// Mutual TLS with plain PEM material and a SecureContext provider (the
// mesh's TLS policy plugs in through the same credentials). Loopback only.
const ECHO_ID = "spiffe://cluster.local/ns/default/sa/echo";

let good: TestCa;
let evil: TestCa;
let clientPem: Pem;
let server: GrpcTestServer;
let impostor: GrpcTestServer;
let mesh: Mesh;
const clients: grpc.Client[] = [];

function serverCredentials(ca: TestCa, pem: Pem): grpc.ServerCredentials {
  // The server requires a client certificate from its CA: mutual TLS.
  return grpc.ServerCredentials.createSsl(
    Buffer.from(ca.cert),
    [{ cert_chain: Buffer.from(pem.cert), private_key: Buffer.from(pem.key) }],
    true,
  );
}

beforeAll(async () => {
  good = createTestCa("meshlink grpc CA");
  evil = createTestCa("another CA");
  clientPem = good.issue({ cn: "caller", uris: ["spiffe://cluster.local/ns/default/sa/caller"] });
  server = await startGrpcServer("echo-1", "127.0.120.41", {
    credentials: serverCredentials(good, good.issue({ cn: "echo", uris: [ECHO_ID] })),
  });
  impostor = await startGrpcServer("evil-1", "127.0.120.42", {
    credentials: serverCredentials(
      good,
      good.issue({ cn: "evil", uris: ["spiffe://cluster.local/ns/default/sa/evil"] }),
    ),
  });
  mesh = createMesh({
    env: {},
    discovery: [
      staticDiscovery({
        services: {
          "echo.default": [
            { address: server.address, port: server.port, cluster: "home", identity: ECHO_ID },
          ],
          // Discovery says this endpoint serves echo; its certificate says otherwise.
          "spoofed.default": [
            { address: impostor.address, port: impostor.port, cluster: "home", identity: ECHO_ID },
          ],
        },
      }),
    ],
  });
  mesh.grpc.register(grpc);
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(async () => {
  await mesh.close();
  server.kill();
  impostor.kill();
  good.dispose();
  evil.dispose();
});

function client(service: string, tls: GrpcTlsSource) {
  const c = new EchoClient(mesh.grpc.target(service, 50051), mesh.grpc.credentials(tls), {
    interceptors: mesh.grpc.interceptors,
  });
  clients.push(c);
  return c;
}

/** The call fails as UNAVAILABLE without reaching the server; returns the status details. */
async function refused(service: string, tls: GrpcTlsSource, s: GrpcTestServer): Promise<string> {
  const before = s.calls.length;
  const err = await echo(client(service, tls), "x").catch((e: grpc.ServiceError) => e);
  expect(err).toMatchObject({ code: grpc.status.UNAVAILABLE });
  expect((err as grpc.ServiceError).metadata.get(GRPC_ERROR_METADATA)).toEqual([ErrorCodes.REQUEST_FAILED]);
  expect(s.calls.length).toBe(before);
  return (err as grpc.ServiceError).details;
}

describe("MeshGrpc.credentials (mutual TLS)", () => {
  it("serves a call over mutual TLS to the expected identity", async () => {
    const reply = await echo(client("echo.default", { ca: good.cert, ...clientPem }), "secure");
    expect(reply.server).toBe("echo-1");
  });

  it("refuses a server whose certificate names another identity than discovery expects", async () => {
    const details = await refused("spoofed.default", { ca: good.cert, ...clientPem }, impostor);
    // Refused once, as a TLS identity failure: never tried again by the call.
    expect(details.match(/MESHLINK_ERR_TLS_IDENTITY/g)).toHaveLength(1);
    expect(details).toContain(`expected ${ECHO_ID}`);
  });

  it("refuses a server its trust bundle does not cover", async () => {
    await refused("echo.default", { ca: evil.cert, ...clientPem }, server);
  });

  it("is refused by a server that requires a client certificate when it has none", async () => {
    await refused("echo.default", { ca: good.cert }, server);
  });

  it("takes each connection's context from a provider, by the endpoint's cluster", async () => {
    const context = createSecureContext({ ca: good.cert, ...clientPem });
    const asked: (string | undefined)[] = [];
    const provider = {
      secureContext(cluster?: string) {
        asked.push(cluster);
        return context;
      },
    };
    expect((await echo(client("echo.default", provider), "provided")).server).toBe("echo-1");
    expect(asked).toContain("home");
  });
});

describe("MeshGrpc.credentials with the mesh's TLS policy (strict mode)", () => {
  let strict: Mesh;
  let west: GrpcTestServer;

  beforeAll(async () => {
    // A good server in another cluster, behind the impostor of the caller's own zone.
    west = await startGrpcServer("echo-west", "127.0.120.43", {
      credentials: serverCredentials(good, good.issue({ cn: "echo", uris: [ECHO_ID] })),
    });
    strict = createMesh({
      env: {},
      region: "home",
      tls: { mode: "strict", ca: good.cert, cert: clientPem.cert, key: clientPem.key },
      // No identity from discovery: the policy's template gives spiffe://cluster.local/ns/default/sa/echo.
      discovery: [
        staticDiscovery({
          services: {
            "echo.default": [
              { address: impostor.address, port: impostor.port, cluster: "home", region: "home" },
              { address: west.address, port: west.port, cluster: "west", region: "west" },
            ],
          },
        }),
      ],
    });
    strict.grpc.register(grpc);
  });

  afterAll(async () => {
    await strict.close();
    west.kill();
  });

  it("refuses the server that presents a wrong identity and serves the call from one that presents the right one", async () => {
    const before = impostor.calls.length;
    const c = new EchoClient(strict.grpc.target("echo.default", 50051), strict.grpc.credentials(), {
      interceptors: strict.grpc.interceptors,
    });
    clients.push(c);
    for (let i = 0; i < 5; i++) expect((await echo(c, "strict")).server).toBe("echo-west");
    expect(impostor.calls.length).toBe(before);
    const home = strict.describe().services[0]!.endpoints.find((e) => e.cluster === "home")!;
    expect(home.health.lastFailure).toBe(ErrorCodes.TLS_IDENTITY);
  });
});

describe("MeshGrpc and the egress guard", () => {
  it("never connects to an address the guard denies", async () => {
    const denied = await startGrpcServer("denied", "127.0.120.44");
    const allowed = await startGrpcServer("allowed", "127.0.120.45");
    const m = createMesh({
      env: {},
      egress: { deny: ["127.0.120.44/32"] },
      discovery: [
        staticDiscovery({
          services: {
            "echo.default": [
              { address: denied.address, port: denied.port, cluster: "a" },
              { address: allowed.address, port: allowed.port, cluster: "b" },
            ],
          },
        }),
      ],
    });
    try {
      m.grpc.register(grpc);
      const c = new EchoClient(m.grpc.target("echo.default", 50051), m.grpc.credentials(), {
        interceptors: m.grpc.interceptors,
      });
      clients.push(c);
      for (let i = 0; i < 10; i++) expect((await echo(c, "x")).server).toBe("allowed");
      expect(denied.calls.length).toBe(0);
    } finally {
      await m.close();
      denied.kill();
      allowed.kill();
    }
  });
});

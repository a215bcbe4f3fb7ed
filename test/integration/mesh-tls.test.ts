// Mutual TLS and the egress guard through createMesh: the application keeps
// its http:// URLs, the connector does the rest. Servers on 127.0.91.0/24.
import { once } from "node:events";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import type { ExpiryEvent, RotationEvent } from "../../src/tls/tls.js";
import { rejection } from "../helpers/assert.js";
import { createTestCa, type Pem, startTlsServer, type TestCa, type TlsTestServer } from "../helpers/certs.js";
import { startServer } from "../helpers/servers.js";
import { installMetrics } from "../telemetry/metric-reader.js";

const API_ID = "spiffe://cluster.local/ns/default/sa/api";
const URL_ = "http://api.default.svc.cluster.local/hello";

let ca: TestCa;
let dir: string;
let env: Record<string, string>;
let good: TlsTestServer;
let impostor: TlsTestServer;
const meshes: Mesh[] = [];

function issueClient(cn: string): Pem {
  return ca.issue({ cn, uris: [`spiffe://cluster.local/ns/default/sa/${cn}`] });
}

/** Writes a file as cert-manager does: to a temporary name, then renamed into place. */
function replace(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

beforeAll(async () => {
  ca = createTestCa("mesh CA");
  dir = mkdtempSync(join(tmpdir(), "meshlink-mesh-tls-"));
  const client = issueClient("client");
  writeFileSync(join(dir, "ca.pem"), ca.cert);
  writeFileSync(join(dir, "tls.crt"), client.cert);
  writeFileSync(join(dir, "tls.key"), client.key);
  env = {
    MESHLINK_TLS_MODE: "strict",
    MESHLINK_TLS_CA: join(dir, "ca.pem"),
    MESHLINK_TLS_CERT: join(dir, "tls.crt"),
    MESHLINK_TLS_KEY: join(dir, "tls.key"),
  };
  good = await startTlsServer("127.0.91.1", ca.issue({ cn: "api", uris: [API_ID] }), ca.cert);
  impostor = await startTlsServer(
    "127.0.91.2",
    ca.issue({ cn: "impostor", uris: ["spiffe://cluster.local/ns/default/sa/impostor"] }),
    ca.cert,
  );
});

afterAll(async () => {
  await Promise.all([good, impostor].map((s) => s.close()));
  ca.dispose();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const m of meshes.splice(0)) await m.close();
});

function meshTo(
  endpoints: { address: string; port: number; cluster: string; region: string }[],
  extra: Parameters<typeof createMesh>[0] = {},
): Mesh {
  const mesh = createMesh({
    env,
    region: "home",
    failover: ["away"],
    discovery: [staticDiscovery({ services: { "api.default": endpoints } })],
    ...extra,
  });
  meshes.push(mesh);
  return mesh;
}

describe("createMesh with tls strict mode from the environment", () => {
  it("carries an http:// mesh URL over mutual TLS, presenting the client certificate", async () => {
    const mesh = meshTo([{ address: good.address, port: good.port, cluster: "home", region: "home" }]);
    const res = await mesh.fetch(URL_);
    expect(res.status).toBe(200);
    const seen = (await res.json()) as { cn: string; uris: string[] };
    expect(seen.cn).toBe("client");
    expect(seen.uris).toEqual(["spiffe://cluster.local/ns/default/sa/client"]);
    expect(mesh.describe().tls.mode).toBe("strict");
  });

  it("carries a node:http request through mesh.httpAgent over mutual TLS too", async () => {
    const mesh = meshTo([{ address: good.address, port: good.port, cluster: "home", region: "home" }]);
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpGet(URL_, { agent: mesh.httpAgent }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve(text));
      });
      req.on("error", reject);
    });
    expect((JSON.parse(body) as { cn: string }).cn).toBe("client");
  });

  it("refuses a server with another identity, never retries it, and serves from the right one", async () => {
    const mesh = meshTo([
      { address: impostor.address, port: impostor.port, cluster: "home", region: "home" },
      { address: good.address, port: good.port, cluster: "away", region: "away" },
    ]);
    const before = impostor.seen.length;
    for (let i = 0; i < 5; i++) {
      const res = await mesh.fetch(URL_);
      expect(((await res.json()) as { cn: string }).cn).toBe("client");
    }
    expect(impostor.seen.length).toBe(before); // an impostor is never served a request
    const [home] = await mesh.resolve("api.default");
    expect(home!.health.lastFailure).toBe("MESHLINK_ERR_TLS_IDENTITY");
  });

  it("fails with the identity error as the cause when the impostor is the only endpoint", async () => {
    const mesh = meshTo([
      { address: impostor.address, port: impostor.port, cluster: "home", region: "home" },
    ]);
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe("MESHLINK_ERR_REQUEST_FAILED");
    const cause = (err.cause as { cause?: { code?: string; expected?: string; presented?: string[] } }).cause;
    expect(cause?.code).toBe("MESHLINK_ERR_TLS_IDENTITY");
    expect(cause?.expected).toBe(API_ID);
  });

  it("never falls back to plaintext against a server that does not speak TLS", async () => {
    const plain = await startServer("plain", { address: "127.0.91.3" });
    try {
      const mesh = meshTo([{ address: plain.address, port: plain.port, cluster: "home", region: "home" }]);
      const err = await rejection(mesh.fetch(URL_));
      expect(err.cause?.code).toBe("MESHLINK_ERR_REQUEST_FAILED");
      expect(plain.requests).toHaveLength(0);
    } finally {
      await plain.stop();
    }
  });

  it("presents a rotated client certificate on new connections, with no failed call", async () => {
    const mesh = meshTo([{ address: good.address, port: good.port, cluster: "home", region: "home" }], {
      tls: { reload: { debounce: 10, interval: 100 } },
    } as Parameters<typeof createMesh>[0]);
    const rotated = new Promise<void>((resolve) => {
      good.onRequest = (seen) => {
        if (seen.cn === "client-rotated") resolve();
      };
    });
    let failed = 0;
    let calls = 0;
    let stop = false;
    // Every call on a new connection (a new handshake), until one presents the new certificate.
    const load = (async () => {
      while (!stop) {
        try {
          await (await mesh.fetch(URL_, { headers: { connection: "close" } })).text();
          calls++;
        } catch {
          failed++;
        }
      }
    })();
    try {
      const next = issueClient("client-rotated");
      replace(join(dir, "tls.key"), next.key);
      replace(join(dir, "tls.crt"), next.cert);
      await rotated;
    } finally {
      stop = true;
      good.onRequest = undefined;
      await load;
    }
    expect(calls).toBeGreaterThan(0);
    expect(failed).toBe(0);
    expect(mesh.describe().tls.version).toBeGreaterThanOrEqual(2);
  });
});

describe("createMesh TLS events", () => {
  it("tells the application of certificates nearing expiry, refused rotations and rotations", async () => {
    const own = mkdtempSync(join(tmpdir(), "meshlink-mesh-tls-events-"));
    try {
      const first = issueClient("events-1");
      const next = issueClient("events-2");
      writeFileSync(join(own, "ca.pem"), ca.cert);
      writeFileSync(join(own, "tls.crt"), first.cert);
      writeFileSync(join(own, "tls.key"), first.key);
      const mesh = createMesh({
        env: {},
        discovery: [],
        tls: {
          mode: "strict",
          ca: join(own, "ca.pem"),
          cert: join(own, "tls.crt"),
          key: join(own, "tls.key"),
          reload: { debounce: 10, interval: 60_000 },
          // Every certificate is inside a window this long: each is reported at once.
          expiryWarning: 366 * 24 * 3600 * 1000,
        },
      });
      meshes.push(mesh);
      const expiring = await new Promise<ExpiryEvent>((resolve) => mesh.onCertificateExpiring(resolve));
      expect(expiring.remainingMs).toBeGreaterThan(0);

      const refused = new Promise<Error>((resolve) => mesh.onCertificateRotationError(resolve));
      replace(join(own, "tls.crt"), next.cert);
      expect(await refused).toMatchObject({ code: ErrorCodes.TLS_MATERIAL });

      const rotated = new Promise<RotationEvent>((resolve) => mesh.onCertificateRotated(resolve));
      replace(join(own, "tls.key"), next.key);
      const event = await rotated;
      expect(event.version).toBe(2);
      expect(event.certificates.find((c) => c.role === "cert")?.subject).toBe("CN=events-2");
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});

describe("createMesh TLS metrics", () => {
  it("reports each certificate's time to expiry as a gauge", async () => {
    const reader = installMetrics();
    try {
      const mesh = meshTo([{ address: good.address, port: good.port, cluster: "home", region: "home" }]);
      const collected = await reader.collect();
      const cert = collected.points("meshlink.tls.certificate.time_to_expiry", {
        "meshlink.tls.role": "cert",
      });
      expect(cert).toHaveLength(1);
      const notAfter = Date.parse(mesh.describe().tls.certificates.find((c) => c.role === "cert")!.notAfter);
      // Seconds left, as of the collection.
      expect(Math.abs((cert[0]!.value as number) - (notAfter - Date.now()) / 1000)).toBeLessThan(60);
    } finally {
      await reader.uninstall();
    }
  });
});

describe("createMesh egress guard", () => {
  it("never connects to an address in a denied range, naming the rule", async () => {
    let connections = 0;
    const srv = createNetServer((s) => {
      connections++;
      s.destroy();
    });
    srv.listen(0, "127.0.91.9");
    await once(srv, "listening");
    const port = (srv.address() as { port: number }).port;
    try {
      const mesh = createMesh({
        env: {},
        egress: { deny: ["127.0.91.8/29"] },
        discovery: [
          staticDiscovery({
            services: { "api.default": [{ address: "127.0.91.9", port, cluster: "home" }] },
          }),
        ],
      });
      meshes.push(mesh);
      const err = await rejection(mesh.fetch(URL_));
      const denied = (err.cause as { cause?: { code?: string; rule?: string; address?: string } }).cause;
      expect(denied?.code).toBe("MESHLINK_ERR_EGRESS_DENIED");
      expect(denied?.rule).toBe("deny 127.0.91.8/29");
      expect(denied?.address).toBe("127.0.91.9");
      expect(connections).toBe(0);
      expect(mesh.describe().egress).toContain("deny 169.254.0.0/16");
    } finally {
      srv.close();
    }
  });
});

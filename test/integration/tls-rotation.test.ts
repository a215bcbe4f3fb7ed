import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client, Pool } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { ErrorCodes } from "../../src/errors.js";
import { resolveTlsOptions } from "../../src/tls/options.js";
import { createTlsPolicy } from "../../src/tls/policy.js";
import type { RotationEvent, TlsPolicy } from "../../src/tls/tls.js";
import { rejection } from "../helpers/assert.js";
import {
  createSecretVolume,
  createTestCa,
  type Pem,
  policyConnector,
  type SecretVolume,
  type SeenRequest,
  startTlsServer,
  type TestCa,
  type TlsTestServer,
} from "../helpers/certs.js";

// Servers on 127.0.90.0/24 only.
const HOST = "api.default.svc.cluster.local";
const API_ID = "spiffe://cluster.local/ns/default/sa/api";
const api = parseServiceName(HOST, 8080);

let ca: TestCa;
let nextCa: TestCa;
let server: TlsTestServer;
let nextCaServer: TlsTestServer;
let client1: Pem;
let client2: Pem;
let dir: string;
const policies: TlsPolicy[] = [];
const dispatchers: (Client | Pool)[] = [];
const volumes: SecretVolume[] = [];

beforeAll(async () => {
  ca = createTestCa("rotation CA");
  nextCa = createTestCa("next rotation CA");
  client1 = ca.issue({ cn: "client-1", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
  client2 = ca.issue({ cn: "client-2", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
  server = await startTlsServer("127.0.90.11", ca.issue({ cn: "api", uris: [API_ID] }), ca.cert);
  nextCaServer = await startTlsServer(
    "127.0.90.12",
    nextCa.issue({ cn: "api-next", uris: [API_ID] }),
    ca.cert,
  );
});

afterAll(async () => {
  await Promise.all([server?.close(), nextCaServer?.close()]);
  ca.dispose();
  nextCa.dispose();
});

afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((d) => d.destroy()));
  for (const p of policies.splice(0)) p.close();
  for (const v of volumes.splice(0)) v.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
  server.onRequest = undefined;
});

function writeFiles(pem: Pem) {
  writeFileSync(join(dir, "tls.crt"), pem.cert);
  writeFileSync(join(dir, "tls.key"), pem.key);
}

function policyOver(paths: { ca: string; cert: string; key: string }): TlsPolicy {
  const p = createTlsPolicy(
    resolveTlsOptions(
      { mode: "strict", ...paths, reload: { debounce: 50, interval: 60_000 } },
      {},
      undefined,
      "config",
    ),
  );
  policies.push(p);
  return p;
}

function filePolicy(): TlsPolicy {
  dir = mkdtempSync(join(tmpdir(), "meshlink-rotation-"));
  writeFileSync(join(dir, "ca.crt"), ca.cert);
  writeFiles(client1);
  return policyOver({ ca: join(dir, "ca.crt"), cert: join(dir, "tls.crt"), key: join(dir, "tls.key") });
}

function target(to: TlsTestServer) {
  return {
    endpoint: createEndpoint({ address: to.address, port: to.port, cluster: "east", backend: "static" }),
    service: api,
    servername: HOST,
  };
}

function client(p: TlsPolicy, to: TlsTestServer = server): Client {
  const c = new Client(`http://${HOST}:8080`, { connect: policyConnector(p, target(to)) });
  dispatchers.push(c);
  return c;
}

async function get(d: Client | Pool, reset = false): Promise<SeenRequest> {
  const res = await d.request({ path: "/", method: "GET", reset });
  return (await res.body.json()) as SeenRequest;
}

const nextRotation = (p: TlsPolicy) =>
  new Promise<RotationEvent>((resolve) => {
    const sub = p.onRotate((e) => {
      sub.dispose();
      resolve(e);
    });
  });

/** Resolves once the server has seen `n` requests that match. */
function seenAtLeast(n: number, match: (s: SeenRequest) => boolean): Promise<void> {
  return new Promise((resolve) => {
    let count = server.seen.filter(match).length;
    if (count >= n) return resolve();
    server.onRequest = (s) => {
      if (match(s) && ++count >= n) resolve();
    };
  });
}

describe("certificate rotation (integration)", () => {
  it("rotates the client certificate under continuous traffic with no failed call; new connections present the new one", async () => {
    const p = filePolicy();
    const pool = new Pool(`http://${HOST}:8080`, {
      connections: 4,
      connect: policyConnector(p, target(server)),
    });
    dispatchers.push(pool);
    // One connection made before the rotation, kept alive across it.
    const kept = client(p);
    const keptBefore = await get(kept);
    // A client whose connection closes after each request, so its next request opens a new connection.
    const fresh = client(p);
    expect((await get(fresh, true)).cn).toBe("client-1");

    let stop = false;
    let ok = 0;
    const failures: unknown[] = [];
    const worker = async (i: number) => {
      while (!stop) {
        try {
          // Half the requests close their connection: new connections open throughout the rotation.
          const res = await pool.request({ path: "/", method: "GET", reset: i % 2 === 0 });
          await res.body.dump();
          ok++;
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const seenBefore = server.seen.length;
    const workers = [0, 1, 2, 3, 4, 5].map(worker);
    try {
      await seenAtLeast(seenBefore + 50, () => true);
      const rotated = nextRotation(p);
      writeFiles(client2);
      const event = await rotated;
      expect(event.version).toBe(2);
      expect(event.certificates.find((c) => c.role === "cert")?.subject).toBe("CN=client-2");
      await seenAtLeast(50, (s) => s.cn === "client-2");
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);

    // The next new connection presents the new certificate: a full handshake, not the old session resumed.
    const after = await get(fresh);
    expect(after).toMatchObject({ cn: "client-2", reused: false });
    // A connection opened before the rotation keeps its certificate until it closes.
    const keptAfter = await get(kept);
    expect(keptAfter).toMatchObject({ cn: "client-1", connection: keptBefore.connection });
    expect(p.describe()).toMatchObject({ version: 2, stale: false, lastError: undefined });
  });

  it("keeps a pair caught mid-write out and uses it once the key matches", async () => {
    const p = filePolicy();
    const refused = new Promise<Error>((resolve) => p.onRotationError(resolve));
    writeFileSync(join(dir, "tls.crt"), client2.cert);
    const err = await refused;
    expect(err).toMatchObject({ code: ErrorCodes.TLS_MATERIAL });

    expect((await get(client(p))).cn).toBe("client-1");
    const d = p.describe();
    expect(d).toMatchObject({ version: 1, stale: true, lastError: { code: ErrorCodes.TLS_MATERIAL } });
    expect(d.lastError?.message).toContain("does not match");
    expect(d.certificates.find((c) => c.role === "cert")?.subject).toBe("CN=client-1");

    const rotated = nextRotation(p);
    writeFileSync(join(dir, "tls.key"), client2.key);
    await rotated;
    expect((await get(client(p))).cn).toBe("client-2");
    expect(p.describe().stale).toBe(false);
  });

  it("follows a secret volume's ..data symlink swap, trust bundle included", async () => {
    const volume = createSecretVolume({ "ca.crt": ca.cert, "tls.crt": client1.cert, "tls.key": client1.key });
    volumes.push(volume);
    const p = policyOver({
      ca: volume.path("ca.crt"),
      cert: volume.path("tls.crt"),
      key: volume.path("tls.key"),
    });
    expect((await get(client(p))).cn).toBe("client-1");
    const untrusted = await rejection(get(client(p, nextCaServer)));
    expect(untrusted.code).toBe("UNABLE_TO_VERIFY_LEAF_SIGNATURE");

    const rotated = nextRotation(p);
    volume.swap({ "ca.crt": `${ca.cert}${nextCa.cert}`, "tls.crt": client2.cert, "tls.key": client2.key });
    const event = await rotated;
    expect(event.certificates.filter((c) => c.role === "ca").map((c) => c.subject)).toEqual([
      "CN=rotation CA",
      "CN=next rotation CA",
    ]);
    expect((await get(client(p))).cn).toBe("client-2");
    expect((await get(client(p, nextCaServer))).cn).toBe("client-2");
  });
});

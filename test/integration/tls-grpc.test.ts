import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { resolveTlsOptions } from "../../src/tls/options.js";
import { createTlsPolicy } from "../../src/tls/policy.js";
import { grpcCertificateProvider, type TlsPolicy } from "../../src/tls/tls.js";
import { createTestCa, type Pem, type TestCa } from "../helpers/certs.js";

// The gRPC transport is not built yet; this shows that the policy and the
// certificate source serve grpc-js as they serve undici. Loopback only.
const HOST = "api.default.svc.cluster.local";
const API_ID = "spiffe://cluster.local/ns/default/sa/api";
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const service: grpc.ServiceDefinition = {
  Who: {
    path: "/meshlink.test.Peer/Who",
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
};
const PeerClient = grpc.makeGenericClientConstructor(service, "Peer");

let ca: TestCa;
let client1: Pem;
let client2: Pem;
let dir: string;
const servers: { server: grpc.Server; port: number; calls: number }[] = [];

async function startGrpc(address: string, pem: Pem) {
  const entry = { server: new grpc.Server(), port: 0, calls: 0 };
  entry.server.addService(service, {
    Who: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      entry.calls++;
      cb(null, Buffer.from(String(call.getAuthContext().sslPeerCertificate?.subject?.CN ?? "")));
    },
  });
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(ca.cert),
    [{ cert_chain: Buffer.from(pem.cert), private_key: Buffer.from(pem.key) }],
    true,
  );
  entry.port = await new Promise<number>((resolve, reject) =>
    entry.server.bindAsync(`${address}:0`, creds, (err, port) => (err ? reject(err) : resolve(port))),
  );
  servers.push(entry);
  return entry;
}

let good: Awaited<ReturnType<typeof startGrpc>>;
let impostor: Awaited<ReturnType<typeof startGrpc>>;

beforeAll(async () => {
  ca = createTestCa("grpc CA");
  client1 = ca.issue({ cn: "client-1", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
  client2 = ca.issue({ cn: "client-2", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
  dir = mkdtempSync(join(tmpdir(), "meshlink-grpc-tls-"));
  writeFileSync(join(dir, "ca.crt"), ca.cert);
  writeFileSync(join(dir, "tls.crt"), client1.cert);
  writeFileSync(join(dir, "tls.key"), client1.key);
  good = await startGrpc("127.0.90.31", ca.issue({ cn: "api", uris: [API_ID] }));
  impostor = await startGrpc(
    "127.0.90.32",
    ca.issue({ cn: "evil", uris: ["spiffe://cluster.local/ns/default/sa/evil"] }),
  );
});

afterAll(() => {
  for (const s of servers) s.server.forceShutdown();
  ca.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function policy(): TlsPolicy {
  return createTlsPolicy(
    resolveTlsOptions(
      {
        mode: "strict",
        ca: join(dir, "ca.crt"),
        cert: join(dir, "tls.crt"),
        key: join(dir, "tls.key"),
        reload: { debounce: 20, interval: 60_000 },
      },
      {},
      undefined,
      "config",
    ),
  );
}

function who(creds: grpc.ChannelCredentials, to: { port: number }, address: string): Promise<string> {
  const c = new PeerClient(`${address}:${to.port}`, creds, {
    "grpc.ssl_target_name_override": HOST,
    "grpc.use_local_subchannel_pool": 1,
  });
  return new Promise<string>((resolve, reject) => {
    c.makeUnaryRequest(
      service.Who!.path,
      bytes.serialize,
      bytes.deserialize,
      Buffer.alloc(0),
      { deadline: Date.now() + 10_000 },
      (err: grpc.ServiceError | null, value?: Buffer) => (err ? reject(err) : resolve(String(value))),
    );
  }).finally(() => c.close());
}

const targetOf = (address: string, port: number) => ({
  endpoint: createEndpoint({ address, port, cluster: "east", backend: "static" }),
  service: parseServiceName(HOST, port),
  servername: HOST,
});

describe("the TLS policy with grpc-js (integration)", () => {
  it("builds channel credentials from the cached context and identity check", async () => {
    const p = policy();
    try {
      const o = p.connectOptions(targetOf("127.0.90.31", good.port));
      const creds = grpc.credentials.createFromSecureContext(o.secureContext!, {
        checkServerIdentity: o.checkServerIdentity!,
      });
      expect(await who(creds, good, "127.0.90.31")).toBe("client-1");

      const bad = p.connectOptions(targetOf("127.0.90.32", impostor.port));
      const badCreds = grpc.credentials.createFromSecureContext(bad.secureContext!, {
        checkServerIdentity: bad.checkServerIdentity!,
      });
      const err = await who(badCreds, impostor, "127.0.90.32").catch((e: grpc.ServiceError) => e);
      expect((err as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
      expect(impostor.calls).toBe(0);
    } finally {
      p.close();
    }
  });

  it("feeds grpc-js certificate-provider credentials, rotations included", async () => {
    const p = policy();
    try {
      const provider: grpc.experimental.CertificateProvider = grpcCertificateProvider(p.source);
      const expected = p.expectedIdentity(targetOf("127.0.90.31", good.port));
      const creds = grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
        checkServerIdentity: (_host, cert) => p.verifyPeer(expected, cert),
      });
      expect(await who(creds, good, "127.0.90.31")).toBe("client-1");

      const rotated = new Promise((resolve) => p.onRotate(resolve));
      writeFileSync(join(dir, "tls.crt"), client2.cert);
      writeFileSync(join(dir, "tls.key"), client2.key);
      await rotated;
      expect(await who(creds, good, "127.0.90.31")).toBe("client-2");
    } finally {
      p.close();
    }
  });
});

// Mutual TLS with SPIFFE identities, from the environment, with the
// application's plain http:// URLs: strict mode carries them over mTLS, an
// impostor with a certificate from the same CA but another identity is
// refused, and a client certificate rotated on disk (as cert-manager or
// SPIRE would) is used by the next new connection.
//
// Certificates are made here with the openssl command (ECDSA P-256); servers
// listen on loopback.
//
//     npx tsx examples/mtls.ts

import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { createMesh, staticDiscovery } from "../src/index.js";

const dir = mkdtempSync(join(tmpdir(), "meshlink-mtls-example-"));
const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });

/** A key and a certificate signed by the example CA, with a SPIFFE ID. */
function issue(name: string, spiffeId: string): { key: string; cert: string } {
  openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`);
  openssl("req", "-new", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-out", `${name}.csr`);
  writeFileSync(
    join(dir, `${name}.ext`),
    `subjectAltName = URI:${spiffeId}\nextendedKeyUsage = serverAuth, clientAuth\n`,
  );
  openssl(
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "30",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.pem`,
  );
  return {
    key: readFileSync(join(dir, `${name}.key`), "utf8"),
    cert: readFileSync(join(dir, `${name}.pem`), "utf8"),
  };
}

openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key");
openssl(
  "req",
  "-x509",
  "-new",
  "-key",
  "ca.key",
  "-subj",
  "/CN=example mesh CA",
  "-days",
  "30",
  "-out",
  "ca.pem",
);
const ca = readFileSync(join(dir, "ca.pem"), "utf8");

/** An HTTPS server that requires a client certificate from the CA and says whose it saw. */
async function server(name: string, pem: { key: string; cert: string }): Promise<Server> {
  const s = createServer({ ...pem, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    res.end(JSON.stringify({ served_by: name, client: peer.subjectaltname }));
  });
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  return s;
}
const port = (s: Server) => (s.address() as { port: number }).port;

const payments = await server("payments", issue("payments", "spiffe://cluster.local/ns/default/sa/payments"));
const impostor = await server("impostor", issue("impostor", "spiffe://cluster.local/ns/default/sa/impostor"));
const client = issue("client", "spiffe://cluster.local/ns/default/sa/checkout");
writeFileSync(join(dir, "tls.crt"), client.cert);
writeFileSync(join(dir, "tls.key"), client.key);

// What a Deployment would set: the paths of a mounted Secret.
const mesh = createMesh({
  env: {
    MESHLINK_REGION: "us-east-1",
    MESHLINK_TLS_MODE: "strict",
    MESHLINK_TLS_CA: join(dir, "ca.pem"),
    MESHLINK_TLS_CERT: join(dir, "tls.crt"),
    MESHLINK_TLS_KEY: join(dir, "tls.key"),
  },
  tls: { reload: { debounce: 20, interval: 200 } },
  discovery: [
    staticDiscovery({
      services: {
        // The impostor sits in the caller's own region: the router would prefer it.
        "payments.default": [
          { address: "127.0.0.1", port: port(impostor), cluster: "east", region: "us-east-1" },
          { address: "127.0.0.1", port: port(payments), cluster: "west", region: "us-west-2" },
        ],
      },
    }),
  ],
});

const url = "http://payments.default.svc.cluster.local/charge";
const first = await (await mesh.fetch(url)).json();
console.log("plain http:// URL, carried over mTLS:", first);
const [east] = await mesh.resolve("payments.default");
console.log(`impostor refused: ${east!.endpoint.id} ${east!.health.lastFailure}`);

// Rotate the client certificate on disk: key and certificate renamed into place.
const rotated = issue("client2", "spiffe://cluster.local/ns/default/sa/checkout-v2");
writeFileSync(join(dir, "tls.key.tmp"), rotated.key);
renameSync(join(dir, "tls.key.tmp"), join(dir, "tls.key"));
writeFileSync(join(dir, "tls.crt.tmp"), rotated.cert);
renameSync(join(dir, "tls.crt.tmp"), join(dir, "tls.crt"));
while (mesh.describe().tls.version < 2) await new Promise((r) => setTimeout(r, 20));
// The connection kept alive from before still carries the old certificate; the next one is new.
await (await mesh.fetch(url, { headers: { connection: "close" } })).text();
const after = (await (await mesh.fetch(url)).json()) as { client: string };
console.log("after rotation, a new connection presents:", after.client);
for (const c of mesh.describe().tls.certificates)
  console.log(`  ${c.role} ${c.subject} not after ${c.notAfter}`);

await mesh.close();
payments.close();
impostor.close();
rmSync(dir, { recursive: true, force: true });

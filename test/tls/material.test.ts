import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCodes, TlsMaterialError } from "../../src/errors.js";
import {
  buildMaterial,
  DEFAULT_BUNDLE,
  excerpt,
  isPem,
  type MaterialSpecs,
  readTextsSync,
} from "../../src/tls/material.js";
import { createTestCa, ecKey, type Pem, type TestCa } from "../helpers/certs.js";

let ca: TestCa;
let otherCa: TestCa;
let leaf: Pem;
let dir: string;

beforeAll(() => {
  ca = createTestCa("material CA");
  otherCa = createTestCa("other trust domain CA");
  leaf = ca.issue({
    cn: "client",
    uris: ["spiffe://cluster.local/ns/default/sa/client"],
    dns: ["client.default"],
  });
  dir = mkdtempSync(join(tmpdir(), "meshlink-material-"));
});

afterAll(() => {
  ca.dispose();
  otherCa.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function inline(texts: {
  ca?: string;
  cert?: string;
  key?: string;
  clusters?: Record<string, string>;
}): MaterialSpecs {
  return {
    ca: texts.ca === undefined ? undefined : { source: "tls.ca", pem: texts.ca },
    cert: texts.cert === undefined ? undefined : { source: "tls.cert", pem: texts.cert },
    key: texts.key === undefined ? undefined : { source: "tls.key", pem: texts.key },
    clusters: new Map(
      Object.entries(texts.clusters ?? {}).map(([k, v]) => [k, { source: `tls.clusters.${k}.ca`, pem: v }]),
    ),
  };
}

function load(specs: MaterialSpecs) {
  return buildMaterial(specs, readTextsSync(specs), 1);
}

function materialError(fn: () => unknown): TlsMaterialError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TlsMaterialError);
    expect((err as TlsMaterialError).code).toBe(ErrorCodes.TLS_MATERIAL);
    return err as TlsMaterialError;
  }
  throw new Error("expected a TlsMaterialError");
}

/** The base64 body of a PEM private key: what must never appear in an error. */
function keyBody(pem: string): string {
  return pem.split("\n").slice(1, 3).join("\n");
}

describe("buildMaterial", () => {
  it("checks a pair and bundles and builds one context per trust bundle", () => {
    const m = load(inline({ ca: ca.cert, cert: leaf.cert, key: leaf.key, clusters: { west: otherCa.cert } }));
    expect(m.version).toBe(1);
    expect([...m.contexts.keys()]).toEqual([DEFAULT_BUNDLE, "west"]);
    const cert = m.certificates.find((c) => c.role === "cert")!;
    expect(cert.subject).toBe("CN=client");
    expect(cert.uris).toEqual(["spiffe://cluster.local/ns/default/sa/client"]);
    expect(cert.dnsNames).toEqual(["client.default"]);
    expect(Date.parse(cert.notAfter) - Date.now()).toBeGreaterThan(29 * 86_400_000);
    expect(m.certificates.find((c) => c.role === "ca")?.subject).toBe("CN=material CA");
    expect(m.certificates.find((c) => c.role === "cluster-ca")).toMatchObject({
      cluster: "west",
      subject: "CN=other trust domain CA",
    });
  });

  it("reads paths as well as inline PEM and names the path in the source", () => {
    writeFileSync(join(dir, "ca.pem"), ca.cert);
    const m = load({ ca: { source: "MESHLINK_TLS_CA", path: join(dir, "ca.pem") }, clusters: new Map() });
    expect(m.certificates[0]!.source).toBe(`MESHLINK_TLS_CA (${join(dir, "ca.pem")})`);
    expect(m.contexts.has(DEFAULT_BUNDLE)).toBe(true);
  });

  it("refuses a key that does not match the certificate, without showing the key", () => {
    const stray = ecKey();
    const err = materialError(() => load(inline({ ca: ca.cert, cert: leaf.cert, key: stray })));
    expect(err.source).toBe("tls.key");
    expect(err.message).toContain("does not match");
    expect(err.message).not.toContain(keyBody(stray));
    expect(err.message).not.toContain(keyBody(leaf.key));
  });

  it("refuses a truncated PEM file as caught mid-write", () => {
    const half = leaf.cert.slice(0, Math.floor(leaf.cert.length / 2));
    const err = materialError(() => load(inline({ ca: ca.cert, cert: half, key: leaf.key })));
    expect(err.source).toBe("tls.cert");
    expect(err.message).toContain("truncated");
  });

  it("refuses a bundle that holds no certificate or another kind of block", () => {
    expect(materialError(() => load(inline({ ca: "not pem at all" }))).message).toContain(
      "no PEM certificate",
    );
    const err = materialError(() => load(inline({ ca: `${ca.cert}${leaf.key}` })));
    expect(err.message).toContain("PRIVATE KEY");
    expect(err.message).not.toContain(keyBody(leaf.key));
  });

  it("refuses a damaged certificate", () => {
    const body = leaf.cert.split("\n");
    body[3] = body[3]!.replace(/[A-Za-z]/g, "A");
    expect(materialError(() => load(inline({ ca: body.join("\n") }))).message).toContain(
      "not a valid certificate",
    );
  });

  it("refuses a certificate without its key and a key without its certificate", () => {
    expect(materialError(() => load(inline({ ca: ca.cert, cert: leaf.cert }))).message).toContain(
      "private key",
    );
    expect(materialError(() => load(inline({ ca: ca.cert, key: leaf.key }))).message).toContain(
      "certificate",
    );
  });

  it("names the missing file", () => {
    const err = materialError(() =>
      load({ ca: { source: "MESHLINK_TLS_CA", path: join(dir, "missing.pem") }, clusters: new Map() }),
    );
    expect(err.source).toBe(`MESHLINK_TLS_CA (${join(dir, "missing.pem")})`);
    expect(err.message).toContain("ENOENT");
  });

  it("accepts a SEC1 key preceded by an EC PARAMETERS block, as openssl ecparam writes it", () => {
    const params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
    const m = load(inline({ ca: ca.cert, cert: leaf.cert, key: `${params}${leaf.key}` }));
    expect(m.contexts.size).toBe(1);
  });
});

describe("excerpt", () => {
  it("shows a path but only the kind and size of inline PEM", () => {
    expect(excerpt("/etc/tls/tls.key")).toBe("/etc/tls/tls.key");
    expect(excerpt(leaf.key)).toBe(`<inline PEM private key, ${leaf.key.length} bytes>`);
    expect(excerpt(leaf.key)).not.toContain(keyBody(leaf.key));
    expect(isPem(leaf.cert)).toBe(true);
    expect(isPem("/etc/tls/ca.pem")).toBe(false);
  });
});

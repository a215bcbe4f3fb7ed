import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, ErrorCodes, TlsMaterialError } from "../../src/errors.js";
import { resolveTlsOptions, type TlsOptions, tlsOptionsSchema } from "../../src/tls/options.js";
import { createTestCa, ecKey, type Pem, type TestCa } from "../helpers/certs.js";

let ca: TestCa;
let leaf: Pem;
let other: Pem;
let dir: string;
let paths: { ca: string; cert: string; key: string; otherCert: string; otherKey: string };

beforeAll(() => {
  ca = createTestCa("options CA");
  leaf = ca.issue({ cn: "client", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
  other = ca.issue({ cn: "other" });
  dir = mkdtempSync(join(tmpdir(), "meshlink-tls-options-"));
  paths = {
    ca: join(dir, "ca.pem"),
    cert: join(dir, "tls.crt"),
    key: join(dir, "tls.key"),
    otherCert: join(dir, "other.crt"),
    otherKey: join(dir, "other.key"),
  };
  writeFileSync(paths.ca, ca.cert);
  writeFileSync(paths.cert, leaf.cert);
  writeFileSync(paths.key, leaf.key);
  writeFileSync(paths.otherCert, other.cert);
  writeFileSync(paths.otherKey, other.key);
});

afterAll(() => {
  ca.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const FILE = "/etc/meshlink/config.yaml";

function envOf(p = paths, mode?: string) {
  return {
    MESHLINK_TLS_CA: p.ca,
    MESHLINK_TLS_CERT: p.cert,
    MESHLINK_TLS_KEY: p.key,
    MESHLINK_TLS_MODE: mode,
  };
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

function keyBody(pem: string): string {
  return pem.split("\n").slice(1, 3).join("\n");
}

describe("resolveTlsOptions", () => {
  it("defaults to disable when no material is configured anywhere", () => {
    const r = resolveTlsOptions(undefined, {}, undefined, FILE);
    expect(r).toMatchObject({ mode: "disable", modeSource: "default", material: undefined });
    expect(r.identity).toEqual({
      match: "spiffe",
      trustDomain: "cluster.local",
      template: "spiffe://{trustDomain}/ns/{namespace}/sa/{service}",
    });
    expect(r.reload).toEqual({ debounce: 200, interval: 10_000 });
  });

  it("defaults to permissive when material is configured, and reads and checks it", () => {
    const r = resolveTlsOptions(undefined, envOf(), undefined, FILE);
    expect(r.mode).toBe("permissive");
    expect(r.material?.version).toBe(1);
    expect(r.specs.cert).toEqual({ source: "MESHLINK_TLS_CERT", path: paths.cert });
    expect(r.material?.certificates.map((c) => c.role)).toEqual(["cert", "ca"]);
  });

  it("takes the explicit option over the environment over the file, field by field", () => {
    const r = resolveTlsOptions(
      { mode: "strict", cert: paths.otherCert, key: paths.otherKey },
      { MESHLINK_TLS_MODE: "permissive", MESHLINK_TLS_CERT: paths.cert, MESHLINK_TLS_KEY: paths.key },
      { mode: "disable", ca: paths.ca, cert: "/nowhere.crt" },
      FILE,
    );
    expect(r.mode).toBe("strict");
    expect(r.modeSource).toBe("tls.mode");
    expect(r.specs.ca?.source).toBe(`${FILE}: tls.ca`);
    expect(r.specs.cert?.source).toBe("tls.cert");
    expect(r.material?.certificates[0]?.subject).toBe("CN=other");

    const fromEnv = resolveTlsOptions(undefined, envOf(paths, "STRICT"), { mode: "disable" }, FILE);
    expect(fromEnv.mode).toBe("strict");
    expect(fromEnv.modeSource).toBe("MESHLINK_TLS_MODE");
    const fromFile = resolveTlsOptions(
      undefined,
      { MESHLINK_TLS_CA: paths.ca },
      { mode: "strict", cert: paths.cert, key: paths.key },
      FILE,
    );
    expect(fromFile.modeSource).toBe(`${FILE}: tls.mode`);
    expect(fromFile.specs.ca?.source).toBe("MESHLINK_TLS_CA");
  });

  it("takes PEM text as well as paths", () => {
    const r = resolveTlsOptions(
      { mode: "strict", ca: ca.cert, cert: leaf.cert, key: leaf.key },
      {},
      undefined,
      FILE,
    );
    expect(r.specs.key).toEqual({ source: "tls.key", pem: leaf.key });
    expect(r.material?.contexts.size).toBe(1);
  });

  it("fails on a bad MESHLINK_TLS_MODE, naming the variable and the value", () => {
    const err = configError(() => resolveTlsOptions(undefined, envOf(paths, "mutual"), undefined, FILE));
    expect(err.source).toBe("MESHLINK_TLS_MODE");
    expect(err.value).toBe("mutual");
    expect(configError(() => resolveTlsOptions({ mode: "on" as "strict" }, {}, undefined, FILE)).source).toBe(
      "tls.mode",
    );
    expect(configError(() => resolveTlsOptions(undefined, {}, { mode: "STRICT" }, FILE)).source).toBe(
      `${FILE}: tls.mode`,
    );
  });

  it("refuses strict mode without a certificate and key, and mesh TLS without a CA bundle", () => {
    const strict = configError(() =>
      resolveTlsOptions(
        undefined,
        { MESHLINK_TLS_MODE: "strict", MESHLINK_TLS_CA: paths.ca },
        undefined,
        FILE,
      ),
    );
    expect(strict.source).toBe("MESHLINK_TLS_MODE");
    expect(strict.message).toContain("client certificate");
    const noCa = configError(() => resolveTlsOptions({ mode: "permissive" }, {}, undefined, FILE));
    expect(noCa.message).toContain("CA bundle");
  });

  it("refuses a certificate without its key, naming where the certificate came from", () => {
    const err = configError(() =>
      resolveTlsOptions(
        undefined,
        { MESHLINK_TLS_CA: paths.ca, MESHLINK_TLS_CERT: paths.cert },
        undefined,
        FILE,
      ),
    );
    expect(err.source).toBe("MESHLINK_TLS_CERT");
    expect(err.value).toBe(paths.cert);
  });

  it("names the variable and the path of unreadable material", () => {
    const err = configError(() =>
      resolveTlsOptions(undefined, envOf({ ...paths, cert: join(dir, "gone.crt") }), undefined, FILE),
    );
    expect(err.source).toBe("MESHLINK_TLS_CERT");
    expect(err.value).toBe(join(dir, "gone.crt"));
    expect(err.cause).toBeInstanceOf(TlsMaterialError);
  });

  it("never shows inline key material in an error", () => {
    const stray = ecKey();
    const mismatch = configError(() =>
      resolveTlsOptions({ mode: "strict", ca: ca.cert, cert: leaf.cert, key: stray }, {}, undefined, FILE),
    );
    expect(mismatch.source).toBe("tls.key");
    // A value under a secret-named key is redacted in every ConfigError.
    expect(mismatch.value).toBe("[redacted]");
    expect(mismatch.message).not.toContain(keyBody(stray));
    const unknownKey = configError(() =>
      resolveTlsOptions({ key: stray, cert: leaf.cert, keyPassword: "x" } as TlsOptions, {}, undefined, FILE),
    );
    expect(unknownKey.message).toContain("keyPassword");
    expect(unknownKey.message).not.toContain(keyBody(stray));
    const badType = configError(() => resolveTlsOptions(undefined, {}, { key: stray, ca: 42 }, FILE));
    expect(badType.source).toBe(`${FILE}: tls.ca`);
    expect(badType.message).not.toContain(keyBody(stray));
  });

  it("does not read material in disable mode", () => {
    const r = resolveTlsOptions(
      undefined,
      envOf({ ...paths, cert: "/nowhere.crt" }, "disable"),
      undefined,
      FILE,
    );
    expect(r.mode).toBe("disable");
    expect(r.material).toBeUndefined();
  });

  it("reads cluster bundles and trust domains, and merges identity settings over the file's", () => {
    const r = resolveTlsOptions(
      { identity: { trustDomain: "east.example" } },
      envOf(),
      {
        clusters: { west: { ca: paths.ca, trustDomain: "west.example" } },
        identity: { match: "spiffe", template: "spiffe://{trustDomain}/{service}" },
      },
      FILE,
    );
    expect(r.identity).toEqual({
      match: "spiffe",
      trustDomain: "east.example",
      template: "spiffe://{trustDomain}/{service}",
    });
    expect(r.clusterTrustDomains.get("west")).toBe("west.example");
    expect(r.specs.clusters.get("west")?.source).toBe(`${FILE}: tls.clusters.west.ca`);
    expect([...r.material!.contexts.keys()]).toEqual(["", "west"]);
  });

  it("defaults the template to the host name in dns mode and checks templates", () => {
    expect(resolveTlsOptions({ identity: { match: "dns" } }, {}, undefined, FILE).identity.template).toBe(
      "{host}",
    );
    const err = configError(() =>
      resolveTlsOptions({ identity: { template: "spiffe://{domain}/x" } }, {}, undefined, FILE),
    );
    expect(err.source).toBe("tls.identity.template");
  });

  it("turns reloading off or tunes it", () => {
    expect(resolveTlsOptions({ reload: false }, {}, undefined, FILE).reload).toBe(false);
    expect(resolveTlsOptions(undefined, {}, { reload: { interval: 500 } }, FILE).reload).toEqual({
      debounce: 200,
      interval: 500,
    });
    expect(
      configError(() => resolveTlsOptions({ reload: { interval: 5 } }, {}, undefined, FILE)).source,
    ).toBe("tls.reload.interval");
  });
});

describe("tlsOptionsSchema", () => {
  it("accepts the documented shape and refuses unknown keys", () => {
    expect(
      tlsOptionsSchema.safeParse({
        mode: "strict",
        ca: "/ca.pem",
        cert: "/tls.crt",
        key: "/tls.key",
        clusters: { west: { ca: "/west.pem", trustDomain: "west.local" } },
        identity: {
          template: "spiffe://{trustDomain}/ns/{namespace}/sa/{service}",
          trustDomain: "cluster.local",
          match: "spiffe",
        },
        expiryWarning: 3_600_000,
        reload: { debounce: 100, interval: 5000 },
      }).success,
    ).toBe(true);
    expect(tlsOptionsSchema.safeParse({ mode: "mutual" }).success).toBe(false);
    expect(tlsOptionsSchema.safeParse({ clusters: { west: { bundle: "/x" } } }).success).toBe(false);
    expect(tlsOptionsSchema.safeParse({ identity: { trustDomain: "Bad Domain" } }).success).toBe(false);
  });
});

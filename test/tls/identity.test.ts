import type { PeerCertificate } from "node:tls";
import { describe, expect, it } from "vitest";
import { ConfigError, ErrorCodes, TlsIdentityError } from "../../src/errors.js";
import {
  compileIdentityTemplate,
  DEFAULT_SPIFFE_TEMPLATE,
  identityChecker,
  parseSubjectAltName,
  verifyIdentity,
} from "../../src/tls/identity.js";

/** The parts of a peer certificate the checks read. */
function peer(subjectaltname: string | undefined, cn = "server"): PeerCertificate {
  return { subject: { CN: cn }, subjectaltname } as unknown as PeerCertificate;
}

const vars = {
  trustDomain: "cluster.local",
  namespace: "default",
  service: "api",
  cluster: "east",
  datacenter: "dc1",
  host: "api.default.svc.cluster.local",
};

describe("parseSubjectAltName", () => {
  it("splits Node's SAN text by kind", () => {
    expect(
      parseSubjectAltName(
        "DNS:api.default, URI:spiffe://cluster.local/ns/default/sa/api, IP Address:10.0.0.1",
      ),
    ).toEqual({
      dns: ["api.default"],
      uris: ["spiffe://cluster.local/ns/default/sa/api"],
      ips: ["10.0.0.1"],
    });
    expect(parseSubjectAltName("")).toEqual({ dns: [], uris: [], ips: [] });
  });

  it("reads JSON-quoted values whole, so that a crafted value cannot add an entry", () => {
    const san = 'URI:"spiffe://evil/x, URI:spiffe://cluster.local/ns/default/sa/api", DNS:ok';
    const parsed = parseSubjectAltName(san);
    expect(parsed.uris).toEqual(["spiffe://evil/x, URI:spiffe://cluster.local/ns/default/sa/api"]);
    expect(parsed.dns).toEqual(["ok"]);
  });
});

describe("compileIdentityTemplate", () => {
  it("fills the default SPIFFE template", () => {
    expect(compileIdentityTemplate(DEFAULT_SPIFFE_TEMPLATE, "spiffe", "t")(vars)).toBe(
      "spiffe://cluster.local/ns/default/sa/api",
    );
    expect(
      compileIdentityTemplate(
        "spiffe://{trustDomain}/ns/{namespace}/dc/{datacenter}/svc/{service}",
        "spiffe",
        "t",
      )(vars),
    ).toBe("spiffe://cluster.local/ns/default/dc/dc1/svc/api");
    expect(compileIdentityTemplate("{host}", "dns", "t")(vars)).toBe("api.default.svc.cluster.local");
    expect(compileIdentityTemplate("{service}.{namespace}.svc", "dns", "t")(vars)).toBe("api.default.svc");
  });

  it("refuses unknown placeholders, stray braces and non-SPIFFE templates in spiffe mode", () => {
    const cases: [string, "spiffe" | "dns", string][] = [
      ["spiffe://{trustdomain}/sa/{service}", "spiffe", "unknown placeholder {trustdomain}"],
      ["spiffe://{trustDomain/sa", "spiffe", "unbalanced"],
      ["spiffe://x}/sa", "spiffe", "unbalanced"],
      ["spiffe://{{service}}", "spiffe", "unbalanced"],
      ["{service}.{namespace}", "spiffe", "spiffe://"],
    ];
    for (const [template, match, problem] of cases) {
      try {
        compileIdentityTemplate(template, match, "tls.identity.template");
        throw new Error(`accepted ${template}`);
      } catch (err) {
        expect(err, template).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).source).toBe("tls.identity.template");
        expect((err as ConfigError).message).toContain(problem);
      }
    }
  });
});

describe("verifyIdentity", () => {
  const expected = "spiffe://cluster.local/ns/default/sa/api";

  it("accepts a certificate whose URI SAN is the expected SPIFFE ID", () => {
    expect(verifyIdentity(expected, peer(`URI:${expected}`), "spiffe")).toBeUndefined();
    expect(
      verifyIdentity(expected, peer(`DNS:api, URI:spiffe://other/x, URI:${expected}`), "spiffe"),
    ).toBeUndefined();
  });

  it("names the expected and the presented identity on a mismatch", () => {
    const err = verifyIdentity(
      expected,
      peer("URI:spiffe://cluster.local/ns/default/sa/impostor, DNS:api"),
      "spiffe",
    );
    expect(err).toBeInstanceOf(TlsIdentityError);
    expect(err).toMatchObject({
      code: ErrorCodes.TLS_IDENTITY,
      expected,
      presented: ["spiffe://cluster.local/ns/default/sa/impostor"],
    });
  });

  it("compares exactly: no prefix, case or trailing-slash match", () => {
    for (const uri of [
      `${expected}/`,
      expected.toUpperCase(),
      "spiffe://cluster.local/ns/default/sa/api-v2",
    ]) {
      expect(verifyIdentity(expected, peer(`URI:${uri}`), "spiffe"), uri).toBeInstanceOf(TlsIdentityError);
    }
    expect(verifyIdentity(expected, peer(undefined), "spiffe")?.presented).toEqual([]);
    expect(verifyIdentity(expected, undefined, "spiffe")?.presented).toEqual([]);
  });

  it("matches DNS SANs with Node's rules in dns mode", () => {
    expect(verifyIdentity("api.default.svc", peer("DNS:*.default.svc"), "dns")).toBeUndefined();
    expect(verifyIdentity("api.default.svc", peer("DNS:api.default.svc"), "dns")).toBeUndefined();
    const err = verifyIdentity("api.default.svc", peer("DNS:web.default.svc, IP Address:10.0.0.1"), "dns");
    expect(err).toMatchObject({ expected: "api.default.svc", presented: ["web.default.svc", "10.0.0.1"] });
    // A SPIFFE ID alone does not satisfy a DNS expectation.
    expect(verifyIdentity("api.default.svc", peer(`URI:${expected}`), "dns")).toBeInstanceOf(
      TlsIdentityError,
    );
  });
});

describe("identityChecker", () => {
  it("ignores the host name it is called with", () => {
    const check = identityChecker("spiffe://cluster.local/ns/default/sa/api", "spiffe");
    expect(check("10.0.0.7", peer("URI:spiffe://cluster.local/ns/default/sa/api"))).toBeUndefined();
    expect(check("api.default", peer("DNS:api.default"))).toBeInstanceOf(TlsIdentityError);
  });
});

import type { PeerCertificate } from "node:tls";
import { createSecureContext } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createEndpoint } from "../../../src/discovery/endpoint.js";
import { parseServiceName } from "../../../src/discovery/names.js";
import { ErrorCodes, isMeshError } from "../../../src/errors.js";
import { type GrpcTlsPolicy, tlsPolicyOf } from "../../../src/transport/grpc/credentials.js";
import { createTestCa, type TestCa } from "../../helpers/certs.js";

const ID = "spiffe://cluster.local/ns/default/sa/echo";
const service = parseServiceName("echo.default", 50051);
const target = (identity?: string) => ({
  endpoint: createEndpoint({
    address: "10.0.0.7",
    port: 50051,
    cluster: "east",
    backend: "static",
    identity,
  }),
  service,
  servername: service.host,
});
const cert = (subjectaltname: string) =>
  ({ subjectaltname, subject: { CN: "x" }, valid_from: "", valid_to: "" }) as unknown as PeerCertificate;

let ca: TestCa;
beforeAll(() => {
  ca = createTestCa("credentials test CA");
});
afterAll(() => ca.dispose());

describe("tlsPolicyOf", () => {
  it("takes a TLS policy as it is", () => {
    const policy: GrpcTlsPolicy = { mode: "permissive", wantsTls: () => false, connectOptions: () => ({}) };
    expect(tlsPolicyOf(policy)).toBe(policy);
  });

  it("asks a provider for the context of the endpoint's cluster at each connection", () => {
    const context = createSecureContext({ ca: ca.cert });
    const asked: (string | undefined)[] = [];
    const policy = tlsPolicyOf({
      secureContext(cluster) {
        asked.push(cluster);
        return context;
      },
    });
    expect(policy.mode).toBe("strict");
    expect(policy.wantsTls(target().endpoint, "http:")).toBe(true);
    expect(policy.connectOptions(target()).secureContext).toBe(context);
    policy.connectOptions(target());
    expect(asked).toEqual(["east", "east"]);
    expect(policy.connectOptions(target()).servername).toBe("echo.default");
  });

  it("accepts the server whose URI SAN is the endpoint's expected identity, and no other", () => {
    const policy = tlsPolicyOf({ ca: ca.cert });
    const check = policy.connectOptions(target(ID)).checkServerIdentity!;
    expect(check("ignored", cert(`URI:${ID}, DNS:echo.default`))).toBeUndefined();
    const err = check("ignored", cert("URI:spiffe://cluster.local/ns/default/sa/evil"));
    expect(err).toMatchObject({ code: ErrorCodes.TLS_IDENTITY, expected: ID });
  });

  it("checks the service's host name when discovery gave no identity", () => {
    const check = tlsPolicyOf({ ca: ca.cert }).connectOptions(target()).checkServerIdentity!;
    expect(check("ignored", cert("DNS:echo.default"))).toBeUndefined();
    expect(check("ignored", cert("DNS:other.default"))).toBeInstanceOf(Error);
  });

  it("refuses PEM that makes no context, without showing the key", () => {
    const pem = ca.issue({ cn: "client" });
    try {
      tlsPolicyOf({
        ca: ca.cert,
        cert: pem.cert,
        key: "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----",
      });
      expect.unreachable();
    } catch (err) {
      expect(isMeshError(err, ErrorCodes.CONFIG)).toBe(true);
      expect((err as Error).message).not.toContain("not a key");
    }
  });

  it("refuses what is neither a policy, a provider nor PEM material", () => {
    expect(() => tlsPolicyOf({} as never)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });
});

import type { PeerCertificate } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createEndpoint, type EndpointInit } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { ErrorCodes, TlsIdentityError } from "../../src/errors.js";
import { resolveTlsOptions, type TlsOptions } from "../../src/tls/options.js";
import { createTlsPolicy } from "../../src/tls/policy.js";
import type { ExpiryEvent, TlsPolicy } from "../../src/tls/tls.js";
import { createTestCa, type Pem, type TestCa } from "../helpers/certs.js";

let ca: TestCa;
let westCa: TestCa;
let leaf: Pem;
const policies: TlsPolicy[] = [];

beforeAll(() => {
  ca = createTestCa("policy CA");
  westCa = createTestCa("west CA");
  leaf = ca.issue({ cn: "client", uris: ["spiffe://cluster.local/ns/default/sa/client"] });
});

afterAll(() => {
  ca.dispose();
  westCa.dispose();
});

afterEach(() => {
  for (const p of policies.splice(0)) p.close();
  vi.useRealTimers();
});

function policy(options: TlsOptions = {}): TlsPolicy {
  const p = createTlsPolicy(
    resolveTlsOptions({ ca: ca.cert, cert: leaf.cert, key: leaf.key, ...options }, {}, undefined, "config"),
  );
  policies.push(p);
  return p;
}

function endpoint(init: Partial<EndpointInit> = {}) {
  return createEndpoint({ address: "10.0.1.7", port: 8443, cluster: "east", backend: "static", ...init });
}

const api = parseServiceName("api.default.svc.cluster.local", 8443);
const target = (init: Partial<EndpointInit> = {}, servername = "api.default.svc.cluster.local") => ({
  endpoint: endpoint(init),
  service: api,
  servername,
});

function peer(subjectaltname: string): PeerCertificate {
  return { subject: { CN: "x" }, subjectaltname } as unknown as PeerCertificate;
}

describe("createTlsPolicy", () => {
  it("decides TLS per mode: strict always, permissive for https and marked endpoints, disable for https only", () => {
    const plain = endpoint();
    const marked = endpoint({ identity: "spiffe://cluster.local/ns/default/sa/api" });
    const strict = policy({ mode: "strict" });
    const permissive = policy({ mode: "permissive" });
    const disable = policy({ mode: "disable" });
    expect([strict.wantsTls(plain, "http:"), strict.wantsTls(plain, "https:")]).toEqual([true, true]);
    expect([permissive.wantsTls(plain, "http:"), permissive.wantsTls(plain, "https:")]).toEqual([
      false,
      true,
    ]);
    expect(permissive.wantsTls(marked, "http:")).toBe(true);
    expect([disable.wantsTls(marked, "http:"), disable.wantsTls(plain, "https")]).toEqual([false, true]);
  });

  it("expects the endpoint's own identity, else the template's", () => {
    const p = policy({ clusters: { west: { ca: westCa.cert, trustDomain: "west.example" } } });
    expect(p.expectedIdentity(target())).toBe("spiffe://cluster.local/ns/default/sa/api");
    expect(p.expectedIdentity(target({ identity: "spiffe://cluster.local/ns/default/sa/api-v2" }))).toBe(
      "spiffe://cluster.local/ns/default/sa/api-v2",
    );
    expect(p.expectedIdentity(target({ cluster: "west" }))).toBe("spiffe://west.example/ns/default/sa/api");
    const consul = {
      endpoint: endpoint({ cluster: "dc-east" }),
      service: parseServiceName("web.service.consul", 80),
      servername: "web.service.consul",
    };
    expect(p.expectedIdentity(consul)).toBe("spiffe://cluster.local/ns/default/sa/web");
    const consulTemplate = policy({
      identity: { template: "spiffe://{trustDomain}/ns/{namespace}/dc/{datacenter}/svc/{service}" },
    });
    expect(consulTemplate.expectedIdentity(consul)).toBe(
      "spiffe://cluster.local/ns/default/dc/dc-east/svc/web",
    );
    expect(policy({ identity: { match: "dns" } }).expectedIdentity(target())).toBe(
      "api.default.svc.cluster.local",
    );
  });

  it("returns one frozen options object per trust bundle, identity and server name", () => {
    const p = policy({ mode: "strict", clusters: { west: { ca: westCa.cert } } });
    const a = p.connectOptions(target());
    expect(p.connectOptions(target({ address: "10.0.1.8" }))).toBe(a);
    expect(Object.isFrozen(a)).toBe(true);
    expect(a).toMatchObject({ rejectUnauthorized: true, servername: "api.default.svc.cluster.local" });
    expect(a.expectedIdentity).toBe("spiffe://cluster.local/ns/default/sa/api");
    const west = p.connectOptions(target({ cluster: "west" }));
    expect(west).not.toBe(a);
    expect(west.secureContext).not.toBe(a.secureContext);
    const other = p.connectOptions(target({ identity: "spiffe://cluster.local/ns/default/sa/other" }));
    expect(other.secureContext).toBe(a.secureContext);
    expect(other.sessionKey).not.toBe(a.sessionKey);
    // A cluster without a bundle of its own uses the default one.
    expect(p.connectOptions(target({ cluster: "south" })).secureContext).toBe(a.secureContext);
  });

  it("sends no IP address as the server name", () => {
    const o = policy({ mode: "strict" }).connectOptions(target({}, "10.0.1.7"));
    expect(o.servername).toBeUndefined();
  });

  it("checks the peer against the expected identity in the options it returns", () => {
    const o = policy().connectOptions(target());
    expect(
      o.checkServerIdentity!("ignored", peer("URI:spiffe://cluster.local/ns/default/sa/api")),
    ).toBeUndefined();
    const err = o.checkServerIdentity!("ignored", peer("URI:spiffe://cluster.local/ns/default/sa/evil"));
    expect(err).toBeInstanceOf(TlsIdentityError);
    expect(err).toMatchObject({
      code: ErrorCodes.TLS_IDENTITY,
      expected: "spiffe://cluster.local/ns/default/sa/api",
      presented: ["spiffe://cluster.local/ns/default/sa/evil"],
    });
    expect(policy().verifyPeer("spiffe://a/b", peer("URI:spiffe://a/b"))).toBeUndefined();
  });

  it("gives plain options without material or identity check in disable mode", () => {
    const p = createTlsPolicy(resolveTlsOptions(undefined, {}, undefined, "config"));
    policies.push(p);
    const o = p.connectOptions(target());
    expect(o.secureContext).toBeUndefined();
    expect(o.checkServerIdentity).toBeUndefined();
    expect(o.expectedIdentity).toBeUndefined();
    expect(o.servername).toBe("api.default.svc.cluster.local");
    expect(p.version).toBe(0);
  });

  it("describes certificates with their not-after and never the key", () => {
    const p = policy({ mode: "strict" });
    const d = p.describe();
    expect(d).toMatchObject({ mode: "strict", version: 1, stale: false, lastError: undefined, files: [] });
    expect(d.certificates.map((c) => [c.role, c.subject])).toEqual([
      ["cert", "CN=client"],
      ["ca", "CN=policy CA"],
    ]);
    expect(Number.isNaN(Date.parse(d.certificates[0]!.notAfter))).toBe(false);
    const json = JSON.stringify(d);
    expect(json).not.toContain("PRIVATE KEY");
    expect(json).not.toContain(leaf.key.split("\n")[1]!);
  });
});

describe("TlsPolicy.onExpiring", () => {
  it("tells a listener at once of a certificate already inside its warning window", async () => {
    const p = policy({ expiryWarning: 40 * 86_400_000 });
    const event = await new Promise<ExpiryEvent>((resolve) => p.onExpiring(resolve));
    // The 30-day leaf is inside a 40-day window; the 10-year CA is not.
    expect(event.certificate.role).toBe("cert");
    expect(event.remainingMs).toBeGreaterThan(29 * 86_400_000);
    expect(event.remainingMs).toBeLessThanOrEqual(30 * 86_400_000);
  });

  it("fires once when a certificate enters its window, and not before", () => {
    vi.useFakeTimers();
    const p = policy({ expiryWarning: 86_400_000 });
    const events: ExpiryEvent[] = [];
    p.onExpiring((e) => events.push(e));
    vi.advanceTimersByTime(28 * 86_400_000);
    expect(events).toEqual([]);
    vi.advanceTimersByTime(2 * 86_400_000 - 60_000);
    expect(events.map((e) => e.certificate.role)).toEqual(["cert"]);
    expect(events[0]!.remainingMs).toBeLessThanOrEqual(86_400_000);
    vi.advanceTimersByTime(86_400_000);
    expect(events).toHaveLength(1);
  });

  it("warns by default when a fifth of the lifetime is left", () => {
    vi.useFakeTimers();
    const p = policy({ mode: "strict" });
    const events: ExpiryEvent[] = [];
    p.onExpiring((e) => events.push(e));
    vi.advanceTimersByTime(23 * 86_400_000);
    expect(events).toEqual([]);
    vi.advanceTimersByTime(1 * 86_400_000 + 60_000); // a 30-day certificate: 6 days left
    expect(events.map((e) => e.certificate.role)).toEqual(["cert"]);
  });

  it("stops its timers on close", () => {
    vi.useFakeTimers();
    const p = policy({ expiryWarning: 86_400_000 });
    expect(vi.getTimerCount()).toBe(1);
    p.close();
    p.close();
    expect(vi.getTimerCount()).toBe(0);
  });
});

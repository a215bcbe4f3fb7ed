import { describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry } from "../../src/discovery/registry.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { ConfigError, ErrorCodes } from "../../src/errors.js";

const services = {
  "api.default": [
    {
      address: "10.0.1.7",
      port: 8080,
      cluster: "cluster-east",
      region: "us-east-1",
      zone: "us-east-1a",
      weight: 3,
    },
    { address: "10.0.9.9", port: 8080, cluster: "cluster-dr", region: "us-east-1", backup: true },
  ],
};

describe("staticDiscovery", () => {
  it("serves its endpoints with locality, weight and backup flag under the canonical name", async () => {
    const registry = new Registry([staticDiscovery({ services })]);
    const snapshot = await registry.watch(parseServiceName("api.default.svc.cluster.local", 80)).settled();
    expect(snapshot.state).toBe("bound");
    const [a, b] = snapshot.endpoints;
    expect(a).toMatchObject({
      id: "cluster-east/10.0.1.7:8080",
      port: 8080,
      weight: 3,
      backup: false,
      ready: true,
      backend: "static",
      locality: { region: "us-east-1", zone: "us-east-1a", subzone: "" },
    });
    expect(b).toMatchObject({ backup: true, weight: 1 });
    await registry.close();
  });

  it("says not-found for a service it does not list", async () => {
    const registry = new Registry([staticDiscovery({ services })]);
    const snapshot = await registry.watch(parseServiceName("other.default")).settled();
    expect(snapshot.state).toBe("not-found");
    await registry.close();
  });

  it("claims only the names it lists", () => {
    const backend = staticDiscovery({ services });
    expect(backend.claims?.(parseServiceName("api.default"))).toBe(true);
    expect(backend.claims?.(parseServiceName("example.com"))).toBe(false);
  });

  it("pushes a replaced endpoint list to watchers", async () => {
    const backend = staticDiscovery({ services });
    const registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("api.default"));
    await watch.settled();
    const updated = new Promise((resolve) => watch.onUpdate(resolve));
    backend.update({ "api.default": [{ address: "10.0.2.2", port: 9090, cluster: "cluster-west" }] });
    await updated;
    expect(watch.snapshot.endpoints.map((e) => e.id)).toEqual(["cluster-west/10.0.2.2:9090"]);
    await registry.close();
  });

  it("keeps the endpoint object of every entry that an update leaves unchanged", async () => {
    const list = [
      { address: "10.0.1.1", port: 8080, cluster: "east", region: "us-east-1", zone: "us-east-1a" },
      { address: "10.0.1.2", port: 8080, cluster: "east", region: "us-east-1", weight: 2 },
      {
        address: "10.0.1.3",
        port: 8080,
        cluster: "east",
        identity: "spiffe://cluster.local/ns/default/sa/api",
      },
    ];
    const backend = staticDiscovery({ services: { "api.default": list } });
    const registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("api.default"));
    const [a, b, c] = (await watch.settled()).endpoints;
    const updated = new Promise((resolve) => watch.onUpdate(resolve));
    backend.update({ "api.default": [list[0]!, { ...list[1]!, weight: 3 }, list[2]!] });
    await updated;
    const [a2, b2, c2] = watch.snapshot.endpoints;
    expect(a2).toBe(a);
    expect(c2).toBe(c);
    expect(b2).not.toBe(b);
    expect(b2).toMatchObject({ id: b!.id, weight: 3 });
    // A kept endpoint is exactly what a fresh build would make.
    expect(a2).toEqual(createEndpoint({ ...list[0]!, backend: "static" }));
    expect(c2).toEqual(createEndpoint({ ...list[2]!, backend: "static" }));
    await registry.close();
  });

  it("keeps the endpoint objects of a reordered list, each for one entry only", async () => {
    const list = [1, 2, 3].map((i) => ({ address: `10.0.2.${i}`, port: 80, cluster: "east" }));
    const backend = staticDiscovery({ services: { "api.default": list } });
    const registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("api.default"));
    const before = (await watch.settled()).endpoints;
    let updated = new Promise((resolve) => watch.onUpdate(resolve));
    backend.update({ "api.default": [list[2]!, list[1]!, list[0]!, list[1]!] });
    await updated;
    const after = watch.snapshot.endpoints;
    for (let i = 0; i < 3; i++) expect(after[i]).toBe(before[2 - i]);
    // The repeated entry is merged into the first: one endpoint per address and port.
    expect(after).toHaveLength(3);
    // A changed entry is never matched with the endpoint it replaced.
    updated = new Promise((resolve) => watch.onUpdate(resolve));
    backend.update({ "api.default": [{ ...list[0]!, ready: false }] });
    await updated;
    expect(watch.snapshot.endpoints[0]).toMatchObject({ id: before[0]!.id, ready: false, serving: false });
    await registry.close();
  });

  it("delivers an update that changes nothing with the same endpoint set", async () => {
    const backend = staticDiscovery({ services });
    const registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("api.default"));
    const before = await watch.settled();
    const updated = new Promise((resolve) => watch.onUpdate(resolve));
    backend.update({ "api.default": services["api.default"].map((e) => ({ ...e })) });
    await updated;
    expect(watch.snapshot.version).toBeGreaterThan(before.version);
    expect(watch.snapshot.endpoints).toBe(before.endpoints);
    await registry.close();
  });

  it.each([
    [
      { services: { "api.default": [{ address: "", port: 80, cluster: "c" }] } },
      'services["api.default"][0].address',
    ],
    [
      { services: { "api.default": [{ address: "10.0.0.1", port: 0, cluster: "c" }] } },
      'services["api.default"][0].port',
    ],
    [
      { services: { "api.default": [{ address: "10.0.0.1", port: 80 }] } },
      'services["api.default"][0].cluster',
    ],
    [{ services: { "not a name": [] } }, 'services["not a name"]'],
  ])("rejects malformed options with a ConfigError naming the option (%#)", (options, source) => {
    let err: unknown;
    try {
      staticDiscovery(options as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    expect((err as ConfigError).source).toBe(source);
  });

  it.each([
    "999.1.1.1",
    "10.0.0.1:8080",
    "/var/run/x.sock",
    "http://x",
    "",
    " ",
    "10.0.0.1 ",
    "my host",
    "[fd00::1]",
  ])("rejects the address %j with a ConfigError naming the field and the value", (address) => {
    let err: unknown;
    try {
      staticDiscovery({ services: { "my-service.default": [{ address, port: 80, cluster: "c" }] } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    expect((err as ConfigError).source).toBe('services["my-service.default"][0].address');
    expect((err as ConfigError).value).toBe(address);
  });

  it("accepts IPv4 and IPv6 addresses and host names", async () => {
    const addresses = ["10.0.0.1", "fd00::1", "localhost", "api.internal.example.", "xn--bcher-kva.example"];
    const backend = staticDiscovery({
      services: { "api.default": addresses.map((address) => ({ address, port: 80, cluster: "c" })) },
    });
    const registry = new Registry([backend]);
    const snapshot = await registry.watch(parseServiceName("api.default")).settled();
    expect(snapshot.endpoints.map((e) => e.address)).toEqual(addresses);
    await registry.close();
  });

  it("rejects an address given to update() with a ConfigError naming it", () => {
    const backend = staticDiscovery({ services });
    let err: unknown;
    try {
      backend.update({ "api.default": [{ address: "10.0.0.1:80", port: 80, cluster: "c" }] });
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    expect((err as ConfigError).source).toBe('update["api.default"][0].address');
  });

  it("names an unknown endpoint field and the field it most likely means", () => {
    let err: unknown;
    try {
      staticDiscovery({
        services: { "api.default": [{ adress: "10.0.0.1", address: "10.0.0.1", port: 80, cluster: "c" }] },
      } as never);
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    expect((err as ConfigError).source).toBe('services["api.default"][0].adress');
    expect((err as ConfigError).message).toContain('did you mean "address"?');
  });

  it("merges entries of one address and port into one endpoint: first entry's fields, greatest weight", async () => {
    const backend = staticDiscovery({
      services: {
        "api.default": [
          { address: "10.0.0.1", port: 80, cluster: "east", region: "us-east-1", weight: 2 },
          { address: "10.0.0.2", port: 80, cluster: "east" },
          { address: "10.0.0.1", port: 80, cluster: "west", region: "us-west-2", weight: 5 },
          { address: "10.0.0.1", port: 81, cluster: "east" },
          { address: "10.0.0.2", port: 80, cluster: "east" },
          { address: "fd00::1", port: 80, cluster: "east" },
          { address: "FD00:0::1", port: 80, cluster: "east", weight: 3 },
          { address: "API.example.", port: 80, cluster: "east" },
          { address: "api.example", port: 80, cluster: "east" },
        ],
      },
    });
    const registry = new Registry([backend]);
    const snapshot = await registry.watch(parseServiceName("api.default")).settled();
    expect(snapshot.endpoints.map((e) => [e.id, e.weight, e.locality.region])).toEqual([
      ["east/10.0.0.1:80", 5, "us-east-1"],
      ["east/10.0.0.2:80", 1, ""],
      ["east/10.0.0.1:81", 1, ""],
      ["east/[fd00::1]:80", 3, ""],
      ["east/API.example.:80", 1, ""],
    ]);
    await registry.close();
  });

  it("merges duplicates given to update()", async () => {
    const backend = staticDiscovery({ services });
    const registry = new Registry([backend]);
    const watch = registry.watch(parseServiceName("api.default"));
    await watch.settled();
    const updated = new Promise((resolve) => watch.onUpdate(resolve));
    const entry = { address: "10.0.2.2", port: 9090, cluster: "west" };
    backend.update({ "api.default": [entry, entry] });
    await updated;
    expect(watch.snapshot.endpoints.map((e) => e.id)).toEqual(["west/10.0.2.2:9090"]);
    await registry.close();
  });
});

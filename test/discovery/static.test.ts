import { describe, expect, it } from "vitest";
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
});

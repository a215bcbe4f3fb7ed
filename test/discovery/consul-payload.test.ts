import { describe, expect, it } from "vitest";
import {
  aggregatedStatus,
  bestAddress,
  type ConversionContext,
  parseServiceEntries,
  type ServiceEntry,
  toEndpoints,
} from "../../src/discovery/consul/payload.js";
import type { ResolvedDatacenter } from "../../src/discovery/consul/settings.js";

/** An entry shaped as Consul's health API sends it, with the fields overridden. */
function entry(
  over: { node?: Record<string, unknown>; service?: Record<string, unknown>; checks?: unknown[] } = {},
): Record<string, unknown> {
  return {
    Node: {
      ID: "b1a2c3d4-0000-4000-8000-000000000001",
      Node: "node-1",
      Address: "10.0.0.1",
      Datacenter: "dc1",
      TaggedAddresses: { lan: "10.0.0.1", lan_ipv4: "10.0.0.1", wan: "203.0.113.1", wan_ipv4: "203.0.113.1" },
      Meta: { "consul-network-segment": "" },
      CreateIndex: 5,
      ModifyIndex: 5,
      ...over.node,
    },
    Service: {
      ID: "web-1",
      Service: "web",
      Tags: ["v1"],
      Address: "",
      Meta: {},
      Port: 8080,
      Weights: { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
      Proxy: { Mode: "", MeshGateway: {}, Expose: {} },
      Connect: {},
      CreateIndex: 7,
      ModifyIndex: 7,
      ...over.service,
    },
    Checks: over.checks ?? [
      { Node: "node-1", CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing", ServiceID: "" },
      { Node: "node-1", CheckID: "service:web-1", Name: "web", Status: "passing", ServiceID: "web-1" },
    ],
  };
}

function parsed(...raw: Record<string, unknown>[]): ServiceEntry[] {
  const out = parseServiceEntries(raw);
  if (typeof out === "string") throw new Error(out);
  return out;
}

const DC: ResolvedDatacenter = {
  name: "dc1",
  label: "dc1",
  region: "us-east-1",
  zone: "",
  cluster: "dc1",
  wan: false,
};

function ctx(over: Partial<ConversionContext> = {}): ConversionContext {
  return {
    datacenter: DC,
    passingOnly: true,
    zoneKeys: ["zone"],
    translated: false,
    backend: "consul",
    ...over,
  };
}

const check = (status: string, id = "service:web-1") => ({ CheckID: id, Status: status, ServiceID: "web-1" });

describe("parseServiceEntries", () => {
  it("accepts Consul's ServiceEntry shape, with nulls where Go encodes nil and fields it does not read", () => {
    const raw = entry({
      node: { TaggedAddresses: null, Meta: null, Partition: "default" },
      service: {
        Tags: null,
        Meta: null,
        Weights: null,
        Locality: { Region: "us-east-1", Zone: "us-east-1a" },
      },
    });
    const out = parsed(raw, entry({ checks: null as unknown as unknown[] }));
    expect(out).toHaveLength(2);
    expect(out[0]!.Service.Locality?.Zone).toBe("us-east-1a");
  });

  it("accepts tagged addresses in Consul's Address/Port form and the docs' address/port form", () => {
    const out = parsed(
      entry({ service: { TaggedAddresses: { wan: { Address: "198.51.100.7", Port: 80 } } } }),
      entry({ service: { TaggedAddresses: { wan: { address: "198.51.100.8", port: 81 } } } }),
    );
    expect(out.map((e) => bestAddress(e, true))).toEqual([
      { address: "198.51.100.7", port: 80 },
      { address: "198.51.100.8", port: 81 },
    ]);
  });

  it.each([
    [{ not: "an array" }, /^body: /],
    [[entry({ service: { Port: "8080" } })], /^\[0\]\.Service\.Port: /],
    [[entry({ node: { Address: 7 } })], /^\[0\]\.Node\.Address: /],
    [[entry({ checks: [{ CheckID: "x" }] })], /^\[0\]\.Checks\[0\]\.Status: /],
    [[entry({ service: { Port: 70000 } })], /^\[0\]\.Service\.Port: /],
    [[{ Node: {}, Checks: [] }], /^\[0\]\.Node\.Node: /],
  ])("names the first problem of a wrong shape", (raw, pattern) => {
    expect(parseServiceEntries(raw)).toMatch(pattern);
  });
});

describe("aggregatedStatus", () => {
  it("ranks maintenance over critical over warning over passing, as Consul does", () => {
    expect(aggregatedStatus([])).toBe("passing");
    expect(aggregatedStatus(null)).toBe("passing");
    expect(aggregatedStatus([check("passing"), check("warning")])).toBe("warning");
    expect(aggregatedStatus([check("warning"), check("critical")])).toBe("critical");
    expect(aggregatedStatus([check("critical"), check("passing", "_node_maintenance")])).toBe("maintenance");
    expect(aggregatedStatus([check("passing", "_service_maintenance:web-1")])).toBe("maintenance");
    expect(aggregatedStatus([check("passing"), check("bogus")])).toBe("unknown");
  });
});

describe("bestAddress", () => {
  it("uses the service address, else the node's, in the local datacenter", () => {
    const [own, none] = parsed(entry({ service: { Address: "10.0.0.9" } }), entry());
    expect(bestAddress(own!, false)).toEqual({ address: "10.0.0.9", port: 8080 });
    expect(bestAddress(none!, false)).toEqual({ address: "10.0.0.1", port: 8080 });
  });

  it("prefers WAN tagged addresses across datacenters: the service's (with its port), else the node's", () => {
    const [svcWan, svcWanV4, nodeWan, noWan] = parsed(
      entry({
        service: {
          Address: "10.0.0.9",
          TaggedAddresses: {
            lan_ipv4: { Address: "10.0.0.9", Port: 8080 },
            wan: { Address: "198.51.100.7", Port: 443 },
          },
        },
      }),
      entry({
        service: { Address: "10.0.0.9", TaggedAddresses: { wan_ipv4: { Address: "198.51.100.9", Port: 0 } } },
      }),
      entry(),
      entry({ node: { TaggedAddresses: { lan: "10.0.0.1" } } }),
    );
    expect(bestAddress(svcWan!, true)).toEqual({ address: "198.51.100.7", port: 443 });
    expect(bestAddress(svcWanV4!, true)).toEqual({ address: "198.51.100.9", port: 8080 });
    expect(bestAddress(nodeWan!, true)).toEqual({ address: "203.0.113.1", port: 8080 });
    expect(bestAddress(noWan!, true)).toEqual({ address: "10.0.0.1", port: 8080 });
  });
});

describe("toEndpoints", () => {
  it("keeps only instances whose checks all pass, unless warning is admitted", () => {
    const list = parsed(
      entry({ service: { ID: "a", Port: 1 } }),
      entry({ service: { ID: "b", Port: 2 }, checks: [check("warning")] }),
      entry({ service: { ID: "c", Port: 3 }, checks: [check("critical")] }),
      entry({ service: { ID: "d", Port: 4 }, checks: [check("passing", "_node_maintenance")] }),
    );
    expect(toEndpoints(list, ctx()).map((e) => e.port)).toEqual([1]);
    expect(toEndpoints(list, ctx({ passingOnly: false })).map((e) => e.port)).toEqual([1, 2]);
  });

  it("weighs an instance by Weights.Passing or Weights.Warning, and drops one whose weight is 0", () => {
    const list = parsed(
      entry({ service: { Port: 1, Weights: { Passing: 10, Warning: 2 } } }),
      entry({ service: { Port: 2, Weights: { Passing: 10, Warning: 2 } }, checks: [check("warning")] }),
      entry({ service: { Port: 3, Weights: { Passing: 10, Warning: 0 } }, checks: [check("warning")] }),
      entry({ service: { Port: 4, Weights: null } }),
    );
    expect(toEndpoints(list, ctx({ passingOnly: false })).map((e) => [e.port, e.weight])).toEqual([
      [1, 10],
      [2, 2],
      [4, 1],
    ]);
  });

  it("takes the zone from service meta, then node meta, then Consul's locality, then the datacenter", () => {
    const list = parsed(
      entry({ service: { Port: 1, Meta: { zone: "svc-zone" } }, node: { Meta: { zone: "node-zone" } } }),
      entry({ service: { Port: 2 }, node: { Meta: { az: "node-az" } } }),
      entry({ service: { Port: 3, Locality: { Region: "r", Zone: "loc-zone" } } }),
      entry({ service: { Port: 4 } }),
    );
    const dc = { ...DC, zone: "dc-zone" };
    expect(
      toEndpoints(list, ctx({ datacenter: dc, zoneKeys: ["zone", "az"] })).map((e) => e.locality.zone),
    ).toEqual(["svc-zone", "node-az", "loc-zone", "dc-zone"]);
  });

  it("uses WAN addresses for a remote datacenter unless the agent translated them already", () => {
    const list = parsed(entry());
    const remote = { ...DC, wan: true };
    expect(toEndpoints(list, ctx({ datacenter: remote }))[0]!.address).toBe("203.0.113.1");
    expect(toEndpoints(list, ctx({ datacenter: remote, translated: true }))[0]!.address).toBe("10.0.0.1");
    expect(toEndpoints(list, ctx())[0]!.address).toBe("10.0.0.1");
  });

  it("names the cluster after Node.Datacenter for the agent's own datacenter when none is configured", () => {
    const agent: ResolvedDatacenter = { ...DC, name: undefined, label: "agent", cluster: undefined };
    expect(
      toEndpoints(parsed(entry({ node: { Datacenter: "dc9" } })), ctx({ datacenter: agent }))[0]!.id,
    ).toBe("dc9/10.0.0.1:8080");
  });

  it("skips instances without a port, keeps one endpoint per address and port, and sorts them", () => {
    const list = parsed(
      entry({ service: { ID: "z", Address: "10.0.0.9", Port: 9 } }),
      entry({ service: { ID: "none", Port: 0 } }),
      entry({ service: { ID: "a", Address: "10.0.0.2", Port: 9 } }),
      entry({
        service: { ID: "a-again", Address: "10.0.0.2", Port: 9, Weights: { Passing: 5, Warning: 1 } },
      }),
    );
    expect(toEndpoints(list, ctx()).map((e) => [e.id, e.weight])).toEqual([
      ["dc1/10.0.0.2:9", 1],
      ["dc1/10.0.0.9:9", 1],
    ]);
  });
});

import { describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { matchLocality, TierMap } from "../../src/routing/tiers.js";

const ep = (cluster: string, region: string, zone = "", extra: { backup?: boolean; subzone?: string } = {}) =>
  createEndpoint({ address: "10.0.0.1", port: 80, cluster, region, zone, backend: "test", ...extra });

describe("TierMap", () => {
  const map = new TierMap({ region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2", "eu-west-1"] });

  it("orders own zone, own region, failover regions, the rest, then backups", () => {
    expect(map.of(ep("a", "us-east-1", "us-east-1a")).label).toBe("zone");
    expect(map.of(ep("a", "us-east-1", "us-east-1b")).label).toBe("region");
    expect(map.of(ep("b", "us-west-2")).label).toBe("failover:us-west-2");
    expect(map.of(ep("c", "eu-west-1")).label).toBe("failover:eu-west-1");
    expect(map.of(ep("d", "ap-south-1")).label).toBe("other");
    expect(map.of(ep("a", "us-east-1", "us-east-1a", { backup: true })).label).toBe("backup");
    const ranks = ["zone", "region", "failover:us-west-2", "failover:eu-west-1", "other", "backup"];
    expect(
      [
        ep("a", "us-east-1", "us-east-1a"),
        ep("a", "us-east-1", "us-east-1b"),
        ep("b", "us-west-2"),
        ep("c", "eu-west-1"),
        ep("d", "x"),
        ep("e", "y", "", { backup: true }),
      ].map((e) => map.of(e).rank),
    ).toEqual(ranks.map((_, i) => i));
  });

  it("ranks by matched failoverPriority labels, then the failover order", () => {
    const m = new TierMap({
      region: "us-east-1",
      zone: "us-east-1a",
      cluster: "east-1",
      failover: ["us-west-2"],
      failoverPriority: ["region", "cluster"],
    });
    expect(m.of(ep("east-1", "us-east-1", "us-east-1b")).label).toBe("priority:0");
    expect(m.of(ep("east-2", "us-east-1", "us-east-1a")).label).toBe("priority:1");
    expect(m.of(ep("west", "us-west-2")).label).toBe("failover:us-west-2");
    expect(m.of(ep("eu", "eu-west-1")).label).toBe("other");
    expect(m.of(ep("west", "us-west-2")).rank).toBe(2);
  });

  it("puts distribute targets first, then the usual tiers", () => {
    const m = new TierMap({
      region: "us-east-1",
      zone: "us-east-1a",
      failover: ["us-west-2"],
      distribute: [{ from: "us-east-1/us-east-1a/*", to: { "us-east-1/us-east-1a": 80, "us-west-2/*": 20 } }],
    });
    const home = ep("a", "us-east-1", "us-east-1a");
    const west = ep("b", "us-west-2", "us-west-2c");
    expect(m.of(home).label).toBe("distribute");
    expect(m.groupOf(home)).toEqual({ key: "us-east-1/us-east-1a", weight: 80 });
    expect(m.groupOf(west)).toEqual({ key: "us-west-2/*", weight: 20 });
    const other = ep("c", "us-east-1", "us-east-1b");
    expect(m.of(other).label).toBe("region");
    expect(m.of(other).rank).toBe(2);
  });

  it("ignores distribute rules whose from does not match the caller", () => {
    const m = new TierMap({
      region: "us-east-1",
      zone: "us-east-1a",
      failover: [],
      distribute: [{ from: "eu-west-1/*", to: { "eu-west-1/*": 100 } }],
    });
    expect(m.of(ep("a", "us-east-1", "us-east-1a")).label).toBe("zone");
  });
});

describe("matchLocality", () => {
  it("matches exact parts, wildcards and missing trailing parts", () => {
    expect(matchLocality("us-east-1/us-east-1a/*", "us-east-1", "us-east-1a", "rack1")).toBe(true);
    expect(matchLocality("us-east-1", "us-east-1", "us-east-1b", "")).toBe(true);
    expect(matchLocality("*/us-east-1b", "us-east-1", "us-east-1b", "")).toBe(true);
    expect(matchLocality("us-east-1/us-east-1a", "us-east-1", "us-east-1b", "")).toBe(false);
  });
});

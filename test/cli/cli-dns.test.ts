import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import { jsonOf, runCli } from "./run-cli.js";

// The CLI as a child process against a DNS configuration: a real dnsmasq on loopback answers for two clusters.
const NAME = "web.default.svc.cluster.local";
let podA: TestServer;
let podB: TestServer;
let east: TestDnsServer;
let west: TestDnsServer;
let dir: string;
let env: Record<string, string>;

beforeAll(async () => {
  podA = await startServer("pod-a", { address: "127.0.100.21" });
  podB = await startServer("pod-b", { address: "127.0.100.22", port: podA.port });
  east = await startDnsServer({ address: "127.0.100.53", records: { hosts: { [NAME]: ["127.0.100.21"] } } });
  west = await startDnsServer({ address: "127.0.100.54", records: { hosts: { [NAME]: ["127.0.100.22"] } } });
  dir = mkdtempSync(join(tmpdir(), "meshlink-cli-dns-"));
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `discovery:
  - dns:
      clusters:
        - { name: east, region: us-east-1, zone: us-east-1a, servers: ["${east.server}"] }
        - { name: west, region: us-west-2, servers: ["${west.server}"] }
`,
  );
  env = { MESHLINK_CONFIG: config, MESHLINK_REGION: "us-west-2", MESHLINK_FAILOVER: "us-east-1" };
});

afterAll(async () => {
  await east.close();
  await west.close();
  await podA.stop();
  await podB.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("meshlink with a DNS configuration", () => {
  it("resolves a name through each cluster's DNS server, the caller's region first", async () => {
    const r = await runCli(["resolve", "web.default", "--port", String(podA.port), "--json"], env);
    expect(r.code).toBe(0);
    const out = jsonOf<{ endpoints: { address: string; cluster: string; tier: string; backend: string }[] }>(
      r,
    );
    expect(out.endpoints.map((e) => [e.address, e.cluster, e.tier, e.backend])).toEqual([
      ["127.0.100.22", "west", "region", "dns"],
      ["127.0.100.21", "east", "failover:us-east-1", "dns"],
    ]);
    const text = await runCli(["resolve", "web.default", "--port", String(podA.port)], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^east\s+us-east-1\/us-east-1a\s+1\s+1\/1$/m);
    expect(text.stdout).toMatch(/^west\s+us-west-2\s+1\s+1\/1$/m);
  });

  it("calls through the endpoint DNS gave for the caller's region", async () => {
    const r = await runCli(["call", `http://${NAME}:${podA.port}/dns`, "--json"], env);
    expect(r.code).toBe(0);
    const out = jsonOf<{ status: number; endpoint: string; attempts: { tier: string; cause: string }[] }>(r);
    expect(out.status).toBe(200);
    expect(out.endpoint).toBe(`west/127.0.100.22:${podB.port}`);
    expect(out.attempts).toMatchObject([{ tier: "region", cause: "first" }]);
    expect(podB.requests.map((q) => q.url)).toContain("/dns");
  });

  it("exits 4 for a name the DNS servers do not know", async () => {
    const r = await runCli(["resolve", "nosuch.default", "--port", "80"], env);
    expect(r.code).toBe(4);
  });

  it("checks the DNS configuration and describes it", async () => {
    const [check, described] = await Promise.all([
      runCli(["config", "check"], env),
      runCli(["describe", "--json"], env),
    ]);
    expect(check.code).toBe(0);
    const view = jsonOf<{ config: { tiers: string[]; discovery: { kind: string }[] } }>(described).config;
    expect(view.tiers).toEqual(["region", "failover:us-east-1", "other", "backup"]);
    expect(view.discovery.map((d) => d.kind)).toEqual(["dns"]);
    const bad = await runCli(["config", "check", "--json"], {
      ...env,
      MESHLINK_CONFIG: join(dir, "missing.yaml"),
    });
    expect(bad.code).toBe(3);
    expect(jsonOf<{ problems: { source: string }[] }>(bad).problems[0]!.source).toBe("MESHLINK_CONFIG");
  });
});

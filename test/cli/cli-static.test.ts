import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer, type TestServer } from "../helpers/servers.js";
import { jsonOf, runCli } from "./run-cli.js";

// The CLI as a child process, against a static configuration of real loopback servers.
let east: TestServer;
let west: TestServer;
let deadPort: number;
let dir: string;
let config: string;
let env: Record<string, string>;

beforeAll(async () => {
  const handler: TestServer["handler"] = (req, res) => {
    const status = req.url?.startsWith("/status/") ? Number(req.url.slice(8)) : 200;
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ url: req.url }));
  };
  east = await startServer("east", { address: "127.0.100.11", handler });
  west = await startServer("west", { address: "127.0.100.12", handler });
  // A port nobody listens on: a refused connection.
  const dead = await startServer("dead", { address: "127.0.100.13" });
  deadPort = dead.port;
  await dead.stop();
  dir = mkdtempSync(join(tmpdir(), "meshlink-cli-"));
  config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `region: us-east-1
zone: us-east-1a
failover: [us-west-2]
discovery:
  - static:
      services:
        api.default:
          - { address: 127.0.100.11, port: ${east.port}, cluster: east, region: us-east-1, zone: us-east-1a }
          - { address: 127.0.100.12, port: ${west.port}, cluster: west, region: us-west-2, zone: us-west-2a }
        down.default:
          - { address: 127.0.100.13, port: ${deadPort}, cluster: east, region: us-east-1, zone: us-east-1a }
          - { address: 127.0.100.12, port: ${west.port}, cluster: west, region: us-west-2, zone: us-west-2a }
`,
  );
  env = { MESHLINK_CONFIG: config };
});

afterAll(async () => {
  await east.stop();
  await west.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("meshlink resolve", () => {
  it("prints the endpoints by cluster and locality with their tier and health, without colours in a pipe", async () => {
    const r = await runCli(["resolve", "api.default"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("api.default: 2 endpoints, 2 available — caller us-east-1/us-east-1a");
    expect(r.stdout).toMatch(/^east\s+us-east-1\/us-east-1a\s+1\s+1\/1$/m);
    expect(r.stdout).toMatch(/^west\s+us-west-2\/us-west-2a\s+1\s+1\/1$/m);
    expect(r.stdout).toMatch(new RegExp(`^zone\\s+127\\.0\\.100\\.11:${east.port}\\s+east\\s+`, "m"));
    expect(r.stdout).toMatch(/^failover:us-west-2\s+127\.0\.100\.12/m);
    expect(r.stdout).not.toContain("\u001b[");
  });

  it("prints JSON with --json, in the router's order", async () => {
    const r = await runCli(["resolve", "api.default.svc.cluster.local", "--json"], env);
    expect(r.code).toBe(0);
    const out = jsonOf<{ caller: unknown; endpoints: { id: string; tier: string; available: boolean }[] }>(r);
    expect(out.caller).toEqual({ region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2"] });
    expect(out.endpoints.map((e) => [e.id, e.tier, e.available])).toEqual([
      [`east/127.0.100.11:${east.port}`, "zone", true],
      [`west/127.0.100.12:${west.port}`, "failover:us-west-2", true],
    ]);
  });

  it("exits 4 for a name no backend knows, and 2 for a malformed one", async () => {
    const [missing, missingJson, malformed] = await Promise.all([
      runCli(["resolve", "nosuch.default"], env),
      runCli(["resolve", "nosuch.default", "--json"], env),
      runCli(["resolve", "not a name"], env),
    ]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toContain("meshlink resolve: error:");
    expect(missingJson.code).toBe(4);
    expect(jsonOf(missingJson).error).toMatchObject({ code: "MESHLINK_ERR_SERVICE_NOT_FOUND", exitCode: 4 });
    expect(malformed.code).toBe(2);
  });

  it("exits 3 when the environment is invalid", async () => {
    const r = await runCli(["resolve", "api.default", "--json"], { ...env, MESHLINK_FAILOVER: "a,,b" });
    expect(r.code).toBe(3);
    expect(jsonOf(r).error).toMatchObject({ code: "MESHLINK_ERR_CONFIG" });
  });
});

describe("meshlink call", () => {
  it("shows every attempt, why each was made and how it ended, and the trace id", async () => {
    const r = await runCli(["call", "http://down.default.svc.cluster.local:8080/hello", "--json"], env);
    expect(r.code).toBe(0);
    const out = jsonOf<{
      status: number;
      endpoint: string;
      traceId: string;
      body: string;
      attempts: Record<string, unknown>[];
    }>(r);
    expect(out.status).toBe(200);
    expect(out.endpoint).toBe(`west/127.0.100.12:${west.port}`);
    expect(out.attempts).toMatchObject([
      {
        attempt: 1,
        endpoint: `east/127.0.100.13:${deadPort}`,
        tier: "zone",
        cause: "first",
        result: "refused",
      },
      {
        attempt: 2,
        endpoint: `west/127.0.100.12:${west.port}`,
        tier: "failover:us-west-2",
        cause: "retry",
        retryReason: "refused",
        failover: "refused",
        result: "200",
      },
    ]);
    expect(JSON.parse(out.body)).toEqual({ url: "/hello" });
    // The server saw the trace the CLI reports.
    const seen = west.requests.find((q) => q.url === "/hello")!;
    expect(out.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(seen.headers.traceparent).toContain(out.traceId);
  });

  it("prints a summary, the attempts and the body as text", async () => {
    const r = await runCli(["call", "http://api.default.svc.cluster.local/text"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^GET http:\/\/api\.default\.svc\.cluster\.local\/text → 200 OK in /);
    expect(r.stdout).toContain(`endpoint  east/127.0.100.11:${east.port} (tier zone)`);
    expect(r.stdout).toMatch(/^trace\s+[0-9a-f]{32}$/m);
    expect(r.stdout).toMatch(
      /^1\s+east\/127\.0\.100\.11:\d+\s+us-east-1\/us-east-1a\s+zone\s+first\s+200\s/m,
    );
    expect(r.stdout.trimEnd().endsWith('{"url":"/text"}')).toBe(true);
  });

  it("exits 1 for a response of 400 or more, and 2 for a URL that is not one", async () => {
    const [notFound, bad] = await Promise.all([
      runCli(["call", "http://api.default.svc.cluster.local/status/404", "--no-body"], env),
      runCli(["call", "api.default"], env),
    ]);
    expect(notFound.code).toBe(1);
    expect(notFound.stdout).toContain("→ 404 Not Found");
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("Run 'meshlink call --help' for usage.");
  });
});

describe("meshlink describe (configuration)", () => {
  it("shows the caller, the tier order, the backends and the settings in force", async () => {
    const [text, json] = await Promise.all([runCli(["describe"], env), runCli(["describe", "--json"], env)]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^caller\s+us-east-1\/us-east-1a$/m);
    expect(text.stdout).toMatch(/^tiers\s+zone → region → failover:us-west-2 → other → backup$/m);
    expect(text.stdout).toMatch(/^policy\s+2 attempts, per-try timeout 15000 ms/m);
    expect(text.stdout).toMatch(/^admin\s+off$/m);
    const view = jsonOf<{ config: Record<string, unknown> }>(json).config;
    expect(view.discovery).toEqual([
      { kind: "static", source: `${config}: discovery[0].static`, options: expect.anything() },
    ]);
    expect(view.outlierDetection).toMatchObject({ consecutiveFailures: 5, baseEjectionTime: 30_000 });
  });
});

describe("meshlink config check", () => {
  it("exits 0 for a valid configuration", async () => {
    const r = await runCli(["config", "check"], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`checked ${config}`);
    expect(r.stdout).toContain("✓ the configuration is valid");
  });

  it("reports every problem of the environment and the file, and exits 3", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(
      bad,
      `region: "us east"
policy: { attempts: 99, atempts: 3 }
admin: 0.0.0.0:15090
discovery:
  - static: { services: { api.default: [ { address: 999.1.1.1, port: 80, cluster: c } ] } }
  - nosuch: {}
`,
    );
    const r = await runCli(["config", "check", "--config", bad, "--json"], { MESHLINK_FAILOVER: "a,,b" });
    expect(r.code).toBe(3);
    const out = jsonOf<{ ok: boolean; problems: { source: string }[] }>(r);
    expect(out.ok).toBe(false);
    expect(out.problems.map((p) => p.source)).toEqual([
      "MESHLINK_FAILOVER",
      `${bad}: region`,
      `${bad}: policy.attempts`,
      `${bad}: policy.atempts`,
      `${bad}: admin`,
      `${bad}: discovery[0].static.services["api.default"][0].address`,
      `${bad}: discovery[1]`,
    ]);
    const text = await runCli(["config", "check", "--config", bad], { MESHLINK_FAILOVER: "a,,b" });
    expect(text.code).toBe(3);
    expect(text.stdout).toContain("✗ MESHLINK_FAILOVER=");
    expect(text.stdout).toContain("7 problems");
  });
});

describe("meshlink", () => {
  it("prints --help for every command and exits 0", async () => {
    const runs = await Promise.all(
      ["resolve", "describe", "call", "config"].map((c) => runCli([c, "--help"])),
    );
    for (const [i, c] of ["resolve", "describe", "call", "config"].entries()) {
      expect(runs[i]!.code).toBe(0);
      expect(runs[i]!.stdout).toMatch(new RegExp(`^Usage: meshlink ${c}`));
    }
    const top = await runCli(["--help"]);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain("Commands:");
  });

  it("exits 2 for an unknown command or option", async () => {
    const [command, option, none] = await Promise.all([
      runCli(["frobnicate"]),
      runCli(["resolve", "api.default", "--frob"]),
      runCli([]),
    ]);
    expect(command.code).toBe(2);
    expect(command.stderr).toContain('unknown command "frobnicate"');
    expect(option.code).toBe(2);
    expect(option.stderr).toContain("Run 'meshlink resolve --help' for usage.");
    expect(none.code).toBe(2);
  });
});

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MeshDescription } from "../../src/telemetry/describe.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import { collect, jsonOf, runCli } from "./run-cli.js";

// `meshlink describe --admin` against a running child application with an admin endpoint.
const APP = fileURLToPath(new URL("./admin-app.ts", import.meta.url));
let west: TestServer;
let deadPort: number;
let dir: string;
let app: ChildProcess;
let appExit: ReturnType<typeof collect>;
let adminUrl: string;

beforeAll(async () => {
  west = await startServer("west", { address: "127.0.100.32" });
  const dead = await startServer("dead", { address: "127.0.100.33" });
  deadPort = dead.port;
  await dead.stop();
  dir = mkdtempSync(join(tmpdir(), "meshlink-cli-admin-"));
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `region: us-east-1
zone: us-east-1a
failover: [us-west-2]
outlierDetection: { consecutiveFailures: 1 }
discovery:
  - static:
      services:
        api.default:
          - { address: 127.0.100.33, port: ${deadPort}, cluster: east, region: us-east-1, zone: us-east-1a }
          - { address: 127.0.100.32, port: ${west.port}, cluster: west, region: us-west-2, zone: us-west-2a }
`,
  );
  app = spawn(process.execPath, ["--import", "tsx", APP, "http://api.default.svc.cluster.local/first"], {
    env: {
      PATH: process.env.PATH ?? "",
      MESHLINK_CONFIG: config,
      MESHLINK_ADMIN: "127.0.100.31:0",
    },
    stdio: ["pipe", "pipe", "pipe"],
  });
  appExit = collect(app);
  // The application prints its admin URL once it listens.
  let out = "";
  app.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  while (!/ADMIN (\S+)\n/.test(out)) {
    await Promise.race([
      once(app.stdout!, "data"),
      once(app, "exit").then(() => Promise.reject(new Error(out))),
    ]);
  }
  adminUrl = /ADMIN (\S+)\n/.exec(out)![1]!;
});

afterAll(async () => {
  app.stdin!.end();
  await appExit;
  await west.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("meshlink describe --admin", () => {
  it("listens where MESHLINK_ADMIN says, on loopback", () => {
    expect(adminUrl).toMatch(/^http:\/\/127\.0\.100\.31:\d+$/);
  });

  it("describes the running application's services, tiers, endpoints and health as JSON", async () => {
    const r = await runCli(["describe", "--admin", adminUrl, "--json"]);
    expect(r.code).toBe(0);
    const d = jsonOf<MeshDescription>(r);
    expect(d.locality).toEqual({ region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2"] });
    const api = d.services.find((s) => s.service === "api.default:80")!;
    // The first call found the zone's only endpoint refusing: it is ejected and traffic fails over.
    expect(api.failover).toBe(true);
    expect(api.tiers).toEqual([
      { tier: "zone", rank: 0, total: 1, healthy: 0, load: 0, panic: false },
      { tier: "failover:us-west-2", rank: 2, total: 1, healthy: 1, load: 1, panic: false },
    ]);
    const dead = api.endpoints.find((e) => e.cluster === "east")!;
    expect(dead).toMatchObject({ available: false, unavailableReason: "ejected" });
    expect(dead.health).toMatchObject({ state: "ejected", ejections: 1, lastFailure: "ECONNREFUSED" });
    const alive = api.endpoints.find((e) => e.cluster === "west")!;
    expect(alive).toMatchObject({ available: true, tier: "failover:us-west-2" });
    expect(alive.health.latencyMs).toBeGreaterThan(0);
    expect(api.sources).toMatchObject([{ backend: "static", state: "bound", stale: false }]);
  });

  it("prints the same as tables", async () => {
    const r = await runCli(["describe", "--admin", adminUrl, "--service", "api"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^api\.default:80\s+bound, updated .* ago\s+FAILOVER$/m);
    expect(r.stdout).toMatch(/^\s+zone\s+1\s+0\/1\s+0%\s+no$/m);
    expect(r.stdout).toMatch(
      /^\s+east\/127\.0\.100\.33:\d+\s+zone\s+us-east-1\/us-east-1a\s+ejected\s+no \(until/m,
    );
    expect(r.stdout).not.toContain("\u001b[");
  });

  it("reads the configuration in force and resolves through the admin endpoint", async () => {
    const config = (await (await fetch(`${adminUrl}/config`)).json()) as Record<string, unknown>;
    expect(config).toMatchObject({
      region: "us-east-1",
      admin: "127.0.100.31:0",
      tiers: ["zone", "region", "failover:us-west-2", "other", "backup"],
    });
    expect(config.outlierDetection).toMatchObject({ consecutiveFailures: 1, baseEjectionTime: 30_000 });
    const resolved = (await (await fetch(`${adminUrl}/resolve?service=api.default`)).json()) as {
      id: string;
    }[];
    expect(resolved.map((e) => e.id)).toEqual([
      `east/127.0.100.33:${deadPort}`,
      `west/127.0.100.32:${west.port}`,
    ]);
  });

  it("exits 5 when the admin endpoint cannot be reached, 2 for a bad URL", async () => {
    const [down, bad] = await Promise.all([
      runCli(["describe", "--admin", `http://127.0.100.33:${deadPort}`, "--json"]),
      runCli(["describe", "--admin", "ftp://x"]),
    ]);
    expect(down.code).toBe(5);
    expect(jsonOf(down).error).toMatchObject({ code: "MESHLINK_CLI_UNAVAILABLE" });
    expect(bad.code).toBe(2);
  });
});

import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The package as a user gets it: `npm pack`, installed into a fresh project with the OpenTelemetry SDK
// as getting-started says, type-checked strictly (exactOptionalPropertyTypes, no skipLibCheck) and run
// from ESM and from CommonJS against a real server on 127.0.110.100.

const run = promisify(execFile);
const root = join(import.meta.dirname, "..", "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const repo = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  devDependencies: Record<string, string>;
};

/** The environment of the npm and node children: none of the npm variables of a parent `npm test`. */
const childEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith("npm_") && !k.startsWith("MESHLINK_")),
);

let scratch: string;
let project: string;
let packed: string[];
let server: Server;
let port: number;

async function sh(cmd: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { cwd, env: childEnv, maxBuffer: 64 << 20, timeout: 240_000 });
    return stdout;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

/** The getting-started error-handling snippet (the block that calls isMeshError), without its imports. */
function gettingStartedSnippet(): string {
  const doc = readFileSync(join(root, "docs", "getting-started.md"), "utf8");
  const blocks = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const block = blocks.find((b) => b.includes("isMeshError("));
  if (block === undefined) throw new Error("docs/getting-started.md has no isMeshError snippet");
  return block
    .split("\n")
    .filter((line) => !line.startsWith("import "))
    .join("\n");
}

const MAIN_TS = (snippet: string) => `import * as http from "node:http";
import {
  createMesh,
  ErrorCodes,
  isMeshError,
  type Mesh,
  type MeshCallOptions,
  setGlobalDispatcher,
  staticDiscovery,
} from "meshlink";

const port = Number(process.env.PORT);
const mesh = createMesh({
  env: {},
  region: "us-east-1",
  discovery: [
    staticDiscovery({
      services: { "orders.shop": [{ address: "127.0.110.100", port, cluster: "c1", region: "us-east-1" }] },
    }),
  ],
});
const url = "http://orders.shop.svc.cluster.local:8080/api/orders";
const out: Record<string, unknown> = {};

const controls: MeshCallOptions = { retryable: true, deadline: 5_000 };
out.fetch = await (await mesh.fetch(url, { method: "POST", body: "one", meshlink: controls })).json();

setGlobalDispatcher(mesh.dispatcher);
out.globalFetch = await (await fetch(url)).json();

out.httpAgent = await new Promise((resolve, reject) => {
  http
    .get(url, { agent: mesh.httpAgent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve(JSON.parse(body)));
    })
    .on("error", reject);
});

// From docs/getting-started.md, as written there:
async function gettingStarted(mesh: Mesh, url: string): Promise<void> {
${snippet}
}
await gettingStarted(mesh, url);

try {
  await mesh.fetch("http://nope.shop.svc.cluster.local/");
} catch (err) {
  const cause = err instanceof Error ? err.cause : undefined;
  if (isMeshError(cause, ErrorCodes.SERVICE_NOT_FOUND)) out.notFound = cause.service;
}

await mesh.close();
console.log(JSON.stringify(out));
`;

const MAIN_CTS = `import meshlink = require("meshlink");

async function main(): Promise<void> {
  const esm = await import("meshlink");
  const mesh = meshlink.createMesh({
    env: {},
    discovery: [
      meshlink.staticDiscovery({
        services: { "orders.shop": [{ address: "127.0.110.100", port: Number(process.env.PORT), cluster: "c1", region: "" }] },
      }),
    ],
  });
  const res = await mesh.fetch("http://orders.shop.svc.cluster.local:8080/from-cjs");
  console.log(JSON.stringify({ sameModule: esm.createMesh === meshlink.createMesh, body: await res.json() }));
  await mesh.close();
}
void main();
`;

const TSCONFIG = {
  compilerOptions: {
    target: "ES2022",
    lib: ["ES2023"],
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    types: ["node"],
    outDir: "out",
    rootDir: ".",
  },
  // Every shipped declaration file, not only those the program reaches.
  include: ["main.ts", "main.cts", "node_modules/meshlink/dist/**/*.d.ts"],
};

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name));
}

beforeAll(async () => {
  server = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host }));
  });
  server.listen(0, "127.0.110.100");
  await once(server, "listening");
  port = (server.address() as { port: number }).port;

  scratch = mkdtempSync(join(tmpdir(), "meshlink-package-"));
  await sh("npm", ["run", "build"], root);
  const [info] = JSON.parse(
    await sh("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", scratch], root),
  ) as [{ filename: string; files: { path: string }[] }];
  packed = info.files.map((f) => f.path);

  project = join(scratch, "app");
  mkdirSync(project);
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }),
  );
  // The documented install line with the OpenTelemetry SDK: npm picks the API version both accept.
  await sh(
    "npm",
    [
      "install",
      "--prefer-offline",
      "--no-audit",
      "--no-fund",
      join(scratch, info.filename),
      `@opentelemetry/sdk-trace-base@${repo.devDependencies["@opentelemetry/sdk-trace-base"]}`,
      `@types/node@${repo.devDependencies["@types/node"]}`,
    ],
    project,
  );
  writeFileSync(join(project, "main.ts"), MAIN_TS(gettingStartedSnippet()));
  writeFileSync(join(project, "main.cts"), MAIN_CTS);
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify(TSCONFIG, null, 2));
}, 600_000);

afterAll(async () => {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  if (server !== undefined) {
    server.closeAllConnections();
    server.close();
  }
});

describe("the packed package", () => {
  it("holds the build, the docs, the license and the readme, and no sources or tests", () => {
    for (const f of [
      "package.json",
      "LICENSE",
      "README.md",
      "dist/index.js",
      "dist/index.d.ts",
      "docs/clients.md",
    ]) {
      expect(packed).toContain(f);
    }
    expect(packed.filter((f) => /^(src|test|bench|examples)\//.test(f))).toEqual([]);
    const installed = join(project, "node_modules", "meshlink");
    expect(readFileSync(join(installed, "LICENSE"), "utf8")).toMatch(
      /Apache License\s+Version 2\.0, January 2004/,
    );
    const pkg = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
    expect(pkg).toMatchObject({
      license: "Apache-2.0",
      exports: { ".": { require: "./dist/index.js", import: "./dist/index.js" } },
    });
    for (const field of ["repository", "homepage", "bugs"]) expect(pkg[field]).toBeTruthy();
  });

  it("has source maps that carry their sources", () => {
    const dist = join(project, "node_modules", "meshlink", "dist");
    const maps = filesUnder(dist).filter((f) => f.endsWith(".js.map"));
    expect(maps.length).toBeGreaterThan(10);
    for (const file of maps) {
      const map = JSON.parse(readFileSync(file, "utf8")) as { sources: string[]; sourcesContent?: string[] };
      expect(map.sourcesContent?.length, relative(dist, file)).toBe(map.sources.length);
      expect(map.sourcesContent!.every((s) => typeof s === "string" && s.length > 0)).toBe(true);
    }
  });

  it("has readme links that lead to files in the package", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const links = [...readme.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)]
      .map((m) => m[1]!)
      .filter((l) => !/^[a-z]+:/.test(l));
    expect(links.length).toBeGreaterThan(3);
    for (const link of links) expect(packed, link).toContain(link);
  });

  it("installs with the OpenTelemetry SDK, on an API version both accept", async () => {
    const tree = JSON.parse(await sh("npm", ["ls", "--all", "--json", "@opentelemetry/api"], project)) as {
      problems?: string[];
    };
    expect(tree.problems ?? []).toEqual([]);
  }, 180_000);

  it("type-checks a program and every shipped declaration strictly", async () => {
    await sh(process.execPath, [tsc, "-p", "."], project);
  }, 180_000);

  it("runs from ESM: mesh.fetch with per-call options, the global fetch, the node:http agent", async () => {
    const stdout = await run(process.execPath, ["out/main.js"], {
      cwd: project,
      env: { ...childEnv, PORT: String(port) },
    });
    const out = JSON.parse(stdout.stdout) as Record<string, { method: string; host: string }>;
    expect(out.fetch).toMatchObject({ method: "POST", host: "orders.shop.svc.cluster.local:8080" });
    expect(out.globalFetch).toMatchObject({ method: "GET", url: "/api/orders" });
    expect(out.httpAgent).toMatchObject({ method: "GET", host: "orders.shop.svc.cluster.local:8080" });
    expect(out.notFound).toBe("nope.shop");
  }, 180_000);

  it("runs from CommonJS with require(), one module for both", async () => {
    const { stdout } = await run(process.execPath, ["out/main.cjs"], {
      cwd: project,
      env: { ...childEnv, PORT: String(port) },
    });
    expect(JSON.parse(stdout)).toEqual({
      sameModule: true,
      body: { method: "GET", url: "/from-cjs", host: "orders.shop.svc.cluster.local:8080" },
    });
  }, 180_000);
});

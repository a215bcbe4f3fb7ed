import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseFailoverList, resolveConfig } from "../src/config/config.js";
import { ConfigError, ErrorCodes } from "../src/errors.js";
import { createMesh } from "../src/mesh.js";

const dir = mkdtempSync(join(tmpdir(), "meshlink-config-"));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe(ErrorCodes.CONFIG);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

const yamlFile = file(
  "mesh.yaml",
  `region: eu-west-1
zone: eu-west-1b
failover: [us-east-1, us-west-2]
discovery:
  - static: { services: { api.default: [ { address: 10.0.1.7, port: 8080, cluster: cluster-east, region: us-east-1 } ] } }
policy: { attempts: 3 }
`,
);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("resolveConfig", () => {
  it("defaults to no locality and no failover when nothing is set", () => {
    const c = resolveConfig({ env: {} });
    expect([c.region, c.zone, c.failover, c.backends, c.backendSpecs]).toEqual(["", "", [], [], []]);
  });

  it("reads the environment variables of the contract", () => {
    const c = resolveConfig({
      env: {
        MESHLINK_REGION: "us-east-1",
        MESHLINK_ZONE: "us-east-1a",
        MESHLINK_FAILOVER: "us-west-2, europe-west1",
      },
    });
    expect([c.region, c.zone, c.failover]).toEqual([
      "us-east-1",
      "us-east-1a",
      ["us-west-2", "europe-west1"],
    ]);
  });

  it("applies explicit options over environment over config file", () => {
    const env = { MESHLINK_CONFIG: yamlFile, MESHLINK_REGION: "us-west-2" };
    const fromEnv = resolveConfig({ env });
    expect(fromEnv.region).toBe("us-west-2");
    expect(fromEnv.zone).toBe("eu-west-1b");
    expect(fromEnv.failover).toEqual(["us-east-1", "us-west-2"]);
    expect(fromEnv.policy.attempts).toBe(3);
    const explicit = resolveConfig({ env, region: "ap-south-1", failover: ["eu-west-1"] });
    expect([explicit.region, explicit.failover]).toEqual(["ap-south-1", ["eu-west-1"]]);
  });

  it("reads a JSON config file named by the config option", () => {
    const path = file("mesh.json", JSON.stringify({ region: "us-east-1", failover: ["us-west-2"] }));
    const c = resolveConfig({ env: {}, config: path });
    expect([c.region, c.failover]).toEqual(["us-east-1", ["us-west-2"]]);
  });

  it("names the variable and the value for an empty failover region", () => {
    const err = configError(() => resolveConfig({ env: { MESHLINK_FAILOVER: "us-east-1,,x" } }));
    expect(err.message).toBe('MESHLINK_FAILOVER="us-east-1,,x": empty region at position 2');
    expect(err.source).toBe("MESHLINK_FAILOVER");
  });

  it("rejects a failover region listed twice", () => {
    expect(() => parseFailoverList("a,b,a")).toThrow('region "a" listed twice');
  });

  it("names MESHLINK_REGION for a malformed region", () => {
    const err = configError(() => resolveConfig({ env: { MESHLINK_REGION: "us east" } }));
    expect(err.source).toBe("MESHLINK_REGION");
    expect(err.value).toBe("us east");
  });

  it("names the option path for a bad explicit option", () => {
    const err = configError(() => resolveConfig({ env: {}, failover: ["us-west-2", ""] }));
    expect(err.source).toBe("failover[1]");
    const attempts = configError(() => resolveConfig({ env: {}, policy: { attempts: 0 } }));
    expect(attempts.source).toBe("policy.attempts");
    expect(attempts.value).toBe(0);
  });

  it("names MESHLINK_CONFIG and the path when the file cannot be read", () => {
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: join(dir, "missing.yaml") } }));
    expect(err.source).toBe("MESHLINK_CONFIG");
    expect(err.message).toContain("missing.yaml");
  });

  it("names the file for a YAML syntax error", () => {
    const path = file("broken.yaml", "region: [unclosed\n");
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.message).toContain("not valid YAML");
  });

  it("names the file and the field for a bad value in the file", () => {
    const path = file("bad.yaml", "region: us-east-1\nfailover: [us-west-2, 'bad region']\n");
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: failover[1]`);
    expect(err.value).toBe("bad region");
  });

  it("rejects an unknown top-level field in the file", () => {
    const path = file("unknown.yaml", "regoin: us-east-1\n");
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.message).toContain("regoin");
  });
});

describe("createMesh", () => {
  it("builds the config file's static backend", async () => {
    const mesh = createMesh({ env: { MESHLINK_CONFIG: yamlFile } });
    expect(mesh.describe().backends).toEqual(["static"]);
    const endpoints = await mesh.resolve("api.default");
    expect(endpoints.map((e) => [e.endpoint.id, e.tier])).toEqual([
      ["cluster-east/10.0.1.7:8080", "failover:us-east-1"],
    ]);
    await mesh.close();
  });

  it("names the file entry of an unknown backend kind", () => {
    const path = file("kind.yaml", "discovery:\n  - zookeeper: { hosts: [a] }\n");
    const err = configError(() => createMesh({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: discovery[0]`);
    expect(err.message).toContain("unknown discovery backend kind");
  });

  it("names the file entry of a malformed static backend", () => {
    const path = file(
      "static.yaml",
      "discovery:\n  - static: { services: { api.default: [ { address: 10.0.0.1, port: 99999, cluster: c } ] } }\n",
    );
    const err = configError(() => createMesh({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: discovery[0].static.services["api.default"][0].port`);
    expect(err.value).toBe(99999);
  });
});

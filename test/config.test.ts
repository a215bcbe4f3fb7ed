import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  MAX_CONFIG_FILE_BYTES,
  type MeshOptions,
  parseFailoverList,
  resolveConfig,
} from "../src/config/config.js";
import { discoveryKind } from "../src/discovery/kinds.js";
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

  it("names the egress option's path, in options and in a file", () => {
    const err = configError(() => resolveConfig({ env: {}, egress: { deny: "10.0.0.0/8" as never } }));
    expect(err.source).toBe("egress.deny");
    const path = file("egress.yaml", "egress:\n  dney: [10.0.0.0/8]\n");
    const typo = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(typo.source).toBe(`${path}: egress.dney`);
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

describe("resolveConfig: unknown keys", () => {
  it("rejects an unknown option in code, naming it and the option it most likely means", () => {
    const err = configError(() => resolveConfig({ env: {}, regoin: "us-east-1" } as MeshOptions));
    expect(err.source).toBe("regoin");
    expect(err.value).toBe("us-east-1");
    expect(err.message).toContain('did you mean "region"?');
  });

  it("rejects an unknown option through createMesh", () => {
    expect(configError(() => createMesh({ env: {}, regoin: "x" } as MeshOptions)).source).toBe("regoin");
  });

  it("names an unknown nested option, inside a union too", () => {
    const nested = configError(() => resolveConfig({ env: {}, policy: { atempts: 3 } } as MeshOptions));
    expect(nested.source).toBe("policy.atempts");
    expect(nested.message).toContain('did you mean "attempts"?');
    const union = configError(() =>
      resolveConfig({ env: {}, policy: { budget: { percnt: 0.1 } } } as MeshOptions),
    );
    expect(union.source).toBe("policy.budget.percnt");
    expect(union.message).toContain('did you mean "percent"?');
    const neither = configError(() => resolveConfig({ env: {}, policy: { budget: true } } as never));
    expect([neither.source, neither.value]).toEqual(["policy.budget", true]);
  });

  it("suggests nothing for a key that is like no option", () => {
    const err = configError(() => resolveConfig({ env: {}, frobnicate: true } as MeshOptions));
    expect(err.source).toBe("frobnicate");
    expect(err.message).not.toContain("did you mean");
  });

  it("names an unknown field of the file with its suggestion", () => {
    const path = file("typo.yaml", "region: us-east-1\nsettleTimout: 100\n");
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: settleTimout`);
    expect(err.value).toBe(100);
    expect(err.message).toContain('did you mean "settleTimeout"?');
  });
});

describe("resolveConfig: discovery kinds", () => {
  it.each(["toString", "hasOwnProperty", "__proto__", "Static", "valueOf"])(
    "rejects the kind %j naming the entry and the kind",
    (kind) => {
      const path = file(`kind-${kind}.json`, JSON.stringify({ discovery: [JSON.parse(`{"${kind}": {}}`)] }));
      const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
      expect(err.source).toBe(`${path}: discovery[0]`);
      expect(err.value).toBe(kind);
    },
  );

  it("reads a kind named like an Object.prototype member as a kind like any other", () => {
    const path = file("kind-constructor.yaml", "discovery:\n  - constructor: { a: 1 }\n");
    const c = resolveConfig({ env: { MESHLINK_CONFIG: path } });
    expect(c.backendSpecs).toEqual([
      { kind: "constructor", options: { a: 1 }, source: `${path}: discovery[0].constructor` },
    ]);
    expect(discoveryKind("constructor")).toBeUndefined();
    const err = configError(() => createMesh({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: discovery[0]`);
    expect(err.value).toBe("constructor");
  });

  it("rejects an entry that names no kind or two", () => {
    const path = file("kind-two.yaml", "discovery:\n  - { static: {}, dns: {} }\n");
    const two = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(two.source).toBe(`${path}: discovery[0]`);
    expect(two.value).toEqual(["static", "dns"]);
    const scalar = file("kind-scalar.yaml", "discovery:\n  - static\n");
    expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: scalar } })).source).toBe(
      `${scalar}: discovery[0]`,
    );
  });
});

describe("resolveConfig: static addresses in the file", () => {
  it("names the address field of the file and the value", () => {
    const path = file(
      "address.yaml",
      'discovery:\n  - static: { services: { my-service.default: [ { address: "10.0.0.1:8080", port: 80, cluster: c } ] } }\n',
    );
    const err = configError(() => createMesh({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: discovery[0].static.services["my-service.default"][0].address`);
    expect(err.value).toBe("10.0.0.1:8080");
  });
});

describe("resolveConfig: what errors show", () => {
  const secret = "s3cr3t-T0KEN-do-not-log";

  it("never repeats a file that is not a mapping (a token file named by mistake)", () => {
    const path = file("token", `${secret}\n`);
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe("MESHLINK_CONFIG");
    expect(err.value).toBe(path);
    expect(err.message).not.toContain(secret);
  });

  it("gives the line and column of a YAML syntax error, not the text", () => {
    const path = file("syntax.yaml", `token: ${secret}\nregion: [unclosed\nzone: a\n`);
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.message).toMatch(/not valid YAML: .* at line \d+, column \d+$/);
    expect(err.message).not.toContain(secret);
    expect(JSON.stringify(err, Object.getOwnPropertyNames(err))).not.toContain(secret);
  });

  it("gives the line and column of a JSON syntax error, not the text", () => {
    const path = file("syntax.json", `{"token": "${secret}",\n "region": }`);
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.message).toContain("not valid JSON: unexpected character at line 2, column 12");
    expect(err.message).not.toContain(secret);
    expect(err.cause).toBeUndefined();
    const bare = file("bare.json", secret);
    const bareErr = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: bare } }));
    expect(bareErr.message).toContain("line 1, column 1");
    expect(bareErr.message).not.toContain(secret);
  });

  it("shows a short excerpt of a long value", () => {
    const long = `a${"b".repeat(10_000)}`;
    const err = configError(() => resolveConfig({ env: {}, region: long }));
    expect(err.value).toBe(long);
    expect(err.message.length).toBeLessThan(200);
    expect(err.message).toContain("(10001 chars)");
  });

  it("redacts a value under a key named like a secret, in the message and in value", () => {
    const path = file("secret.yaml", `discovery:\n  - static: { services: {}, token: ${secret} }\n`);
    const err = configError(() => createMesh({ env: { MESHLINK_CONFIG: path } }));
    expect(err.source).toBe(`${path}: discovery[0].static.token`);
    expect(err.value).toBe("[redacted]");
    expect(err.message).not.toContain(secret);
  });

  it("redacts secrets inside an object value", () => {
    const err = configError(() =>
      resolveConfig({ env: {}, policy: [{ password: secret, apiKey: secret, attempts: 2 }] } as never),
    );
    expect(err.source).toBe("policy");
    expect(err.message).not.toContain(secret);
    expect(JSON.stringify(err.value)).not.toContain(secret);
    expect(err.value).toEqual([{ password: "[redacted]", apiKey: "[redacted]", attempts: 2 }]);
  });

  it("redacts an environment variable named like a secret", () => {
    const err = configError(() => resolveConfig({ env: { CONSUL_HTTP_TOKEN: 42 as never } }));
    expect(err.source).toBe("env.CONSUL_HTTP_TOKEN");
    expect(err.value).toBe("[redacted]");
  });
});

describe("resolveConfig: the config file itself", () => {
  it("refuses a FIFO at once, naming MESHLINK_CONFIG and the reason", () => {
    const fifo = join(dir, "fifo.yaml");
    execFileSync("mkfifo", [fifo]);
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: fifo } }));
    expect(err.source).toBe("MESHLINK_CONFIG");
    expect(err.value).toBe(fifo);
    expect(err.message).toContain("FIFO");
  });

  it("refuses /dev/zero and a directory, naming the config option", () => {
    const zero = configError(() => resolveConfig({ env: {}, config: "/dev/zero" }));
    expect([zero.source, zero.value]).toEqual(["config", "/dev/zero"]);
    expect(zero.message).toContain("character device");
    const sub = join(dir, "sub.yaml");
    mkdirSync(sub);
    expect(configError(() => resolveConfig({ env: {}, config: sub })).message).toContain("directory");
  });

  it("reads a file of exactly the limit and refuses one byte more", () => {
    const head = "region: us-east-1\n#";
    const padding = (bytes: number) => `${head}${"x".repeat(bytes - head.length - 1)}\n`;
    const full = file("full.yaml", padding(MAX_CONFIG_FILE_BYTES));
    expect(resolveConfig({ env: { MESHLINK_CONFIG: full } }).region).toBe("us-east-1");
    const over = file("over.yaml", padding(MAX_CONFIG_FILE_BYTES + 1));
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: over } }));
    expect(err.source).toBe("MESHLINK_CONFIG");
    expect(err.message).toContain(`at most ${MAX_CONFIG_FILE_BYTES} bytes`);
  });

  it("refuses a YAML alias bomb", () => {
    const laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (const [name, prev] of [
      ["b", "a"],
      ["c", "b"],
      ["d", "c"],
      ["e", "d"],
    ] as const) {
      laughs.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(", ")}]`);
    }
    const path = file("laughs.yaml", `${laughs.join("\n")}\n`);
    const err = configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } }));
    expect(err.message).toContain("aliases");
  });

  it("refuses nesting deep enough to exhaust the parser, at once", () => {
    const flow = file("deep-flow.yaml", `region: ${"[".repeat(200_000)}${"]".repeat(200_000)}\n`);
    expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: flow } })).message).toContain(
      "nested more than 64 levels",
    );
    const dashes = file("deep-dash.yaml", `failover:\n  ${"- ".repeat(200_000)}a\n`);
    expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: dashes } })).message).toContain(
      "nested more than 64 levels",
    );
  });

  it.each(["region: !!binary aGVsbG8=\n", "region: !custom x\n", "region: !!js/function x\n"])(
    "refuses tags beyond the core schema (%j)",
    (text) => {
      const path = file("tags.yaml", text);
      expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } })).message).toContain(
        "not valid YAML",
      );
    },
  );

  it("refuses a key written twice", () => {
    const path = file("twice.yaml", "region: a\nregion: b\n");
    expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: path } })).message).toContain(
      "line 2, column 1",
    );
  });
});

describe("resolveConfig: agent and serviceIdleTimeout", () => {
  it("defaults to undici's pool options and a 10 minute idle timeout", () => {
    const c = resolveConfig({ env: {} });
    expect(c.agent).toEqual({
      connections: null,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 600_000,
      connectTimeout: 10_000,
      pipelining: 1,
      maxCachedSessions: 100,
    });
    expect(c.serviceIdleTimeout).toBe(600_000);
  });

  it("takes each field from options over the file over the default", () => {
    const path = file(
      "agent.yaml",
      "agent: { connections: 8, keepAliveTimeout: 1000, pipelining: 2 }\nserviceIdleTimeout: 60000\n",
    );
    const fromFile = resolveConfig({ env: { MESHLINK_CONFIG: path } });
    expect(fromFile.agent).toMatchObject({ connections: 8, keepAliveTimeout: 1000, pipelining: 2 });
    expect(fromFile.agent.connectTimeout).toBe(10_000);
    expect(fromFile.serviceIdleTimeout).toBe(60_000);
    const explicit = resolveConfig({
      env: { MESHLINK_CONFIG: path },
      agent: { connections: null, connectTimeout: 2_000, keepAliveTimeout: undefined },
      serviceIdleTimeout: 0,
    });
    expect(explicit.agent).toMatchObject({
      connections: null,
      keepAliveTimeout: 1000,
      connectTimeout: 2_000,
      pipelining: 2,
    });
    expect(explicit.serviceIdleTimeout).toBe(0);
  });

  it.each([
    [{ agent: { connections: 0 } }, "agent.connections"],
    [{ agent: { connectTimeout: -1 } }, "agent.connectTimeout"],
    [{ agent: { keepAliveTimeout: 1.5 } }, "agent.keepAliveTimeout"],
    [{ agent: { pipelining: 1000 } }, "agent.pipelining"],
    [{ agent: { maxCachedSessions: -1 } }, "agent.maxCachedSessions"],
    [{ agent: { keepAliveMaxTimout: 1 } }, "agent.keepAliveMaxTimout"],
    [{ serviceIdleTimeout: 500 }, "serviceIdleTimeout"],
    [{ serviceIdleTimeout: -1 }, "serviceIdleTimeout"],
    [{ serviceIdleTimeout: 2 ** 31 }, "serviceIdleTimeout"],
  ])("rejects %j naming %s", (options, source) => {
    expect(configError(() => resolveConfig({ env: {}, ...(options as MeshOptions) })).source).toBe(source);
  });
});

describe("resolveConfig: behaviour kept", () => {
  it("accepts a zone while the region is unknown", () => {
    expect([resolveConfig({ env: {}, zone: "us-east-1a" }).zone, resolveConfig({ env: {} }).region]).toEqual([
      "us-east-1a",
      "",
    ]);
  });

  it("trims blanks around an environment variable", () => {
    expect(resolveConfig({ env: { MESHLINK_REGION: "  us-east-1\n" } }).region).toBe("us-east-1");
  });
});

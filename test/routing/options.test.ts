import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.js";
import { ErrorCodes, isMeshError } from "../../src/errors.js";

function file(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), "meshlink-routing-"));
  const path = join(dir, "mesh.yaml");
  writeFileSync(path, content);
  return path;
}

function configError(fn: () => unknown): { source: string; code: string } {
  try {
    fn();
  } catch (err) {
    if (isMeshError(err)) return err as unknown as { source: string; code: string };
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("resolveConfig", () => {
  it("reads routing, outlier detection and call policy options from the config file", () => {
    const path = file(`
routing:
  lbPolicy: round-robin
  panicThreshold: 0.3
  failoverPriority: [region, zone]
  distribute:
    - from: "us-east-1/*"
      to: { "us-east-1/us-east-1a": 70, "us-east-1/us-east-1b": 30 }
outlierDetection:
  failureRate: false
  ejectionJitter: 0
policy:
  deadline: 2000
  budget: { percent: 0.1 }
  hedging: { delay: p95, services: [search.default] }
  bulkhead: { maxRequestsPerService: 100 }
`);
    const c = resolveConfig({ env: {}, config: path });
    expect(c.routing.lbPolicy).toBe("round-robin");
    expect(c.routing.distribute?.[0]?.to["us-east-1/us-east-1a"]).toBe(70);
    expect(c.outlierDetection.failureRate).toBe(false);
    expect(c.policy.hedging?.delay).toBe("p95");
    expect(c.policy.bulkhead?.maxRequestsPerService).toBe(100);
  });

  it("lets explicit options win over the file, key by key", () => {
    const path = file("routing: { lbPolicy: random, panicThreshold: 0.3 }\npolicy: { deadline: 2000 }\n");
    const c = resolveConfig({
      env: {},
      config: path,
      routing: { panicThreshold: 0 },
      policy: { attempts: 3 },
    });
    expect(c.routing).toEqual({ lbPolicy: "random", panicThreshold: 0 });
    expect(c.policy).toEqual({ deadline: 2000, attempts: 3 });
  });

  it("rejects a bad routing value, naming the option path", () => {
    const err = configError(() => resolveConfig({ env: {}, routing: { panicThreshold: 2 } }));
    expect(err.code).toBe(ErrorCodes.CONFIG);
    expect(err.source).toBe("routing.panicThreshold");
    const label = configError(() =>
      resolveConfig({ env: {}, routing: { failoverPriority: ["planet" as "region"] } }),
    );
    expect(label.source).toBe("routing.failoverPriority[0]");
  });

  it("rejects a bad file value, naming the file and the field", () => {
    const path = file("policy: { hedging: { delay: soon } }\n");
    const err = configError(() => resolveConfig({ env: {}, config: path }));
    expect(err.source).toBe(`${path}: policy.hedging.delay`);
  });
});

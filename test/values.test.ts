import { describe, expect, it } from "vitest";
import { ConfigError, ErrorCodes } from "../src/errors.js";
import { formatValue, isSecretSource, redactValue } from "../src/values.js";

describe("formatValue", () => {
  it("cuts a long string, saying how long it was", () => {
    const out = formatValue("x".repeat(5000));
    expect(out.length).toBeLessThan(80);
    expect(out).toContain("(5000 chars)");
  });

  it("renders at most about 60 characters of a large object, without serialising it whole", () => {
    const big = { list: Array.from({ length: 100_000 }, (_, i) => i) };
    expect(formatValue(big).length).toBeLessThanOrEqual(60);
    expect(formatValue({ a: 1, b: [1, "x"] })).toBe('{"a":1,"b":[1,"x"]}');
  });

  it("redacts entries under secret keys and survives cycles", () => {
    const cyclic: Record<string, unknown> = { token: "abc", name: "n" };
    cyclic.self = cyclic;
    expect(formatValue(cyclic)).toBe('{"token":[redacted],"name":"n","self":[circular]}');
    expect(formatValue({ keycloak: "k" })).toBe('{"keycloak":"k"}');
  });

  it("survives a value whose getter throws, in a ConfigError too", () => {
    const hostile = {
      get boom(): never {
        throw new Error("no");
      },
    };
    expect(typeof formatValue(hostile)).toBe("string");
    expect(new ConfigError("policy", hostile, "expected an object").code).toBe(ErrorCodes.CONFIG);
  });
});

describe("redactValue", () => {
  it("replaces what sits under a secret key, at any depth, and leaves the rest and the original alone", () => {
    const value = { name: "n", consul: { token: "t", address: "a" }, list: [{ apiKey: "k" }] };
    expect(redactValue(value)).toEqual({
      name: "n",
      consul: { token: "[redacted]", address: "a" },
      list: [{ apiKey: "[redacted]" }],
    });
    expect(value.consul.token).toBe("t");
    // Nothing secret: the same value back.
    const plain = { a: 1 };
    expect(redactValue(plain)).toBe(plain);
  });
});

describe("isSecretSource", () => {
  it("reads every segment of an option path or a variable name, and not words that only contain one", () => {
    expect(isSecretSource("discovery[0].consul.token")).toBe(true);
    expect(isSecretSource('tls["privateKey"]')).toBe(true);
    expect(isSecretSource("CONSUL_HTTP_TOKEN")).toBe(true);
    expect(isSecretSource("keycloak.url")).toBe(false);
    expect(isSecretSource("policy.attempts")).toBe(false);
    // A file name before ": " is no key.
    expect(isSecretSource("secrets.yaml: policy.attempts")).toBe(false);
    expect(isSecretSource("mesh.yaml: consul.token")).toBe(true);
  });
});

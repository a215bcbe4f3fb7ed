import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isLoopbackHost, parseAdminAddress } from "../../src/config/admin.js";
import { resolveConfig } from "../../src/config/config.js";
import { ConfigError, ErrorCodes } from "../../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "meshlink-admin-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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

describe("parseAdminAddress", () => {
  it("reads host:port and [ipv6]:port on loopback", () => {
    expect(parseAdminAddress("127.0.0.1:15090", "admin")).toEqual({
      host: "127.0.0.1",
      port: 15090,
      allowRemote: false,
    });
    expect(parseAdminAddress("[::1]:15090", "admin")).toEqual({
      host: "::1",
      port: 15090,
      allowRemote: false,
    });
    expect(parseAdminAddress(" localhost:0 ", "admin")).toEqual({
      host: "localhost",
      port: 0,
      allowRemote: false,
    });
    expect(parseAdminAddress("127.0.100.7:1", "admin").host).toBe("127.0.100.7");
  });

  it("refuses a non-loopback host unless remote access is allowed", () => {
    for (const raw of ["0.0.0.0:15090", "10.1.2.3:15090", "[::]:15090", "admin.example:15090"]) {
      const err = configError(() => parseAdminAddress(raw, "MESHLINK_ADMIN"));
      expect(err.source).toBe("MESHLINK_ADMIN");
      expect(err.message).toContain("not a loopback address");
    }
    expect(parseAdminAddress("0.0.0.0:15090", "admin", true)).toEqual({
      host: "0.0.0.0",
      port: 15090,
      allowRemote: true,
    });
  });

  it("refuses what is no host:port, naming the source and the value", () => {
    for (const raw of [
      "15090",
      "127.0.0.1",
      "127.0.0.1:99999",
      "127.0.0.1:http",
      "::1:80",
      "[10.0.0.1]:80",
      "a b:80",
      ":80",
    ]) {
      const err = configError(() => parseAdminAddress(raw, "admin"));
      expect(err.source).toBe("admin");
      expect(err.value).toBe(raw);
    }
  });
});

describe("isLoopbackHost", () => {
  it("knows 127.0.0.0/8, ::1 and localhost", () => {
    expect(["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "LOCALHOST"].every(isLoopbackHost)).toBe(
      true,
    );
    expect(["128.0.0.1", "0.0.0.0", "::", "10.0.0.1", "localhost.example"].some(isLoopbackHost)).toBe(false);
  });
});

describe("resolveConfig admin", () => {
  const file = (text: string) => {
    const path = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(path, text);
    return path;
  };

  it("is off unless the option, MESHLINK_ADMIN or the file names an address", () => {
    expect(resolveConfig({ env: {} }).admin).toBeUndefined();
    expect(resolveConfig({ env: { MESHLINK_ADMIN: "" } }).admin).toBeUndefined();
  });

  it("takes the option, then MESHLINK_ADMIN, then the file; false turns it off", () => {
    const config = file("admin: 127.0.0.3:3\n");
    const env = { MESHLINK_ADMIN: "127.0.0.2:2", MESHLINK_CONFIG: config };
    expect(resolveConfig({ env, admin: "127.0.0.1:1" }).admin?.port).toBe(1);
    expect(resolveConfig({ env }).admin?.port).toBe(2);
    expect(resolveConfig({ env: { MESHLINK_CONFIG: config } }).admin?.port).toBe(3);
    expect(resolveConfig({ env, admin: false }).admin).toBeUndefined();
    expect(resolveConfig({ env, admin: { address: "0.0.0.0:4", allowRemote: true } }).admin).toEqual({
      host: "0.0.0.0",
      port: 4,
      allowRemote: true,
    });
  });

  it("names the variable, option or file field of a bad address", () => {
    expect(configError(() => resolveConfig({ env: { MESHLINK_ADMIN: "10.0.0.1:80" } })).source).toBe(
      "MESHLINK_ADMIN",
    );
    expect(configError(() => resolveConfig({ env: {}, admin: "0.0.0.0:80" })).source).toBe("admin");
    expect(configError(() => resolveConfig({ env: {}, admin: { address: "x" } })).source).toBe(
      "admin.address",
    );
    const remote = file("admin: 0.0.0.0:15090\n");
    expect(configError(() => resolveConfig({ env: { MESHLINK_CONFIG: remote } })).source).toBe(
      `${remote}: admin`,
    );
    const unknown = configError(() =>
      resolveConfig({ env: {}, admin: { address: "127.0.0.1:1", allowRemtoe: true } as never }),
    );
    expect(unknown.source).toBe("admin.allowRemtoe");
  });
});

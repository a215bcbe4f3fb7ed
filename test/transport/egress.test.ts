import { once } from "node:events";
import { connect, createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError, EgressDeniedError, ErrorCodes } from "../../src/errors.js";
import {
  createEgressGuard,
  DEFAULT_EGRESS_DENY,
  egressOptionsSchema,
  guardedLookup,
  type LookupFunction,
  parseCidr,
} from "../../src/transport/egress.js";

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("parseCidr", () => {
  it("parses IPv4, IPv6 and IPv4-mapped ranges into canonical text", () => {
    expect(parseCidr("10.0.0.0/8")).toMatchObject({ family: 4, prefix: 8, text: "10.0.0.0/8" });
    expect(parseCidr("FE80::/10")).toMatchObject({ family: 6, prefix: 10, text: "fe80::/10" });
    expect(parseCidr("::ffff:169.254.0.0/112").text).toBe("::ffff:a9fe:0/112");
    expect(parseCidr("2001:db8:0:0:1:0:0:1").text).toBe("2001:db8::1:0:0:1/128");
    expect(parseCidr("192.168.1.7").text).toBe("192.168.1.7/32");
    expect(parseCidr("0.0.0.0/0").text).toBe("0.0.0.0/0");
    expect(parseCidr("::/0").text).toBe("::/0");
  });

  it("rejects ranges with host bits set, naming the range it probably meant", () => {
    const err = configError(() => parseCidr("10.1.0.0/8", "egress.allow[0]"));
    expect(err.source).toBe("egress.allow[0]");
    expect(err.message).toContain("10.0.0.0/8");
    expect(configError(() => parseCidr("fe80::1/10")).message).toContain("fe80::/10");
  });

  it("rejects what is not an address or has a bad prefix length", () => {
    for (const bad of [
      "10.0.0.0/33",
      "::/129",
      "10.0.0/8",
      "example.com/8",
      "10.0.0.0/-1",
      "10.0.0.0/",
      "",
      "1.2.3.4/8x",
    ]) {
      expect(configError(() => parseCidr(bad)).code).toBe(ErrorCodes.CONFIG);
    }
  });
});

describe("createEgressGuard", () => {
  it("denies link-local, metadata and unspecified addresses by default", () => {
    const guard = createEgressGuard();
    expect(guard.check("169.254.169.254")).toEqual({
      address: "169.254.169.254",
      rule: "deny 169.254.0.0/16",
    });
    expect(guard.check("fe80::1")?.rule).toBe("deny fe80::/10");
    expect(guard.check("febf:ffff::1")?.rule).toBe("deny fe80::/10");
    expect(guard.check("0.0.0.0")?.rule).toBe("deny 0.0.0.0/8");
    expect(guard.check("::")?.rule).toBe("deny ::/128");
    expect(guard.check("fd00:ec2::254")?.rule).toBe("deny fd00:ec2::254/128");
    expect(guard.check("fd00:ec2::23")?.rule).toBe("deny fd00:ec2::23/128");
    expect(guard.check("fd20:ce::254")?.rule).toBe("deny fd20:ce::254/128");
    expect(guard.check("fd20:ce::253")).toBeUndefined();
    expect(guard.check("10.0.1.7")).toBeUndefined();
    expect(guard.check("fec0::1")).toBeUndefined();
    expect(guard.check("::1")).toBeUndefined();
    expect(guard.check("169.253.255.255")).toBeUndefined();
    expect(guard.check("169.255.0.0")).toBeUndefined();
    expect(guard.rules.slice(0, DEFAULT_EGRESS_DENY.length)).toEqual(
      DEFAULT_EGRESS_DENY.map((c) => `deny ${c}`),
    );
  });

  it("applies IPv4 rules to IPv4-mapped IPv6 addresses in every spelling", () => {
    const guard = createEgressGuard();
    for (const a of [
      "::ffff:169.254.169.254",
      "::FFFF:a9fe:a9fe",
      "0:0:0:0:0:ffff:169.254.169.254",
      "[::ffff:169.254.169.254]",
      "::ffff:0.0.0.0",
    ]) {
      expect(guard.check(a)?.address, a).toBe(a);
    }
    expect(guard.check("::ffff:10.0.0.1")).toBeUndefined();
    // An IPv4-compatible (not mapped) address is another IPv6 address.
    expect(guard.check("::a9fe:a9fe")).toBeUndefined();
  });

  it("applies IPv6 rules over the mapped range to plain IPv4 addresses", () => {
    const guard = createEgressGuard({ deny: ["::ffff:10.0.0.0/104"] });
    expect(guard.check("10.9.8.7")?.rule).toBe("deny ::ffff:a00:0/104");
    expect(guard.check("11.0.0.1")).toBeUndefined();
  });

  it("checks legacy IPv4 spellings that getaddrinfo accepts as the address they stand for", () => {
    const guard = createEgressGuard();
    for (const a of [
      "169.254.43518",
      "0xa9fea9fe",
      "2852039166",
      "0251.0376.0251.0376",
      "169.16689662",
      "0",
    ]) {
      expect(guard.check(a), a).toBeDefined();
    }
    expect(guard.check("10.1")).toBeUndefined();
    expect(guard.check("09.1.1.1")).toBeUndefined(); // not octal, not an address: a host name
  });

  it("ignores a zone index and leaves host names to the lookup", () => {
    const guard = createEgressGuard({ allow: ["10.0.0.0/8"] });
    expect(guard.check("fe80::1%eth0")?.rule).toBe("deny fe80::/10");
    expect(guard.check("my-service.default.svc.cluster.local")).toBeUndefined();
  });

  it("refuses addresses outside a non-empty allow list, and deny rules win over it", () => {
    const guard = createEgressGuard({ allow: ["10.0.0.0/8", "fd00::/8"] });
    expect(guard.check("10.200.0.1")).toBeUndefined();
    expect(guard.check("fd12::5")).toBeUndefined();
    expect(guard.check("192.168.0.1")).toEqual({ address: "192.168.0.1", rule: "not in allow list" });
    expect(guard.check("2001:db8::1")?.rule).toBe("not in allow list");
    const wide = createEgressGuard({ allow: ["0.0.0.0/0", "::/0"] });
    expect(wide.check("169.254.169.254")?.rule).toBe("deny 169.254.0.0/16");
    expect(wide.check("8.8.8.8")).toBeUndefined();
  });

  it("adds configured deny rules after the defaults, and drops the defaults only when asked", () => {
    const guard = createEgressGuard({ deny: ["127.0.90.0/24", "::1"] });
    expect(guard.check("127.0.90.5")?.rule).toBe("deny 127.0.90.0/24");
    expect(guard.check("::1")?.rule).toBe("deny ::1/128");
    expect(guard.check("127.0.91.5")).toBeUndefined();
    expect(guard.check("169.254.169.254")?.rule).toBe("deny 169.254.0.0/16");
    const open = createEgressGuard({ defaultDeny: false });
    expect(open.check("169.254.169.254")).toBeUndefined();
    expect(open.rules).toEqual([]);
  });

  it("names the invalid entry and the option it came from", () => {
    const err = configError(() => createEgressGuard({ deny: ["10.0.0.0/8", "10.0.0.256/32"] }));
    expect(err.source).toBe("egress.deny[1]");
    expect(err.value).toBe("10.0.0.256/32");
    const fromFile = configError(() => createEgressGuard({ allow: ["nope"] }, "/etc/meshlink.yaml: egress"));
    expect(fromFile.source).toBe("/etc/meshlink.yaml: egress.allow[0]");
  });
});

describe("egressOptionsSchema", () => {
  it("accepts deny, allow and defaultDeny and refuses unknown keys", () => {
    expect(
      egressOptionsSchema.safeParse({ deny: ["10.0.0.0/8"], allow: [], defaultDeny: true }).success,
    ).toBe(true);
    expect(egressOptionsSchema.safeParse({ block: ["10.0.0.0/8"] }).success).toBe(false);
    expect(egressOptionsSchema.safeParse({ deny: "10.0.0.0/8" }).success).toBe(false);
  });
});

describe("guardedLookup", () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  });

  /** A resolver that answers every name with fixed addresses: no DNS traffic at all. */
  const fixed =
    (...addresses: string[]): LookupFunction =>
    (_host, options, callback) => {
      const all = addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
      if (options.all) callback(null, all);
      else callback(null, all[0]!.address, all[0]!.family);
    };

  function lookupOnce(fn: LookupFunction, all: boolean) {
    return new Promise<{ err: unknown; address: unknown }>((resolve) => {
      fn("api.test", { all }, (err, address) => resolve({ err, address }));
    });
  }

  it("fails a lookup whose every address is refused, naming the address and rule", async () => {
    const lookup = guardedLookup(createEgressGuard(), fixed("169.254.169.254"));
    for (const all of [false, true]) {
      const { err } = await lookupOnce(lookup, all);
      expect(err).toBeInstanceOf(EgressDeniedError);
      expect(err).toMatchObject({
        code: ErrorCodes.EGRESS_DENIED,
        address: "169.254.169.254",
        rule: "deny 169.254.0.0/16",
      });
    }
  });

  it("drops refused addresses from a multi-address answer and keeps the rest", async () => {
    const lookup = guardedLookup(createEgressGuard(), fixed("fe80::1", "10.0.0.5"));
    const { err, address } = await lookupOnce(lookup, true);
    expect(err).toBeNull();
    expect(address).toEqual([{ address: "10.0.0.5", family: 4 }]);
  });

  it("passes a resolver's own error through", async () => {
    const failing: LookupFunction = (_h, _o, cb) =>
      cb(Object.assign(new Error("nx"), { code: "ENOTFOUND" }), "");
    const { err } = await lookupOnce(guardedLookup(createEgressGuard(), failing), false);
    expect(err).toMatchObject({ code: "ENOTFOUND" });
  });

  it("keeps a real connection from ever reaching a denied loopback range", async () => {
    const server = createServer((s) => s.end());
    servers.push(server);
    let accepted = 0;
    server.on("connection", () => accepted++);
    server.listen(0, "127.0.90.21");
    await once(server, "listening");
    const port = (server.address() as { port: number }).port;
    const attempt = (deny: string[]) =>
      new Promise<unknown>((resolve) => {
        const socket = connect({
          host: "api.test",
          port,
          lookup: guardedLookup(createEgressGuard({ deny }), fixed("127.0.90.21")),
        });
        socket.once("connect", () => {
          socket.destroy();
          resolve(undefined);
        });
        socket.once("error", resolve);
      });

    const err = await attempt(["127.0.90.0/24"]);
    expect(err).toMatchObject({
      code: ErrorCodes.EGRESS_DENIED,
      address: "127.0.90.21",
      rule: "deny 127.0.90.0/24",
    });
    expect(accepted).toBe(0);
    const accepting = once(server, "connection");
    expect(await attempt(["127.0.91.0/24"])).toBeUndefined();
    await accepting;
    expect(accepted).toBe(1);
  });
});

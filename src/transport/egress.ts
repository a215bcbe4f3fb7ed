/**
 * The egress guard: which addresses the mesh may connect to, whatever a
 * discovery backend says. A poisoned registry (a compromised Consul agent,
 * a forged EndpointSlice, a spoofed DNS answer) could otherwise point a
 * service name at the cloud metadata service (169.254.169.254) and have the
 * application send it requests — with the application's credentials in the
 * headers. The connector checks every endpoint address here before it
 * connects, for every transport.
 *
 * Rules are CIDR ranges, IPv4 and IPv6. An IPv4 rule also matches the
 * IPv4-mapped IPv6 form of its addresses (`::ffff:169.254.169.254`) and an
 * IPv6 rule over the mapped range (`::ffff:0:0/96`) also matches plain IPv4
 * addresses: the kernel connects both forms to the same host. Legacy IPv4
 * spellings that `getaddrinfo` accepts (`169.254.43518`, `0xa9fea9fe`) are
 * checked as the address they stand for.
 *
 * @module
 */

import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { isIPv4, isIPv6 } from "node:net";
import { z } from "zod";
import { ConfigError, EgressDeniedError } from "../errors.js";

/**
 * The ranges denied by default: IPv4 and IPv6 link-local (cloud metadata
 * services live at 169.254.169.254, EKS's pod identity agent at
 * 169.254.170.23), the IPv6 addresses of the AWS metadata service and pod
 * identity agent and of Google Cloud's metadata server (unique-local
 * addresses, outside fe80::/10), and the unspecified addresses (Linux
 * connects `0.0.0.0` to the local host).
 */
export const DEFAULT_EGRESS_DENY: readonly string[] = Object.freeze([
  "169.254.0.0/16",
  "fe80::/10",
  "0.0.0.0/8",
  "::/128",
  "fd00:ec2::254/128",
  "fd00:ec2::23/128",
  "fd20:ce::254/128",
]);

/** The `egress` option and config file key: the egress guard's rules. */
export interface EgressOptions {
  /** CIDR ranges (or single addresses) never connected to, in addition to {@link DEFAULT_EGRESS_DENY}. */
  deny?: string[] | undefined;
  /** When given and not empty, only addresses inside these ranges are connected to. Deny rules win. */
  allow?: string[] | undefined;
  /** Apply {@link DEFAULT_EGRESS_DENY}; default true. Turn off only to reach a link-local service on purpose. */
  defaultDeny?: boolean | undefined;
}

/** The zod schema of the `egress` option and config file key (CIDRs are checked by {@link createEgressGuard}). */
export const egressOptionsSchema: z.ZodType<EgressOptions> = z.strictObject({
  deny: z.array(z.string().min(1).max(64)).max(10_000).optional(),
  allow: z.array(z.string().min(1).max(64)).max(10_000).optional(),
  defaultDeny: z.boolean().optional(),
});

/** Why an address is refused. */
export interface EgressViolation {
  /** The refused address, as given. */
  readonly address: string;
  /** The rule: `deny 169.254.0.0/16`, or `not in allow list`. */
  readonly rule: string;
}

/** A parsed CIDR range. */
export interface Cidr {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The prefix length. */
  readonly prefix: number;
  /** The canonical text, `address/prefix`. */
  readonly text: string;
}

interface Range4 extends Cidr {
  readonly family: 4;
  readonly base: number;
  readonly mask: number;
}

interface Range6 extends Cidr {
  readonly family: 6;
  readonly base: bigint;
  readonly mask: bigint;
}

type Range = Range4 | Range6;

/** Checks endpoint addresses against deny and allow rules. Immutable. */
export interface EgressGuard {
  /**
   * The violation, or `undefined` when `address` may be connected to. A
   * host name that is not an IP address is not checked here (it returns
   * `undefined`): the connector resolves it through {@link guardedLookup},
   * which checks every address the name resolves to.
   */
  check(address: string): EgressViolation | undefined;
  /** The rules in force, in the order they are applied: `deny <cidr>`…, then `allow <cidr>`…. */
  readonly rules: readonly string[];
}

const MAPPED_PREFIX = 0xffffn << 32n;
const ALL6 = (1n << 128n) - 1n;
const LEGACY_V4 = /^(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}$/i;

/**
 * Parses an IPv4 address in any form `inet_aton` accepts (dotted quad, or
 * one to three parts, each decimal, octal with a leading 0, or hex), which
 * is what `getaddrinfo` turns into an address. Undefined when it is not one.
 */
function parseLegacyIPv4(text: string): number | undefined {
  if (!LEGACY_V4.test(text)) return undefined;
  const parts = text.split(".").map((p) => {
    if (/^0x/i.test(p)) return Number.parseInt(p.slice(2), 16);
    if (p.length > 1 && p.startsWith("0")) return /^[0-7]+$/.test(p) ? Number.parseInt(p, 8) : Number.NaN;
    return Number(p);
  });
  if (parts.some((p) => !Number.isFinite(p))) return undefined;
  const last = parts.length - 1;
  let value = 0;
  for (let i = 0; i < last; i++) {
    if (parts[i]! > 255) return undefined;
    value += parts[i]! * 2 ** (8 * (3 - i));
  }
  if (parts[last]! >= 2 ** (8 * (4 - last))) return undefined;
  return value + parts[last]!;
}

function parseIPv4(text: string): number {
  const p = text.split(".");
  return ((+p[0]! << 24) | (+p[1]! << 16) | (+p[2]! << 8) | +p[3]!) >>> 0;
}

/** Parses an address that `isIPv6` accepted. */
function parseIPv6(text: string): bigint {
  let t = text;
  const lastColon = t.lastIndexOf(":");
  if (t.includes(".", lastColon)) {
    const v4 = parseIPv4(t.slice(lastColon + 1));
    t = `${t.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const gap = t.indexOf("::");
  let groups: string[];
  if (gap < 0) groups = t.split(":");
  else {
    const left = gap > 0 ? t.slice(0, gap).split(":") : [];
    const right = gap + 2 < t.length ? t.slice(gap + 2).split(":") : [];
    groups = [...left, ...new Array<string>(8 - left.length - right.length).fill("0"), ...right];
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(Number.parseInt(g, 16));
  return value;
}

/** Brackets and a zone index (`fe80::1%eth0`) are not part of the address. */
function bare(address: string): string {
  let a = address.trim();
  if (a.startsWith("[") && a.endsWith("]")) a = a.slice(1, -1);
  const pct = a.indexOf("%");
  return pct >= 0 ? a.slice(0, pct) : a;
}

function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function formatIPv6(v: bigint): string {
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((v >> BigInt(16 * i)) & 0xffffn).toString(16));
  // The longest run of two or more zero groups becomes `::` (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/**
 * Parses `address/prefix`, or a single address (a full-length prefix).
 *
 * @throws {@link ConfigError} naming `source` when the text is not a CIDR range or has host bits set.
 * @example
 * ```ts
 * parseCidr("169.254.0.0/16").text // "169.254.0.0/16"
 * ```
 */
export function parseCidr(text: string, source = "cidr"): Cidr {
  return parseRange(text, source);
}

function parseRange(text: string, source: string): Range {
  if (typeof text !== "string")
    throw new ConfigError(source, text, "expected a CIDR range such as 10.0.0.0/8");
  const slash = text.indexOf("/");
  const addr = (slash >= 0 ? text.slice(0, slash) : text).trim();
  const prefixText = slash >= 0 ? text.slice(slash + 1).trim() : undefined;
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0;
  if (family === 0) {
    throw new ConfigError(
      source,
      text,
      "not an IPv4 or IPv6 address or CIDR range (e.g. 10.0.0.0/8, fd00::/8)",
    );
  }
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) {
      throw new ConfigError(source, text, `prefix length must be 0-${bits}`);
    }
    prefix = Number(prefixText);
  }
  if (family === 4) {
    const base = parseIPv4(addr);
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    if ((base & mask) >>> 0 !== base) {
      throw new ConfigError(
        source,
        text,
        `host bits set; did you mean ${formatIPv4((base & mask) >>> 0)}/${prefix}?`,
      );
    }
    return { family, prefix, base, mask, text: `${formatIPv4(base)}/${prefix}` };
  }
  const base = parseIPv6(addr);
  const mask = prefix === 0 ? 0n : (ALL6 >> BigInt(128 - prefix)) << BigInt(128 - prefix);
  if ((base & mask) !== base) {
    throw new ConfigError(source, text, `host bits set; did you mean ${formatIPv6(base & mask)}/${prefix}?`);
  }
  return { family, prefix, base, mask, text: `${formatIPv6(base)}/${prefix}` };
}

/** An address in both forms: IPv4 (when it is one, or IPv4-mapped) and IPv6 (mapped when it is IPv4). */
interface Forms {
  v4: number | undefined;
  v6: bigint;
}

function addressForms(address: string): Forms | undefined {
  const a = bare(address);
  if (isIPv4(a)) {
    const v4 = parseIPv4(a);
    return { v4, v6: MAPPED_PREFIX | BigInt(v4) };
  }
  if (isIPv6(a)) {
    const v6 = parseIPv6(a);
    const v4 = v6 >> 32n === 0xffffn ? Number(v6 & 0xffffffffn) : undefined;
    return { v4, v6 };
  }
  const legacy = parseLegacyIPv4(a);
  return legacy === undefined ? undefined : { v4: legacy, v6: MAPPED_PREFIX | BigInt(legacy) };
}

function inRange(r: Range, f: Forms): boolean {
  if (r.family === 4) return f.v4 !== undefined && (f.v4 & r.mask) >>> 0 === r.base;
  return (f.v6 & r.mask) === r.base;
}

/**
 * Builds an egress guard. Deny rules are {@link DEFAULT_EGRESS_DENY} (unless
 * `defaultDeny` is false) and then `deny`; an address they match is refused
 * whatever the allow list says. With a non-empty `allow`, an address outside
 * every allowed range is refused too.
 *
 * @param source Names the option in errors: `egress`, or `<file>: egress`.
 * @throws {@link ConfigError} naming the entry (`egress.deny[2]`) when a range is invalid.
 * @example
 * ```ts
 * const guard = createEgressGuard({ allow: ["10.0.0.0/8"] });
 * guard.check("169.254.169.254") // { address: "169.254.169.254", rule: "deny 169.254.0.0/16" }
 * guard.check("192.168.1.1")     // { address: "192.168.1.1", rule: "not in allow list" }
 * guard.check("10.1.2.3")        // undefined: allowed
 * ```
 */
export function createEgressGuard(options: EgressOptions = {}, source = "egress"): EgressGuard {
  const deny: Range[] = [];
  if (options.defaultDeny !== false) {
    for (const c of DEFAULT_EGRESS_DENY) deny.push(parseRange(c, "DEFAULT_EGRESS_DENY"));
  }
  (options.deny ?? []).forEach((c, i) => {
    deny.push(parseRange(c, `${source}.deny[${i}]`));
  });
  const allow = (options.allow ?? []).map((c, i) => parseRange(c, `${source}.allow[${i}]`));
  const rules = Object.freeze([...deny.map((r) => `deny ${r.text}`), ...allow.map((r) => `allow ${r.text}`)]);
  return {
    rules,
    check(address) {
      const forms = addressForms(address);
      if (forms === undefined) return undefined;
      for (const r of deny) if (inRange(r, forms)) return { address, rule: `deny ${r.text}` };
      if (allow.length > 0 && !allow.some((r) => inRange(r, forms))) {
        return { address, rule: "not in allow list" };
      }
      return undefined;
    },
  };
}

/** The `lookup` function `net.connect` and `tls.connect` accept. */
export type LookupFunction = (
  hostname: string,
  options: LookupOptions,
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/**
 * Wraps a `lookup` function (default `dns.lookup`) so that a host name
 * never resolves to a refused address: refused addresses are dropped from
 * the answer, and when none is left the lookup fails with an
 * {@link EgressDeniedError} naming the first refused address and its rule.
 * Pass the result as the `lookup` option of `net.connect`/`tls.connect`
 * (Node calls it for host names only; check IP literals with
 * {@link EgressGuard.check} first).
 *
 * @example
 * ```ts
 * net.connect({ host: endpoint.address, port, lookup: guardedLookup(guard) })
 * ```
 */
export function guardedLookup(
  guard: EgressGuard,
  base: LookupFunction = dnsLookup as LookupFunction,
): LookupFunction {
  return (hostname, options, callback) => {
    base(hostname, options, (err, address, family) => {
      if (err) return callback(err, address, family);
      if (Array.isArray(address)) {
        let first: EgressViolation | undefined;
        const kept = address.filter((a) => {
          const v = guard.check(a.address);
          first ??= v;
          return v === undefined;
        });
        if (kept.length === 0 && first !== undefined) {
          return callback(denied(first), []);
        }
        return callback(null, kept);
      }
      const v = guard.check(address);
      if (v !== undefined) return callback(denied(v), "", family);
      callback(null, address, family);
    });
  };
}

function denied(v: EgressViolation): NodeJS.ErrnoException {
  return new EgressDeniedError(v.address, v.rule) as EgressDeniedError & NodeJS.ErrnoException;
}

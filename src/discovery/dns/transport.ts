/**
 * The DNS transport family: what the DNS backend asks of a DNS client (A,
 * AAAA and SRV lookups with TTLs, and cancellation), the one error type both
 * clients fail with, and the default client over `node:dns`'s `Resolver`.
 * The TCP client, for servers reached with `force_tcp`, is in `tcp.ts`.
 *
 * @module
 */

import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";

/** An address record with its TTL in seconds. */
export interface AddressRecord {
  /** The IPv4 or IPv6 address. */
  readonly address: string;
  /** The record's TTL, seconds. */
  readonly ttl: number;
}

/** A service record (RFC 2782). */
export interface SrvRecord {
  /** Lower is preferred. */
  readonly priority: number;
  /** Relative weight among records of the same priority. */
  readonly weight: number;
  /** The port to connect to. */
  readonly port: number;
  /** The target host name (without a trailing dot), or `.`/empty for "no service". */
  readonly target: string;
  /** The record's TTL in seconds, when the client exposes it (`node:dns` does not for SRV). */
  readonly ttl: number | undefined;
}

/**
 * A failed lookup. `code` uses `node:dns`'s codes, whichever client failed:
 * `ENOTFOUND` (NXDOMAIN), `ENODATA` (the name exists without records of the
 * type), `ESERVFAIL`, `EREFUSED`, `ETIMEOUT`, `ECONNREFUSED`, `EBADRESP` (a
 * malformed answer), `ECANCELLED`, …
 */
export class DnsQueryError extends Error {
  /** A `node:dns` error code. */
  readonly code: string;
  /**
   * For `ENOTFOUND`/`ENODATA`: how long the server says the absence may be
   * cached (RFC 2308: the SOA's TTL and MINIMUM), when the client knows it.
   */
  readonly ttl: number | undefined;

  /** Creates an error; `ttl` is the negative-caching TTL, if known. */
  constructor(code: string, message: string, options?: { cause?: unknown; ttl?: number | undefined }) {
    super(`${code} ${message}`, options);
    this.name = "DnsQueryError";
    this.code = code;
    this.ttl = options?.ttl;
  }
}

/** Codes that mean "the name (or the record type) does not exist": authoritative, not a failure. */
export const ABSENT_CODES: ReadonlySet<string> = new Set(["ENOTFOUND", "ENODATA"]);

/** A DNS client bound to one cluster's servers. */
export interface DnsTransport {
  /** A records of `name`. */
  a(name: string): Promise<AddressRecord[]>;
  /** AAAA records of `name`. */
  aaaa(name: string): Promise<AddressRecord[]>;
  /** SRV records of `name`. */
  srv(name: string): Promise<SrvRecord[]>;
  /** Cancels every lookup in flight; each rejects with `ECANCELLED`. The transport stays usable. */
  cancel(): void;
}

/** Where and how a transport asks. */
export interface DnsTransportOptions {
  /** Servers as `{ host, port }`; empty for the system resolver's servers. */
  readonly servers: readonly DnsServer[];
  /** Per-try timeout, ms. */
  readonly timeout: number;
  /** Tries per server before giving up. */
  readonly tries: number;
}

/** One DNS server address. */
export interface DnsServer {
  /** An IPv4 or IPv6 address (no brackets). */
  readonly host: string;
  /** The port, 53 by default. */
  readonly port: number;
}

/**
 * Parses `host`, `host:port`, `[v6]` or `[v6]:port` where host is an IP
 * address (`node:dns` needs addresses: a server's own name would need a DNS
 * lookup to find). Returns `undefined` when malformed.
 */
export function parseDnsServer(input: string): DnsServer | undefined {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(input);
  let host: string;
  let port: string | undefined;
  if (bracketed) {
    host = bracketed[1]!;
    port = bracketed[2];
    if (isIP(host) !== 6) return undefined;
  } else if (isIP(input) === 6) {
    host = input;
  } else {
    const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(input);
    if (!m || isIP(m[1]!) !== 4) return undefined;
    host = m[1]!;
    port = m[2];
  }
  const n = port === undefined ? 53 : Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) return undefined;
  return { host, port: n };
}

/** Formats a server for `Resolver.setServers` and messages: `1.2.3.4:53`, `[::1]:53`. */
export function formatDnsServer(server: DnsServer): string {
  return server.host.includes(":") ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
}

function wrap(err: unknown, what: string): DnsQueryError {
  if (err instanceof DnsQueryError) return err;
  const code = (err as { code?: unknown })?.code;
  return new DnsQueryError(typeof code === "string" ? code : "EUNKNOWN", what, { cause: err });
}

/**
 * The default transport: `node:dns`'s `Resolver` (c-ares, over UDP with TCP
 * fallback on truncation). Asynchronous on the event loop, unlike
 * `dns.lookup`, which blocks a libuv thread-pool slot per call.
 */
export function nativeTransport(options: DnsTransportOptions): DnsTransport {
  const resolver = new Resolver({ timeout: options.timeout, tries: options.tries });
  if (options.servers.length > 0) resolver.setServers(options.servers.map(formatDnsServer));
  return {
    a: (name) =>
      resolver.resolve4(name, { ttl: true }).then(
        (records) => records.map((r) => ({ address: r.address, ttl: r.ttl })),
        (err) => Promise.reject(wrap(err, `querying A ${name}`)),
      ),
    aaaa: (name) =>
      resolver.resolve6(name, { ttl: true }).then(
        (records) => records.map((r) => ({ address: r.address, ttl: r.ttl })),
        (err) => Promise.reject(wrap(err, `querying AAAA ${name}`)),
      ),
    srv: (name) =>
      resolver.resolveSrv(name).then(
        (records) =>
          records.map((r) => ({
            priority: r.priority,
            weight: r.weight,
            port: r.port,
            target: r.name,
            // node:dns reports no TTL for SRV answers; the backend falls back
            // on the targets' address TTLs.
            ttl: undefined,
          })),
        (err) => Promise.reject(wrap(err, `querying SRV ${name}`)),
      ),
    cancel: () => resolver.cancel(),
  };
}

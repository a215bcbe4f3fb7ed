/**
 * The DNS transport family: what the DNS backend asks of a DNS client (A,
 * AAAA and SRV lookups with TTLs, each cancellable on its own, and closing),
 * the one error type both clients fail with, and the default client over
 * `node:dns`'s `Resolver`. The TCP client, for servers reached with
 * `force_tcp`, is in `tcp.ts`.
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
  /**
   * The target's addresses from the answer's additional section (RFC 2782
   * asks servers to send them along), when the server sent any; the backend
   * then does not ask for them. `node:dns` does not expose that section.
   */
  readonly addresses?: readonly AddressRecord[] | undefined;
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

/**
 * A DNS client bound to one cluster's servers, shared by every watch of that
 * cluster. A lookup whose `signal` aborts rejects at once with `ECANCELLED`
 * and leaves the other lookups alone; a lookup asked with an aborted signal
 * does no I/O.
 */
export interface DnsTransport {
  /** A records of `name`. */
  a(name: string, signal?: AbortSignal): Promise<AddressRecord[]>;
  /** AAAA records of `name`. */
  aaaa(name: string, signal?: AbortSignal): Promise<AddressRecord[]>;
  /** SRV records of `name`. */
  srv(name: string, signal?: AbortSignal): Promise<SrvRecord[]>;
  /** Releases every socket and timer; lookups in flight reject with `ECANCELLED`, later ones too. */
  close(): void;
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
 * Settles with `query`'s outcome, or rejects with `ECANCELLED` as soon as
 * `signal` aborts. c-ares cannot cancel one query of a shared channel, so an
 * abandoned query runs out on its own (within `timeout` × `tries`); closing
 * the transport cancels them all.
 */
function abandonable<T>(query: () => Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (signal?.aborted) return Promise.reject(new DnsQueryError("ECANCELLED", what));
  const p = query();
  if (signal === undefined) return p.catch((err) => Promise.reject(wrap(err, what)));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new DnsQueryError("ECANCELLED", what));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(wrap(err, what));
      },
    );
  });
}

/**
 * The default transport: `node:dns`'s `Resolver` (c-ares, over UDP with TCP
 * fallback on truncation). Asynchronous on the event loop, unlike
 * `dns.lookup`, which blocks a libuv thread-pool slot per call.
 */
export function nativeTransport(options: DnsTransportOptions): DnsTransport {
  const resolver = new Resolver({ timeout: options.timeout, tries: options.tries });
  if (options.servers.length > 0) resolver.setServers(options.servers.map(formatDnsServer));
  let closed = false;
  const cancelled = (what: string) => Promise.reject(new DnsQueryError("ECANCELLED", what));
  return {
    a: (name, signal) =>
      closed
        ? cancelled(`querying A ${name}`)
        : abandonable(
            () =>
              resolver
                .resolve4(name, { ttl: true })
                .then((records) => records.map((r) => ({ address: r.address, ttl: r.ttl }))),
            signal,
            `querying A ${name}`,
          ),
    aaaa: (name, signal) =>
      closed
        ? cancelled(`querying AAAA ${name}`)
        : abandonable(
            () =>
              resolver
                .resolve6(name, { ttl: true })
                .then((records) => records.map((r) => ({ address: r.address, ttl: r.ttl }))),
            signal,
            `querying AAAA ${name}`,
          ),
    srv: (name, signal) =>
      closed
        ? cancelled(`querying SRV ${name}`)
        : abandonable(
            () =>
              resolver.resolveSrv(name).then((records) =>
                records.map(
                  (r): SrvRecord => ({
                    priority: r.priority,
                    weight: r.weight,
                    port: r.port,
                    target: r.name,
                    // node:dns reports no TTL for SRV answers: the backend
                    // counts it as its defaultTtl.
                    ttl: undefined,
                  }),
                ),
              ),
            signal,
            `querying SRV ${name}`,
          ),
    close() {
      closed = true;
      resolver.cancel();
    },
  };
}

/**
 * A DNS client over TCP (RFC 1035 §4.2.2, RFC 7766). `node:dns`'s
 * `Resolver` only falls back to TCP on a truncated UDP answer; clusters
 * whose DNS is reached through CoreDNS's `force_tcp`, or across networks
 * that drop UDP, need TCP from the first byte. Every lookup of the cluster
 * shares one pipelined connection per server (`connection.ts`).
 *
 * @module
 */

import { TcpDnsConnection } from "./connection.js";
import {
  type AddressRecord,
  DnsQueryError,
  type DnsTransport,
  type DnsTransportOptions,
  type SrvRecord,
} from "./transport.js";
import { type QueryType, readAnswer } from "./wire.js";

/** Answers that end the search at once: the next server would say the same. */
const FINAL = new Set(["ENOTFOUND", "ENODATA", "ECANCELLED", "EBADNAME"]);

/** Options of {@link tcpTransport}. */
export interface TcpTransportOptions extends DnsTransportOptions {
  /** Close a server's connection after this long without a question, ms; default 5 000. */
  readonly idleTimeout?: number | undefined;
}

/**
 * A transport that asks over TCP. Each try goes through the servers in
 * order; NXDOMAIN and NODATA end the search, while a timeout, a refused
 * connection, SERVFAIL, REFUSED or a malformed answer moves on to the next
 * server (as c-ares does).
 */
export function tcpTransport(options: TcpTransportOptions): DnsTransport {
  const connections = options.servers.map(
    (server) => new TcpDnsConnection(server, { idleTimeout: options.idleTimeout }),
  );
  let closed = false;

  async function ask(
    name: string,
    type: QueryType,
    signal: AbortSignal | undefined,
  ): Promise<AddressRecord[] | SrvRecord[]> {
    const what = `querying ${type} ${name}`;
    if (connections.length === 0) throw new DnsQueryError("ECONNREFUSED", `${what}: no DNS server`);
    let last: DnsQueryError | undefined;
    for (let attempt = 0; attempt < options.tries; attempt++) {
      for (const connection of connections) {
        if (closed || signal?.aborted) throw new DnsQueryError("ECANCELLED", what);
        try {
          const { id, answer } = await connection.exchange(name, type, options.timeout, signal, what);
          return type === "SRV" ? readAnswer(answer, id, name, "SRV") : readAnswer(answer, id, name, type);
        } catch (err) {
          const e =
            err instanceof DnsQueryError
              ? err
              : new DnsQueryError("EBADRESP", `${what}: ${(err as Error)?.message}`, { cause: err });
          if (FINAL.has(e.code)) throw e;
          last = e;
        }
      }
    }
    throw last!;
  }

  return {
    a: (name, signal) => ask(name, "A", signal) as Promise<AddressRecord[]>,
    aaaa: (name, signal) => ask(name, "AAAA", signal) as Promise<AddressRecord[]>,
    srv: (name, signal) => ask(name, "SRV", signal) as Promise<SrvRecord[]>,
    close() {
      closed = true;
      for (const connection of connections) connection.close();
    },
  };
}

/**
 * A DNS client over TCP (RFC 1035 §4.2.2, RFC 7766): one connection per
 * question, the message framed by a two-byte length. `node:dns`'s
 * `Resolver` only falls back to TCP on a truncated UDP answer; clusters
 * whose DNS is reached through CoreDNS's `force_tcp`, or across networks
 * that drop UDP, need TCP from the first byte.
 *
 * @module
 */

import { randomInt } from "node:crypto";
import { connect } from "node:net";
import {
  type AddressRecord,
  DnsQueryError,
  type DnsServer,
  type DnsTransport,
  type DnsTransportOptions,
  formatDnsServer,
  type SrvRecord,
} from "./transport.js";
import { encodeQuery, type QueryType, readAnswer } from "./wire.js";

/** Answers that end the search at once: the next server would say the same. */
const FINAL = new Set(["ENOTFOUND", "ENODATA", "ECANCELLED", "EBADNAME"]);

/** Sends one framed query to one server and returns the framed answer's payload. */
function exchange(
  server: DnsServer,
  query: Buffer,
  timeout: number,
  inflight: Set<() => void>,
  what: string,
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const where = `${what} at ${formatDnsServer(server)}`;
    const socket = connect({ host: server.host, port: server.port });
    const cancel = () => finish(new DnsQueryError("ECANCELLED", where));
    inflight.add(cancel);
    let chunks: Buffer[] = [];
    let received = 0;
    let done = false;
    const finish = (err: DnsQueryError | undefined, answer?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      inflight.delete(cancel);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new DnsQueryError("ETIMEOUT", where)), timeout);
    socket.setNoDelay(true);
    socket.on("connect", () => {
      const frame = Buffer.alloc(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      socket.write(frame);
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < 2) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      chunks = [all];
      const length = all.readUInt16BE(0);
      if (length === 0) return finish(new DnsQueryError("EBADRESP", `${where}: empty answer frame`));
      if (received >= 2 + length) finish(undefined, all.subarray(2, 2 + length));
    });
    socket.on("error", (err: NodeJS.ErrnoException) =>
      finish(new DnsQueryError(err.code ?? "ECONNRESET", where, { cause: err })),
    );
    socket.on("close", () =>
      finish(new DnsQueryError("EBADRESP", `${where}: connection closed before a whole answer`)),
    );
  });
}

/**
 * A transport that asks over TCP. Each try goes through the servers in
 * order; NXDOMAIN and NODATA end the search, while a timeout, a refused
 * connection, SERVFAIL, REFUSED or a malformed answer moves on to the next
 * server (as c-ares does).
 */
export function tcpTransport(options: DnsTransportOptions): DnsTransport {
  const inflight = new Set<() => void>();
  const servers = options.servers;
  // Bumped by cancel(): a lookup between two tries sees it and stops.
  let generation = 0;

  async function ask(name: string, type: QueryType): Promise<Buffer | AddressRecord[] | SrvRecord[]> {
    const what = `querying ${type} ${name}`;
    if (servers.length === 0) throw new DnsQueryError("ECONNREFUSED", `${what}: no DNS server`);
    const started = generation;
    let last: DnsQueryError | undefined;
    for (let attempt = 0; attempt < options.tries; attempt++) {
      for (const server of servers) {
        if (generation !== started) throw new DnsQueryError("ECANCELLED", what);
        const id = randomInt(0, 0x10000);
        try {
          const answer = await exchange(server, encodeQuery(id, name, type), options.timeout, inflight, what);
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
    a: (name) => ask(name, "A") as Promise<AddressRecord[]>,
    aaaa: (name) => ask(name, "AAAA") as Promise<AddressRecord[]>,
    srv: (name) => ask(name, "SRV") as Promise<SrvRecord[]>,
    cancel() {
      generation++;
      for (const cancel of [...inflight]) cancel();
    },
  };
}

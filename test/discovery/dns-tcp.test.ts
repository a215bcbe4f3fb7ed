import { EventEmitter, once } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { tcpTransport } from "../../src/discovery/dns/tcp.js";
import { DnsQueryError, type DnsServer, type DnsTransport } from "../../src/discovery/dns/transport.js";
import { createDnsBackend } from "../../src/discovery/dns.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";

const WEB = "web.default.svc.cluster.local";
const servers: Server[] = [];
const transports: DnsTransport[] = [];

/** A TCP transport closed after the test (its idle connection would hold the server open). */
function openTransport(options: Parameters<typeof tcpTransport>[0]): DnsTransport {
  const t = tcpTransport(options);
  transports.push(t);
  return t;
}

/** A TCP "DNS server" whose reply to each framed query the test writes. */
async function tcpServer(reply: (query: Buffer, socket: Socket) => void): Promise<DnsServer> {
  const server = createServer((socket) => {
    let buf = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) reply(buf.subarray(2), socket);
    });
    socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return { host: "127.0.0.1", port: (server.address() as AddressInfo).port };
}

/** Answers the query with the given A records (echoing id and question). */
function answerA(query: Buffer, ips: string[]): Buffer {
  const header = Buffer.from(query.subarray(0, 12));
  header.writeUInt16BE(0x8180, 2);
  header.writeUInt16BE(ips.length, 6);
  const records = ips.map((ip) =>
    Buffer.concat([
      Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]),
      Buffer.from(ip.split(".").map(Number)),
    ]),
  );
  return Buffer.concat([header, query.subarray(12), ...records]);
}

/** A TCP DNS server that hands every framed query to `onQuery`, and counts connections. */
async function pipelineServer(
  onQuery: (query: Buffer, socket: Socket, connection: number) => void,
): Promise<{ server: DnsServer; connections: () => number; events: EventEmitter }> {
  let connections = 0;
  // "query" after each query is handled, "close" when a connection closes.
  const events = new EventEmitter();
  const server = createServer((socket) => {
    const connection = ++connections;
    let buf: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const end = 2 + buf.readUInt16BE(0);
        const query = buf.subarray(2, end);
        buf = buf.subarray(end);
        if (!socket.destroyed) onQuery(query, socket, connection);
        events.emit("query");
      }
    });
    socket.on("close", () => events.emit("close"));
    socket.on("error", () => {});
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return {
    server: { host: "127.0.0.1", port: (server.address() as AddressInfo).port },
    connections: () => connections,
    events,
  };
}

/** The name asked in a query (uncompressed, as clients write it). */
function asked(query: Buffer): string {
  const labels: string[] = [];
  for (let pos = 12; query[pos]! > 0; pos += 1 + query[pos]!) {
    labels.push(query.subarray(pos + 1, pos + 1 + query[pos]!).toString());
  }
  return labels.join(".");
}

const ipOf = (name: string) => `10.0.0.${Number(/^p(\d+)\./.exec(name)?.[1] ?? 0)}`;

function frame(payload: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(payload.length);
  return Buffer.concat([len, payload]);
}

async function rejection(p: Promise<unknown>): Promise<DnsQueryError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(DnsQueryError);
    return err as DnsQueryError;
  }
  throw new Error("expected a rejection");
}

afterEach(async () => {
  for (const t of transports.splice(0)) t.close();
  for (const s of servers.splice(0)) {
    s.close();
    await once(s, "close");
  }
});

describe("tcpTransport", () => {
  it("reads an answer that arrives one byte at a time", async () => {
    const server = await tcpServer((q, socket) => {
      const bytes = frame(answerA(q, ["10.0.0.1", "10.0.0.2"]));
      let i = 0;
      const drip = () => {
        if (i < bytes.length) socket.write(bytes.subarray(i, ++i), drip);
      };
      drip();
    });
    const t = openTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect(await t.a(WEB)).toEqual([
      { address: "10.0.0.1", ttl: 30 },
      { address: "10.0.0.2", ttl: 30 },
    ]);
  });

  it("fails a garbage payload with EBADRESP", async () => {
    const server = await tcpServer((_q, socket) =>
      socket.write(frame(Buffer.from("this is not DNS at all"))),
    );
    const t = openTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect((await rejection(t.a(WEB))).code).toBe("EBADRESP");
  });

  it("fails a connection closed mid-answer with EBADRESP", async () => {
    const server = await tcpServer((q, socket) =>
      socket.end(frame(answerA(q, ["10.0.0.1"])).subarray(0, 20)),
    );
    const t = openTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect((await rejection(t.a(WEB))).code).toBe("EBADRESP");
  });

  it("times out a silent server with ETIMEOUT", async () => {
    const server = await tcpServer(() => {});
    const t = openTransport({ servers: [server], timeout: 50, tries: 2 });
    expect((await rejection(t.a(WEB))).code).toBe("ETIMEOUT");
  });

  it("moves on to the next server after a refused connection", async () => {
    const dead = await tcpServer(() => {});
    servers.pop()!.close();
    const good = await tcpServer((q, socket) => socket.write(frame(answerA(q, ["10.0.0.7"]))));
    const t = openTransport({ servers: [dead, good], timeout: 2000, tries: 1 });
    expect(await t.a(WEB)).toEqual([{ address: "10.0.0.7", ttl: 30 }]);
  });

  it("cancels lookups in flight with ECANCELLED on close()", async () => {
    let connected!: () => void;
    const seen = new Promise<void>((resolve) => (connected = resolve));
    const server = await tcpServer(() => connected());
    const t = openTransport({ servers: [server], timeout: 10_000, tries: 3 });
    const pending = t.srv(`_http._tcp.${WEB}`);
    await seen;
    t.close();
    expect((await rejection(pending)).code).toBe("ECANCELLED");
    expect((await rejection(t.a(WEB))).code).toBe("ECANCELLED");
  });
});

describe("tcpTransport over one connection", () => {
  it("pipelines concurrent questions on one connection and matches answers by ID in any order", async () => {
    const held: [Buffer, Socket][] = [];
    let seen = 0;
    const s = await pipelineServer((q, socket) => {
      // The first three questions all arrive before the first answer;
      // their answers go back last first. Later ones are answered at once.
      held.push([q, socket]);
      if (++seen >= 3) {
        for (const [query, sock] of held.splice(0).reverse()) {
          sock.write(frame(answerA(query, [ipOf(asked(query))])));
        }
      }
    });
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1 });
    const answers = await Promise.all([1, 2, 3].map((i) => t.a(`p${i}.${WEB}`)));
    expect(answers.map((r) => r[0]!.address)).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    expect(s.connections()).toBe(1);
    // The connection stays open for the next questions.
    expect((await t.a(`p4.${WEB}`))[0]!.address).toBe("10.0.0.4");
    expect(s.connections()).toBe(1);
    t.close();
  });

  it("asks the unanswered questions again on a new connection when the server closes after each answer", async () => {
    const s = await pipelineServer((q, socket) => socket.end(frame(answerA(q, [ipOf(asked(q))]))));
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1 });
    const answers = await Promise.all([1, 2, 3, 4].map((i) => t.a(`p${i}.${WEB}`)));
    expect(answers.map((r) => r[0]!.address)).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    expect(s.connections()).toBeGreaterThan(1);
    t.close();
  });

  it("closes an idle connection after the idle timeout and opens a new one for the next question", async () => {
    const s = await pipelineServer((q, socket) => socket.write(frame(answerA(q, ["10.0.0.1"]))));
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1, idleTimeout: 20 });
    const closed = once(s.events, "close");
    await t.a(WEB);
    await closed;
    expect(s.connections()).toBe(1);
    await t.a(WEB);
    expect(s.connections()).toBe(2);
    t.close();
  });

  it("abandons an aborted question at once and keeps the connection for the others", async () => {
    const held: [Buffer, Socket][] = [];
    const s = await pipelineServer((q, socket) => {
      held.push([q, socket]);
      if (held.length === 2)
        for (const [query, sock] of held) sock.write(frame(answerA(query, ["10.0.0.9"])));
    });
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1 });
    const abort = new AbortController();
    const received = once(s.events, "query");
    const first = t.a(`p1.${WEB}`, abort.signal);
    await received;
    abort.abort();
    expect((await rejection(first)).code).toBe("ECANCELLED");
    // The late answer to the abandoned question is dropped; the other is matched.
    expect(await t.a(`p2.${WEB}`)).toEqual([{ address: "10.0.0.9", ttl: 30 }]);
    expect(s.connections()).toBe(1);
    t.close();
  });

  it("drops a well-formed answer to no question of its own and waits for the right one", async () => {
    const s = await pipelineServer((q, socket) => {
      const stray = answerA(q, ["10.0.0.66"]);
      stray.writeUInt16BE((q.readUInt16BE(0) + 1) & 0xffff, 0);
      socket.write(frame(stray));
      socket.write(frame(answerA(q, ["10.0.0.1"])));
    });
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1 });
    expect(await t.a(WEB)).toEqual([{ address: "10.0.0.1", ttl: 30 }]);
    t.close();
  });

  it("opens a new connection for the next try when the server went silent on the first", async () => {
    const s = await pipelineServer((q, socket, connection) => {
      if (connection > 1) socket.write(frame(answerA(q, ["10.0.0.1"])));
    });
    const t = openTransport({ servers: [s.server], timeout: 100, tries: 2 });
    expect(await t.a(WEB)).toEqual([{ address: "10.0.0.1", ttl: 30 }]);
    expect(s.connections()).toBe(2);
    t.close();
  });

  it("closes its connections on close()", async () => {
    const s = await pipelineServer((q, socket) => socket.write(frame(answerA(q, ["10.0.0.1"]))));
    const t = openTransport({ servers: [s.server], timeout: 5000, tries: 1 });
    await t.a(WEB);
    const closed = once(s.events, "close");
    t.close();
    await closed;
    expect(s.connections()).toBe(1);
  });
});

describe("dnsDiscovery", () => {
  it("yields a garbage TCP answer as a failed update carrying a DiscoveryError", async () => {
    const server = await tcpServer((_q, socket) => socket.write(frame(Buffer.alloc(40, 0xff))));
    const backend = createDnsBackend({
      clusters: [{ name: "east", region: "us-east-1", servers: [`127.0.0.1:${server.port}`], tcp: true }],
      tries: 1,
    });
    const abort = new AbortController();
    const it = backend
      .watch(parseServiceName("web.default", 8080), { signal: abort.signal })
      [Symbol.asyncIterator]();
    const first = await it.next();
    abort.abort();
    expect(first.value).toMatchObject({ kind: "failed" });
    const error = (first.value as { error: DiscoveryError }).error;
    expect(error).toBeInstanceOf(DiscoveryError);
    expect(error.code).toBe(ErrorCodes.DISCOVERY);
    expect(error.backend).toBe("dns");
    expect(error.service).toBe("web.default");
    expect((error.cause as DnsQueryError).code).toBe("EBADRESP");
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });
});

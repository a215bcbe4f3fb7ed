import { once } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { tcpTransport } from "../../src/discovery/dns/tcp.js";
import { DnsQueryError, type DnsServer } from "../../src/discovery/dns/transport.js";
import { createDnsBackend } from "../../src/discovery/dns.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";

const WEB = "web.default.svc.cluster.local";
const servers: Server[] = [];

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
    const t = tcpTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect(await t.a(WEB)).toEqual([
      { address: "10.0.0.1", ttl: 30 },
      { address: "10.0.0.2", ttl: 30 },
    ]);
  });

  it("fails a garbage payload with EBADRESP", async () => {
    const server = await tcpServer((_q, socket) =>
      socket.write(frame(Buffer.from("this is not DNS at all"))),
    );
    const t = tcpTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect((await rejection(t.a(WEB))).code).toBe("EBADRESP");
  });

  it("fails a connection closed mid-answer with EBADRESP", async () => {
    const server = await tcpServer((q, socket) =>
      socket.end(frame(answerA(q, ["10.0.0.1"])).subarray(0, 20)),
    );
    const t = tcpTransport({ servers: [server], timeout: 2000, tries: 1 });
    expect((await rejection(t.a(WEB))).code).toBe("EBADRESP");
  });

  it("times out a silent server with ETIMEOUT", async () => {
    const server = await tcpServer(() => {});
    const t = tcpTransport({ servers: [server], timeout: 50, tries: 2 });
    expect((await rejection(t.a(WEB))).code).toBe("ETIMEOUT");
  });

  it("moves on to the next server after a refused connection", async () => {
    const dead = await tcpServer(() => {});
    servers.pop()!.close();
    const good = await tcpServer((q, socket) => socket.write(frame(answerA(q, ["10.0.0.7"]))));
    const t = tcpTransport({ servers: [dead, good], timeout: 2000, tries: 1 });
    expect(await t.a(WEB)).toEqual([{ address: "10.0.0.7", ttl: 30 }]);
  });

  it("cancels lookups in flight with ECANCELLED", async () => {
    let connected!: () => void;
    const seen = new Promise<void>((resolve) => (connected = resolve));
    const server = await tcpServer(() => connected());
    const t = tcpTransport({ servers: [server], timeout: 10_000, tries: 3 });
    const pending = t.srv(`_http._tcp.${WEB}`);
    await seen;
    t.cancel();
    expect((await rejection(pending)).code).toBe("ECANCELLED");
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

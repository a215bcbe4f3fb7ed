import { describe, expect, it } from "vitest";
import { DnsQueryError } from "../../src/discovery/dns/transport.js";
import { encodeQuery, parseMessage, RecordType, readAnswer, readName } from "../../src/discovery/dns/wire.js";

// A hand-rolled response builder: names uncompressed unless a test writes
// the bytes itself.
function name(n: string): Buffer {
  const parts = n
    .split(".")
    .filter(Boolean)
    .flatMap((l) => [Buffer.from([l.length]), Buffer.from(l)]);
  return Buffer.concat([...parts, Buffer.from([0])]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

interface RR {
  name: string | Buffer;
  type: number;
  ttl?: number;
  cls?: number;
  data: Buffer;
}

function rr(r: RR): Buffer {
  return Buffer.concat([
    typeof r.name === "string" ? name(r.name) : r.name,
    u16(r.type),
    u16(r.cls ?? 1),
    u32(r.ttl ?? 30),
    u16(r.data.length),
    r.data,
  ]);
}

function response(opts: {
  id?: number;
  flags?: number;
  rcode?: number;
  question?: { name: string; type: number } | null;
  answers?: Buffer[];
  authority?: Buffer[];
  additional?: Buffer[];
}): Buffer {
  const q = opts.question === undefined ? { name: "web.default.svc.cluster.local", type: 1 } : opts.question;
  const answers = opts.answers ?? [];
  const authority = opts.authority ?? [];
  const additional = opts.additional ?? [];
  return Buffer.concat([
    u16(opts.id ?? 0x1234),
    u16((opts.flags ?? 0x8180) | (opts.rcode ?? 0)),
    u16(q ? 1 : 0),
    u16(answers.length),
    u16(authority.length),
    u16(additional.length),
    ...(q ? [name(q.name), u16(q.type), u16(1)] : []),
    ...answers,
    ...authority,
    ...additional,
  ]);
}

const A = (ip: string) => Buffer.from(ip.split(".").map(Number));
const WEB = "web.default.svc.cluster.local";

function errorOf(fn: () => unknown): DnsQueryError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DnsQueryError);
    return err as DnsQueryError;
  }
  throw new Error("expected a DnsQueryError");
}

describe("encodeQuery", () => {
  it("writes one question with RD set and class IN", () => {
    const q = encodeQuery(0xbeef, "web.default.svc.cluster.local.", "SRV");
    expect(q.readUInt16BE(0)).toBe(0xbeef);
    expect(q.readUInt16BE(2)).toBe(0x0100);
    expect([q.readUInt16BE(4), q.readUInt16BE(6), q.readUInt16BE(8), q.readUInt16BE(10)]).toEqual([
      1, 0, 0, 0,
    ]);
    expect(q.subarray(12)).toEqual(Buffer.concat([name(WEB), u16(33), u16(1)]));
  });

  it("rejects empty and over-long labels with EBADNAME", () => {
    expect(errorOf(() => encodeQuery(1, "a..b", "A")).code).toBe("EBADNAME");
    expect(errorOf(() => encodeQuery(1, `${"x".repeat(64)}.local`, "A")).code).toBe("EBADNAME");
    expect(errorOf(() => encodeQuery(1, Array(130).fill("ab").join("."), "A")).code).toBe("EBADNAME");
  });
});

describe("readAnswer", () => {
  it("reads A records with their TTLs", () => {
    const buf = response({
      answers: [
        rr({ name: WEB, type: 1, ttl: 5, data: A("10.0.0.1") }),
        rr({ name: WEB, type: 1, ttl: 7, data: A("10.0.0.2") }),
      ],
    });
    expect(readAnswer(buf, 0x1234, WEB, "A")).toEqual([
      { address: "10.0.0.1", ttl: 5 },
      { address: "10.0.0.2", ttl: 7 },
    ]);
  });

  it("formats AAAA addresses in their RFC 5952 form", () => {
    const v6 = (hex: string) => Buffer.from(hex.replace(/ /g, ""), "hex");
    const buf = response({
      question: { name: WEB, type: 28 },
      answers: [
        rr({ name: WEB, type: 28, data: v6("0000 0000 0000 0000 0000 0000 0000 0001") }),
        rr({ name: WEB, type: 28, data: v6("2001 0db8 0000 0000 0001 0000 0000 0001") }),
        rr({ name: WEB, type: 28, data: v6("fd00 0001 0000 0002 0003 0004 0005 0006") }),
        rr({ name: WEB, type: 28, data: v6("fd00 0000 0000 0000 0000 0000 0000 0000") }),
      ],
    });
    expect(readAnswer(buf, 0x1234, WEB, "AAAA").map((r) => r.address)).toEqual([
      "::1",
      "2001:db8::1:0:0:1",
      "fd00:1:0:2:3:4:5:6",
      "fd00::",
    ]);
  });

  it("follows name compression in owner names and SRV targets", () => {
    const srvName = `_http._tcp.${WEB}`;
    // The question's name starts at offset 12; "web…" starts after the two
    // labels "_http" (6 bytes) and "_tcp" (5 bytes).
    const ptr = (offset: number) => Buffer.from([0xc0 | (offset >> 8), offset & 0xff]);
    const target = Buffer.concat([Buffer.from([5]), Buffer.from("pod-a"), ptr(12 + 11)]);
    const buf = response({
      question: { name: srvName, type: 33 },
      answers: [
        rr({
          name: ptr(12),
          type: 33,
          ttl: 9,
          data: Buffer.concat([u16(10), u16(0), u16(8080), target]),
        }),
      ],
    });
    expect(readAnswer(buf, 0x1234, srvName, "SRV")).toEqual([
      { priority: 10, weight: 0, port: 8080, target: `pod-a.${WEB}`, ttl: 9 },
    ]);
  });

  it("follows a CNAME chain and takes the smallest TTL along it", () => {
    const buf = response({
      answers: [
        rr({ name: WEB, type: 5, ttl: 3, data: name("real.example") }),
        rr({ name: "real.example", type: 1, ttl: 60, data: A("10.0.0.9") }),
        rr({ name: "unrelated.example", type: 1, ttl: 60, data: A("10.6.6.6") }),
      ],
    });
    expect(readAnswer(buf, 0x1234, WEB, "A")).toEqual([{ address: "10.0.0.9", ttl: 3 }]);
  });

  it("treats a TTL with the top bit set as zero (RFC 2181)", () => {
    const buf = response({ answers: [rr({ name: WEB, type: 1, ttl: 0x80000000, data: A("10.0.0.1") })] });
    expect(readAnswer(buf, 0x1234, WEB, "A")[0]!.ttl).toBe(0);
  });

  it("maps RCODEs to node:dns codes, with the SOA's negative TTL", () => {
    const soa = rr({
      name: "cluster.local",
      type: RecordType.SOA,
      ttl: 30,
      data: Buffer.concat([
        name("ns.dns.cluster.local"),
        name("hostmaster.cluster.local"),
        Buffer.alloc(16),
        u32(5),
      ]),
    });
    const nx = errorOf(() => readAnswer(response({ rcode: 3, authority: [soa] }), 0x1234, WEB, "A"));
    expect(nx.code).toBe("ENOTFOUND");
    expect(nx.ttl).toBe(5);
    expect(errorOf(() => readAnswer(response({ rcode: 2 }), 0x1234, WEB, "A")).code).toBe("ESERVFAIL");
    expect(errorOf(() => readAnswer(response({ rcode: 5 }), 0x1234, WEB, "A")).code).toBe("EREFUSED");
    expect(errorOf(() => readAnswer(response({ rcode: 1, question: null }), 0x1234, WEB, "A")).code).toBe(
      "EFORMERR",
    );
    expect(errorOf(() => readAnswer(response({ rcode: 9 }), 0x1234, WEB, "A")).code).toBe("EBADRESP");
  });

  it("says ENODATA when the name has no records of the type", () => {
    const buf = response({ answers: [rr({ name: WEB, type: 16, data: Buffer.from([1, 0x41]) })] });
    expect(errorOf(() => readAnswer(buf, 0x1234, WEB, "A")).code).toBe("ENODATA");
  });

  it.each([
    ["a message shorter than a header", () => Buffer.alloc(11)],
    ["an answer to another query id", () => response({ id: 1 })],
    ["a query instead of a response", () => response({ flags: 0x0100 })],
    ["a truncated answer", () => response({ flags: 0x8380 })],
    ["an answer to another question", () => response({ question: { name: "other.local", type: 1 } })],
    ["an answer of another type", () => response({ question: { name: WEB, type: 28 } })],
    ["two questions", () => Buffer.concat([response({}).subarray(0, 4), u16(2), response({}).subarray(6)])],
    ["no question on a NOERROR answer", () => response({ question: null })],
    [
      "a record cut short",
      () => response({ answers: [rr({ name: WEB, type: 1, data: A("10.0.0.1") })] }).subarray(0, -2),
    ],
    [
      "an A record of 5 bytes",
      () => response({ answers: [rr({ name: WEB, type: 1, data: Buffer.alloc(5) })] }),
    ],
    [
      "an AAAA record of 4 bytes",
      () => response({ answers: [rr({ name: WEB, type: 28, data: A("1.2.3.4") })] }),
    ],
    [
      "an SRV record whose target overruns its data",
      () =>
        response({
          question: { name: WEB, type: 33 },
          answers: [
            rr({
              name: WEB,
              type: 33,
              data: Buffer.concat([u16(1), u16(1), u16(1), Buffer.from([5, 0x61])]),
            }),
          ],
        }),
    ],
    [
      "a compression pointer to itself",
      () => {
        const buf = response({
          answers: [rr({ name: Buffer.from([0xc0, 0x00]), type: 1, data: A("1.1.1.1") })],
        });
        const at = 12 + name(WEB).length + 4;
        buf.writeUInt16BE(0xc000 | at, at);
        return buf;
      },
    ],
    [
      "a compression pointer forwards",
      () => response({ answers: [rr({ name: Buffer.from([0xc0, 0xff]), type: 1, data: A("1.1.1.1") })] }),
    ],
    [
      "a reserved label type",
      () => response({ answers: [rr({ name: Buffer.from([0x41, 0x00]), type: 1, data: A("1.1.1.1") })] }),
    ],
    [
      "a name longer than 255 bytes",
      () =>
        response({
          answers: [rr({ name: name(Array(130).fill("ab").join(".")), type: 1, data: A("1.1.1.1") })],
        }),
    ],
  ])("rejects %s with EBADRESP", (_what, build) => {
    expect(errorOf(() => readAnswer(build(), 0x1234, WEB, "A")).code).toBe("EBADRESP");
  });

  it("turns random garbage and every corruption of a valid answer into EBADRESP-class errors, never a crash", () => {
    // A fixed-seed generator keeps the test reproducible.
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x80000000;
    };
    const srvName = `_http._tcp.${WEB}`;
    const valid = response({
      question: { name: srvName, type: 33 },
      answers: [
        rr({ name: srvName, type: 33, data: Buffer.concat([u16(10), u16(5), u16(80), name(`pod.${WEB}`)]) }),
      ],
    });
    const allowed = new Set([
      "EBADRESP",
      "ENODATA",
      "ENOTFOUND",
      "ESERVFAIL",
      "EREFUSED",
      "EFORMERR",
      "ENOTIMP",
    ]);
    const check = (buf: Buffer) => {
      try {
        readAnswer(buf, 0x1234, srvName, "SRV");
      } catch (err) {
        expect(err).toBeInstanceOf(DnsQueryError);
        expect(allowed).toContain((err as DnsQueryError).code);
      }
    };
    for (let i = 0; i < 2000; i++) {
      check(Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256))));
    }
    for (let cut = 0; cut < valid.length; cut++) check(valid.subarray(0, cut));
    for (let i = 0; i < valid.length * 8; i++) {
      const flipped = Buffer.from(valid);
      flipped[i >> 3] = flipped[i >> 3]! ^ (1 << (i & 7));
      check(flipped);
    }
  });
});

describe("readName", () => {
  it("escapes bytes that would be ambiguous in a dotted name", () => {
    const buf = Buffer.from([3, 0x61, 0x2e, 0x00, 0]);
    expect(readName(buf, 0)).toEqual({ name: "a\\046\\000", next: 5 });
  });
});

describe("parseMessage", () => {
  it("drops a malformed additional section and keeps the rest of the message", () => {
    const buf = Buffer.concat([response({}), Buffer.from("trailing garbage")]);
    buf.writeUInt16BE(1, 10);
    const message = parseMessage(buf);
    expect(message.answers).toEqual([]);
    expect(message.additional).toEqual([]);
  });
});

describe("readAnswer with an additional section", () => {
  const srvName = `_http._tcp.${WEB}`;
  const srv = (target: string, port: number) =>
    rr({ name: srvName, type: 33, data: Buffer.concat([u16(10), u16(1), u16(port), name(target)]) });
  const aaaa = Buffer.from("fd000000000000000000000000000001", "hex");

  it("hands each SRV target its A and AAAA records from the additional section", () => {
    const buf = response({
      question: { name: srvName, type: 33 },
      answers: [srv(`pod-a.${WEB}`, 80), srv(`pod-b.${WEB}`, 81)],
      additional: [
        rr({ name: `pod-a.${WEB}`, type: 1, ttl: 7, data: A("10.0.0.1") }),
        rr({ name: `POD-A.${WEB}`, type: 28, ttl: 9, data: aaaa }),
        rr({ name: `other.${WEB}`, type: 1, data: A("10.9.9.9") }),
        // An EDNS OPT record: not an address.
        Buffer.concat([Buffer.from([0]), u16(41), u16(1232), u32(0), u16(0)]),
      ],
    });
    expect(readAnswer(buf, 0x1234, srvName, "SRV")).toEqual([
      {
        priority: 10,
        weight: 1,
        port: 80,
        target: `pod-a.${WEB}`,
        ttl: 30,
        addresses: [
          { address: "10.0.0.1", ttl: 7 },
          { address: "fd00::1", ttl: 9 },
        ],
      },
      { priority: 10, weight: 1, port: 81, target: `pod-b.${WEB}`, ttl: 30, addresses: undefined },
    ]);
  });
});

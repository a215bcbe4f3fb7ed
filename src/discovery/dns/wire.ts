/**
 * A small DNS wire-format codec (RFC 1035 §4, RFC 3596 for AAAA, RFC 2782
 * for SRV): encodes one question and reads the answer to it, following name
 * compression. It exists for the TCP transport — `node:dns` has no TCP mode —
 * and trusts nothing in a payload: every length and pointer is bounds-checked
 * and anything malformed becomes a {@link DnsQueryError} with code
 * `EBADRESP`, never a crash.
 *
 * @module
 */

import { type AddressRecord, DnsQueryError, type SrvRecord } from "./transport.js";

/** The record types this codec reads. */
export const RecordType = {
  A: 1,
  CNAME: 5,
  SOA: 6,
  AAAA: 28,
  SRV: 33,
} as const;

/** The question types the codec asks. */
export type QueryType = "A" | "AAAA" | "SRV";

const CLASS_IN = 1;
const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
const MAX_NAME = 255;
const MAX_CNAME_CHAIN = 8;

/** One resource record as read from a message; `data` depends on the type. */
export interface ResourceRecord {
  /** Owner name, lower-case, without the trailing dot. */
  readonly name: string;
  /** The record type number. */
  readonly type: number;
  /** The class (1 = IN). */
  readonly class: number;
  /** TTL in seconds (RFC 2181 §8: a value with the top bit set reads as 0). */
  readonly ttl: number;
  /**
   * A/AAAA: the address; CNAME: the target name; SRV: priority, weight, port
   * and target; SOA: the MINIMUM field; other types: `undefined`.
   */
  readonly data:
    | string
    | { priority: number; weight: number; port: number; target: string }
    | number
    | undefined;
}

/** A parsed DNS message. */
export interface DnsMessage {
  /** The query id. */
  readonly id: number;
  /** The header flags (QR, opcode, AA, TC, RD, RA, RCODE). */
  readonly flags: number;
  /** The response code (low 4 bits of the flags). */
  readonly rcode: number;
  /** The question, when present. */
  readonly question: { readonly name: string; readonly type: number; readonly class: number } | undefined;
  /** The answer section. */
  readonly answers: readonly ResourceRecord[];
  /** The authority section (an SOA here carries the negative-caching TTL). */
  readonly authority: readonly ResourceRecord[];
  /** The additional section (SRV targets' addresses); empty when it was malformed. */
  readonly additional: readonly ResourceRecord[];
}

function bad(problem: string): never {
  throw new DnsQueryError("EBADRESP", `malformed DNS message: ${problem}`);
}

/**
 * Encodes a standard query (RD set, one question, class IN) for `name`.
 *
 * @throws {@link DnsQueryError} `EBADNAME` when a label is empty, longer
 * than 63 bytes, or the name longer than 255.
 */
export function encodeQuery(id: number, name: string, type: QueryType): Buffer {
  const labels = name.replace(/\.$/, "").split(".");
  const parts: Buffer[] = [];
  let length = 1;
  for (const label of labels) {
    const bytes = Buffer.from(label, "utf8");
    if (bytes.length === 0 || bytes.length > 63) {
      throw new DnsQueryError("EBADNAME", `invalid label ${JSON.stringify(label)} in ${name}`);
    }
    length += bytes.length + 1;
    parts.push(Buffer.from([bytes.length]), bytes);
  }
  if (length > MAX_NAME) throw new DnsQueryError("EBADNAME", `name longer than 255 bytes: ${name}`);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id & 0xffff, 0);
  header.writeUInt16BE(FLAG_RD, 2);
  header.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(RecordType[type], 1);
  tail.writeUInt16BE(CLASS_IN, 3);
  return Buffer.concat([header, ...parts, tail]);
}

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it. */
export function readName(buf: Buffer, offset: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = offset;
  // Every pointer must point before the start of the run of labels that
  // holds it: the runs then move strictly backwards and a loop cannot form.
  let runStart = offset;
  let next = -1;
  let length = 1;
  for (;;) {
    if (pos >= buf.length) bad(`name at offset ${offset} runs past the end`);
    const len = buf[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= buf.length) bad(`compression pointer at offset ${pos} runs past the end`);
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (target >= runStart) bad(`compression pointer at offset ${pos} does not point backwards`);
      if (next < 0) next = pos + 2;
      pos = runStart = target;
      continue;
    }
    if (kind !== 0) bad(`reserved label type 0x${kind.toString(16)} at offset ${pos}`);
    if (pos + 1 + len > buf.length) bad(`label at offset ${pos} runs past the end`);
    length += len + 1;
    if (length > MAX_NAME) bad(`name at offset ${offset} is longer than 255 bytes`);
    labels.push(labelText(buf, pos + 1, len));
    pos += 1 + len;
  }
  return { name: labels.join(".").toLowerCase(), next };
}

/** A label as text; bytes that would be ambiguous in a dotted name are escaped as `\DDD`. */
function labelText(buf: Buffer, start: number, len: number): string {
  let out = "";
  for (let i = start; i < start + len; i++) {
    const c = buf[i]!;
    out +=
      c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c
        ? String.fromCharCode(c)
        : `\\${c.toString().padStart(3, "0")}`;
  }
  return out;
}

function u16(buf: Buffer, pos: number, what: string): number {
  if (pos + 2 > buf.length) bad(`${what} at offset ${pos} runs past the end`);
  return buf.readUInt16BE(pos);
}

function u32(buf: Buffer, pos: number, what: string): number {
  if (pos + 4 > buf.length) bad(`${what} at offset ${pos} runs past the end`);
  return buf.readUInt32BE(pos);
}

/** RFC 5952 text form of a 16-byte IPv6 address. */
function ipv6Text(buf: Buffer, pos: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(pos + i * 2));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) =>
    groups
      .slice(from, to)
      .map((g) => g.toString(16))
      .join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

function readRecord(buf: Buffer, offset: number): { record: ResourceRecord; next: number } {
  const { name, next: afterName } = readName(buf, offset);
  const type = u16(buf, afterName, "record type");
  const cls = u16(buf, afterName + 2, "record class");
  const rawTtl = u32(buf, afterName + 4, "record TTL");
  const rdlength = u16(buf, afterName + 8, "record length");
  const start = afterName + 10;
  const end = start + rdlength;
  if (end > buf.length) bad(`record ${name} at offset ${offset} runs past the end`);
  let data: ResourceRecord["data"];
  switch (type) {
    case RecordType.A:
      if (rdlength !== 4) bad(`A record ${name} has ${rdlength} bytes of data, not 4`);
      data = `${buf[start]}.${buf[start + 1]}.${buf[start + 2]}.${buf[start + 3]}`;
      break;
    case RecordType.AAAA:
      if (rdlength !== 16) bad(`AAAA record ${name} has ${rdlength} bytes of data, not 16`);
      data = ipv6Text(buf, start);
      break;
    case RecordType.CNAME: {
      const target = readName(buf, start);
      if (target.next !== end) bad(`CNAME record ${name} does not fill its data`);
      data = target.name;
      break;
    }
    case RecordType.SRV: {
      if (rdlength < 7) bad(`SRV record ${name} has ${rdlength} bytes of data`);
      const target = readName(buf, start + 6);
      if (target.next !== end) bad(`SRV record ${name} does not fill its data`);
      data = {
        priority: buf.readUInt16BE(start),
        weight: buf.readUInt16BE(start + 2),
        port: buf.readUInt16BE(start + 4),
        target: target.name,
      };
      break;
    }
    case RecordType.SOA: {
      const mname = readName(buf, start);
      const rname = readName(buf, mname.next);
      if (rname.next + 20 !== end) bad(`SOA record ${name} does not fill its data`);
      data = buf.readUInt32BE(rname.next + 16);
      break;
    }
    default:
      data = undefined;
  }
  // RFC 2181 §8: a TTL with the most significant bit set is treated as zero.
  const ttl = rawTtl > 0x7fffffff ? 0 : rawTtl;
  return { record: { name, type, class: cls, ttl, data }, next: end };
}

/**
 * Parses a whole DNS message.
 *
 * @throws {@link DnsQueryError} `EBADRESP` for anything malformed.
 */
export function parseMessage(buf: Buffer): DnsMessage {
  if (buf.length < 12) bad(`${buf.length} bytes, shorter than a header`);
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  const qdcount = buf.readUInt16BE(4);
  const ancount = buf.readUInt16BE(6);
  const nscount = buf.readUInt16BE(8);
  const arcount = buf.readUInt16BE(10);
  if (qdcount > 1) bad(`${qdcount} questions`);
  let pos = 12;
  let question: DnsMessage["question"];
  if (qdcount === 1) {
    const q = readName(buf, pos);
    question = {
      name: q.name,
      type: u16(buf, q.next, "question type"),
      class: u16(buf, q.next + 2, "question class"),
    };
    pos = q.next + 4;
  }
  const answers: ResourceRecord[] = [];
  for (let i = 0; i < ancount; i++) {
    const r = readRecord(buf, pos);
    answers.push(r.record);
    pos = r.next;
  }
  const authority: ResourceRecord[] = [];
  for (let i = 0; i < nscount; i++) {
    const r = readRecord(buf, pos);
    authority.push(r.record);
    pos = r.next;
  }
  // The additional section only saves questions (the backend asks for any
  // target address it lacks), so a malformed one is dropped, not fatal.
  let additional: ResourceRecord[] = [];
  try {
    for (let i = 0; i < arcount; i++) {
      const r = readRecord(buf, pos);
      additional.push(r.record);
      pos = r.next;
    }
  } catch {
    additional = [];
  }
  return { id, flags, rcode: flags & 0x0f, question, answers, authority, additional };
}

/** The A/AAAA records of the additional section, by owner name. */
function glue(message: DnsMessage): Map<string, AddressRecord[]> {
  const out = new Map<string, AddressRecord[]>();
  for (const r of message.additional) {
    if ((r.type !== RecordType.A && r.type !== RecordType.AAAA) || r.class !== CLASS_IN) continue;
    let list = out.get(r.name);
    if (list === undefined) out.set(r.name, (list = []));
    list.push({ address: r.data as string, ttl: r.ttl });
  }
  return out;
}

const RCODES: Record<number, string> = {
  1: "EFORMERR",
  2: "ESERVFAIL",
  3: "ENOTFOUND",
  4: "ENOTIMP",
  5: "EREFUSED",
};

/** RFC 2308 §5: the negative-caching TTL is the SOA's own TTL capped by its MINIMUM field. */
function negativeTtl(message: DnsMessage): number | undefined {
  const soa = message.authority.find((r) => r.type === RecordType.SOA && typeof r.data === "number");
  return soa === undefined ? undefined : Math.min(soa.ttl, soa.data as number);
}

/**
 * Reads the answer to the question `name`/`type` sent with `id`: the
 * records of that type owned by `name` or by a CNAME it leads to, each with
 * the smallest TTL along the chain; an SRV record carries its target's
 * addresses when the additional section lists them.
 *
 * @throws {@link DnsQueryError} `EBADRESP` for a malformed or mismatched
 * message; `ENOTFOUND` (NXDOMAIN), `ESERVFAIL`, `EREFUSED`, `EFORMERR`,
 * `ENOTIMP` from the RCODE; `ENODATA` when the name has no such records.
 */
export function readAnswer(buf: Buffer, id: number, name: string, type: "A" | "AAAA"): AddressRecord[];
export function readAnswer(buf: Buffer, id: number, name: string, type: "SRV"): SrvRecord[];
export function readAnswer(
  buf: Buffer,
  id: number,
  name: string,
  type: QueryType,
): AddressRecord[] | SrvRecord[] {
  const message = parseMessage(buf);
  const qname = name.replace(/\.$/, "").toLowerCase();
  const what = `querying ${type} ${qname}`;
  if (message.id !== id) bad(`answer id ${message.id} does not match query id ${id}`);
  if ((message.flags & FLAG_QR) === 0) bad("not a response (QR bit clear)");
  if (((message.flags >> 11) & 0x0f) !== 0) bad(`unexpected opcode ${(message.flags >> 11) & 0x0f}`);
  if ((message.flags & FLAG_TC) !== 0) bad("truncated answer (TC bit set)");
  const q = message.question;
  if (q !== undefined && (q.name !== qname || q.type !== RecordType[type] || q.class !== CLASS_IN)) {
    bad(`answer is for ${q.name} type ${q.type}, not ${qname} ${type}`);
  }
  if (message.rcode !== 0) {
    const code = RCODES[message.rcode] ?? "EBADRESP";
    throw new DnsQueryError(code, `${what} (RCODE ${message.rcode})`, { ttl: negativeTtl(message) });
  }
  if (q === undefined) bad("answer carries no question");

  const owners = new Map<string, number>([[qname, Number.POSITIVE_INFINITY]]);
  let current = qname;
  for (let i = 0; i < MAX_CNAME_CHAIN; i++) {
    const cname = message.answers.find(
      (r) => r.type === RecordType.CNAME && r.class === CLASS_IN && r.name === current,
    );
    if (cname === undefined || owners.has(cname.data as string)) break;
    const ttl = Math.min(owners.get(current)!, cname.ttl);
    current = cname.data as string;
    owners.set(current, ttl);
  }
  const wanted = RecordType[type];
  const targets = type === "SRV" ? glue(message) : undefined;
  const out: (AddressRecord | SrvRecord)[] = [];
  for (const r of message.answers) {
    if (r.type !== wanted || r.class !== CLASS_IN) continue;
    const chainTtl = owners.get(r.name);
    if (chainTtl === undefined) continue;
    const ttl = Math.min(chainTtl, r.ttl);
    if (type === "SRV") {
      const d = r.data as { priority: number; weight: number; port: number; target: string };
      const addresses = targets?.get(d.target);
      out.push({ priority: d.priority, weight: d.weight, port: d.port, target: d.target, ttl, addresses });
    } else {
      out.push({ address: r.data as string, ttl });
    }
  }
  if (out.length === 0) throw new DnsQueryError("ENODATA", what, { ttl: negativeTtl(message) });
  return out as AddressRecord[] | SrvRecord[];
}

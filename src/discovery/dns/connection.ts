/**
 * One DNS server over TCP as RFC 7766 wants it used: one connection, shared
 * by every lookup of the cluster, queries pipelined on it (several
 * outstanding at once, answers matched by message ID, in any order), closed
 * after an idle while and opened again on the next question. A server that
 * closes the connection after each answer (or after an idle timeout of its
 * own, racing a new question) still gets every question: the ones it had
 * not answered are sent again on a new connection.
 *
 * @module
 */

import { connect, type Socket } from "node:net";
import { DnsQueryError, type DnsServer, formatDnsServer } from "./transport.js";
import { encodeQuery, parseMessage, type QueryType } from "./wire.js";

/** How long an unused connection stays open; below CoreDNS's 8 s and BIND's 30 s idle timeouts. */
export const TCP_IDLE_TIMEOUT = 5_000;

/**
 * Queries outstanding on one connection at most; more wait for a slot.
 * IDs must be unique among outstanding queries (RFC 7766 §7), and some
 * servers close a connection after a number of queries (dnsmasq after 100):
 * what was pipelined past that is sent again, so a burst is fed in slices.
 */
const MAX_OUTSTANDING = 100;

/** The answer to one exchange: the message, and the ID it was asked with. */
export interface TcpAnswer {
  /** The query's message ID. */
  readonly id: number;
  /** The answer message, without its length prefix. */
  readonly answer: Buffer;
}

/** One question on its way: queued, or sent on a link and waiting for its answer. */
interface Query {
  /** The framed query; its ID (bytes 2–3) is set when it is sent. */
  readonly frame: Buffer;
  readonly what: string;
  readonly resolve: (answer: TcpAnswer) => void;
  readonly reject: (err: DnsQueryError) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
  timer: NodeJS.Timeout | undefined;
  /** The link it was sent on, with the link's answer count at that moment. */
  link: Link | undefined;
  answeredAtSend: number;
  id: number;
}

/**
 * What becomes of a dropped link's unanswered queries: sent again on a new
 * connection, sent again only if the server had answered on that link, or
 * failed.
 */
type Resend = "always" | "if-answered" | "never";

/** One TCP connection and the queries sent on it. */
interface Link {
  readonly socket: Socket;
  readonly pending: Map<number, Query>;
  /** IDs of queries given up (timed out, aborted) whose answers may still come: not reused. */
  readonly retired: Set<number>;
  answered: number;
  dropped: boolean;
}

/** The options of a {@link TcpDnsConnection}. */
export interface TcpDnsConnectionOptions {
  /** Close the connection after this long without an outstanding query, ms. */
  readonly idleTimeout?: number | undefined;
}

/** A pipelined TCP connection to one DNS server, opened on demand. */
export class TcpDnsConnection {
  readonly #server: DnsServer;
  readonly #where: string;
  readonly #idleTimeout: number;
  #link: Link | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #waiting: Query[] = [];
  #closed = false;

  /** Creates the connection; nothing is opened before the first question. */
  constructor(server: DnsServer, options: TcpDnsConnectionOptions = {}) {
    this.#server = server;
    this.#where = formatDnsServer(server);
    this.#idleTimeout = options.idleTimeout ?? TCP_IDLE_TIMEOUT;
  }

  /** Queries sent and not yet answered, plus queries waiting for a slot. */
  get outstanding(): number {
    return (this.#link?.pending.size ?? 0) + this.#waiting.length;
  }

  /** True while a TCP connection is open (or opening). */
  get connected(): boolean {
    return this.#link !== undefined;
  }

  /**
   * Asks `name`/`type` and resolves with the answer message. Rejects with a
   * {@link DnsQueryError}: `ETIMEOUT` after `timeout` ms, `ECANCELLED` when
   * `signal` aborts or the connection is closed, `EBADNAME` for a name that
   * cannot be encoded, or the connection's error.
   */
  exchange(
    name: string,
    type: QueryType,
    timeout: number,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<TcpAnswer> {
    const where = `${what} at ${this.#where}`;
    if (this.#closed || signal?.aborted) return Promise.reject(new DnsQueryError("ECANCELLED", where));
    let message: Buffer;
    try {
      message = encodeQuery(0, name, type);
    } catch (err) {
      return Promise.reject(err);
    }
    const frame = Buffer.allocUnsafe(2 + message.length);
    frame.writeUInt16BE(message.length, 0);
    message.copy(frame, 2);
    return new Promise<TcpAnswer>((resolve, reject) => {
      const q: Query = {
        frame,
        what: where,
        resolve,
        reject,
        signal,
        onAbort: () => this.#giveUp(q, new DnsQueryError("ECANCELLED", where)),
        timer: undefined,
        link: undefined,
        answeredAtSend: 0,
        id: -1,
      };
      q.timer = setTimeout(() => this.#timedOut(q), timeout);
      signal?.addEventListener("abort", q.onAbort, { once: true });
      this.#send(q);
    });
  }

  /** Closes the connection; every outstanding query rejects with `ECANCELLED`, and so do later ones. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearIdle();
    const cancelled = () => new DnsQueryError("ECANCELLED", `connection to ${this.#where} closed`);
    for (const q of this.#waiting.splice(0)) this.#settle(q, cancelled());
    const link = this.#link;
    if (link !== undefined) this.#drop(link, cancelled(), "never");
  }

  #send(q: Query): void {
    let link = this.#link;
    if (link === undefined) link = this.#link = this.#open();
    if (link.pending.size + link.retired.size >= MAX_OUTSTANDING) {
      this.#waiting.push(q);
      return;
    }
    let id = (Math.random() * 0x10000) | 0;
    while (link.pending.has(id) || link.retired.has(id)) id = (id + 1) & 0xffff;
    q.id = id;
    q.link = link;
    q.answeredAtSend = link.answered;
    q.frame.writeUInt16BE(id, 2);
    link.pending.set(id, q);
    this.#clearIdle();
    link.socket.ref();
    link.socket.write(q.frame);
  }

  #open(): Link {
    const socket = connect({ host: this.#server.host, port: this.#server.port });
    const link: Link = { socket, pending: new Map(), retired: new Set(), answered: 0, dropped: false };
    socket.setNoDelay(true);
    let buffer: Buffer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      while (!link.dropped && buffer.length >= 2) {
        const length = buffer.readUInt16BE(0);
        if (buffer.length < 2 + length) break;
        const message = buffer.subarray(2, 2 + length);
        buffer = buffer.subarray(2 + length);
        this.#received(link, message);
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) =>
      this.#drop(
        link,
        new DnsQueryError(err.code ?? "ECONNRESET", this.#where, { cause: err }),
        "if-answered",
      ),
    );
    const closed = () =>
      this.#drop(
        link,
        new DnsQueryError("EBADRESP", `${this.#where}: connection closed before an answer`),
        "if-answered",
      );
    socket.on("end", closed);
    socket.on("close", closed);
    return link;
  }

  #received(link: Link, message: Buffer): void {
    const id = message.length >= 2 ? message.readUInt16BE(0) : -1;
    const q = link.pending.get(id);
    if (q !== undefined) {
      link.pending.delete(id);
      link.answered++;
      q.link = undefined;
      this.#settle(q, undefined, { id, answer: message });
      this.#pump(link);
      return;
    }
    if (link.retired.delete(id)) return;
    // An answer to no question of ours: a message that is not even DNS
    // means the stream cannot be trusted any more; a well-formed one is
    // dropped (RFC 7766 §7).
    let garbage = false;
    try {
      garbage = (parseMessage(message).flags & 0x8000) === 0;
    } catch {
      garbage = true;
    }
    if (garbage) this.#drop(link, new DnsQueryError("EBADRESP", `${this.#where}: malformed answer`), "never");
  }

  /**
   * Ends a link. Its unanswered queries are sent again on a new connection
   * as `resend` says — a server that had answered on the link closes after
   * answers, or after an idle timeout of its own — or fail with `err`.
   * Either way each query keeps its own deadline, so a server that keeps
   * closing cannot make a query live forever.
   */
  #drop(link: Link, err: DnsQueryError, resend: Resend): void {
    if (link.dropped) return;
    link.dropped = true;
    if (this.#link === link) this.#link = undefined;
    link.socket.destroy();
    const unanswered = [...link.pending.values()];
    link.pending.clear();
    link.retired.clear();
    const again = !this.#closed && (resend === "always" || (resend === "if-answered" && link.answered > 0));
    for (const q of unanswered) {
      q.link = undefined;
      if (again) this.#send(q);
      else this.#settle(q, err);
    }
    // Queries waiting for a slot on that link get a new one.
    if (this.#link === undefined && this.#waiting.length > 0 && !this.#closed) {
      this.#pump((this.#link = this.#open()));
    }
    if (this.#link === undefined) this.#clearIdle();
  }

  #timedOut(q: Query): void {
    q.timer = undefined;
    const link = q.link;
    const err = new DnsQueryError("ETIMEOUT", q.what);
    this.#giveUp(q, err);
    // Nothing at all came back on the link since the query went out: it
    // looks dead (a middlebox dropped it). The next try opens a new one, and
    // its other queries go there too.
    if (link !== undefined && !link.dropped && link.answered === q.answeredAtSend) {
      this.#drop(link, err, "always");
    }
  }

  /** Gives a query up (timeout, abort): it leaves its link, whose ID stays reserved for the late answer. */
  #giveUp(q: Query, err: DnsQueryError): void {
    const link = q.link;
    if (link !== undefined) {
      link.pending.delete(q.id);
      link.retired.add(q.id);
      q.link = undefined;
      this.#pump(link);
    } else {
      const i = this.#waiting.indexOf(q);
      if (i >= 0) this.#waiting.splice(i, 1);
    }
    this.#settle(q, err);
  }

  #settle(q: Query, err: DnsQueryError | undefined, answer?: TcpAnswer): void {
    if (q.timer !== undefined) clearTimeout(q.timer);
    q.timer = undefined;
    q.signal?.removeEventListener("abort", q.onAbort);
    if (err !== undefined) q.reject(err);
    else q.resolve(answer!);
  }

  /** Sends waiting queries while the link has slots; idles the link when nothing is outstanding. */
  #pump(link: Link): void {
    while (
      this.#waiting.length > 0 &&
      !link.dropped &&
      link.pending.size + link.retired.size < MAX_OUTSTANDING
    ) {
      this.#send(this.#waiting.shift()!);
    }
    if (link.pending.size === 0 && this.#waiting.length === 0 && !link.dropped && this.#link === link) {
      // An idle connection must not keep the process alive, and is closed
      // after a while (RFC 7766 §6.2.3).
      link.socket.unref();
      this.#clearIdle();
      this.#idleTimer = setTimeout(() => {
        this.#idleTimer = undefined;
        if (link.pending.size === 0) this.#drop(link, new DnsQueryError("ECANCELLED", "idle"), "never");
      }, this.#idleTimeout);
      this.#idleTimer.unref();
    }
  }

  #clearIdle(): void {
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }
}

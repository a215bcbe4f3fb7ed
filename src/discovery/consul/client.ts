/**
 * The Consul HTTP client: `/v1/health/service/<name>` queries, blocking or
 * not, over the backend's own undici Agent — never the global dispatcher,
 * which an application may have pointed at the mesh itself — and the one
 * error type every failed query becomes.
 *
 * @module
 */

import { Agent, type Dispatcher } from "undici";
import { parseServiceEntries, type ServiceEntry } from "./payload.js";
import type { ConsulSettings } from "./settings.js";

/** What kind of failure a {@link ConsulQueryError} is. */
export type ConsulErrorCode =
  /** 403: an unknown token ("ACL not found"), or one without the rights ("Permission denied"). */
  | "EACL"
  /** Any other non-200 status (500 "No path to datacenter", "No cluster leader", …). */
  | "EHTTP"
  /** A body that is not JSON, or not shaped as Consul's health entries. */
  | "EPAYLOAD"
  /** `X-Consul-Index` missing or not a number (Consul's client fails such a query too). */
  | "EINDEX"
  /** The query took longer than its wait plus the timeout. */
  | "ETIMEDOUT"
  /** The agent could not be reached or dropped the connection (ECONNREFUSED, ECONNRESET, TLS, …). */
  | "ECONNECT";

/** A failed query. The message starts with the code; it never contains the token. */
export class ConsulQueryError extends Error {
  /** The kind of failure. */
  readonly code: ConsulErrorCode;
  /** The HTTP status, for `EACL` and `EHTTP`. */
  readonly status: number | undefined;

  /** Creates an error. */
  constructor(code: ConsulErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(`${code} ${message}`, options);
    this.name = "ConsulQueryError";
    this.code = code;
    this.status = options?.status;
  }
}

/** One health query. */
export interface HealthQuery {
  /** The Consul service name. */
  readonly service: string;
  /** The `dc` parameter; undefined asks the agent's own datacenter. */
  readonly datacenter: string | undefined;
  /** `tag` parameters: instances must carry every one. */
  readonly tags: readonly string[];
  /** `index`: 0 for a query that answers at once, else block until the index passes it. */
  readonly index: number;
}

/** A successful answer: the entries and what Consul's headers said. */
export interface HealthAnswer {
  /** The entries, validated. */
  readonly entries: readonly ServiceEntry[];
  /** `X-Consul-Index`. */
  readonly index: number;
  /** `X-Consul-Translate-Addresses: true`: the agent already put WAN addresses in for a remote datacenter. */
  readonly translated: boolean;
  /** `X-Consul-Results-Filtered-By-ACLs: true`: the token could not read some entries. */
  readonly filteredByAcls: boolean;
}

/** Consul answers a health query for thousands of instances in a few MiB; anything far larger is not an answer. */
const MAX_BODY = 64 * 1024 * 1024;
const INDEX = /^\d{1,16}$/;

function header(headers: Dispatcher.ResponseData["headers"], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Undici's and Node's error codes that mean the query did not finish in time. */
const TIMEOUT_CODES = new Set([
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CONNECT_TIMEOUT",
  "ETIMEDOUT",
]);

/** Queries one Consul agent. */
export class ConsulClient {
  readonly #agent: Agent;
  readonly #settings: ConsulSettings;
  readonly #base: string;

  constructor(settings: ConsulSettings) {
    this.#settings = settings;
    const a = settings.address;
    this.#base = `${a.prefix}/v1/health/service/`;
    const tls = settings.tls;
    this.#agent = new Agent({
      connect: {
        ...(a.socketPath === undefined ? {} : { socketPath: a.socketPath }),
        ...(tls === undefined
          ? {}
          : {
              ca: tls.ca,
              cert: tls.cert,
              key: tls.key,
              servername: tls.servername,
              rejectUnauthorized: tls.rejectUnauthorized,
            }),
      },
      maxResponseSize: MAX_BODY,
      // An idle connection between blocking queries is normal: keep it for the next one.
      keepAliveTimeout: 60_000,
    });
  }

  /** For messages: where the agent is. */
  get where(): string {
    return this.#settings.address.where;
  }

  /** The request path of a query. */
  path(q: HealthQuery): string {
    const s = this.#settings;
    const params = new URLSearchParams();
    if (q.datacenter !== undefined) params.append("dc", q.datacenter);
    if (s.passingOnly) params.append("passing", "1");
    for (const tag of q.tags) params.append("tag", tag);
    for (const [k, v] of s.nodeMeta) params.append("node-meta", `${k}:${v}`);
    if (q.index > 0) {
      params.append("index", String(q.index));
      params.append("wait", `${s.wait}ms`);
    }
    return `${this.#base}${encodeURIComponent(q.service)}?${params}`;
  }

  /**
   * Runs one query. A blocking query (`index > 0`) may take the wait plus
   * Consul's jitter (wait/16) plus `timeout`; one with index 0, `timeout`.
   *
   * @throws {@link ConsulQueryError}, or the signal's reason once it aborts.
   */
  async health(q: HealthQuery, signal: AbortSignal): Promise<HealthAnswer> {
    const s = this.#settings;
    const limit = q.index > 0 ? s.wait + Math.ceil(s.wait / 16) + s.timeout : s.timeout;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.#agent.request({
        origin: s.address.origin,
        path: this.path(q),
        method: "GET",
        headers: { ...s.headers, accept: "application/json" },
        signal,
        headersTimeout: limit,
        bodyTimeout: limit,
      });
    } catch (err) {
      throw this.#connectionError(err, signal);
    }
    let body: string;
    try {
      body = await res.body.text();
    } catch (err) {
      throw this.#connectionError(err, signal);
    }
    const from = `from ${this.where}`;
    if (res.statusCode === 403) {
      throw new ConsulQueryError(
        "EACL",
        `HTTP 403 ${JSON.stringify(excerpt(body))} ${from}: the token (X-Consul-Token) needs service:read and node:read`,
        { status: 403 },
      );
    }
    if (res.statusCode !== 200) {
      throw new ConsulQueryError("EHTTP", `HTTP ${res.statusCode} ${JSON.stringify(excerpt(body))} ${from}`, {
        status: res.statusCode,
      });
    }
    const rawIndex = header(res.headers, "x-consul-index");
    if (rawIndex === undefined || !INDEX.test(rawIndex)) {
      throw new ConsulQueryError(
        "EINDEX",
        `X-Consul-Index ${rawIndex === undefined ? "missing" : JSON.stringify(excerpt(rawIndex))} ${from}`,
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch (err) {
      throw new ConsulQueryError("EPAYLOAD", `not JSON ${from}: ${JSON.stringify(excerpt(body))}`, {
        cause: err,
      });
    }
    const parsed = parseServiceEntries(json);
    if (typeof parsed === "string")
      throw new ConsulQueryError("EPAYLOAD", `unexpected shape ${from}: ${parsed}`);
    return {
      entries: parsed,
      index: Number(rawIndex),
      translated: header(res.headers, "x-consul-translate-addresses") === "true",
      filteredByAcls: header(res.headers, "x-consul-results-filtered-by-acls") === "true",
    };
  }

  #connectionError(err: unknown, signal: AbortSignal): unknown {
    if (signal.aborted) return signal.reason ?? err;
    const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
    const code = e?.code ?? e?.cause?.code;
    const detail = `${code ?? e?.name ?? "error"}: ${e?.message ?? String(err)}`;
    if (code !== undefined && TIMEOUT_CODES.has(code)) {
      return new ConsulQueryError("ETIMEDOUT", `${detail} (${this.where})`, { cause: err });
    }
    if (code === "UND_ERR_RES_EXCEEDED_MAX_SIZE") {
      return new ConsulQueryError("EPAYLOAD", `answer larger than ${MAX_BODY} bytes (${this.where})`, {
        cause: err,
      });
    }
    return new ConsulQueryError("ECONNECT", `${detail} (${this.where})`, { cause: err });
  }

  /** Aborts every query in flight and closes every connection, at once. */
  async close(): Promise<void> {
    await this.#agent.destroy();
  }
}

/** At most 200 characters of a body or header, for a message. */
function excerpt(text: string): string {
  const flat = text.trim();
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}

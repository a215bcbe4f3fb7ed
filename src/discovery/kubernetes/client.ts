/**
 * A minimal client of one Kubernetes API server: JSON gets and watch
 * streams of JSON lines, through the server's own agent (`agent.ts`).
 *
 * Every failure becomes a {@link KubernetesError} with a stable reason.
 *
 * @module
 */

import { StringDecoder } from "node:string_decoder";
import type { Agent } from "undici";
import { KubernetesError } from "../../errors.js";
import { ServerAgent } from "./agent.js";
import type { ClusterConnection } from "./connection.js";
import { statusSchema, type WatchEvent, watchEventSchema } from "./schemas.js";

/** Timing and limits of an {@link ApiClient}. */
export interface ApiClientSettings {
  /** Time for a get to answer, and for a watch's response headers, ms. */
  readonly requestTimeout: number;
  /** A watch silent for this long is abandoned (`watch-idle`), ms. */
  readonly idleTimeout: number;
}

/** What a watch hands its caller. */
export interface WatchHandlers {
  /** The server accepted the watch (status 200). */
  opened(): void;
  /** The complete events of one chunk, in order; may throw to end the watch with that error. */
  events(batch: readonly WatchEvent[]): void;
}

const USER_AGENT = "meshlink (kubernetes discovery)";
/** Larger answers are refused: a list of a few thousand slices is a few MiB. */
const MAX_BODY = 64 << 20;
/** One watch event larger than this is refused (an EndpointSlice holds at most 1 000 endpoints). */
const MAX_EVENT = 16 << 20;

/** `text` on one line, cut at `max` characters, for an error message (a server's answer, a plugin's output). */
export function excerpt(text: string, max = 120): string {
  const line = text.trim().replace(/\s+/g, " ");
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

function reasonOf(status: number): KubernetesError["reason"] {
  if (status === 401) return "unauthorized";
  if (status === 403) return "forbidden";
  if (status === 404) return "not-found";
  if (status === 410) return "expired";
  if (status === 429) return "throttled";
  if (status >= 500) return "server-error";
  return "http-error";
}

/** A KubernetesError from a non-200 answer, with the Status's message when the body is one. */
export function statusError(cluster: string, status: number, body: string, what: string): KubernetesError {
  let detail = excerpt(body);
  try {
    const parsed = statusSchema.safeParse(JSON.parse(body));
    if (parsed.success) {
      detail = `${parsed.data.reason ? `${parsed.data.reason}: ` : ""}${parsed.data.message ?? ""}`;
    }
  } catch {
    // not JSON: the excerpt says what it was
  }
  return new KubernetesError(
    cluster,
    reasonOf(status),
    `${what}: status ${status}${detail ? ` (${detail})` : ""}`,
    {
      status,
    },
  );
}

/** A KubernetesError from a transport failure (connect, TLS, reset, timeout). */
export function transportError(cluster: string, err: unknown, what: string): KubernetesError {
  if (err instanceof KubernetesError) return err;
  const code = (err as { code?: string })?.code;
  const message = (err as Error)?.message ?? String(err);
  const timeout =
    code === "UND_ERR_HEADERS_TIMEOUT" ||
    code === "UND_ERR_BODY_TIMEOUT" ||
    code === "UND_ERR_CONNECT_TIMEOUT";
  return new KubernetesError(
    cluster,
    timeout ? "timeout" : "network",
    `${what}: ${code ? `${code} ` : ""}${message}`,
    {
      cause: err,
    },
  );
}

async function readText(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new RangeError(`answer larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The client of one cluster's API server. */
export class ApiClient {
  readonly #conn: ClusterConnection;
  readonly #settings: ApiClientSettings;
  readonly #agent: ServerAgent;
  #closed = false;

  constructor(connection: ClusterConnection, settings: ApiClientSettings) {
    this.#conn = connection;
    this.#settings = settings;
    this.#agent = new ServerAgent(connection.tls, settings.requestTimeout);
  }

  /** The cluster's name. */
  get cluster(): string {
    return this.#conn.name;
  }

  async #prepare(): Promise<{ agent: Agent; headers: Record<string, string> }> {
    if (this.#closed) throw new KubernetesError(this.#conn.name, "network", "the client is closed");
    const credential = await this.#conn.credentials.get();
    const agent = await this.#agent.acquire(
      credential.cert ?? this.#conn.tls.cert,
      credential.key ?? this.#conn.tls.key,
    );
    const headers: Record<string, string> = { accept: "application/json", "user-agent": USER_AGENT };
    if (credential.token !== undefined) headers.authorization = `Bearer ${credential.token}`;
    return { agent, headers };
  }

  #path(path: string, query: Readonly<Record<string, string>>): string {
    const qs = new URLSearchParams(query).toString();
    return `${this.#conn.basePath}${path}${qs ? `?${qs}` : ""}`;
  }

  /**
   * GETs a JSON document. Rejects with a {@link KubernetesError}; a 401
   * invalidates the cached credential so that the next request fetches a new one.
   */
  async get(path: string, query: Readonly<Record<string, string>>, signal: AbortSignal): Promise<unknown> {
    const cluster = this.#conn.name;
    const what = `GET ${path}`;
    const { agent, headers } = await this.#prepare();
    const timeout = this.#settings.requestTimeout;
    // The sockets do not hold the process (see agent.ts); a pending get
    // must, as a caller may be waiting for its answer. Cleared below.
    const hold = setTimeout(() => {}, timeout * 2);
    try {
      const res = await this.#agent.request(agent, {
        origin: this.#conn.origin,
        path: this.#path(path, query),
        method: "GET",
        headers,
        signal,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      });
      let text: string;
      try {
        text = await readText(res.body, MAX_BODY);
      } catch (err) {
        if (err instanceof RangeError)
          throw new KubernetesError(cluster, "bad-payload", `${what}: ${err.message}`);
        throw err;
      }
      if (res.statusCode !== 200) {
        if (res.statusCode === 401) this.#conn.credentials.invalidate();
        throw statusError(cluster, res.statusCode, text, what);
      }
      try {
        return JSON.parse(text);
      } catch (err) {
        throw new KubernetesError(
          cluster,
          "bad-payload",
          `${what}: not JSON: ${JSON.stringify(excerpt(text, 60))}`,
          {
            cause: err,
          },
        );
      }
    } catch (err) {
      throw transportError(cluster, err, what);
    } finally {
      clearTimeout(hold);
    }
  }

  /**
   * Runs one watch request until the server ends it (resolves), or it fails
   * (rejects with a {@link KubernetesError}): a status other than 200, a
   * stream cut in the middle of an event (`stream-cut`: the partial event is
   * dropped), nothing received for `idleTimeout` (`watch-idle`), or an error
   * thrown by `handlers.events`.
   */
  async watch(
    path: string,
    query: Readonly<Record<string, string>>,
    signal: AbortSignal,
    handlers: WatchHandlers,
  ): Promise<void> {
    const cluster = this.#conn.name;
    const what = `watch ${path}`;
    const { agent, headers } = await this.#prepare();
    const abort = new AbortController();
    const onAbort = () => abort.abort(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    let idle = false;
    let streaming = false;
    // Our own watchdog rather than undici's bodyTimeout, so that a silent
    // watch is caught the same way over HTTP/1.1 and HTTP/2, before and after
    // the response headers.
    const watchdog = setTimeout(() => {
      idle = true;
      abort.abort();
    }, this.#settings.idleTimeout);
    watchdog.unref();
    try {
      const res = await this.#agent.request(agent, {
        origin: this.#conn.origin,
        path: this.#path(path, query),
        method: "GET",
        headers,
        signal: abort.signal,
        headersTimeout: this.#settings.requestTimeout,
        bodyTimeout: 0,
      });
      if (res.statusCode !== 200) {
        let text = "";
        try {
          text = await readText(res.body, 1 << 16);
        } catch {
          // the status says enough
        }
        if (res.statusCode === 401) this.#conn.credentials.invalidate();
        throw statusError(cluster, res.statusCode, text, what);
      }
      watchdog.refresh();
      streaming = true;
      handlers.opened();
      // A chunk may end in the middle of a UTF-8 sequence.
      const decoder = new StringDecoder("utf8");
      let buffer = "";
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        watchdog.refresh();
        buffer += decoder.write(chunk);
        let nl = buffer.indexOf("\n");
        if (nl < 0) {
          if (buffer.length > MAX_EVENT)
            throw new KubernetesError(cluster, "bad-payload", `${what}: event too large`);
          continue;
        }
        const batch: WatchEvent[] = [];
        let start = 0;
        while (nl >= 0) {
          const line = buffer.slice(start, nl);
          if (line.trim() !== "") batch.push(parseEvent(cluster, what, line));
          start = nl + 1;
          nl = buffer.indexOf("\n", start);
        }
        buffer = buffer.slice(start);
        handlers.events(batch);
      }
      if (buffer.trim() !== "") {
        throw new KubernetesError(
          cluster,
          "stream-cut",
          `${what}: the stream ended in the middle of an event`,
        );
      }
    } catch (err) {
      if (idle) {
        throw new KubernetesError(
          cluster,
          "watch-idle",
          `${what}: nothing received for ${this.#settings.idleTimeout} ms`,
          { cause: err },
        );
      }
      if (streaming && !(err instanceof KubernetesError) && !signal.aborted) {
        const code = (err as { code?: string })?.code;
        throw new KubernetesError(
          cluster,
          "stream-cut",
          `${what}: the stream broke: ${code ? `${code} ` : ""}${(err as Error)?.message ?? err}`,
          { cause: err },
        );
      }
      throw transportError(cluster, err, what);
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#agent.close();
  }
}

function parseEvent(cluster: string, what: string, line: string): WatchEvent {
  let data: unknown;
  try {
    data = JSON.parse(line);
  } catch (err) {
    throw new KubernetesError(
      cluster,
      "bad-payload",
      `${what}: an event is not JSON: ${JSON.stringify(excerpt(line, 60))}`,
      {
        cause: err,
      },
    );
  }
  const parsed = watchEventSchema.safeParse(data);
  if (!parsed.success) {
    throw new KubernetesError(
      cluster,
      "bad-payload",
      `${what}: not a watch event: ${JSON.stringify(excerpt(line, 60))}`,
    );
  }
  return parsed.data;
}

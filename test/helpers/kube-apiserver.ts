/**
 * A test Kubernetes API server: HTTPS (optionally HTTP/2 with HTTP/1.1
 * fallback) on a loopback port, bearer-token or client-certificate auth,
 * EndpointSlices and Services in namespaces, with the list + watch semantics
 * of kube-apiserver:
 *
 * - list: `labelSelector`, `fieldSelector`, `limit`/`continue` (a continue
 *   token older than the compaction point is 410 Expired), `resourceVersion=0`
 *   served "from the cache" (no paging, as the watch cache serves it);
 *   items without kind/apiVersion;
 * - watch (`watch=1`): events after `resourceVersion` from the history, then
 *   live, one JSON object per line in a chunked response; a selector
 *   transition becomes ADDED/DELETED as the watch cache makes it;
 *   `allowWatchBookmarks`, `timeoutSeconds`; a version older than the
 *   compaction point gets an ERROR event with a 410 Status (the watch
 *   cache's way) or, in `compactedWatch: "status"` mode, an HTTP 410;
 * - faults: a hook answering any request with a status, a raw body, a silent
 *   watch (headers, then nothing) or no answer at all; cutting the next
 *   event of every open watch in the middle (reset or clean end).
 */

import { EventEmitter, once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  createSecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  constants as h2,
} from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import {
  bookmarkObject,
  endpointSliceObject,
  type KubeObject,
  listItem,
  type ServiceSpec,
  type SliceSpec,
  serviceObject,
  statusObject,
} from "../fixtures/kubernetes/objects.js";
import type { TestCa } from "./certs.js";

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

/** What the server saw of a request. */
export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly httpVersion: string;
  readonly authorization: string | undefined;
  readonly watch: boolean;
}

/** A fault answer: a status with a body (JSON unless a string), a silent watch, or no answer. */
export type Fault = { status: number; body: unknown; contentType?: string } | "silent" | "hang";

/** Options of {@link startKubeApiServer}. */
export interface KubeApiServerOptions {
  /** Issues the server's certificate. */
  readonly ca: TestCa;
  /** Loopback address; default 127.0.0.1. */
  readonly address?: string;
  /** Speak HTTP/2 (with HTTP/1.1 fallback); default false (HTTPS/1.1). */
  readonly http2?: boolean;
  /** Accepted bearer tokens; default one random token. */
  readonly tokens?: string[];
  /** Accept client certificates signed by this CA (PEM) instead of a token. */
  readonly clientCa?: string;
  /** How a watch from a compacted version is refused; default `event`. */
  readonly compactedWatch?: "event" | "status";
}

type Resource = "endpointslices" | "services";

interface HistoryEvent {
  readonly rv: number;
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly resource: Resource;
  readonly namespace: string;
  readonly object: KubeObject;
  readonly prev: KubeObject | undefined;
}

interface OpenWatch {
  readonly resource: Resource;
  readonly namespace: string;
  readonly matches: (o: KubeObject) => boolean;
  readonly bookmarks: boolean;
  readonly res: Res;
  write(event: unknown): void;
  end(): void;
}

const KINDS = { endpointslices: "EndpointSlice", services: "Service" } as const;
const LIST_KINDS = { endpointslices: "EndpointSliceList", services: "ServiceList" } as const;
const API_VERSIONS = { endpointslices: "discovery.k8s.io/v1", services: "v1" } as const;

/** `a=b,c!=d` selectors over a flat map (labels, or fields). */
function selector(expr: string | null): (values: Record<string, string | undefined>) => boolean {
  if (!expr) return () => true;
  const terms = expr.split(",").map((t) => {
    const m = /^\s*([^!=\s]+)\s*(==|=|!=)\s*(\S*)\s*$/.exec(t);
    if (!m) throw new Error(`unable to parse requirement: ${t}`);
    return { key: m[1]!, neg: m[2] === "!=", value: m[3]! };
  });
  return (values) => terms.every((t) => (values[t.key] === t.value) !== t.neg);
}

/** The server. Objects change through its methods; every change gets the next resourceVersion. */
export class KubeApiServer extends EventEmitter {
  readonly url: string;
  readonly port: number;
  readonly address: string;
  /** The CA that signed the server's certificate (PEM). */
  readonly caPem: string;
  /** Accepted bearer tokens; tests may change them. */
  readonly tokens: Set<string>;
  /** Every request, in order. */
  readonly requests: ApiRequest[] = [];
  /** HTTP/2 sessions opened so far. */
  sessions = 0;
  /** TLS connections opened so far. */
  connections = 0;
  /** Answers a request instead of the server when it returns a {@link Fault}. */
  fault: ((req: ApiRequest) => Fault | undefined) | undefined;
  /** How a watch from a compacted version is refused. */
  compactedWatch: "event" | "status";
  readonly #server: ReturnType<typeof createSecureServer> | ReturnType<typeof createHttpsServer>;
  readonly #objects = new Map<string, KubeObject>();
  readonly #history: HistoryEvent[] = [];
  readonly #watches = new Set<OpenWatch>();
  readonly #sockets = new Set<TLSSocket>();
  readonly #hung = new Set<Res>();
  #rv = 100;
  #compacted = 0;
  #cut: "reset" | "end" | undefined;

  /** @internal use {@link startKubeApiServer} */
  constructor(
    server: ReturnType<typeof createSecureServer> | ReturnType<typeof createHttpsServer>,
    address: string,
    port: number,
    options: KubeApiServerOptions,
  ) {
    super();
    this.#server = server;
    this.address = address;
    this.port = port;
    this.url = `https://${address}:${port}`;
    this.caPem = options.ca.cert;
    this.tokens = new Set(options.tokens ?? [`token-${Math.random().toString(36).slice(2)}`]);
    this.compactedWatch = options.compactedWatch ?? "event";
    server.on("secureConnection", (socket: TLSSocket) => {
      this.connections++;
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
    });
    server.on("session", () => this.sessions++);
    server.on("request", (req: Req, res: Res) => this.#handle(req, res));
  }

  /** The first accepted token. */
  get token(): string {
    return [...this.tokens][0]!;
  }

  /** The current resourceVersion. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Watches open now. */
  get openWatches(): number {
    return this.#watches.size;
  }

  /** Creates or replaces an EndpointSlice; returns its resourceVersion. */
  applySlice(namespace: string, spec: SliceSpec): number {
    const key = `endpointslices/${namespace}/${spec.name}`;
    const prev = this.#objects.get(key);
    const rv = ++this.#rv;
    const object = endpointSliceObject(namespace, spec, String(rv), prev?.metadata.uid);
    this.#record("endpointslices", namespace, key, object, prev);
    return rv;
  }

  /** Deletes an EndpointSlice. */
  deleteSlice(namespace: string, name: string): number {
    return this.#delete("endpointslices", namespace, name);
  }

  /** Creates or replaces a Service. */
  applyService(namespace: string, spec: ServiceSpec): number {
    const key = `services/${namespace}/${spec.name}`;
    const prev = this.#objects.get(key);
    const rv = ++this.#rv;
    this.#record(
      "services",
      namespace,
      key,
      serviceObject(namespace, spec, String(rv), prev?.metadata.uid),
      prev,
    );
    return rv;
  }

  /** Deletes a Service. */
  deleteService(namespace: string, name: string): number {
    return this.#delete("services", namespace, name);
  }

  /** Forgets the history up to now: a watch or continue token from an older version gets 410. */
  compact(): void {
    this.#compacted = this.#rv;
    this.#history.length = 0;
  }

  /** Sends a BOOKMARK at the current version to every watch that allows them. */
  bookmark(): void {
    for (const w of this.#watches) {
      if (w.bookmarks)
        w.write({ type: "BOOKMARK", object: bookmarkObject(KINDS[w.resource], String(this.#rv)) });
    }
  }

  /** Sends every open watch an ERROR event with a 410 Status, then ends it (history compacted). */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.#watches]) {
      w.write({ type: "ERROR", object: this.#expired(0) });
      w.end();
    }
  }

  /** Ends every open watch normally (as `timeoutSeconds` does). */
  endWatches(): void {
    for (const w of [...this.#watches]) w.end();
  }

  /** The next event written to each open watch is cut in the middle: the stream is reset, or ended cleanly. */
  cutNextEvent(mode: "reset" | "end"): void {
    this.#cut = mode;
  }

  /** Stops the server and every connection. */
  async close(): Promise<void> {
    for (const w of [...this.#watches]) w.end();
    for (const res of this.#hung) {
      try {
        res.destroy?.();
      } catch {
        // already gone
      }
    }
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #expired(since: number): Record<string, unknown> {
    return statusObject(410, "Expired", `too old resource version: ${since} (${this.#compacted + 1})`);
  }

  #delete(resource: Resource, namespace: string, name: string): number {
    const key = `${resource}/${namespace}/${name}`;
    const prev = this.#objects.get(key);
    if (prev === undefined) throw new Error(`${key} does not exist`);
    const rv = ++this.#rv;
    const object = { ...prev, metadata: { ...prev.metadata, resourceVersion: String(rv) } } as KubeObject;
    this.#objects.delete(key);
    this.#publish({ rv, type: "DELETED", resource, namespace, object, prev });
    return rv;
  }

  #record(
    resource: Resource,
    namespace: string,
    key: string,
    object: KubeObject,
    prev: KubeObject | undefined,
  ): void {
    this.#objects.set(key, object);
    this.#publish({ rv: this.#rv, type: prev ? "MODIFIED" : "ADDED", resource, namespace, object, prev });
  }

  #publish(event: HistoryEvent): void {
    this.#history.push(event);
    for (const w of this.#watches) this.#deliver(w, event);
  }

  /** Sends `event` to `w` as the watch cache would, given the watch's selector. */
  #deliver(w: OpenWatch, event: HistoryEvent): void {
    if (w.resource !== event.resource || w.namespace !== event.namespace) return;
    const now = event.type !== "DELETED" && w.matches(event.object);
    const before = event.prev !== undefined && w.matches(event.prev);
    let type: string;
    let object = event.object;
    if (event.type === "DELETED") {
      if (!before) return;
      type = "DELETED";
    } else if (now && before) type = "MODIFIED";
    else if (now) type = "ADDED";
    else if (before) {
      type = "DELETED";
      object = {
        ...event.prev!,
        metadata: { ...event.prev!.metadata, resourceVersion: String(event.rv) },
      } as KubeObject;
    } else return;
    w.write({ type, object });
  }

  #items(resource: Resource, namespace: string, matches: (o: KubeObject) => boolean): KubeObject[] {
    const prefix = `${resource}/${namespace}/`;
    return [...this.#objects.entries()]
      .filter(([k, o]) => k.startsWith(prefix) && matches(o))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([, o]) => o);
  }

  #send(res: Res, status: number, body: unknown, contentType = "application/json"): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  #handle(req: Req, res: Res) {
    const url = new URL(req.url ?? "/", "https://x");
    const query = url.searchParams;
    const watch = query.get("watch") === "1" || query.get("watch") === "true";
    const request: ApiRequest = {
      method: req.method ?? "",
      path: url.pathname,
      query,
      httpVersion: req.httpVersion,
      authorization: req.headers.authorization,
      watch,
    };
    this.requests.push(request);
    this.emit("request", request);

    const fault = this.fault?.(request);
    if (fault === "hang") {
      this.#hung.add(res);
      return;
    }
    if (fault === "silent") {
      res.writeHead(200, { "content-type": "application/json" });
      (res as { flushHeaders?: () => void }).flushHeaders?.();
      this.#hung.add(res);
      return;
    }
    if (fault !== undefined) return this.#send(res, fault.status, fault.body, fault.contentType);

    const socket = ("stream" in req ? req.stream.session?.socket : req.socket) as TLSSocket | undefined;
    const token = /^Bearer (.+)$/.exec(request.authorization ?? "")?.[1];
    const authenticated =
      (token !== undefined && this.tokens.has(token)) || (token === undefined && socket?.authorized === true);
    if (!authenticated) return this.#send(res, 401, statusObject(401, "Unauthorized", "Unauthorized"));
    if (request.method !== "GET")
      return this.#send(
        res,
        405,
        statusObject(
          405,
          "MethodNotAllowed",
          "the server does not allow this method on the requested resource",
        ),
      );

    const m =
      /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/(endpointslices)(?:\/([^/]+))?$/.exec(
        url.pathname,
      ) ?? /^\/api\/v1\/namespaces\/([^/]+)\/(services)(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m)
      return this.#send(
        res,
        404,
        statusObject(404, "NotFound", "the server could not find the requested resource"),
      );
    const namespace = decodeURIComponent(m[1]!);
    const resource = m[2] as Resource;
    const name = m[3];
    if (name !== undefined) {
      const object = this.#objects.get(`${resource}/${namespace}/${name}`);
      if (object === undefined) {
        return this.#send(
          res,
          404,
          statusObject(404, "NotFound", `${resource} "${name}" not found`, { name, kind: resource }),
        );
      }
      return this.#send(res, 200, object);
    }
    let matches: (o: KubeObject) => boolean;
    try {
      const labels = selector(query.get("labelSelector"));
      const fields = selector(query.get("fieldSelector"));
      matches = (o) =>
        labels((o.metadata.labels ?? {}) as Record<string, string>) &&
        fields({ "metadata.name": o.metadata.name, "metadata.namespace": o.metadata.namespace });
    } catch (err) {
      return this.#send(res, 400, statusObject(400, "BadRequest", (err as Error).message));
    }
    if (watch) return this.#watch(req, res, resource, namespace, matches, query);
    this.#list(res, resource, namespace, matches, query);
  }

  #list(
    res: Res,
    resource: Resource,
    namespace: string,
    matches: (o: KubeObject) => boolean,
    query: URLSearchParams,
  ) {
    let items = this.#items(resource, namespace, matches);
    let listRv = this.#rv;
    let next: string | undefined;
    const cont = query.get("continue");
    // resourceVersion=0 is served from the watch cache, which does not page.
    const limit = query.get("resourceVersion") === "0" ? 0 : Number(query.get("limit") ?? 0);
    let start = 0;
    if (cont) {
      const token = JSON.parse(Buffer.from(cont, "base64").toString()) as { rv: number; start: number };
      if (token.rv < this.#compacted) {
        return this.#send(
          res,
          410,
          statusObject(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
          ),
        );
      }
      start = token.start;
      listRv = token.rv;
    }
    if (limit > 0) {
      if (start + limit < items.length)
        next = Buffer.from(JSON.stringify({ rv: listRv, start: start + limit })).toString("base64");
      items = items.slice(start, start + limit);
    }
    this.#send(res, 200, {
      kind: LIST_KINDS[resource],
      apiVersion: API_VERSIONS[resource],
      metadata: { resourceVersion: String(listRv), ...(next !== undefined ? { continue: next } : {}) },
      items: items.map(listItem),
    });
  }

  #watch(
    req: Req,
    res: Res,
    resource: Resource,
    namespace: string,
    matches: (o: KubeObject) => boolean,
    query: URLSearchParams,
  ) {
    const rvParam = query.get("resourceVersion");
    const since = rvParam === null || rvParam === "" || rvParam === "0" ? undefined : Number(rvParam);
    const compacted = since !== undefined && since < this.#compacted;
    if (compacted && this.compactedWatch === "status") return this.#send(res, 410, this.#expired(since));
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache, private" });
    (res as { flushHeaders?: () => void }).flushHeaders?.();
    const out = res as ServerResponse;
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    const w: OpenWatch = {
      resource,
      namespace,
      matches,
      bookmarks: query.get("allowWatchBookmarks") === "true",
      res,
      write: (event) => {
        if (ended) return;
        const line = `${JSON.stringify(event)}\n`;
        const cut = this.#cut;
        if (cut === undefined) {
          out.write(line);
          return;
        }
        this.#cut = undefined;
        out.write(line.slice(0, Math.floor(line.length / 2)));
        if (cut === "end") return w.end();
        ended = true;
        this.#watches.delete(w);
        clearTimeout(timer);
        // Give the half event a moment to leave, then break the stream.
        setTimeout(() => {
          if ("stream" in res) res.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
          else res.socket?.destroy();
        }, 20);
      },
      end: () => {
        if (ended) return;
        ended = true;
        this.#watches.delete(w);
        clearTimeout(timer);
        res.end();
        this.emit("watch-end", resource);
      },
    };
    req.on("close", () => {
      ended = true;
      this.#watches.delete(w);
      clearTimeout(timer);
      this.emit("watch-closed", resource);
    });
    if (compacted) {
      w.write({ type: "ERROR", object: this.#expired(since) });
      return w.end();
    }
    if (since === undefined) {
      for (const o of this.#items(resource, namespace, matches)) w.write({ type: "ADDED", object: o });
    } else {
      for (const e of this.#history) if (e.rv > since) this.#deliver(w, e);
    }
    if (ended) return;
    this.#watches.add(w);
    const seconds = Number(query.get("timeoutSeconds") ?? 0);
    if (seconds > 0) timer = setTimeout(() => w.end(), seconds * 1000);
    this.emit("watch", resource);
  }
}

/** Starts a {@link KubeApiServer} on a free loopback port. */
export async function startKubeApiServer(options: KubeApiServerOptions): Promise<KubeApiServer> {
  const address = options.address ?? "127.0.0.1";
  const { cert, key } = options.ca.issue({
    cn: "kube-apiserver",
    ips: [address],
    dns: ["localhost", "kubernetes.default.svc"],
  });
  const tls = {
    cert,
    key,
    ...(options.clientCa !== undefined
      ? { ca: options.clientCa, requestCert: true, rejectUnauthorized: false }
      : {}),
  };
  const server = options.http2 ? createSecureServer({ ...tls, allowHTTP1: true }) : createHttpsServer(tls);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, address, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return new KubeApiServer(server, address, port, options);
}

/** Resolves with the next request to `s` that satisfies `predicate`. */
export function nextRequest(s: KubeApiServer, predicate: (r: ApiRequest) => boolean): Promise<ApiRequest> {
  return new Promise((resolve) => {
    const on = (r: ApiRequest) => {
      if (predicate(r)) {
        s.off("request", on);
        resolve(r);
      }
    };
    s.on("request", on);
  });
}

/** Resolves once `n` watches are open on `s`. */
export async function watchesOpen(s: KubeApiServer, n: number): Promise<void> {
  while (s.openWatches < n) await once(s, "watch");
}

/**
 * The admin endpoint: a read-only JSON view of a running mesh, as Envoy's
 * admin port is for a sidecar — `GET /describe`, `GET /resolve?service=`,
 * `GET /config` (the configuration in force, secrets redacted). Off unless
 * the `admin` option or `MESHLINK_ADMIN` names an address, and on a
 * loopback address unless remote access was allowed.
 *
 * It never changes anything: it accepts only `GET` and `HEAD`, reads no
 * request body, and on a loopback address answers only requests whose
 * `Host` is an IP address or `localhost` (a web page that rebinds its own
 * domain name to 127.0.0.1 cannot read it). Its server does not keep the
 * process alive.
 *
 * @module
 */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { type AddressInfo, isIP } from "node:net";
import type { AdminAddress } from "../config/admin.js";
import { reportInternalError } from "../diagnostics.js";
import { ConfigError, ErrorCodes, isMeshError } from "../errors.js";

/** What the admin endpoint shows; the mesh implements it. */
export interface AdminSource {
  /** `mesh.describe()`. */
  describe(): unknown;
  /** `mesh.resolve(name, port)` as JSON. */
  resolve(name: string, port: string | undefined): Promise<unknown>;
  /** The configuration in force, redacted. */
  config(): unknown;
}

/** The paths the endpoint answers, for its index. */
export const ADMIN_PATHS = ["/describe", "/resolve?service=<name>[&port=<port>]", "/config"] as const;

/** A running admin endpoint. */
export class AdminServer {
  readonly #server: Server;
  readonly #listening: Promise<string>;
  readonly #address: AdminAddress;
  #closed: Promise<void> | undefined;

  /** Starts listening at once; {@link AdminServer.url} says when it does. */
  constructor(address: AdminAddress, source: AdminSource) {
    this.#address = address;
    this.#server = createServer((req, res) => {
      handle(req, res, source, address.allowRemote).catch((err: unknown) => {
        reportInternalError("admin endpoint", err);
        if (!res.headersSent) send(res, 500, { error: { code: ErrorCodes.MESH, message: "internal error" } });
        else res.destroy();
      });
    });
    // Read-only and small: a slow client must not hold sockets for long.
    this.#server.requestTimeout = 30_000;
    this.#server.headersTimeout = 10_000;
    this.#server.keepAliveTimeout = 5_000;
    this.#listening = new Promise<string>((resolve, reject) => {
      const onError = (err: Error) => {
        const e = new ConfigError(
          "admin",
          hostPort(address.host, address.port),
          `the admin endpoint cannot listen: ${(err as { code?: string }).code ?? err.message}`,
          { cause: err },
        );
        reportInternalError("admin endpoint", e);
        reject(e);
      };
      this.#server.once("error", onError);
      this.#server.listen({ host: address.host, port: address.port }, () => {
        this.#server.off("error", onError);
        this.#server.on("error", (err) => reportInternalError("admin endpoint", err));
        const a = this.#server.address() as AddressInfo;
        resolve(`http://${hostPort(a.address, a.port)}`);
      });
      this.#server.unref();
    });
    // Nobody may be waiting: the failure went to `meshlink:error` already.
    this.#listening.catch(() => {});
  }

  /** The endpoint's base URL (`http://127.0.0.1:15090`) once it listens; rejects when it cannot. */
  url(): Promise<string> {
    return this.#listening;
  }

  /** The configured address. */
  get address(): AdminAddress {
    return this.#address;
  }

  /** Stops listening and closes its connections. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      if (!this.#server.listening) {
        resolve();
        return;
      }
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    return this.#closed;
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** True for a Host header that names an IP address or localhost (with any port). */
function localHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  let h = host.toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end > 0 && isIP(h.slice(1, end)) === 6;
  }
  const colon = h.lastIndexOf(":");
  if (colon >= 0) h = h.slice(0, colon);
  return h === "localhost" || isIP(h) === 4;
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  source: AdminSource,
  allowRemote: boolean,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    send(res, 405, { error: { code: "METHOD_NOT_ALLOWED", message: "the admin endpoint is read-only" } });
    return;
  }
  if (!allowRemote && !localHost(req.headers.host)) {
    send(res, 403, { error: { code: "FORBIDDEN", message: "Host must be an IP address or localhost" } });
    return;
  }
  const url = new URL(req.url ?? "/", "http://admin.invalid");
  switch (url.pathname) {
    case "/":
      send(res, 200, { paths: ADMIN_PATHS });
      return;
    case "/describe":
      send(res, 200, source.describe());
      return;
    case "/config":
      send(res, 200, source.config());
      return;
    case "/resolve": {
      const name = url.searchParams.get("service");
      if (name === null || name === "") {
        send(res, 400, { error: { code: "BAD_REQUEST", message: "resolve needs ?service=<name>" } });
        return;
      }
      try {
        send(res, 200, await source.resolve(name, url.searchParams.get("port") ?? undefined));
      } catch (err) {
        if (!isMeshError(err)) throw err;
        send(res, statusOf(err.code), { error: { code: err.code, message: err.message } });
      }
      return;
    }
    default:
      send(res, 404, {
        error: { code: "NOT_FOUND", message: `no such path; try ${ADMIN_PATHS.join(", ")}` },
      });
  }
}

/** The HTTP status of a meshlink error from `resolve`. */
function statusOf(code: string): number {
  switch (code) {
    case ErrorCodes.SERVICE_NAME:
    case ErrorCodes.CONFIG:
      return 400;
    case ErrorCodes.SERVICE_NOT_FOUND:
      return 404;
    default:
      return 503;
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(res.req.method === "HEAD" ? undefined : text);
}

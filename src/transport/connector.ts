/**
 * The connector: the one place that opens a connection to an endpoint, for
 * every transport. It knows which endpoint each origin is (the route
 * registers it when it first sends there), refuses an address the egress
 * rule denies before any socket exists, applies the connection options
 * (connect timeout, TCP keep-alive, TLS session cache), and remembers when
 * each connection was made, so that a request that breaks on a keep-alive
 * connection the server had already closed can be told from one that broke
 * a fresh connection (the first is nobody's fault and is resent; the second
 * counts against the endpoint).
 *
 * @module
 */

import type { Socket } from "node:net";
import { buildConnector } from "undici";
import { monotonicNow } from "../clock.js";
import { hostPort } from "../discovery/endpoint.js";
import { EgressDeniedError } from "../errors.js";
import type { TlsConnectOptions, TlsPolicy, TlsTarget } from "../tls/tls.js";
import { type EgressGuard, guardedLookup } from "./egress.js";

/** Options of {@link Connector}. */
export interface ConnectorOptions {
  /** Connect timeout in ms, a backstop behind the per-try timeout; default 10 000 (undici's). */
  timeout?: number;
  /** TLS sessions kept for resumption; default 100 (undici's). */
  maxCachedSessions?: number;
  /** The egress guard; default none. */
  egress?: EgressGuard | undefined;
  /** The TLS policy for `https:` origins (mesh TLS, or an `https://` URL); default Node's own TLS. */
  tls?: TlsPolicy | undefined;
}

/** Set on a socket's errors: when the socket was connected (connector clock). */
const kConnectedAt = Symbol("meshlink.connectedAt");

type ConnectCallback = (err: Error | null, socket: Socket | null) => void;

/** undici's socket info on its own socket errors (`SocketError.socket`). */
interface SocketInfo {
  readonly localAddress?: string;
  readonly localPort?: number;
}

/**
 * Opens every connection of a mesh. `connect` is an undici connector: give
 * it to an `Agent` (`new Agent({ connect: connector.connect })`).
 */
export class Connector {
  /** The undici connector function. */
  readonly connect: buildConnector.connector;
  /** What each `https:` origin is: the endpoint, its service and the server name. */
  readonly #targets = new Map<string, TlsTarget>();
  /** One undici connector per TLS options object: its session cache is then per material version and identity. */
  readonly #tlsConnectors = new WeakMap<TlsConnectOptions, buildConnector.connector>();
  /** Live connections by local address and port, with when each was made. */
  readonly #connectedAt = new Map<string, number>();

  constructor(options: ConnectorOptions = {}) {
    const timeout = options.timeout ?? 10_000;
    const maxCachedSessions = options.maxCachedSessions ?? 100;
    const guard = options.egress;
    // A host name (an FQDN endpoint) is checked address by address as it resolves.
    const lookup = guard === undefined ? undefined : guardedLookup(guard);
    const common = { timeout, maxCachedSessions, keepAlive: true, ...(lookup && { lookup }) };
    const base = buildConnector(common);
    const tls = options.tls;
    this.connect = (opts, callback) => {
      const host = opts.hostname;
      const address = host.startsWith("[") ? host.slice(1, -1) : host;
      const violation = guard?.check(address);
      if (violation !== undefined) {
        // undici expects its connect callback later, never within the call.
        const err = new EgressDeniedError(violation.address, violation.rule);
        queueMicrotask(() => (callback as ConnectCallback)(err, null));
        return;
      }
      let connector = base;
      if (tls !== undefined && opts.protocol === "https:") {
        const target = this.#targets.get(`https://${hostPort(address, Number(opts.port) || 443)}`);
        if (target !== undefined) {
          const o = tls.connectOptions(target);
          let c = this.#tlsConnectors.get(o);
          if (c === undefined) {
            c = buildConnector({ ...common, ...o } as buildConnector.BuildOptions);
            this.#tlsConnectors.set(o, c);
          }
          connector = c;
        }
      }
      connector(opts, (err, socket) => {
        if (err !== null || socket === null) {
          (callback as ConnectCallback)(err, null);
          return;
        }
        this.#track(socket as Socket);
        (callback as ConnectCallback)(null, socket as Socket);
      });
    };
  }

  /**
   * Records what an `https:` origin is (its endpoint, service and server
   * name), so that its connections get the endpoint's trust bundle and
   * identity check. The origin is `https://<address>:<port>`.
   */
  register(target: TlsTarget): void {
    this.#targets.set(`https://${hostPort(target.endpoint.address, target.endpoint.port)}`, target);
  }

  /**
   * When the connection a request error happened on was made (connector
   * clock, ms), if the error says which connection it was: an error the
   * socket raised itself is stamped, and undici's own socket errors carry
   * the local port.
   */
  connectedAt(err: unknown): number | undefined {
    if (err === null || typeof err !== "object") return undefined;
    const stamped = (err as { [kConnectedAt]?: number })[kConnectedAt];
    if (typeof stamped === "number") return stamped;
    const info = (err as { socket?: SocketInfo }).socket;
    if (info?.localPort === undefined) return undefined;
    return this.#connectedAt.get(`${info.localAddress}|${info.localPort}`);
  }

  #track(socket: Socket): void {
    const at = monotonicNow();
    const key = `${socket.localAddress}|${socket.localPort}`;
    this.#connectedAt.set(key, at);
    // Registered before undici's own listeners, so the error is stamped before undici hands it on.
    socket.on("error", (err: unknown) => {
      if (err !== null && typeof err === "object" && !(kConnectedAt in err)) {
        (err as { [kConnectedAt]?: number })[kConnectedAt] = at;
      }
    });
    // undici fails the request on "close", after this listener: keep the entry until then.
    socket.once("close", () => setImmediate(() => this.#connectedAt.delete(key)));
  }
}

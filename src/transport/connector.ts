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
import type { Endpoint } from "../discovery/endpoint.js";

/**
 * An egress rule: returns the error to fail the connection with when an
 * address may not be connected to (it names the address and the rule), or
 * undefined when it may.
 */
export type EgressCheck = (address: string) => Error | undefined;

/** Options of {@link Connector}. */
export interface ConnectorOptions {
  /** Connect timeout in ms, a backstop behind the per-try timeout; default 10 000 (undici's). */
  timeout?: number;
  /** TLS sessions kept for resumption; default 100 (undici's). */
  maxCachedSessions?: number;
  /** The egress rule; default none. */
  egress?: EgressCheck | undefined;
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
  readonly #endpoints = new Map<string, Endpoint>();
  /** Live connections by local address and port, with when each was made. */
  readonly #connectedAt = new Map<string, number>();

  constructor(options: ConnectorOptions = {}) {
    const base = buildConnector({
      timeout: options.timeout ?? 10_000,
      maxCachedSessions: options.maxCachedSessions ?? 100,
      keepAlive: true,
    });
    const egress = options.egress;
    this.connect = (opts, callback) => {
      const host = opts.hostname;
      const address = host.startsWith("[") ? host.slice(1, -1) : host;
      const denied = egress?.(address);
      if (denied !== undefined) {
        (callback as ConnectCallback)(denied, null);
        return;
      }
      base(opts, (err, socket) => {
        if (err !== null || socket === null) {
          (callback as ConnectCallback)(err, null);
          return;
        }
        this.#track(socket as Socket);
        (callback as ConnectCallback)(null, socket as Socket);
      });
    };
  }

  /** Records that `origin` (`http://10.0.1.7:8080`) is this endpoint. */
  register(origin: string, endpoint: Endpoint): void {
    this.#endpoints.set(origin, endpoint);
  }

  /** The endpoint an origin was registered for, if any. */
  endpointOf(origin: string): Endpoint | undefined {
    return this.#endpoints.get(origin);
  }

  /** Forgets the origins of endpoints no longer in use. */
  unregister(origin: string): void {
    this.#endpoints.delete(origin);
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

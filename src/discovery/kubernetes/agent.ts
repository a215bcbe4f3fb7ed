/**
 * The connections to one API server: an undici Agent of the backend's own
 * (never the global dispatcher, which the application may have pointed at
 * the mesh itself), rebuilt when an exec plugin hands out a new client
 * certificate. Where the server speaks HTTP/2, every list and watch shares
 * one connection, as client-go's do; over HTTP/1.1 each has its own.
 *
 * @module
 */

import type { Socket } from "node:net";
import { Agent, buildConnector, Client, Pool } from "undici";
import type { TlsMaterial } from "./connection.js";

/** Streams an HTTP/2 connection carries before another is opened (kube-apiserver allows 100 or more). */
const H2_STREAMS = 100;

const noop = () => {};

/**
 * Sockets to the API server must not keep the process alive: a watch runs
 * for as long as the mesh does, and an idle mesh lets its process exit.
 * undici refs a socket while requests are pending; a get holds the process
 * with a timer of its own instead (see `ApiClient.get`).
 */
function unrefForever(socket: Socket): void {
  socket.unref();
  socket.ref = () => socket;
}

/** The agent of one API server, and what its connections speak. */
export class ServerAgent {
  readonly #tls: TlsMaterial;
  readonly #connectTimeout: number;
  #agent: Agent | undefined;
  /** The client certificate the agent was built with. */
  #agentCert: string | undefined;
  /** What the server's connections speak, once one has connected. */
  #protocol: "h2" | "http/1.1" | undefined;
  /** Settles when the probing request has connected (or failed to). */
  #probe: Promise<void> | undefined;
  #probeDone: (() => void) | undefined;

  constructor(tls: TlsMaterial, connectTimeout: number) {
    this.#tls = tls;
    this.#connectTimeout = connectTimeout;
  }

  /**
   * The agent to send a request with, for this client certificate; waits, if
   * needed, until the server's protocol is known (see `#gate`).
   */
  async acquire(cert: string | undefined, key: string | undefined): Promise<Agent> {
    const agent = this.#agentFor(cert, key);
    await this.#gate();
    return agent;
  }

  /** The agent for `cert`/`key`, rebuilt when an exec plugin hands out a new certificate. */
  #agentFor(cert: string | undefined, key: string | undefined): Agent {
    const id = cert === undefined ? undefined : `${cert}\0${key}`;
    if (this.#agent !== undefined && id === this.#agentCert) return this.#agent;
    const previous = this.#agent;
    const tls = this.#tls;
    const connector = buildConnector({
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      ...(cert !== undefined ? { cert, key } : {}),
      ...(tls.servername !== undefined ? { servername: tls.servername } : {}),
      rejectUnauthorized: !tls.insecure,
      allowH2: true,
      timeout: this.#connectTimeout,
    });
    const connect: buildConnector.connector = (options, callback) =>
      connector(options, (err, socket) => {
        if (socket) {
          const h2 = (socket as { alpnProtocol?: string | false }).alpnProtocol === "h2";
          this.#protocol = h2 ? "h2" : "http/1.1";
          // A new HTTP/2 connection after this one closes is probed again, so
          // that reconnecting watches share it instead of each opening one.
          if (h2) socket.once("close", () => (this.#protocol = undefined));
          unrefForever(socket as Socket);
        }
        this.#probed();
        (callback as (e: Error | null, s: unknown) => void)(err, socket);
      });
    // undici gives an HTTP/2 client one request at a time unless its
    // pipelining is raised: a client that connected over h2 takes up to
    // H2_STREAMS streams, so that every watch shares its connection; an
    // HTTP/1.1 client keeps one request per connection (a watch never ends
    // soon, so nothing may queue behind it).
    const clientFactory = (origin: string | URL, options: object) => {
      const client = new Client(origin, options);
      client.on("connect", () => {
        if (this.#protocol === "h2") client.pipelining = H2_STREAMS;
      });
      return client;
    };
    this.#agent = new Agent({
      allowH2: true,
      connect,
      factory: (origin, options) => new Pool(origin, { ...options, factory: clientFactory }),
    });
    this.#agentCert = id;
    this.#protocol = undefined;
    // Watches already running on the old agent keep going until they end; then it closes.
    previous?.close().catch(noop);
    return this.#agent;
  }

  /**
   * Waits, while no connection has told whether the server speaks HTTP/2,
   * for the request that is finding out: requests started together would
   * otherwise each open a connection before the first one knows it could
   * have carried them all. The first caller proceeds (it is the probe).
   */
  async #gate(): Promise<void> {
    while (this.#protocol === undefined && this.#probe !== undefined) await this.#probe;
    if (this.#protocol === undefined)
      this.#probe = new Promise<void>((resolve) => (this.#probeDone = resolve));
  }

  #probed(): void {
    const done = this.#probeDone;
    this.#probe = undefined;
    this.#probeDone = undefined;
    done?.();
  }

  /** `agent.request`, ending the probe if it settles without a connection (aborted while connecting). */
  async request(agent: Agent, options: Parameters<Agent["request"]>[0]): ReturnType<Agent["request"]> {
    try {
      return await agent.request(options);
    } finally {
      if (this.#protocol === undefined) this.#probed();
    }
  }

  /** Closes every connection. */
  async close(): Promise<void> {
    const agent = this.#agent;
    this.#agent = undefined;
    await agent?.destroy().catch(noop);
  }
}

/**
 * `mesh.httpAgent` and `mesh.httpsAgent`: `node:http` and `node:https`
 * Agents for the clients that do not speak undici — axios (its default
 * adapter), got, node-fetch, `http.request` itself. A request to a mesh name
 * goes to an endpoint the router picks, over a connection the mesh's
 * {@link Connector} opens (egress rule, connection options, TLS), with
 * connect-time failover to another endpoint, preferring another cluster;
 * what each request did is reported to health. A request to any other host
 * goes through the Agent as Node's own would send it.
 *
 * How: `addRequest` picks the endpoint and hands the request to Node's
 * Agent with the endpoint's address and port, so each endpoint has its own
 * keep-alive pool and a pooled connection is reused only when the router
 * picks its endpoint again. `createSocket` opens a new connection through
 * the connector and, when that fails before anything was sent, picks
 * another endpoint and tries there (the request's bytes never left); the
 * connection that is made goes into its own endpoint's pool. Node's Agent
 * gets the connected socket from `createConnection`, as agent-base does.
 *
 * What it does not do — a node:http client owns the request once it has a
 * socket: it does not resend a request whose bytes were sent (no retry
 * after a reset, a timeout or a 503; the client's own retries, as got's,
 * pick again), does not hedge, has no deadline or per-try timeout beyond
 * connecting, and reads no `meshlink` option or control header. For those,
 * use `mesh.fetch` or undici with `mesh.dispatcher`. See docs/clients.md.
 *
 * @module
 */

import { errorMonitor } from "node:events";
import * as http from "node:http";
import * as https from "node:https";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Endpoint } from "../../discovery/endpoint.js";
import { hostPort } from "../../discovery/endpoint.js";
import { type AttemptRecord, RequestFailedError } from "../../errors.js";
import { admitCall, noEndpointError, releaseCall } from "../../resilience/admission.js";
import { PerTryTimeoutError } from "../../resilience/attempt.js";
import { classifyError } from "../../resilience/policy.js";
import type { EndpointHealth } from "../../routing/health.js";
import type { Connector } from "../connector.js";
import { type HttpRoutes, type Route, RouteTable } from "./routes.js";

/** Options of {@link createNodeAgents}. */
export interface NodeAgentsOptions {
  /** The connector that opens every connection to an endpoint. */
  readonly connector: Connector;
  /** Idle keep-alive sockets are closed after this many ms (Node's Agent `timeout`); default 4 000. */
  readonly keepAliveTimeout?: number | undefined;
  /** The connector's own connect timeout, ms; a shorter per-try timeout cuts connecting short. Default 10 000. */
  readonly connectTimeout?: number | undefined;
}

/** The two agents of a mesh, and what closing the mesh does to them. */
export interface NodeAgents {
  /** For `http:` URLs. */
  readonly http: http.Agent;
  /** For `https:` URLs. */
  readonly https: https.Agent;
  /** Closes every connection to a mesh endpoint; other hosts' connections stay. */
  close(): void;
}

/** What Node's Agent does and @types/node does not declare. */
interface AgentInternals {
  addRequest(req: http.ClientRequest, options: RequestOptions): void;
  createSocket(req: http.ClientRequest, options: RequestOptions, cb: SocketCallback): void;
}

/** The options Node's `ClientRequest` hands its agent (host and port already normalised). */
type RequestOptions = http.ClientRequestArgs & { [key: string]: unknown };
type SocketCallback = (err: Error | null, socket?: Duplex) => void;
/** `ClientRequest.onSocket(socket, err)`: how an agent fails a request that has no socket. */
type OnSocket = (socket: Duplex | null, err?: Error) => void;

// https.Agent inherits both from http.Agent.
const BASE = http.Agent.prototype as unknown as AgentInternals;

const kCall = Symbol("meshlink.nodeCall");

/**
 * Creates the mesh's node:http and node:https agents over its routes and
 * connector. Usually called by `createMesh` (`mesh.httpAgent`,
 * `mesh.httpsAgent`).
 */
export function createNodeAgents(routes: HttpRoutes, options: NodeAgentsOptions): NodeAgents {
  const core = new NodeRouter(routes, options);
  const agentOptions = {
    keepAlive: true,
    scheduling: "lifo" as const,
    timeout: options.keepAliveTimeout ?? 4_000,
  };
  return {
    http: new MeshHttpAgent(agentOptions).route(core),
    https: new MeshHttpsAgent(agentOptions).route(core),
    close: () => core.close(),
  };
}

/** What both agents share: the route table, the connector, the mesh's sockets. */
class NodeRouter {
  readonly routes: HttpRoutes;
  readonly connector: Connector;
  readonly connectTimeout: number;
  readonly #table: RouteTable;
  /** Every connection to a mesh endpoint, so that closing the mesh can close them. */
  readonly #sockets = new Set<Duplex>();
  /** The socket `createConnection` returns next (set and taken synchronously, as agent-base does). */
  handoff: Duplex | undefined;
  #closed = false;

  constructor(routes: HttpRoutes, options: NodeAgentsOptions) {
    this.routes = routes;
    this.connector = options.connector;
    this.connectTimeout = options.connectTimeout ?? 10_000;
    // Not explicit: a short `svc.ns` host is a mesh name only when a backend claims it (`example.com` is one too).
    this.#table = new RouteTable(routes, false);
  }

  get closed(): boolean {
    return this.#closed || this.routes.closed;
  }

  /** The route of a request, or null when its host is not a mesh name. */
  routeOf(protocol: string, options: RequestOptions): Route | null {
    if (options.socketPath !== undefined) return null;
    return this.#table.get(`${protocol}//${options.host}:${options.port}`);
  }

  addRequest(agent: http.Agent, protocol: string, req: http.ClientRequest, options: RequestOptions): void {
    const route = this.routeOf(protocol, options);
    if (route === null) {
      BASE.addRequest.call(agent, req, options);
      return;
    }
    const call = new NodeCall(this, agent, protocol, req, options, route);
    (req as unknown as { [kCall]: NodeCall })[kCall] = call;
    call.begin();
  }

  createSocket(
    agent: http.Agent,
    req: http.ClientRequest,
    options: RequestOptions,
    cb: SocketCallback,
  ): void {
    const call = (req as unknown as { [kCall]?: NodeCall })[kCall];
    if (call === undefined) BASE.createSocket.call(agent, req, options, cb);
    else call.connect(options, cb);
  }

  /** A new connection to a mesh endpoint. */
  track(socket: Duplex): void {
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  /** False for a mesh endpoint's connection once the mesh is closed: the agent destroys it instead of pooling it. */
  keeps(socket: Duplex): boolean {
    return !(this.#closed && this.#sockets.has(socket));
  }

  close(): void {
    this.#closed = true;
    for (const s of this.#sockets) s.destroy();
  }
}

/** What both mesh agents extend: node:http's `Agent` or node:https's (a mixin's base takes `any[]`). */
// biome-ignore lint/suspicious/noExplicitAny: TypeScript requires a mixin base constructor to take any[].
type AgentBase = new (...args: any[]) => http.Agent;

/**
 * A node:http or node:https agent whose requests to mesh names go through
 * `core` (Node requires an agent of the request's protocol, so there are
 * two classes of the same shape).
 */
function meshAgentClass<B extends AgentBase>(Base: B, protocol: "http:" | "https:") {
  return class MeshAgent extends Base {
    #core!: NodeRouter;

    /** Routes this agent's requests to mesh names through `core` (called once, right after construction). */
    route(core: NodeRouter): this {
      this.#core = core;
      return this;
    }

    /** @internal Node's Agent: a request wants a socket. */
    addRequest(req: http.ClientRequest, options: RequestOptions): void {
      this.#core.addRequest(this, protocol, req, options);
    }

    /** @internal Node's Agent: a new socket for a request. */
    createSocket(req: http.ClientRequest, options: RequestOptions, cb: SocketCallback): void {
      this.#core.createSocket(this, req, options, cb);
    }

    override createConnection(
      options: http.ClientRequestArgs,
      callback?: (err: Error | null, stream: Duplex) => void,
    ): Duplex | null | undefined {
      const socket = this.#core.handoff;
      if (socket === undefined) return super.createConnection(options, callback);
      this.#core.handoff = undefined;
      return socket;
    }

    override keepSocketAlive(socket: Duplex): boolean {
      if (!this.#core.keeps(socket)) return false;
      return super.keepSocketAlive(socket) as unknown as boolean;
    }
  };
}

/** The node:http agent. */
const MeshHttpAgent = meshAgentClass(http.Agent, "http:");
/** The node:https agent: the same, for `https:` URLs. */
const MeshHttpsAgent = meshAgentClass(https.Agent, "https:");

/**
 * One request to a mesh name through an agent: admission, the pick, the
 * connect-time failover, and what it tells health. Node's Agent does the
 * rest (pooling, handing the socket to the request).
 */
class NodeCall {
  readonly #core: NodeRouter;
  readonly #agent: http.Agent;
  /** `http:` or `https:`. */
  readonly #protocol: string;
  readonly #req: http.ClientRequest;
  readonly #options: RequestOptions;
  readonly #route: Route;
  #endpoint: Endpoint | undefined;
  #health: EndpointHealth | undefined;
  #startedAt = 0;
  /** No outcome is owed to health (none started, or it was reported). */
  #settled = true;
  /** Counted among the service's calls in flight. */
  #counted = false;
  /** Every endpoint this request went to, in order (its attempts). */
  #tried: string[] = [];
  #badClusters: string[] | undefined;
  #records: AttemptRecord[] | undefined;

  constructor(
    core: NodeRouter,
    agent: http.Agent,
    protocol: string,
    req: http.ClientRequest,
    options: RequestOptions,
    route: Route,
  ) {
    this.#core = core;
    this.#agent = agent;
    this.#protocol = protocol;
    this.#req = req;
    this.#options = options;
    this.#route = route;
  }

  begin(): void {
    const req = this.#req;
    req.once("response", (res: http.IncomingMessage) => this.#onResponse(res));
    // errorMonitor: hearing about the error without handling it (an unhandled one still throws).
    req.on(errorMonitor, (err: Error) => this.#onError(err));
    req.once("close", () => this.#onClose());
    const watch = this.#route.balancer.watch;
    watch.used = true;
    if (watch.isSettled || this.#core.closed) this.#admit();
    else
      watch.settled().then(
        () => this.#admit(),
        (err: unknown) => this.#fail(err as Error),
      );
  }

  #admit(): void {
    const req = this.#req;
    // Destroyed while discovery answered: Node's own path for a request without a socket.
    if (req.destroyed) {
      (req.onSocket as unknown as OnSocket)(null);
      return;
    }
    const route = this.#route;
    const refused = admitCall(route, this.#core.routes.policy, this.#core.closed);
    if (refused !== undefined) {
      this.#fail(refused);
      return;
    }
    this.#counted = true;
    const endpoint = route.balancer.pick();
    if (endpoint === undefined) {
      this.#fail(noEndpointError(this.#route, this.#core.routes.policy, this.#records ?? []));
      return;
    }
    this.#use(endpoint);
    BASE.addRequest.call(this.#agent, req, this.#optionsFor(endpoint, this.#options));
  }

  /** Fails a request that has no socket: it emits the error, then closes. */
  #fail(err: Error): void {
    (this.#req.onSocket as unknown as OnSocket)(null, err);
  }

  /** The request goes to this endpoint now. */
  #use(endpoint: Endpoint): void {
    const balancer = this.#route.balancer;
    const health = balancer.healthOf(endpoint);
    balancer.health.start(health);
    this.#endpoint = endpoint;
    this.#health = health;
    this.#settled = false;
    this.#startedAt = this.#core.routes.policy.now();
    this.#tried.push(endpoint.id);
  }

  /** The request options with the endpoint's address: Node's Agent pools by them. */
  #optionsFor(endpoint: Endpoint, options: RequestOptions): RequestOptions {
    return {
      ...options,
      host: endpoint.address,
      hostname: endpoint.address,
      port: endpoint.port,
      // The TLS server name stays the service's, whatever address the connection goes to.
      servername: this.#route.servername,
    };
  }

  /** Node's Agent wants a new connection for the request: make one, failing over while nothing was sent. */
  connect(options: RequestOptions, cb: SocketCallback): void {
    const endpoint = this.#endpoint!;
    const core = this.#core;
    const perTry = core.routes.policy.perTryTimeout;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (err: Error | null, socket: Socket | null) => {
      if (done) {
        // Connected after the per-try timeout gave up on it.
        socket?.destroy();
        return;
      }
      done = true;
      if (timer !== undefined) clearTimeout(timer);
      if (err !== null || socket === null) this.#connectFailed(err ?? new Error("no socket"), options, cb);
      else this.#connected(socket, options, cb);
    };
    // The per-try timeout covers connecting, as in the engine; one timer per new connection, not per request.
    if (perTry < core.connectTimeout)
      timer = setTimeout(() => finish(new PerTryTimeoutError(perTry, false), null), perTry);
    core.connector.connect(
      {
        hostname: endpoint.address,
        host: hostPort(endpoint.address, endpoint.port),
        // In strict TLS mode an http: request to a mesh name goes over mutual TLS too, as through the dispatcher.
        protocol: this.#route.originOf(endpoint).startsWith("https:") ? "https:" : this.#protocol,
        port: String(endpoint.port),
        servername: this.#route.servername,
        localAddress: (options.localAddress as string | undefined) ?? null,
      },
      finish as (err: Error | null, socket: Socket | null) => void,
    );
  }

  #connected(socket: Socket, options: RequestOptions, cb: SocketCallback): void {
    const core = this.#core;
    core.track(socket);
    core.handoff = socket;
    try {
      BASE.createSocket.call(this.#agent, this.#req, this.#optionsFor(this.#endpoint!, options), cb);
    } finally {
      core.handoff = undefined;
    }
    this.#forgetPool(options);
  }

  #connectFailed(err: Error, options: RequestOptions, cb: SocketCallback): void {
    const endpoint = this.#endpoint!;
    const health = this.#health!;
    const balancer = this.#route.balancer;
    // Nothing of the request was written: any failure to connect is the endpoint's (or the network's),
    // except one that says nothing about it (a certificate the mesh does not trust, say).
    const kind = err instanceof PerTryTimeoutError ? "connect" : classifyError(err);
    this.#settled = true;
    if (kind === "other") {
      balancer.health.release(health);
      this.#forgetPool(options);
      cb(err);
      return;
    }
    const reason = (err as { code?: string }).code ?? err.name;
    balancer.health.failure(health, reason, this.#core.routes.policy.now() - this.#startedAt);
    (this.#records ??= []).push({ endpoint: endpoint.id, reason });
    const next = this.#retryTarget(endpoint);
    if (next !== undefined) {
      this.#use(next);
      this.connect(options, cb);
      return;
    }
    this.#forgetPool(options);
    cb(new RequestFailedError(this.#route.name.key, this.#records, { cause: err }));
  }

  /** Another endpoint after a connect failure, preferring another cluster; undefined when the policy or budget says no. */
  #retryTarget(failed: Endpoint): Endpoint | undefined {
    const policy = this.#core.routes.policy;
    if (this.#req.destroyed || this.#core.closed || !policy.mayRetry("connect", false, this.#tried.length)) {
      return undefined;
    }
    const bad = (this.#badClusters ??= []);
    if (!bad.includes(failed.cluster)) bad.push(failed.cluster);
    const next = this.#route.balancer.pick({ exclude: this.#tried, avoidClusters: bad });
    if (next === undefined) return undefined;
    const budget = this.#route.state.budget;
    if (budget !== undefined && !budget.tryWithdraw()) return undefined;
    return next;
  }

  /**
   * Node's `addRequest` made an empty socket list under the first
   * endpoint's pool name; when the socket went elsewhere (or nowhere), drop it.
   */
  #forgetPool(options: RequestOptions): void {
    const sockets = this.#agent.sockets as Record<string, unknown[] | undefined>;
    const name = this.#agent.getName(options);
    if (sockets[name]?.length === 0) delete sockets[name];
  }

  #onResponse(res: http.IncomingMessage): void {
    if (!this.#settled) {
      this.#settled = true;
      const policy = this.#core.routes.policy;
      const tracker = this.#route.balancer.health;
      const latency = policy.now() - this.#startedAt;
      const status = res.statusCode ?? 0;
      if (policy.isFailureStatus(status)) tracker.failure(this.#health!, `status ${status}`, latency);
      else tracker.success(this.#health!, latency);
    }
    // Our listener counts as one: with no other, Node would have dumped the response.
    if (this.#req.listenerCount("response") === 0) res.resume();
  }

  #onError(err: Error): void {
    if (this.#settled) return;
    this.#settled = true;
    const tracker = this.#route.balancer.health;
    const kind = classifyError(err);
    // A keep-alive connection the server had closed, or a failure that is not the endpoint's: nobody's fault.
    if (kind === "other" || (kind === "reset" && this.#req.reusedSocket)) tracker.release(this.#health!);
    else {
      const reason = (err as { code?: string }).code ?? err.name;
      tracker.failure(this.#health!, reason, this.#core.routes.policy.now() - this.#startedAt);
    }
  }

  #onClose(): void {
    if (!this.#settled) {
      // Aborted by its caller, or upgraded: it says nothing about the endpoint.
      this.#settled = true;
      this.#route.balancer.health.release(this.#health!);
    }
    if (this.#counted) {
      this.#counted = false;
      releaseCall(this.#route, this.#core.routes.policy);
    }
  }
}

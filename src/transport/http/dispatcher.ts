/**
 * `mesh.dispatcher`: an undici `Dispatcher` that routes requests to mesh
 * names through the mesh and hands every other request to its pass-through
 * agent as it came.
 *
 * Why not `agent.compose(meshInterceptor(…))`: undici's `compose()` wraps
 * every request's handler in a `WrapHandler` (the new handler API), and the
 * agent underneath, whose connections still speak the legacy API, wraps it
 * back into an `UnwrapHandler`. On the way, each response's raw header
 * buffers are parsed into an object and turned back into buffers (twice,
 * with the trailers), back-pressure goes through three controllers, and every
 * `dispatch` goes through a `Proxy` trap: more than meshlink itself costs
 * per request, and every request to a host that is not a mesh name would pay
 * it too once the mesh is the global dispatcher (docs/performance.md, F1,
 * has the figures). A plain `Dispatcher` subclass costs nothing measurable:
 * undici's own verbs and both `fetch`es speak the legacy API, so a call
 * answers in that API and its attempts reach the connection unwrapped.
 *
 * @module
 */

import type { EventEmitter } from "node:events";
import { Agent, Dispatcher, errors } from "undici";
import { type CallSite, MeshCall } from "./call.js";
import { type HttpRoutes, RouteTable } from "./routes.js";

/** Options of {@link MeshDispatcher}. */
export interface MeshDispatcherOptions {
  /**
   * Where each attempt of a mesh call goes (one pool per endpoint). Default
   * a new undici `Agent`. The dispatcher's `close()` and `destroy()` close
   * and destroy it.
   */
  agent?: Dispatcher;
  /**
   * Where every request to a host that is not a mesh name goes, as it came.
   * Default `agent`. Kept apart from `agent` so that closing the mesh (its
   * pools) leaves every other host working for an application whose global
   * dispatcher this is. The dispatcher's `close()` and `destroy()` close and
   * destroy it too.
   */
  passthrough?: Dispatcher;
  /** Treat a short `svc.ns` host as a mesh name even when no backend claims it (`mesh.fetch`). */
  explicit?: boolean;
  /**
   * `agent` is an undici `Agent` made without interceptors: it reads no
   * request field but those undici's `Request` knows (see
   * {@link CallSite.knownFieldsOnly}). Default: true when no `agent` is given.
   */
  plainAgent?: boolean;
}

/** The agent's events, re-emitted by the dispatcher with itself first among the targets (undici's convention). */
const AGENT_EVENTS = ["connect", "disconnect", "connectionError", "drain"] as const;

/**
 * An undici dispatcher that sends requests to mesh names through the mesh
 * (routing, failover, call policy, trace context) and passes every other
 * request to its agent untouched: same options, same handler, no wrapper.
 * `mesh.dispatcher` is one; use it with `setGlobalDispatcher`, as the
 * `dispatcher` of `undici.request`, `stream`, `pipeline` or `fetch`, or
 * under a `compose()` chain of your own.
 *
 * A mesh call answers in the handler API its caller speaks: undici's legacy
 * API (`onConnect`/`onHeaders`/…, what undici's verbs and Node's global
 * `fetch` use) or the new one (`onRequestStart`/`onResponseStart`/…, what
 * interceptors use).
 *
 * @example
 * ```ts
 * import { request, setGlobalDispatcher } from "undici";
 * const mesh = createMesh();
 * setGlobalDispatcher(mesh.dispatcher);            // fetch() to mesh names routes; other hosts pass through
 * await request("http://my-service.default.svc.cluster.local:8080/", { dispatcher: mesh.dispatcher });
 * ```
 */
export class MeshDispatcher extends Dispatcher {
  readonly #agent: Dispatcher;
  readonly #passthrough: Dispatcher;
  readonly #table: RouteTable;
  readonly #site: CallSite;

  /** Usually made by `createMesh`; `routes` is the mesh (see {@link HttpRoutes}). */
  constructor(routes: HttpRoutes, options: MeshDispatcherOptions = {}) {
    super();
    const agent = options.agent ?? new Agent();
    this.#agent = agent;
    this.#passthrough = options.passthrough ?? agent;
    this.#table = new RouteTable(routes, options.explicit ?? false);
    this.#site = {
      routes,
      dispatch: agent.dispatch.bind(agent),
      knownFieldsOnly: options.plainAgent ?? options.agent === undefined,
    };
    // The agents' events are passed on only once someone listens here: each
    // request that frees a connection emits `drain`, and passing on an event
    // nobody hears would cost every request an array and two emits.
    const dispatchers = this.#passthrough === agent ? [agent] : [agent, this.#passthrough];
    const relayed = new Set<string | symbol>();
    // Dispatcher's typings list only its own events; `newListener` is EventEmitter's.
    (this as unknown as EventEmitter).on("newListener", (event: string | symbol) => {
      if (relayed.has(event) || !(AGENT_EVENTS as readonly (string | symbol)[]).includes(event)) return;
      relayed.add(event);
      for (const d of dispatchers) {
        d.on(event as "connect", (origin: URL, targets: readonly Dispatcher[], err?: unknown) => {
          (this.emit as (event: string | symbol, ...args: unknown[]) => boolean)(
            event,
            origin,
            [this, ...targets],
            err,
          );
        });
      }
    });
  }

  /** True once `close()` was called (the pass-through agent's state). */
  get closed(): boolean {
    return (this.#passthrough as { closed?: boolean }).closed === true;
  }

  /** True once `destroy()` was called or `close()` finished (the pass-through agent's state). */
  get destroyed(): boolean {
    return (this.#passthrough as { destroyed?: boolean }).destroyed === true;
  }

  /**
   * Dispatches a request: through the mesh when its origin is a mesh name,
   * else to the agent as it is. Returns what the agent returns for another
   * host, and true for a mesh call (its attempts queue in the agent).
   */
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const route = this.#table.get(opts?.origin);
    if (route === null) return this.#passthrough.dispatch(opts, handler);
    if (handler === null || typeof handler !== "object") {
      throw new errors.InvalidArgumentError("handler must be an object");
    }
    const legacy = !handler.onRequestStart;
    // The rest of undici's checks of a legacy handler run in the call (they
    // read the options, which it copies first); a handler that cannot hear
    // about an error fails here, as the agent would fail it.
    if (legacy && typeof handler.onError !== "function") {
      throw new errors.InvalidArgumentError("invalid onError method");
    }
    new MeshCall(this.#site, route, opts, handler, legacy).start();
    return true;
  }

  /** Closes the agents once requests in flight end. */
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const done = this.#both((d) => d.close());
    if (callback === undefined) return done;
    void done.then(callback, callback);
  }

  /** Destroys the agents: requests in flight fail with `err`. */
  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(errOrCallback?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
    const cb = typeof errOrCallback === "function" ? errOrCallback : callback;
    const err = typeof errOrCallback === "function" ? null : (errOrCallback ?? null);
    const done = this.#both((d) => d.destroy(err));
    if (cb === undefined) return done;
    void done.then(cb, cb);
  }

  async #both(op: (d: Dispatcher) => Promise<void>): Promise<void> {
    const pending = [op(this.#agent)];
    if (this.#passthrough !== this.#agent) pending.push(op(this.#passthrough));
    await Promise.all(pending);
  }
}

/**
 * The HTTP transport as an undici interceptor, for applications that build
 * their own dispatcher chain with `compose()`. A request to a mesh name
 * becomes a {@link MeshCall} (see `call.ts`); any other host passes through
 * to the next dispatcher untouched.
 *
 * Like undici's own `interceptors.dns()`, it rewrites the origin; unlike it,
 * the origin comes from the router, so every endpoint gets its own
 * keep-alive pool in the agent underneath.
 *
 * `mesh.dispatcher` is not built with it: see {@link MeshDispatcher} for why.
 *
 * @module
 */

import type { Dispatcher } from "undici";
import { type CallSite, MeshCall } from "./call.js";
import { type HttpRoutes, RouteTable } from "./routes.js";

export { HEDGE_HEADER, RETRYABLE_HEADER } from "./call.js";
export type { HttpRoutes } from "./routes.js";

/** Options of {@link meshInterceptor}. */
export interface MeshInterceptorOptions {
  /** Treat a short `svc.ns` host as a mesh name even when no backend claims it (`mesh.fetch`). */
  explicit?: boolean;
}

/**
 * Creates the interceptor, for `agent.compose(meshInterceptor(routes))`:
 * the mesh inside a dispatcher chain of your own. `mesh.dispatcher` is a
 * {@link MeshDispatcher} instead, which costs less per request.
 *
 * Inside `compose()` every handler speaks undici's new handler API, and so
 * do the attempts that go on down the chain, with every field of the
 * caller's options (any interceptor further down may read any of them).
 *
 * @example
 * ```ts
 * const dispatcher = new Agent().compose(interceptors.dns(), meshInterceptor(routes));
 * ```
 */
export function meshInterceptor(
  routes: HttpRoutes,
  options: MeshInterceptorOptions = {},
): Dispatcher.DispatcherComposeInterceptor {
  const table = new RouteTable(routes, options.explicit ?? false);
  return (dispatch) => {
    // The next dispatcher of a chain may read any field: every one is copied.
    const site: CallSite = { routes, dispatch, knownFieldsOnly: false };
    return function meshDispatch(
      opts: Dispatcher.DispatchOptions,
      handler: Dispatcher.DispatchHandler,
    ): boolean {
      const route = table.get(opts.origin);
      if (route === null) return dispatch(opts, handler);
      new MeshCall(site, route, opts, handler, !handler.onRequestStart).start();
      return true;
    };
  };
}

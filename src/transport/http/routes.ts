/**
 * Which request origins are mesh names, for the HTTP transport: the table
 * that {@link MeshDispatcher} and {@link meshInterceptor} both look an origin
 * up in before anything else happens to a request.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import { hostPort } from "../../discovery/endpoint.js";
import { type ServiceName, tryParseServiceName } from "../../discovery/names.js";
import type { ServiceRoute } from "../../resilience/admission.js";
import type { CallPolicy, ServiceCallState } from "../../resilience/policy.js";
import { sharedTimerWheel, type TimerWheel } from "../../resilience/timer.js";
import type { Balancer } from "../../routing/router.js";
import type { TlsPolicy } from "../../tls/tls.js";
import type { Connector } from "../connector.js";

/** What the HTTP transport needs from the mesh. The façade implements it. */
export interface HttpRoutes {
  /**
   * The balancer for a service, or `undefined` when the name is not a mesh
   * name here. `explicit` is true for `mesh.fetch`, where a short `svc.ns`
   * host is always a mesh name; through the global dispatcher it is one only
   * when a backend claims it.
   */
  balancerFor(name: ServiceName, explicit: boolean): Balancer | undefined;
  /** The call policy. */
  readonly policy: CallPolicy;
  /** True once the mesh is closed. */
  readonly closed: boolean;
  /** The timer wheel for deadlines, back-off and hedging; default the process-wide one. */
  readonly timers?: TimerWheel | undefined;
  /** The connector that opens the attempts' connections: it knows each origin's endpoint and connection age. */
  readonly connections?: Connector | undefined;
  /** Mesh TLS: which endpoints are called over TLS, whatever the URL's scheme. Default: `https:` URLs only. */
  readonly tls?: TlsPolicy | undefined;
  /** false: meshlink's control headers are stripped and ignored (`policy.headerControls`). */
  readonly headerControls?: boolean | undefined;
}

/** One origin that is a mesh name, resolved once and reused by every call to it. */
export class Route implements ServiceRoute {
  /** The service. */
  readonly name: ServiceName;
  /** Its balancer. */
  readonly balancer: Balancer;
  /** Its call state (budgets, calls in flight). */
  readonly state: ServiceCallState;
  /** The wheel for deadlines, back-off and hedge delays. */
  readonly timers: TimerWheel;
  /** The Host header: the original URL's host (and port). */
  readonly host: string;
  /** `http:` or `https:`. */
  readonly protocol: string;
  /** `["host", host]`, shared by the calls: one that adds a header copies it first. */
  readonly hostHeader: string[];
  /** The TLS server name undici would derive from the Host header: the host without its port. */
  readonly servername: string;
  /**
   * Each endpoint's origin string, made once: a fresh string per attempt
   * would cost its formatting and a new hash in the agent's pool lookup.
   * Keyed by the endpoint object, so that an endpoint that discovery drops is
   * dropped here too.
   */
  readonly #origins = new WeakMap<Endpoint, string>();
  readonly #connector: Connector | undefined;
  readonly #tls: TlsPolicy | undefined;

  constructor(name: ServiceName, balancer: Balancer, routes: HttpRoutes, url: URL) {
    this.#connector = routes.connections;
    this.#tls = routes.tls;
    this.name = name;
    this.balancer = balancer;
    this.state = routes.policy.service(name.key, name.id);
    this.timers = routes.timers ?? sharedTimerWheel();
    this.host = url.host;
    this.protocol = url.protocol;
    this.hostHeader = ["host", url.host];
    this.servername = url.hostname;
  }

  /**
   * The origin (`http://10.0.1.7:8080`) to send an attempt to an endpoint
   * to: `https:` when the TLS policy wants TLS to it (in strict mode, an
   * `http://` URL is carried over mutual TLS).
   */
  originOf(endpoint: Endpoint): string {
    let origin = this.#origins.get(endpoint);
    if (origin === undefined) {
      const secure = this.#tls?.wantsTls(endpoint, this.protocol) ?? this.protocol === "https:";
      origin = `${secure ? "https:" : "http:"}//${hostPort(endpoint.address, endpoint.port)}`;
      this.#origins.set(endpoint, origin);
      if (secure) this.#connector?.register({ endpoint, service: this.name, servername: this.servername });
    }
    return origin;
  }
}

const MAX_CACHED_ORIGINS = 1024;

/** Looks request origins up as mesh names, with a bounded cache of the answers. */
export class RouteTable {
  readonly #routes: HttpRoutes;
  readonly #explicit: boolean;
  readonly #cache = new Map<string, Route | null>();
  /** The last origin looked up and its answer: most processes call one or two services in a row. */
  #lastOrigin = "";
  #lastRoute: Route | null = null;

  /** `explicit`: a short `svc.ns` host is a mesh name even when no backend claims it (`mesh.fetch`). */
  constructor(routes: HttpRoutes, explicit: boolean) {
    this.#routes = routes;
    this.#explicit = explicit;
  }

  /** The route of a request's origin, or null when the origin is not a mesh name. */
  get(o: string | URL | undefined): Route | null {
    const origin = typeof o === "string" ? o : o === undefined ? "" : o.origin;
    if (origin === this.#lastOrigin && origin !== "") {
      const last = this.#lastRoute;
      if (last === null || !last.balancer.watch.closed) return last;
    }
    let route = this.#cache.get(origin);
    // A route of a forgotten service: look the name up again.
    if (route?.balancer.watch.closed) route = undefined;
    if (route === undefined) {
      route = this.#lookup(origin);
      // A short name that no backend claims yet may be claimed later: do not cache the miss.
      if (route !== null || this.#explicit || !isShortName(origin)) {
        if (this.#cache.size >= MAX_CACHED_ORIGINS) this.#cache.clear();
        this.#cache.set(origin, route);
        this.#lastOrigin = origin;
        this.#lastRoute = route;
      }
    } else {
      this.#lastOrigin = origin;
      this.#lastRoute = route;
    }
    return route;
  }

  #lookup(origin: string): Route | null {
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      return null;
    }
    const name = tryParseServiceName(
      url.hostname,
      url.port === "" ? defaultPort(url.protocol) : Number(url.port),
    );
    if (name === undefined) return null;
    const balancer = this.#routes.balancerFor(name, this.#explicit);
    if (balancer === undefined) return null;
    return new Route(name, balancer, this.#routes, url);
  }
}

function isShortName(origin: string): boolean {
  const host = origin.replace(/^[a-z]+:\/\//, "").replace(/:\d+$/, "");
  return host.split(".").length === 2;
}

function defaultPort(protocol: string): number {
  return protocol === "https:" ? 443 : 80;
}

/**
 * The gRPC transport: `mesh.grpc`. A mesh's gRPC clients use grpc-js as
 * they are — a `meshlink://` target, the mesh's channel credentials and
 * interceptors — over the same registry, router, health and call policy as
 * HTTP: one endpoint's health is one fact, whichever protocol saw it.
 *
 * - `resolver.ts`: the `meshlink` resolver, fed by the registry.
 * - `balancer.ts`, `picker.ts`: the `meshlink` load balancer over the
 *   mesh's router, with grpc-js subchannels.
 * - `interceptor.ts`, `call.ts`: each call through the call engine
 *   (retries, hedging, deadline, budget), with its span.
 * - `credentials.ts`: mesh TLS per connection.
 *
 * Nothing here imports grpc-js: {@link MeshGrpc.register} takes the
 * application's module.
 *
 * @module
 */

import { parseServiceName, type ServiceName } from "../../discovery/names.js";
import { ConfigError } from "../../errors.js";
import type { CallPolicy } from "../../resilience/policy.js";
import { sharedTimerWheel, type TimerWheel } from "../../resilience/timer.js";
import type { Balancer } from "../../routing/router.js";
import type { EgressGuard } from "../egress.js";
import type { GrpcMeshHost } from "./binding.js";
import { type GrpcTlsPolicy, type GrpcTlsSource, meshCredentials, tlsPolicyOf } from "./credentials.js";
import { type InterceptorHost, meshInterceptor } from "./interceptor.js";
import { type GrpcKit, type GrpcModule, installOn } from "./kit.js";
import { addMesh, formatTarget, nextMeshId, removeMesh } from "./target.js";

export type {
  GrpcTlsConnectOptions,
  GrpcTlsMaterial,
  GrpcTlsPolicy,
  GrpcTlsSource,
  GrpcTlsTarget,
  SecureContextProvider,
} from "./credentials.js";
export type { GrpcModule } from "./kit.js";
export { ERROR_METADATA as GRPC_ERROR_METADATA } from "./status.js";

/**
 * A grpc-js client interceptor (grpc-js's `Interceptor`), for a client's
 * `interceptors` option. Typed loosely: meshlink's declarations never name
 * grpc-js, an optional peer dependency that may not be installed.
 */
// biome-ignore lint/suspicious/noExplicitAny: grpc-js's Interceptor, which meshlink's declarations cannot name.
export type GrpcInterceptor = (options: any, nextCall: any) => any;

/**
 * grpc-js `ChannelCredentials`, for a client's constructor. Typed loosely:
 * meshlink's declarations never name grpc-js, an optional peer dependency
 * that may not be installed.
 */
// biome-ignore lint/suspicious/noExplicitAny: grpc-js's ChannelCredentials, which meshlink's declarations cannot name.
export type GrpcChannelCredentials = any;

/**
 * Methods to treat as idempotent: method paths (`/pkg.Service/Method`), or
 * a definition from `@grpc/proto-loader` — a package definition, a service
 * definition, or a client constructor (its `service`) — whose methods
 * declare `option idempotency_level = IDEMPOTENT` (or `NO_SIDE_EFFECTS`).
 */
export type IdempotentMethods = string | object;

/** The gRPC side of a mesh (`mesh.grpc`), for @grpc/grpc-js clients. */
export interface MeshGrpc {
  /** The mesh's id, as its targets carry it. */
  readonly id: string;
  /**
   * The target of a mesh service, `meshlink://<mesh-id>/<service>:<port>`:
   * give it to a grpc-js client with {@link MeshGrpc.credentials} and
   * {@link MeshGrpc.interceptors}. (`meshlink:///<service>:<port>` names the
   * one mesh of a process that has only one.)
   *
   * @throws {@link ServiceNameError} for a malformed name or port.
   */
  target(name: string, port: number | string): string;
  /**
   * Installs the `meshlink` resolver and load balancer on the application's
   * `@grpc/grpc-js` (idempotent; nothing happens on import). Without an
   * argument, imports `@grpc/grpc-js` itself and resolves once done.
   *
   * @throws {@link ConfigError} when the module is not a usable @grpc/grpc-js (1.14 or later).
   * @example
   * ```ts
   * import * as grpc from "@grpc/grpc-js";
   * mesh.grpc.register(grpc);
   * const client = new Greeter(mesh.grpc.target("greeter.default", 50051), mesh.grpc.credentials(), {
   *   interceptors: mesh.grpc.interceptors,
   * });
   * ```
   */
  register(grpc: GrpcModule): void;
  /** Imports `@grpc/grpc-js` and installs meshlink on it. */
  register(): Promise<void>;
  /**
   * Channel credentials for mesh targets: mutual TLS per connection as the
   * mesh's TLS mode says (each endpoint's cluster bundle and expected
   * identity), plaintext in `disable` mode; the egress guard checks every
   * connection. `tls` overrides the mesh's TLS: a TLS policy, a
   * `{ secureContext(cluster) }` provider, or `{ ca, cert, key }` PEM.
   *
   * @throws {@link ConfigError} before {@link MeshGrpc.register}, or for an unusable `tls`.
   */
  credentials(tls?: GrpcTlsSource): GrpcChannelCredentials;
  /**
   * The interceptors that take a call through the mesh: client span and
   * propagation, deadline, retries, hedging and health through the call
   * engine. Give them to the client (`{ interceptors }`).
   *
   * @throws {@link ConfigError} before {@link MeshGrpc.register}.
   */
  readonly interceptors: GrpcInterceptor[];
  /**
   * Marks methods idempotent: their calls may be retried (and hedged) even
   * after a response message arrived. Per call, metadata
   * `x-meshlink-retryable: true` does the same, and `false` forbids any
   * resend once the call may have reached a server.
   */
  idempotent(...methods: IdempotentMethods[]): void;
}

/** What the façade gives the gRPC transport. */
export interface GrpcTransportOptions {
  /** The call policy. */
  readonly policy: CallPolicy;
  /** The balancer of a service. */
  balancerFor(name: ServiceName): Balancer;
  /** True once the mesh is closed. */
  readonly closed: () => boolean;
  /** The timer wheel; default the process-wide one. */
  readonly timers?: TimerWheel | undefined;
  /** The mesh's TLS; default none (insecure credentials). */
  readonly tls?: GrpcTlsSource | undefined;
  /** The egress guard; default none. */
  readonly egress?: EgressGuard | undefined;
  /** Read the `x-meshlink-retryable` and `x-meshlink-hedge` metadata of calls (`policy.headerControls`); default true. */
  readonly metadataControls?: boolean | undefined;
}

const IDEMPOTENT_LEVELS = new Set(["IDEMPOTENT", "NO_SIDE_EFFECTS"]);

/** `mesh.grpc`: the gRPC transport of one mesh. */
export class GrpcTransport implements MeshGrpc, GrpcMeshHost, InterceptorHost {
  readonly id: string;
  readonly policy: CallPolicy;
  readonly timers: TimerWheel;
  readonly egress: EgressGuard | undefined;
  readonly metadataControls: boolean;
  readonly #options: GrpcTransportOptions;
  readonly #idempotent = new Set<string>();
  readonly #tls: GrpcTlsPolicy | undefined;
  #kit: GrpcKit | undefined;
  readonly #interceptors: GrpcInterceptor[] = [meshInterceptor(this)];
  /**
   * Credentials made for the registered module (a credentials object of
   * another copy of grpc-js fails its `instanceof` checks), by TLS source;
   * the mesh's own under the transport itself. A new module, a new map.
   */
  #credentials = new WeakMap<object, GrpcChannelCredentials>();

  /** @internal */
  constructor(options: GrpcTransportOptions) {
    this.#options = options;
    this.id = nextMeshId();
    this.policy = options.policy;
    this.timers = options.timers ?? sharedTimerWheel();
    this.egress = options.egress;
    this.metadataControls = options.metadataControls !== false;
    this.#tls = options.tls === undefined ? undefined : tlsPolicyOf(options.tls);
    addMesh(this);
  }

  get closed(): boolean {
    return this.#options.closed();
  }

  get kit(): GrpcKit {
    return this.#need("mesh.grpc");
  }

  balancerFor(name: ServiceName): Balancer {
    return this.#options.balancerFor(name);
  }

  isIdempotent(path: string): boolean {
    return this.#idempotent.size > 0 && this.#idempotent.has(path);
  }

  target(name: string, port: number | string): string {
    const service = parseServiceName(name, port);
    const p = service.port ?? service.portName;
    if (p === undefined)
      throw new ConfigError("mesh.grpc.target(port)", port, "a port number or name is required");
    return formatTarget(this.id, service.host, p);
  }

  register(grpc: GrpcModule): void;
  register(): Promise<void>;
  register(grpc?: GrpcModule): void | Promise<void> {
    if (grpc !== undefined) {
      this.#install(grpc);
      return;
    }
    return import("@grpc/grpc-js").then(
      (m) => this.#install(m),
      (err: unknown) => {
        throw new ConfigError(
          "mesh.grpc.register()",
          "@grpc/grpc-js",
          "cannot import it: install @grpc/grpc-js, or pass your module to register(grpc)",
          { cause: err },
        );
      },
    );
  }

  credentials(tls?: GrpcTlsSource): GrpcChannelCredentials {
    const kit = this.#need("mesh.grpc.credentials()");
    const key = tls ?? this;
    let c = this.#credentials.get(key);
    if (c === undefined) {
      c = meshCredentials(kit, tls === undefined ? this.#tls : tlsPolicyOf(tls), this.egress);
      this.#credentials.set(key, c);
    }
    return c;
  }

  get interceptors(): GrpcInterceptor[] {
    this.#need("mesh.grpc.interceptors");
    return this.#interceptors;
  }

  idempotent(...methods: IdempotentMethods[]): void {
    for (const m of methods) {
      if (typeof m === "string") this.#idempotent.add(m.startsWith("/") ? m : `/${m}`);
      else this.#scan(m, 0);
    }
  }

  /** @internal The mesh closed: its targets no longer resolve. */
  close(): void {
    removeMesh(this);
  }

  #install(grpc: GrpcModule): void {
    const kit = installOn(grpc);
    if (kit === this.#kit) return;
    this.#kit = kit;
    this.#credentials = new WeakMap();
  }

  #need(what: string): GrpcKit {
    const kit = this.#kit;
    if (kit === undefined) {
      throw new ConfigError(
        what,
        "unregistered",
        "call mesh.grpc.register(grpc) with your @grpc/grpc-js first",
      );
    }
    return kit;
  }

  /** Finds method definitions (proto-loader's, with their options) in a definition and marks the idempotent ones. */
  #scan(value: unknown, depth: number): void {
    if (value === null || (typeof value !== "object" && typeof value !== "function") || depth > 3) return;
    const def = value as {
      path?: unknown;
      requestStream?: unknown;
      options?: { idempotency_level?: unknown };
      service?: unknown;
    };
    if (typeof def.path === "string" && typeof def.requestStream === "boolean") {
      if (IDEMPOTENT_LEVELS.has(String(def.options?.idempotency_level))) this.#idempotent.add(def.path);
      return;
    }
    // A client constructor carries its service definition.
    if (typeof value === "function") {
      this.#scan(def.service, depth + 1);
      return;
    }
    for (const v of Object.values(value)) this.#scan(v, depth + 1);
  }
}

/** The gRPC transport of a mesh. */
export function createGrpcTransport(options: GrpcTransportOptions): GrpcTransport {
  return new GrpcTransport(options);
}

/**
 * The façade: `createMesh` wires configuration, discovery, registry, router,
 * health, call policy and the HTTP transport together. It is the only module
 * that imports across every concern.
 *
 * @module
 */

import type { Agent as HttpAgent } from "node:http";
import type { Agent as HttpsAgent } from "node:https";
import {
  Agent,
  type Dispatcher,
  getGlobalDispatcher as undiciGetGlobalDispatcher,
  setGlobalDispatcher as undiciSetGlobalDispatcher,
} from "undici";
import { type MeshOptions, type ResolvedConfig, resolveConfig } from "./config/config.js";
import { registerBuiltinDiscoveryKinds } from "./discovery/builtins.js";
import type { ClusterStatus, DiscoveryBackend } from "./discovery/discovery.js";
import type { Endpoint } from "./discovery/endpoint.js";
import { discoveryKind, discoveryKinds } from "./discovery/kinds.js";
import { parseServiceName, type ServiceName } from "./discovery/names.js";
import { Registry, type ServiceState } from "./discovery/registry.js";
import { ConfigError, MeshClosedError, ServiceNotFoundError } from "./errors.js";
import { CallPolicy } from "./resilience/policy.js";
import { HealthTracker, type HealthView } from "./routing/health.js";
import { Balancer, type BalancerOptions, TierMap } from "./routing/router.js";
import { createTlsPolicy } from "./tls/policy.js";
import type { TlsDescription } from "./tls/tls.js";
import { Connector } from "./transport/connector.js";
import { createEgressGuard } from "./transport/egress.js";
import { createGrpcTransport, type MeshGrpc } from "./transport/grpc/grpc.js";
import type { HeaderControlsSwitch } from "./transport/http/call.js";
import { MeshDispatcher } from "./transport/http/dispatcher.js";
import { type MeshFetchInit, withCallOptions } from "./transport/http/headers.js";
import { createNodeAgents, type NodeAgents } from "./transport/http/node-agent.js";
import type { HttpRoutes } from "./transport/http/routes.js";

/** One endpoint as `mesh.resolve` returns it: in the router's order, with health. */
export interface ResolvedEndpoint {
  /** The endpoint. */
  readonly endpoint: Endpoint;
  /** The endpoint's tier for this caller: `zone`, `region`, `failover:<region>`, `other`, `backup`. */
  readonly tier: string;
  /** True when the router may send a call to it now. */
  readonly available: boolean;
  /** Why not, when not available: `ejected`, `probing`, `not-ready`, `terminating`. */
  readonly unavailableReason: string | undefined;
  /** Its health. */
  readonly health: HealthView;
}

/** One backend's view of a service, in `describe()`. */
export interface SourceDescription {
  /** The backend. */
  readonly backend: string;
  /** Its last outcome. */
  readonly state: ServiceState;
  /** How many endpoints it contributes. */
  readonly endpoints: number;
  /** True when its endpoints are last-known-good from before a failure. */
  readonly stale: boolean;
  /** When it last answered (ISO time). */
  readonly updatedAt: string | undefined;
  /** Milliseconds since it last answered. */
  readonly ageMs: number | undefined;
  /** Its last error, while failing. */
  readonly error: string | undefined;
  /** Per-cluster freshness, for backends that ask several clusters. */
  readonly clusters: readonly ClusterStatus[] | undefined;
}

/** One service in `describe()`. */
export interface ServiceDescription {
  /** The canonical name, with the port when one was asked. */
  readonly service: string;
  /** The merged state. */
  readonly state: ServiceState;
  /** Where the endpoints came from. */
  readonly sources: readonly SourceDescription[];
  /** Every endpoint, in the router's order. */
  readonly endpoints: readonly EndpointDescription[];
}

/** One endpoint in `describe()`. */
export interface EndpointDescription {
  /** `cluster/address:port`. */
  readonly id: string;
  /** Its cluster. */
  readonly cluster: string;
  /** Its region. */
  readonly region: string;
  /** Its zone. */
  readonly zone: string;
  /** Its tier for this caller. */
  readonly tier: string;
  /** Its weight. */
  readonly weight: number;
  /** True for a backup endpoint. */
  readonly backup: boolean;
  /** Ready for traffic, as discovery says. */
  readonly ready: boolean;
  /** True when the router may send a call to it now. */
  readonly available: boolean;
  /** Its health. */
  readonly health: HealthView;
}

/** The JSON snapshot `mesh.describe()` returns. */
export interface MeshDescription {
  /** The caller's locality and failover order. */
  readonly locality: {
    /** The caller's region. */
    readonly region: string;
    /** The caller's zone. */
    readonly zone: string;
    /** Failover regions, in order. */
    readonly failover: readonly string[];
  };
  /** The discovery backends, by name. */
  readonly backends: readonly string[];
  /** Every service the mesh has resolved so far. */
  readonly services: readonly ServiceDescription[];
  /** Mutual TLS: the mode, each certificate with its not-after, the last refused rotation. */
  readonly tls: TlsDescription;
  /** The egress rules in force, in the order they apply. */
  readonly egress: readonly string[];
}

/** An in-process service mesh. Created by {@link createMesh}. */
export interface Mesh {
  /**
   * An undici dispatcher that routes mesh names and passes every other host
   * through. `setGlobalDispatcher(mesh.dispatcher)` makes existing `fetch()`
   * calls go through the mesh. Short `svc.ns` hosts are routed only when a
   * backend claims them (they could be public domains).
   */
  readonly dispatcher: Dispatcher;
  /**
   * A drop-in WHATWG `fetch` (the global `Request`/`Response`), through the
   * mesh. `init.meshlink` takes per-call controls ({@link MeshCallOptions}):
   * `retryable`, `hedge`, `deadline`.
   */
  fetch(input: string | URL | Request, init?: MeshFetchInit): Promise<Response>;
  /**
   * A `node:http` Agent for axios, got, node-fetch and other node:http
   * clients (`http:` URLs): a mesh name goes to an endpoint the router
   * picks, with connect-time failover to another endpoint and cluster and
   * health reporting; any other host goes through as with Node's own Agent.
   * It does not resend a request whose bytes were sent, nor hedge: for
   * that, use {@link Mesh.fetch} or undici with {@link Mesh.dispatcher}.
   * See docs/clients.md.
   *
   * @example
   * ```ts
   * await axios.get(url, { httpAgent: mesh.httpAgent, httpsAgent: mesh.httpsAgent, proxy: false });
   * await got(url, { agent: { http: mesh.httpAgent, https: mesh.httpsAgent } });
   * ```
   */
  readonly httpAgent: HttpAgent;
  /** {@link Mesh.httpAgent} for `https:` URLs (Node wants an agent of the request's protocol). */
  readonly httpsAgent: HttpsAgent;
  /**
   * Every known endpoint of a service, ejected ones too, with health, in the
   * router's order. Waits for discovery to answer.
   *
   * @throws {@link ServiceNameError} for a malformed name, {@link ServiceNotFoundError}
   * when no backend knows it, {@link DiscoveryError} when every backend failed.
   */
  resolve(name: string, port?: number | string): Promise<ResolvedEndpoint[]>;
  /** A JSON snapshot: services, endpoints, health, discovery staleness. */
  describe(): MeshDescription;
  /** The configuration in force. */
  readonly config: ResolvedConfig;
  /** gRPC: targets, `register(grpc)`, credentials and interceptors for @grpc/grpc-js clients. */
  readonly grpc: MeshGrpc;
  /** Stops every watch and closes every connection pool once calls in flight end. Idempotent. */
  close(): Promise<void>;
}

function buildBackends(config: ResolvedConfig): DiscoveryBackend[] {
  if (config.backends.length > 0) return [...config.backends];
  registerBuiltinDiscoveryKinds();
  return config.backendSpecs.map((spec) => {
    const factory = discoveryKind(spec.kind);
    if (factory === undefined) {
      throw new ConfigError(
        spec.source.replace(/\.[^.]*$/, ""),
        spec.kind,
        `unknown discovery backend kind; known: ${discoveryKinds().join(", ")}`,
      );
    }
    return factory(spec.options, spec.source);
  });
}

/**
 * Creates a mesh. Every option is optional: the environment
 * (`MESHLINK_REGION`, `MESHLINK_ZONE`, `MESHLINK_FAILOVER`, `MESHLINK_CONFIG`),
 * the config file and defaults fill in.
 *
 * @throws {@link ConfigError} for a bad option, variable or file field, naming it and the value.
 * @example
 * ```ts
 * import { setGlobalDispatcher } from "undici";
 * const mesh = createMesh({ region: "us-east-1", failover: ["us-west-2"], discovery: [staticDiscovery({ services })] });
 * const res = await mesh.fetch("http://my-service.default.svc.cluster.local:8080/api/data");
 * setGlobalDispatcher(mesh.dispatcher); // plain fetch() to mesh names now routes too
 * ```
 */
export function createMesh(options: MeshOptions = {}): Mesh {
  const config = resolveConfig(options);
  for (const w of config.warnings) process.emitWarning(w.message, { type: "MeshlinkWarning", code: w.code });
  const backends = buildBackends(config);
  const routing = config.routing;
  const health = new HealthTracker({ ...config.outlierDetection, latencyDecay: routing.latencyDecay });
  const tiers = new TierMap({
    ...routing,
    region: config.region,
    zone: config.zone,
    failover: config.failover,
  });
  const policy = new CallPolicy(config.policy);
  const balancerOptions: BalancerOptions = {
    policy: routing.lbPolicy,
    overprovisioningFactor: routing.overprovisioningFactor,
    panicThreshold: routing.panicThreshold,
    slowStart: routing.slowStart,
    maxRequestsPerEndpoint: config.policy.bulkhead?.maxRequestsPerEndpoint,
  };
  const balancers = new Map<string, Balancer>();
  const registry = new Registry(backends, {
    settleTimeout: config.settleTimeout,
    idleTimeout: config.serviceIdleTimeout,
    // A service with calls in flight is in use, however long ago they started.
    busy: (w) => (policy.peek(w.service.id)?.active ?? 0) > 0,
  });
  // Forgetting a service drops everything held for it: its balancer and its call state.
  registry.onForget((w) => {
    balancers.get(w.service.id)?.close();
    balancers.delete(w.service.id);
    policy.forget(w.service.id);
  });

  const balancer = (name: ServiceName): Balancer => {
    let b = balancers.get(name.id);
    if (b === undefined || b.closed) {
      b = new Balancer(registry.watch(name), tiers, health, balancerOptions);
      balancers.set(name.id, b);
    }
    return b;
  };

  // One connector opens every connection to an endpoint.
  const a = config.agent;
  const tls = createTlsPolicy(config.tls);
  const egress = createEgressGuard(config.egress.options, config.egress.source);
  const connector = new Connector({
    timeout: a.connectTimeout,
    maxCachedSessions: a.maxCachedSessions,
    egress,
    tls,
  });
  const routes: HttpRoutes & HeaderControlsSwitch = {
    policy,
    connections: connector,
    tls,
    headerControls: config.policy.headerControls !== false,
    get closed() {
      return registry.closed;
    },
    balancerFor: (name, explicit) => (explicit || registry.claims(name) ? balancer(name) : undefined),
  };

  // Two dispatchers over one agent for the endpoints (one pool per
  // endpoint) and one for every other host, which closing the mesh leaves
  // open: an application whose global dispatcher this is keeps working
  // (its exporter flushing spans on shutdown, say). Not compose() chains,
  // whose handler wrapping costs more than the mesh itself (see MeshDispatcher).
  const pools = {
    connections: a.connections ?? undefined,
    keepAliveTimeout: a.keepAliveTimeout,
    keepAliveMaxTimeout: a.keepAliveMaxTimeout,
    pipelining: a.pipelining,
  };
  const agent = new Agent({ ...pools, connect: connector.connect });
  const passthrough = new Agent({
    ...pools,
    connect: { timeout: a.connectTimeout, maxCachedSessions: a.maxCachedSessions },
  });
  const dispatcher = new MeshDispatcher(routes, { agent, passthrough });
  const explicitDispatcher = new MeshDispatcher(routes, { agent, passthrough, explicit: true });
  const fetchInit = { dispatcher: explicitDispatcher } as unknown as RequestInit;
  // node:http agents for axios, got and the like; made on first use.
  let nodeAgents: NodeAgents | undefined;
  const agents = (): NodeAgents =>
    (nodeAgents ??= createNodeAgents(routes, {
      connector,
      keepAliveTimeout: a.keepAliveTimeout,
      connectTimeout: a.connectTimeout,
    }));

  const describeService = (b: Balancer): ServiceDescription => {
    const snapshot = b.watch.snapshot;
    const now = Date.now();
    return {
      service: snapshot.service.id,
      state: snapshot.state,
      sources: snapshot.sources.map((s) => ({
        backend: s.backend,
        state: s.state,
        endpoints: s.endpoints.length,
        stale: s.stale,
        updatedAt: s.updatedAt === undefined ? undefined : new Date(s.updatedAt).toISOString(),
        ageMs: s.updatedAt === undefined ? undefined : now - s.updatedAt,
        error: s.error?.message,
        clusters: s.clusters,
      })),
      endpoints: b.order().map((r) => ({
        id: r.endpoint.id,
        cluster: r.endpoint.cluster,
        region: r.endpoint.locality.region,
        zone: r.endpoint.locality.zone,
        tier: r.tier.label,
        weight: r.endpoint.weight,
        backup: r.endpoint.backup,
        ready: r.endpoint.ready,
        available: r.available,
        health: r.health,
      })),
    };
  };

  // gRPC (transport/grpc/): the same balancers, health, policy, TLS and egress behind meshlink:// targets.
  const grpc = createGrpcTransport({
    policy,
    balancerFor: balancer,
    closed: () => registry.closed,
    tls,
    egress,
    metadataControls: config.policy.headerControls !== false,
  });

  let closing: Promise<void> | undefined;

  return {
    dispatcher,
    config,
    grpc,
    get httpAgent() {
      return agents().http;
    },
    get httpsAgent() {
      return agents().https;
    },
    fetch(input, init) {
      let options: RequestInit = fetchInit;
      if (init !== undefined) {
        // Not `{ ...init, dispatcher }`: a spread followed by a new field
        // takes V8's slow path (docs/performance.md, F2).
        options = Object.assign({}, init);
        const controls = init.meshlink;
        (options as { dispatcher?: unknown }).dispatcher =
          controls === undefined ? explicitDispatcher : withCallOptions(explicitDispatcher, controls);
      }
      return globalThis.fetch(input, options);
    },
    async resolve(name, port) {
      if (registry.closed) throw new MeshClosedError();
      const service = parseServiceName(name, port);
      const b = balancer(service);
      b.watch.used = true;
      const snapshot = await b.watch.settled();
      if (snapshot.endpoints.length === 0) {
        const failed = snapshot.sources.find((s) => s.error !== undefined);
        if (snapshot.state === "failed" && failed?.error) throw failed.error;
        throw new ServiceNotFoundError(
          service.key,
          snapshot.sources.map((s) => s.backend),
        );
      }
      return b.order().map((r) => ({
        endpoint: r.endpoint,
        tier: r.tier.label,
        available: r.available,
        unavailableReason: r.unavailableReason,
        health: r.health,
      }));
    },
    describe() {
      return {
        locality: { region: config.region, zone: config.zone, failover: config.failover },
        backends: backends.map((b) => b.name),
        services: [...balancers.values()].map(describeService),
        tls: tls.describe(),
        egress: egress.rules,
      };
    },
    close() {
      closing ??= (async () => {
        grpc.close();
        await registry.close();
        // Once the calls in flight end, nothing of the mesh's pools is needed:
        // destroy them, connections still being made to a dead host included
        // (closing would wait for their connect timeout).
        await policy.drained();
        nodeAgents?.close();
        for (const b of balancers.values()) b.close();
        tls.close();
        await agent.destroy();
      })();
      return closing;
    },
  };
}

// --- undici's global dispatcher, from meshlink's own copy of undici (issue 14).

/**
 * Makes `dispatcher` undici's global dispatcher — the one Node's own
 * `fetch` and every undici call without a `dispatcher` option use:
 * `setGlobalDispatcher(mesh.dispatcher)`. It is undici's own function, from
 * the undici meshlink depends on, so an application needs no undici of its
 * own (one it installs must be a major that runs on its Node.js: undici 8
 * needs Node.js 22.19). meshlink never calls it by itself.
 *
 * @example
 * ```ts
 * import { createMesh, setGlobalDispatcher } from "meshlink";
 * setGlobalDispatcher(createMesh().dispatcher);
 * await fetch("http://orders.shop.svc.cluster.local:8080/"); // through the mesh
 * ```
 */
export function setGlobalDispatcher(dispatcher: Dispatcher): void {
  undiciSetGlobalDispatcher(dispatcher);
}

/** undici's global dispatcher (see {@link setGlobalDispatcher}), to restore it later. */
export function getGlobalDispatcher(): Dispatcher {
  return undiciGetGlobalDispatcher();
}

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
import { configView } from "./admin/config-view.js";
import { AdminServer } from "./admin/server.js";
import { type MeshOptions, type ResolvedConfig, resolveConfig } from "./config/config.js";
import { configInForce } from "./config/defaults.js";
import { registerBuiltinDiscoveryKinds } from "./discovery/builtins.js";
import type { DiscoveryBackend } from "./discovery/discovery.js";
import type { Endpoint } from "./discovery/endpoint.js";
import { discoveryKind, discoveryKinds } from "./discovery/kinds.js";
import { parseServiceName, type ServiceName } from "./discovery/names.js";
import { Registry } from "./discovery/registry.js";
import { ConfigError, MeshClosedError, ServiceNotFoundError } from "./errors.js";
import { CallPolicy } from "./resilience/policy.js";
import { HealthTracker, type HealthView } from "./routing/health.js";
import { Balancer, type BalancerOptions, TierMap } from "./routing/router.js";
import type { Subscription } from "./subscription.js";
import { describeService, type MeshDescription } from "./telemetry/describe.js";
import {
  type DiscoveryErrorEvent,
  type DiscoveryRecoveredEvent,
  type EndpointEjectedEvent,
  type EndpointRestoredEvent,
  type FailoverEndedEvent,
  type FailoverStartedEvent,
  MeshEvents,
} from "./telemetry/events.js";
import { addGaugeSource } from "./telemetry/metrics.js";
import { createTlsPolicy } from "./tls/policy.js";
import type { ExpiryEvent, RotationEvent } from "./tls/tls.js";
import { Connector } from "./transport/connector.js";
import { createEgressGuard } from "./transport/egress.js";
import { createGrpcTransport, type MeshGrpc } from "./transport/grpc/grpc.js";
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
  /** A JSON snapshot: services, endpoints, health, tier loads, discovery staleness. */
  describe(): MeshDescription;
  /** The configuration in force, every default written out. */
  readonly config: ResolvedConfig;
  /** gRPC: targets, `register(grpc)`, credentials and interceptors for @grpc/grpc-js clients. */
  readonly grpc: MeshGrpc;
  // Observability (issue 13): events and the admin endpoint.
  /** Outlier detection ejected an endpoint. Also on the `meshlink:endpoint:ejected` diagnostics channel. */
  onEndpointEjected(listener: (event: EndpointEjectedEvent) => void): Subscription;
  /** An ejected endpoint answered its probe. Also on `meshlink:endpoint:restored`. */
  onEndpointRestored(listener: (event: EndpointRestoredEvent) => void): Subscription;
  /** A service's traffic started leaving its best tier. Also on `meshlink:failover:started`. */
  onFailoverStarted(listener: (event: FailoverStartedEvent) => void): Subscription;
  /** A service's best tier takes all its traffic again. Also on `meshlink:failover:ended`. */
  onFailoverEnded(listener: (event: FailoverEndedEvent) => void): Subscription;
  /** A discovery backend started failing for a service. Also on `meshlink:discovery:error`. */
  onDiscoveryError(listener: (event: DiscoveryErrorEvent) => void): Subscription;
  /** A failing discovery backend answers again. Also on `meshlink:discovery:recovered`. */
  onDiscoveryRecovered(listener: (event: DiscoveryRecoveredEvent) => void): Subscription;
  /**
   * The mesh's TLS material was rotated (files replaced, checked whole):
   * new connections use the new version from now on.
   */
  onCertificateRotated(listener: (event: RotationEvent) => void): Subscription;
  /** A rotation was refused (a half-written or mismatched set): the previous material stays in use. */
  onCertificateRotationError(listener: (error: Error) => void): Subscription;
  /**
   * A certificate of the mesh's TLS material entered its warning window
   * before not-after (`tls.expiryWarning`; by default the last fifth of its
   * lifetime, at most 7 days). Once per certificate and material version; a
   * listener added later is told at once of certificates already inside it.
   */
  onCertificateExpiring(listener: (event: ExpiryEvent) => void): Subscription;
  /**
   * The admin endpoint's URL (`http://127.0.0.1:15090`) once it listens;
   * undefined when it is off. Rejects with a {@link ConfigError} when it
   * cannot listen (the error also goes to `meshlink:error`).
   */
  adminUrl(): Promise<string | undefined>;
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
  const events = new MeshEvents(health, () => balancers.values());
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
      events.follow(b);
    }
    return b;
  };

  // One connector opens every connection to an endpoint.
  const a = config.agent;
  const tls = createTlsPolicy(config.tls);
  const gauges = addGaugeSource({
    balancers: () => balancers.values(),
    certificates: () => tls.source.current().certificates,
  });
  const egress = createEgressGuard(config.egress.options, config.egress.source);
  const connector = new Connector({
    timeout: a.connectTimeout,
    maxCachedSessions: a.maxCachedSessions,
    egress,
    tls,
  });
  const routes: HttpRoutes = {
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
  const dispatcher = new MeshDispatcher(routes, { agent, passthrough, plainAgent: true });
  const explicitDispatcher = new MeshDispatcher(routes, {
    agent,
    passthrough,
    explicit: true,
    plainAgent: true,
  });
  const fetchInit = { dispatcher: explicitDispatcher } as unknown as RequestInit;
  // node:http agents for axios, got and the like; made on first use.
  let nodeAgents: NodeAgents | undefined;
  const agents = (): NodeAgents =>
    (nodeAgents ??= createNodeAgents(routes, {
      connector,
      keepAliveTimeout: a.keepAliveTimeout,
      connectTimeout: a.connectTimeout,
    }));

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
  const inForce = configInForce(config);
  const admin =
    config.admin === undefined
      ? undefined
      : new AdminServer(config.admin, {
          describe: () => mesh.describe(),
          resolve: async (name, port) => (await mesh.resolve(name, port)).map(resolvedJson),
          config: () =>
            configView(
              config,
              backends.map((b) => b.name),
            ),
        });

  const mesh: Mesh = {
    dispatcher,
    config: inForce,
    grpc,
    get httpAgent() {
      return agents().http;
    },
    get httpsAgent() {
      return agents().https;
    },
    onEndpointEjected: (listener) => events.on("meshlink:endpoint:ejected", listener),
    onEndpointRestored: (listener) => events.on("meshlink:endpoint:restored", listener),
    onFailoverStarted: (listener) => events.on("meshlink:failover:started", listener),
    onFailoverEnded: (listener) => events.on("meshlink:failover:ended", listener),
    onDiscoveryError: (listener) => events.on("meshlink:discovery:error", listener),
    onDiscoveryRecovered: (listener) => events.on("meshlink:discovery:recovered", listener),
    onCertificateRotated: (listener) => tls.onRotate(listener),
    onCertificateRotationError: (listener) => tls.onRotationError(listener),
    onCertificateExpiring: (listener) => tls.onExpiring(listener),
    adminUrl: () => (admin === undefined ? Promise.resolve(undefined) : admin.url()),
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
      const now = Date.now();
      return {
        locality: { region: config.region, zone: config.zone, failover: config.failover },
        time: new Date(now).toISOString(),
        backends: backends.map((b) => b.name),
        services: [...balancers.values()].map((b) => describeService(b, now)),
        tls: tls.describe(),
        egress: egress.rules,
      };
    },
    close() {
      closing ??= (async () => {
        grpc.close();
        gauges.dispose();
        events.close();
        await admin?.close();
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
  return mesh;
}

/** A resolved endpoint as the admin endpoint returns it (the endpoint's fields flattened). */
function resolvedJson(r: ResolvedEndpoint): Record<string, unknown> {
  return {
    ...r.endpoint,
    tier: r.tier,
    available: r.available,
    unavailableReason: r.unavailableReason,
    health: r.health,
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

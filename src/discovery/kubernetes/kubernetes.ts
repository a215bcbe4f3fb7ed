/**
 * The Kubernetes backend: EndpointSlice list + watch against each cluster's
 * API server, merged into one endpoint set across clusters, each endpoint
 * carrying its cluster's name and region and its own zone.
 *
 * Why not `@kubernetes/client-node`: its current major needs undici 8,
 * which does not load on Node 20; the two calls needed here (list and watch
 * of two resources) are a small client of our own (`client.ts`) over the
 * undici that meshlink already depends on.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { parseOptions } from "../../config/validate.js";
import { type ErrorCode, KubernetesError, type KubernetesErrorReason } from "../../errors.js";
import type { ClusterStatus, DiscoveryBackend, DiscoveryUpdate, WatchOptions } from "../discovery.js";
import type { Endpoint } from "../endpoint.js";
import { ClusterAnnouncer, WatchScopes } from "../merge.js";
import type { ServiceName } from "../names.js";
import { ApiClient } from "./client.js";
import {
  type ClusterConnection,
  type ConnectionEnvironment,
  resolveConnection,
  SERVICE_ACCOUNT_DIR,
} from "./connection.js";
import { type MappingResult, mapEndpoints, type PortRequest } from "./mapping.js";
import {
  DEFAULTS,
  type KubernetesDiscoveryOptions,
  kubernetesDiscoverySchema,
  type ParsedKubernetesOptions,
} from "./options.js";
import type { EndpointSlice, Service } from "./schemas.js";
import { ServiceSource, type SourceSettings } from "./source.js";

export type { KubernetesCluster, KubernetesDiscoveryOptions } from "./options.js";

/** A cluster's state in `describe()`: {@link ClusterStatus} plus the error's stable reason. */
export interface KubernetesClusterStatus extends ClusterStatus {
  /** Why the cluster is failing, while it is (see {@link KubernetesError}). */
  readonly reason: KubernetesErrorReason | undefined;
  /** `MESHLINK_ERR_KUBERNETES` while failing. */
  readonly code: ErrorCode | undefined;
}

/** @internal Replaceable parts, for tests. */
export interface KubernetesDependencies {
  /** Environment; default `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Home directory for `~`; default `os.homedir()`. */
  home?: string;
  /** Reads a file as UTF-8; default `readFileSync`. */
  readFile?: (path: string) => string;
  /** Where the service account is mounted; default `/var/run/secrets/kubernetes.io/serviceaccount`. */
  serviceAccountDir?: string;
  /** Clock, ms; default `Date.now`. */
  now?: () => number;
  /** Uniform in [0, 1); default `Math.random`. */
  random?: () => number;
}

/** One cluster inside a backend. */
interface ClusterRuntime {
  readonly conn: ClusterConnection;
  client: ApiClient | undefined;
  readonly sources: Map<string, ServiceSource>;
}

/** One cluster inside one watch. */
interface ClusterView {
  readonly rt: ClusterRuntime;
  readonly source: ServiceSource;
  readonly unsubscribe: () => void;
  slices: readonly EndpointSlice[] | undefined;
  services: readonly Service[] | undefined;
  result: MappingResult | undefined;
  portError: KubernetesError | undefined;
}

interface ClusterState {
  readonly pending: boolean;
  readonly endpoints: readonly Endpoint[];
  readonly error: KubernetesError | undefined;
  readonly status: KubernetesClusterStatus;
}

/** Same endpoints in the same order: unchanged endpoints keep their objects (see mapEndpoints). */
function sameEndpoints(a: readonly Endpoint[], b: readonly Endpoint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * @internal Builds the backend from parsed options; {@link kubernetesDiscovery}
 * is the public entry. Resolves every cluster now (kubeconfig, CA and
 * certificate files are read: a missing one is a configuration error).
 */
export function createKubernetesBackend(
  options: ParsedKubernetesOptions,
  deps: KubernetesDependencies = {},
  prefix = "",
): DiscoveryBackend {
  const env = deps.env ?? process.env;
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const name = options.name ?? DEFAULTS.name;
  const io: ConnectionEnvironment = {
    env,
    home: deps.home ?? homedir(),
    readFile: deps.readFile ?? ((path) => readFileSync(path, "utf8")),
    serviceAccountDir: deps.serviceAccountDir ?? SERVICE_ACCOUNT_DIR,
    now,
    execTimeout: options.execTimeout ?? DEFAULTS.execTimeout,
  };
  const clusterOptions = options.clusters ?? [
    { name: "local", region: env.MESHLINK_REGION ?? "", inCluster: true },
  ];
  const base = prefix === "" ? "clusters" : `${prefix}.clusters`;
  const runtimes: ClusterRuntime[] = clusterOptions.map((c, i) => ({
    conn: resolveConnection(c, `${base}[${i}]`, io),
    client: undefined,
    sources: new Map(),
  }));
  const clientSettings = {
    requestTimeout: options.requestTimeout ?? DEFAULTS.requestTimeout,
    idleTimeout: options.idleTimeout ?? DEFAULTS.idleTimeout,
  };
  const sourceSettings: SourceSettings = {
    timeoutSeconds: options.timeoutSeconds ?? DEFAULTS.timeoutSeconds,
    pageSize: options.pageSize ?? DEFAULTS.pageSize,
    backoff: {
      base: options.backoff?.base ?? DEFAULTS.backoffBase,
      max: options.backoff?.max ?? DEFAULTS.backoffMax,
    },
    random,
    now,
  };
  const topologyHints = options.topologyHints ?? true;
  const nodeSubzone = options.nodeSubzone ?? false;
  const scopes = new WatchScopes();
  /** `svc.ns` → the clusters where the Service has been seen (and not deleted since). */
  const seen = new Map<string, Set<string>>();

  const acquire = (rt: ClusterRuntime, namespace: string, svc: string, listener: () => void) => {
    const key = `${namespace}/${svc}`;
    let source = rt.sources.get(key);
    if (source === undefined) {
      rt.client ??= new ApiClient(rt.conn, clientSettings);
      const claimKey = `${svc}.${namespace}`;
      const created: ServiceSource = new ServiceSource(
        rt.client,
        namespace,
        svc,
        sourceSettings,
        (present) => {
          let clusters = seen.get(claimKey);
          if (present) {
            if (clusters === undefined) seen.set(claimKey, (clusters = new Set()));
            clusters.add(rt.conn.name);
          } else if (clusters !== undefined) {
            clusters.delete(rt.conn.name);
            if (clusters.size === 0) seen.delete(claimKey);
          }
        },
        () => {
          if (rt.sources.get(key) === created) rt.sources.delete(key);
        },
      );
      source = created;
      rt.sources.set(key, source);
    }
    return { source, unsubscribe: source.subscribe(listener) };
  };

  const stateOf = (view: ClusterView, request: PortRequest): ClusterState => {
    const { source, rt } = view;
    const slices = source.slices.items;
    const services = source.service.items;
    if (view.result === undefined || view.slices !== slices || view.services !== services) {
      view.result = mapEndpoints(
        {
          cluster: rt.conn.name,
          region: rt.conn.region,
          zone: rt.conn.zone,
          backend: name,
          topologyHints,
          nodeSubzone,
        },
        slices,
        source.knowledge,
        request,
        view.result?.endpoints,
      );
      view.slices = slices;
      view.services = services;
      view.portError =
        view.result.problem === undefined
          ? undefined
          : new KubernetesError(rt.conn.name, "port", view.result.problem);
    }
    const s = source.slices;
    const v = source.service;
    const error = s.error ?? v.error ?? view.portError;
    const pending = (!s.synced && s.error === undefined) || (!v.synced && v.error === undefined);
    const updatedAt =
      s.updatedAt === undefined || v.updatedAt === undefined ? undefined : Math.min(s.updatedAt, v.updatedAt);
    return {
      pending,
      endpoints: view.result.endpoints,
      error,
      status: Object.freeze({
        cluster: rt.conn.name,
        fresh: error === undefined && s.synced && v.synced,
        updatedAt,
        error: error === undefined ? undefined : `${error.message} (${rt.conn.where})`,
        reason: error?.reason,
        code: error?.code,
      }),
    };
  };

  return {
    name,
    claims(service: ServiceName): boolean {
      if (service.namespace === undefined) return false;
      return seen.has(`${service.service}.${service.namespace}`);
    },
    async close() {
      scopes.close();
      for (const rt of runtimes) {
        for (const source of [...rt.sources.values()]) source.stop();
        await rt.client?.close();
        rt.client = undefined;
      }
    },
    async *watch(service: ServiceName, { signal }: WatchOptions): AsyncGenerator<DiscoveryUpdate> {
      if (signal.aborted || scopes.closed) return;
      const scope = scopes.open(signal);
      const notify = scope.wakeup.notify;

      const views: ClusterView[] = [];
      try {
        if (service.namespace === undefined) {
          // A Consul name: not a Kubernetes service.
          yield { kind: "not-found" };
          await scope.idle();
          return;
        }
        const request: PortRequest = { port: service.port, portName: service.portName };
        for (const rt of runtimes) {
          const { source, unsubscribe } = acquire(rt, service.namespace, service.service, notify);
          views.push({
            rt,
            source,
            unsubscribe,
            slices: undefined,
            services: undefined,
            result: undefined,
            portError: undefined,
          });
        }
        const announcer = new ClusterAnnouncer<readonly Endpoint[]>(name, service, sameEndpoints);
        for await (const _ of scope.changes()) {
          const states = views.map((v) => stateOf(v, request));
          // The first snapshot waits for every cluster to answer or fail: a
          // remote cluster answering first must not take the first calls away
          // from the local one a moment behind it.
          if (states.some((s) => s.pending)) continue;
          const endpoints = states.flatMap((s) => s.endpoints);
          const failing = states.filter((s) => s.error !== undefined);
          const round = {
            endpoints,
            key: endpoints,
            failure: failing.map((s) => s.status.error).join("; "),
            cause: failing[0]?.error,
            clusters: Object.freeze(states.map((s) => s.status)),
          };
          for (const update of announcer.updates(round)) {
            yield update;
            if (scope.stopped) return;
          }
        }
      } finally {
        scope.end();
        for (const v of views) v.unsubscribe();
      }
    },
  };
}

/**
 * Creates a Kubernetes discovery backend: for each service asked for, each
 * cluster's EndpointSlices and Service are listed and watched
 * (`/apis/discovery.k8s.io/v1/namespaces/<ns>/endpointslices?labelSelector=kubernetes.io/service-name=<svc>`),
 * and the clusters' endpoints merge into one set. A URL's port is the
 * Service port, mapped to the target port through the Service's port names.
 * A cluster that fails (401/403, a bad answer, a dead watch) keeps its last
 * good endpoints, its error shown per cluster in `describe()`. Names:
 * `svc.ns.svc.cluster.local`, `svc.ns` (claimed for the global dispatcher
 * once a Service of that name has been seen) and `svc.ns.svc.clusterset.local`
 * — each every cluster's endpoints. See `docs/discovery/kubernetes.md`.
 *
 * @param prefix Where the options were written, for error messages (`<file>: discovery[0].kubernetes`).
 * @throws {@link ConfigError} for a malformed option, an unreadable kubeconfig, CA or certificate file,
 *   or `inCluster` outside a pod, naming the option path and the value.
 * @example
 * ```ts
 * const backend = kubernetesDiscovery({ clusters: [
 *   { name: "cluster-east", region: "us-east-1", server: "https://10.0.0.1:6443", tokenFile: "/var/run/east/token", caFile: "/var/run/east/ca.crt" },
 *   { name: "cluster-west", region: "us-west-2", kubeconfig: "~/.kube/config", context: "west" },
 * ] });
 * const mesh = createMesh({ region: "us-east-1", failover: ["us-west-2"], discovery: [backend] });
 * ```
 */
export function kubernetesDiscovery(options: KubernetesDiscoveryOptions = {}, prefix = ""): DiscoveryBackend {
  return createKubernetesBackend(parseOptions(kubernetesDiscoverySchema, options, prefix), {}, prefix);
}

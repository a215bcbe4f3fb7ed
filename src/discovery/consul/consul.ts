/**
 * The Consul backend: a service's healthy instances from Consul's health
 * API (`/v1/health/service/<name>`), watched with blocking queries, one
 * loop per (service, datacenter) shared by every caller, each datacenter a
 * cluster with its own region, merged into one endpoint set.
 *
 * See `docs/discovery/consul.md`.
 *
 * @module
 */

import { sleep } from "../../clock.js";
import { parseOptions } from "../../config/validate.js";
import type { ClusterStatus, DiscoveryBackend, DiscoveryUpdate, WatchOptions } from "../discovery.js";
import type { DiscoveryKindFactory } from "../kinds.js";
import { ClaimSet, ClusterAnnouncer, WatchScopes } from "../merge.js";
import type { ServiceName } from "../names.js";
import { ConsulClient } from "./client.js";
import { planService } from "./names.js";
import {
  type ConsulDiscoveryOptions,
  consulFileSchema,
  consulOptionsSchema,
  type ParsedConsulOptions,
} from "./options.js";
import { endpointSetKey } from "./payload.js";
import { type DatacenterQuery, type QueryDependencies, QueryPool } from "./query.js";
import { type ConsulSettings, resolveConsulSettings } from "./settings.js";

export type { ConsulDatacenter, ConsulDiscoveryOptions, ConsulTlsOptions } from "./options.js";
export { CONSUL_ENV } from "./settings.js";

/**
 * How long the first snapshot waits for the other datacenters once one has
 * answered: long enough for "a moment behind", short enough that one
 * unreachable datacenter (its query may take `timeout`) does not hold the
 * first calls of a service that another datacenter serves.
 */
const FIRST_ANSWER_GRACE = 1_000;

function statusOf(q: DatacenterQuery): ClusterStatus {
  return Object.freeze({
    cluster: q.label,
    fresh: q.status === "bound" || q.status === "not-found",
    updatedAt: q.updatedAt,
    error: q.status === "failed" ? describeError(q) : undefined,
  });
}

function describeError(q: DatacenterQuery): string {
  return `${q.error?.message ?? "unknown error"} (datacenter ${q.label})`;
}

/** A Consul backend as built; `pool` is exposed for tests. @internal */
export interface ConsulBackend extends DiscoveryBackend {
  /** The settings in force. */
  readonly settings: ConsulSettings;
  /** Blocking-query loops running now. */
  readonly queries: number;
  /** Stops every loop, aborts every query in flight at once, closes the connection pool. */
  close(): Promise<void>;
}

/**
 * @internal Builds the backend from parsed options; {@link consulDiscovery}
 * is the public entry. Tests replace the clock, randomness and delays.
 */
export function createConsulBackend(
  options: ParsedConsulOptions,
  prefix = "",
  deps: Partial<QueryDependencies> = {},
): ConsulBackend {
  const settings = resolveConsulSettings(options, prefix);
  const client = new ConsulClient(settings);
  const delay = deps.delay ?? sleep;
  const pool = new QueryPool(client, settings, {
    now: deps.now ?? Date.now,
    random: deps.random ?? Math.random,
    delay,
  });
  const scopes = new WatchScopes();
  /** Short Kubernetes-style names the backend has found. */
  const claimed = new ClaimSet();

  return {
    name: settings.name,
    settings,
    get queries() {
      return pool.size;
    },

    claims(service: ServiceName): boolean {
      if (service.kind === "consul") return true;
      return service.kind === "kubernetes" && settings.serviceName !== false && claimed.has(service.key);
    },

    async close() {
      scopes.close();
      pool.close();
      await client.close();
    },

    async *watch(service: ServiceName, { signal }: WatchOptions): AsyncGenerator<DiscoveryUpdate> {
      if (signal.aborted || scopes.closed) return;
      const scope = scopes.open(signal);
      const notify = scope.wakeup.notify;
      const held: { query: DatacenterQuery; release: () => void }[] = [];

      try {
        const plan = planService(service, settings);
        if (plan === undefined) {
          yield { kind: "not-found" };
          // The name is not Consul's.
          await scope.idle();
          return;
        }
        for (const datacenter of plan.datacenters) {
          held.push(pool.acquire({ service: plan.service, datacenter, tags: plan.tags }, notify));
        }
        // A loop another watch started may have answered already.
        notify();
        const queries = held.map((h) => h.query);
        const announcer = new ClusterAnnouncer<string>(settings.name, service);
        let graceStarted = false;
        let graceOver = false;
        for await (const _ of scope.changes()) {
          // The first snapshot waits for every datacenter to answer or fail
          // (the first query does not block), or for the grace after the
          // first answer: a remote datacenter answering first must not take
          // the first calls from the local one a moment behind it.
          const pending = queries.some((q) => q.status === "pending");
          if (!announcer.announced && pending) {
            if (!graceStarted && queries.some((q) => q.status !== "pending")) {
              graceStarted = true;
              void delay(FIRST_ANSWER_GRACE, scope.signal).then(() => {
                graceOver = true;
                notify();
              });
            }
            if (!graceOver) continue;
          }
          const endpoints = queries.flatMap((q) => q.endpoints);
          const failing = queries.filter((q) => q.status === "failed");
          if (service.kind === "kubernetes") {
            if (endpoints.length > 0) claimed.remember(service.key);
            else if (failing.length === 0) claimed.forget(service.key);
          }
          const round = {
            endpoints,
            key: endpointSetKey(endpoints),
            failure: failing.map(describeError).join("; "),
            cause: failing[0]?.error,
            clusters: Object.freeze(queries.map(statusOf)),
            pending,
          };
          for (const update of announcer.updates(round)) {
            yield update;
            if (scope.stopped) return;
          }
        }
      } finally {
        scope.end();
        for (const h of held) h.release();
      }
    },
  };
}

/**
 * Creates a Consul discovery backend. Each configured datacenter is a
 * cluster with its region; the backend asks the agent for a service's
 * instances whose checks pass (`/v1/health/service/<name>?passing`), in each
 * datacenter (`?dc=`), and keeps one blocking query per (service,
 * datacenter) open so that a registration change reaches the router within
 * milliseconds. A datacenter that fails (agent down, 403, 500, a bad answer)
 * keeps its last good endpoints, marked stale, and is retried with back-off.
 *
 * Names: `svc.service.consul` (every datacenter), `svc.service.<dc>.consul`
 * (that one), and Kubernetes-style `svc.ns` names through the `serviceName`
 * template. Consul's environment variables fill what the options leave out:
 * `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`,
 * `CONSUL_HTTP_SSL`, `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`,
 * `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
 * `CONSUL_TLS_SERVER_NAME` and `CONSUL_HTTP_AUTH`; explicit options win.
 *
 * Queries go through the backend's own connection pool, never undici's
 * global dispatcher. See `docs/discovery/consul.md`.
 *
 * @param prefix Where the options were written, for error messages (`<file>: discovery[0].consul`).
 * @throws {@link ConfigError} for a malformed option or variable, naming it and the value.
 * @example
 * ```ts
 * const consul = consulDiscovery({
 *   address: "http://127.0.0.1:8500", // default CONSUL_HTTP_ADDR
 *   datacenters: [{ name: "dc-east", region: "us-east-1" }, { name: "dc-west", region: "us-west-2" }],
 * });
 * const mesh = createMesh({ region: "us-east-1", failover: ["us-west-2"], discovery: [consul] });
 * await mesh.fetch("http://web.service.consul/api");
 * ```
 */
export function consulDiscovery(options: ConsulDiscoveryOptions = {}, prefix = ""): DiscoveryBackend {
  return createConsulBackend(parseOptions(consulOptionsSchema, options, prefix), prefix);
}

/**
 * @internal The `consul` kind of config files: the options of
 * {@link consulDiscovery} but `env` (the process's environment is read).
 */
export const consulDiscoveryKind: DiscoveryKindFactory = (options, source) =>
  createConsulBackend(parseOptions(consulFileSchema, options ?? {}, source), source);

/**
 * Events for the application's own logger: an endpoint ejected or
 * restored, a failover started or ended, a discovery backend failing or
 * recovered. Each goes out on a `node:diagnostics_channel` channel (for
 * tooling, as undici publishes its own) and to the mesh's typed `onX`
 * subscriptions. meshlink never writes to the console.
 *
 * Nothing here runs per call: events come from health state changes,
 * balancer plan changes and discovery updates. A message is built only
 * when someone listens.
 *
 * @module
 */

import { channel } from "node:diagnostics_channel";
import { reportInternalError } from "../diagnostics.js";
import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceWatch, SourceState } from "../discovery/registry.js";
import type { DiscoveryError } from "../errors.js";
import type { EndpointHealth, HealthTracker } from "../routing/health.js";
import type { Balancer, TierState } from "../routing/router.js";
import type { Subscription } from "../subscription.js";
import { meshInstruments } from "./metrics.js";
import { bestRank, passedOver } from "./reasons.js";

/** The `node:diagnostics_channel` channel names meshlink publishes its events on. */
export const EventChannels = {
  /** {@link EndpointEjectedEvent}. */
  ENDPOINT_EJECTED: "meshlink:endpoint:ejected",
  /** {@link EndpointRestoredEvent}. */
  ENDPOINT_RESTORED: "meshlink:endpoint:restored",
  /** {@link FailoverStartedEvent}. */
  FAILOVER_STARTED: "meshlink:failover:started",
  /** {@link FailoverEndedEvent}. */
  FAILOVER_ENDED: "meshlink:failover:ended",
  /** {@link DiscoveryErrorEvent}. */
  DISCOVERY_ERROR: "meshlink:discovery:error",
  /** {@link DiscoveryRecoveredEvent}. */
  DISCOVERY_RECOVERED: "meshlink:discovery:recovered",
} as const;

/** Outlier detection ejected an endpoint: no call goes to it until `until` (unless the router panics). */
export interface EndpointEjectedEvent {
  /** `cluster/address:port`. */
  readonly endpoint: string;
  /** Its cluster. */
  readonly cluster: string;
  /** Its region ("" when unknown). */
  readonly region: string;
  /** Its zone ("" when unknown). */
  readonly zone: string;
  /** The services that list it. */
  readonly services: readonly string[];
  /** The last failure, e.g. `ECONNREFUSED` or `status 503`. */
  readonly reason: string | undefined;
  /** How many times it has been ejected, this one included. */
  readonly ejections: number;
  /** When the ejection ends (ISO time); the next call after it probes the endpoint. */
  readonly until: string;
}

/** An ejected endpoint answered its probe: it takes traffic again. */
export interface EndpointRestoredEvent {
  /** `cluster/address:port`. */
  readonly endpoint: string;
  /** Its cluster. */
  readonly cluster: string;
  /** The services that list it. */
  readonly services: readonly string[];
  /** How many times it has been ejected so far. */
  readonly ejections: number;
}

/** Traffic of a service started leaving its best tier (the caller's zone, say) for worse ones. */
export interface FailoverStartedEvent {
  /** The service (`ServiceName.id`). */
  readonly service: string;
  /** The best tier the service has, which no longer takes all the traffic. */
  readonly from: string;
  /** The tiers that take traffic now, best first. */
  readonly to: readonly string[];
  /** Each tier's share of the traffic, by label. */
  readonly loads: Readonly<Record<string, number>>;
  /** Why: `ejected`, `spillover`, `panic` or `not_ready` (see docs/observability.md). */
  readonly reason: string;
}

/** The best tier of a service takes all of its traffic again. */
export interface FailoverEndedEvent {
  /** The service (`ServiceName.id`). */
  readonly service: string;
  /** The tier that takes the traffic. */
  readonly tier: string;
  /** How long the failover lasted, ms. */
  readonly durationMs: number;
}

/** A discovery backend failed for a service; the mesh keeps its last good endpoints. */
export interface DiscoveryErrorEvent {
  /** The service (`ServiceName.id`). */
  readonly service: string;
  /** The backend's name. */
  readonly backend: string;
  /** The error. */
  readonly error: DiscoveryError;
  /** True when the backend's last good endpoints are kept (and used). */
  readonly stale: boolean;
  /** How many endpoints of that backend are kept. */
  readonly endpoints: number;
}

/** A discovery backend answers again for a service. */
export interface DiscoveryRecoveredEvent {
  /** The service (`ServiceName.id`). */
  readonly service: string;
  /** The backend's name. */
  readonly backend: string;
  /** How long it failed, ms. */
  readonly downMs: number;
}

/** The events and their payloads, by channel name. */
interface EventMap {
  "meshlink:endpoint:ejected": EndpointEjectedEvent;
  "meshlink:endpoint:restored": EndpointRestoredEvent;
  "meshlink:failover:started": FailoverStartedEvent;
  "meshlink:failover:ended": FailoverEndedEvent;
  "meshlink:discovery:error": DiscoveryErrorEvent;
  "meshlink:discovery:recovered": DiscoveryRecoveredEvent;
}

type EventName = keyof EventMap;

const channels = {
  "meshlink:endpoint:ejected": channel(EventChannels.ENDPOINT_EJECTED),
  "meshlink:endpoint:restored": channel(EventChannels.ENDPOINT_RESTORED),
  "meshlink:failover:started": channel(EventChannels.FAILOVER_STARTED),
  "meshlink:failover:ended": channel(EventChannels.FAILOVER_ENDED),
  "meshlink:discovery:error": channel(EventChannels.DISCOVERY_ERROR),
  "meshlink:discovery:recovered": channel(EventChannels.DISCOVERY_RECOVERED),
} as const;

/** A balancer's failover, while one lasts. */
interface Failover {
  readonly since: number;
}

/**
 * One mesh's events: it follows the health tracker, and every balancer
 * and watch the mesh creates, and tells the channel's subscribers and its
 * own listeners. Listeners are called synchronously; one that throws is
 * reported on `meshlink:error` and the others still run.
 */
export class MeshEvents {
  readonly #listeners = new Map<EventName, Set<(event: never) => void>>();
  readonly #balancers: () => Iterable<Balancer>;
  readonly #now: () => number;
  /** Ejections seen per record: a cancelled probe puts an endpoint back to `ejected` without a new ejection. */
  readonly #ejections = new WeakMap<EndpointHealth, number>();
  readonly #failovers = new WeakMap<Balancer, Failover>();
  readonly #sources = new WeakMap<ServiceWatch, readonly SourceState[]>();
  readonly #health: Subscription;
  #closed = false;

  /**
   * Follows `health` at once, and the balancers given to
   * {@link MeshEvents.follow}; `balancers` lists those the mesh follows
   * now, to name an endpoint's services.
   */
  constructor(health: HealthTracker, balancers: () => Iterable<Balancer>, now: () => number = Date.now) {
    this.#balancers = balancers;
    this.#now = now;
    // The tracker calls its listeners from the call path: nothing may escape into it.
    this.#health = health.onChange((h) => {
      try {
        this.#healthChanged(h);
      } catch (err) {
        reportInternalError("endpoint health event", err);
      }
    });
  }

  /** Subscribes to one event. */
  on<K extends EventName>(name: K, listener: (event: EventMap[K]) => void): Subscription {
    let set = this.#listeners.get(name);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(name, set);
    }
    const fn = listener as (event: never) => void;
    // The same function twice is two subscriptions, each disposed once.
    const entry = (event: never) => fn(event);
    set.add(entry);
    return { dispose: () => set.delete(entry) };
  }

  /** A health record changed state. */
  #healthChanged(h: EndpointHealth): void {
    if (this.#closed) return;
    if (h.state === "ejected") {
      const seen = this.#ejections.get(h) ?? 0;
      if (h.ejections <= seen) return;
      this.#ejections.set(h, h.ejections);
      const about = this.#about(h.id);
      meshInstruments()?.ejections.add(1, { "meshlink.cluster": about.cluster });
      if (!this.#listened("meshlink:endpoint:ejected")) return;
      this.#emit("meshlink:endpoint:ejected", {
        endpoint: h.id,
        cluster: about.cluster,
        region: about.endpoint?.locality.region ?? "",
        zone: about.endpoint?.locality.zone ?? "",
        services: about.services,
        reason: h.lastFailure,
        ejections: h.ejections,
        // The health clock is monotonic but counts from the epoch: close enough for a time stamp.
        until: new Date(h.ejectedUntil).toISOString(),
      });
    } else if (h.state === "healthy" && this.#listened("meshlink:endpoint:restored")) {
      // A record turns healthy only when its probe succeeds.
      const about = this.#about(h.id);
      this.#emit("meshlink:endpoint:restored", {
        endpoint: h.id,
        cluster: about.cluster,
        services: about.services,
        ejections: h.ejections,
      });
    }
  }

  /** Follows a new balancer's plan (failover) and its watch (discovery errors) until it closes. */
  follow(balancer: Balancer): void {
    if (this.#closed) return;
    const watch = balancer.watch;
    this.#sources.set(watch, watch.snapshot.sources);
    // Both subscriptions end with the balancer and the watch (closed or forgotten): nothing to dispose.
    watch.onUpdate((snapshot) => this.#discovery(watch, snapshot.sources));
    balancer.onChange((b) => this.#plan(b));
  }

  /** Stops every event. */
  close(): void {
    this.#closed = true;
    this.#health.dispose();
    this.#listeners.clear();
  }

  #plan(b: Balancer): void {
    if (this.#closed || b.closed) return;
    const state = failoverState(b);
    // Nothing can take traffic: an outage, which neither starts nor ends a failover.
    if (state === OUTAGE) return;
    const ongoing = this.#failovers.get(b);
    const service = b.watch.service.id;
    if (state !== undefined && ongoing === undefined) {
      this.#failovers.set(b, { since: this.#now() });
      if (!this.#listened("meshlink:failover:started")) return;
      const loads: Record<string, number> = {};
      for (const t of state.view) loads[t.tier.label] = t.load;
      this.#emit("meshlink:failover:started", {
        service,
        from: state.from,
        to: state.view.filter((t) => t.load > 0).map((t) => t.tier.label),
        loads,
        reason: state.reason,
      });
    } else if (state === undefined && ongoing !== undefined) {
      this.#failovers.delete(b);
      if (!this.#listened("meshlink:failover:ended")) return;
      const first = b.tiers().find((t) => t.load > 0);
      this.#emit("meshlink:failover:ended", {
        service,
        tier: first?.tier.label ?? "",
        durationMs: this.#now() - ongoing.since,
      });
    }
  }

  #discovery(watch: ServiceWatch, next: readonly SourceState[]): void {
    if (this.#closed) return;
    const prev = this.#sources.get(watch) ?? [];
    this.#sources.set(watch, next);
    for (let i = 0; i < next.length; i++) {
      const before = prev[i];
      const after = next[i]!;
      if (after.error !== undefined && before?.error === undefined) {
        if (!this.#listened("meshlink:discovery:error")) continue;
        this.#emit("meshlink:discovery:error", {
          service: watch.service.id,
          backend: after.backend,
          error: after.error,
          stale: after.stale,
          endpoints: after.endpoints.length,
        });
      } else if (after.error === undefined && before?.error !== undefined) {
        if (!this.#listened("meshlink:discovery:recovered")) continue;
        // Down since the last good answer before the failure (or since the watch began).
        const since = before.updatedAt;
        this.#emit("meshlink:discovery:recovered", {
          service: watch.service.id,
          backend: after.backend,
          downMs: since === undefined || after.updatedAt === undefined ? 0 : after.updatedAt - since,
        });
      }
    }
  }

  /** An endpoint's cluster, locality and the services that list it. */
  #about(id: string): { cluster: string; endpoint: Endpoint | undefined; services: string[] } {
    let endpoint: Endpoint | undefined;
    const services: string[] = [];
    for (const b of this.#balancers()) {
      const e = b.watch.snapshot.endpoints.find((x) => x.id === id);
      if (e === undefined) continue;
      endpoint ??= e;
      if (!services.includes(b.watch.service.id)) services.push(b.watch.service.id);
    }
    const slash = id.indexOf("/");
    return { cluster: endpoint?.cluster ?? (slash > 0 ? id.slice(0, slash) : ""), endpoint, services };
  }

  #listened(name: EventName): boolean {
    return channels[name].hasSubscribers || (this.#listeners.get(name)?.size ?? 0) > 0;
  }

  #emit<K extends EventName>(name: K, event: EventMap[K]): void {
    const ch = channels[name];
    if (ch.hasSubscribers) {
      try {
        ch.publish(event);
      } catch (err) {
        reportInternalError(`${name} subscriber`, err);
      }
    }
    const set = this.#listeners.get(name);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        (listener as (e: EventMap[K]) => void)(event);
      } catch (err) {
        reportInternalError(`${name} listener`, err);
      }
    }
  }
}

const OUTAGE = Symbol("outage");

/**
 * The failover a balancer's plan shows now: undefined when its best tier
 * (the best any endpoint of the service is in) takes all the traffic,
 * {@link OUTAGE} when no tier takes any.
 */
function failoverState(
  b: Balancer,
): { from: string; reason: string; view: readonly TierState[] } | undefined | typeof OUTAGE {
  const view = b.tiers();
  if (!view.some((t) => t.load > 0)) return OUTAGE;
  const best = bestRank(b);
  const first = view.find((t) => t.tier.rank === best);
  if (first !== undefined && first.load >= 1 - 1e-9) return undefined;
  return {
    from: first?.tier.label ?? labelOfRank(b, best),
    reason: passedOver(first === undefined ? [] : [first]),
    view,
  };
}

function labelOfRank(b: Balancer, rank: number): string {
  for (const e of b.watch.snapshot.endpoints) {
    const t = b.tierOf(e);
    if (t.rank === rank) return t.label;
  }
  return "";
}

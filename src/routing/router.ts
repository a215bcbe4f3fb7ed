/**
 * The router: from a service snapshot, the caller's locality and endpoint
 * health, picks an endpoint.
 *
 * A {@link Balancer} follows one service: it rebuilds its tier table when
 * the snapshot's endpoints change ({@link buildTable}) and is told of the
 * health changes of its own endpoints only, after which its next pick
 * re-splits the traffic ({@link planTraffic}: Envoy's spill-over and panic).
 * Inside a group the {@link GroupPicker} chooses: the power of two choices
 * over peak-EWMA load (Finagle, Linkerd), round-robin or random. As a
 * grpc-js balancer publishes a picker, it keeps an immutable plan, so that
 * `pick()` is synchronous, O(1) and allocates nothing, and it fires
 * `onChange` whenever its endpoints or its plan change.
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceWatch } from "../discovery/registry.js";
import type { Subscription } from "../subscription.js";
import { ChangeEvents } from "./changes.js";
import { type BalancerPolicy, type Group, GroupPicker, type SlowStartOptions } from "./group.js";
import type { EndpointHealth, HealthTracker, HealthView } from "./health.js";
import {
  buildTable,
  type Plan,
  type PlanOptions,
  planTraffic,
  scanPlans,
  type TableTier,
  usable,
} from "./plan.js";
import type { TierInfo, TierMap } from "./tiers.js";

export type { BalancerPolicy, SlowStartOptions } from "./group.js";
export { type PriorityLoad, priorityLoad, type TierHealth } from "./load.js";
export {
  type DistributeRule,
  type LocalityGroup,
  matchLocality,
  type PriorityLabel,
  type RouterOptions,
  type TierInfo,
  TierMap,
} from "./tiers.js";

/** Options of a {@link Balancer}. */
export interface BalancerOptions {
  /** How a tier picks among its endpoints; default `p2c`. */
  policy?: BalancerPolicy;
  /** Envoy's overprovisioning factor: a tier keeps all its traffic while healthy share × factor ≥ 1; default 1.4. */
  overprovisioningFactor?: number;
  /** Healthy share under which a tier ignores health, when the tiers together fall short; default 0.5; 0 turns panic off. */
  panicThreshold?: number;
  /** Slow start for endpoints added after the first snapshot and endpoints back from ejection, in every policy; default off. */
  slowStart?: SlowStartOptions;
  /** Most requests in flight to one endpoint (a bulkhead); default unlimited. */
  maxRequestsPerEndpoint?: number;
  /** Random numbers in [0, 1); default `Math.random`. Tests inject their own. */
  random?: () => number;
}

/** One endpoint in the router's order, for `mesh.resolve`. */
export interface RoutedEndpoint {
  /** The endpoint. */
  readonly endpoint: Endpoint;
  /** Its tier for this caller. */
  readonly tier: TierInfo;
  /** True when the router may send a call to it now. */
  readonly available: boolean;
  /** Why it is not available: `ejected`, `probing`, `not-ready`, `terminating`. */
  readonly unavailableReason: string | undefined;
  /** Its health, at the same time as `available`: the two never disagree. */
  readonly health: HealthView;
}

/** What a call has already tried, and clusters it would rather avoid. */
export interface PickConstraints {
  /**
   * Ids of the endpoints this call already tried (Envoy's `previous_hosts`).
   * A pick prefers any other endpoint and falls back to a tried one only
   * when no other is available (Envoy does the same once
   * `host_selection_retry_max_attempts` run out), unless `hard` is set.
   */
  readonly exclude?: readonly string[] | undefined;
  /** After a connection failure: prefer any other cluster over this one. */
  readonly avoidCluster?: string | undefined;
  /** After connection failures in several clusters: prefer any cluster not listed. */
  readonly avoidClusters?: readonly string[] | undefined;
  /** Never return an excluded endpoint, even when it is the only one (a hedge on the same endpoint is no hedge). */
  readonly hard?: boolean | undefined;
}

/** How a tier currently stands, for `describe()` and tests. */
export interface TierState {
  /** The tier. */
  readonly tier: TierInfo;
  /** Endpoints in it. */
  readonly total: number;
  /** Endpoints that may take traffic now. */
  readonly healthy: number;
  /** Its share of the traffic, in [0, 1]. */
  readonly load: number;
  /** True when it ignores health (panic). */
  readonly panic: boolean;
}

const NO_PLANS: readonly Plan[] = [];

/**
 * The balancer of one service: follows its watch and the health of its
 * endpoints, keeps the tier table and the traffic plan, and picks.
 * `close()` lets go of both; a closed balancer still picks from its last
 * plan (for a call that raced with it) but follows nothing any more.
 */
export class Balancer {
  readonly #watch: ServiceWatch;
  readonly #tiers: TierMap;
  readonly #health: HealthTracker;
  readonly #picker: GroupPicker;
  readonly #planOptions: PlanOptions;
  readonly #maxPerEndpoint: number;
  readonly #random: () => number;
  readonly #onHealth: (health: EndpointHealth) => void;
  readonly #events: ChangeEvents<Balancer>;
  readonly #watchSubscription: Subscription;
  #closed = false;
  /** The snapshot's endpoint array the table was built from (the registry keeps it while nothing changes). */
  #endpoints: readonly Endpoint[] = [];
  /** The health record of every endpoint of the snapshot, tracked for this balancer. */
  #held = new Map<string, EndpointHealth>();
  #table: readonly TableTier[] = [];
  /** Endpoint ids of the last non-empty table, for slow start; undefined before the first. */
  #known: Set<string> | undefined;
  /** True when a health change or a new table calls for a new plan. */
  #stale = true;
  #nextExpiry = Number.POSITIVE_INFINITY;
  #plans: readonly Plan[] = NO_PLANS;
  #view: readonly Plan[] = NO_PLANS;
  /** The health record of the endpoint `#pickOnce` returned. */
  #picked: EndpointHealth | undefined;
  /** Set by `#scan` when it skipped an endpoint at its request limit. */
  #sawFull = false;
  #saturated = false;

  constructor(watch: ServiceWatch, tiers: TierMap, health: HealthTracker, options: BalancerOptions = {}) {
    this.#watch = watch;
    this.#tiers = tiers;
    this.#health = health;
    this.#random = options.random ?? Math.random;
    this.#picker = new GroupPicker(options.policy ?? "p2c", health, this.#random, options.slowStart);
    this.#planOptions = {
      overprovisioningFactor: options.overprovisioningFactor ?? 1.4,
      panicThreshold: options.panicThreshold ?? 0.5,
      needs: this.#picker.needs,
    };
    this.#maxPerEndpoint = options.maxRequestsPerEndpoint ?? Number.POSITIVE_INFINITY;
    this.#onHealth = (h) => this.#healthChanged(h);
    // When an ejection ends the plan changes with no health event: re-plan, and learn when the next ends.
    this.#events = new ChangeEvents<Balancer>(this, health.now, () => {
      this.#stale = true;
      this.#current();
      return this.#nextExpiry;
    });
    this.#follow(watch.snapshot.endpoints);
    this.#watchSubscription = watch.onUpdate((snapshot) => {
      // A refresh that changes nothing (or only a source's state) keeps the array, the table and the plan.
      if (snapshot.endpoints === this.#endpoints) return;
      this.#follow(snapshot.endpoints);
      this.#events.emit();
    });
  }

  /** The service's watch. */
  get watch(): ServiceWatch {
    return this.#watch;
  }

  /** The health tracker shared by every balancer. */
  get health(): HealthTracker {
    return this.#health;
  }

  /** This service's version: moves whenever its endpoints, or their health, change. */
  get version(): number {
    return this.#events.version;
  }

  /** True once {@link Balancer.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * True when the last `pick()` returned `undefined` because every
   * candidate was at its `maxRequestsPerEndpoint` (a full bulkhead), not
   * because none was healthy.
   */
  get saturated(): boolean {
    return this.#saturated;
  }

  /**
   * Picks an endpoint, or `undefined` when none is available. Synchronous;
   * allocates nothing unless constraints force a scan.
   */
  pick(constraints?: PickConstraints): Endpoint | undefined {
    const plans = this.#current();
    this.#saturated = false;
    if (plans.length === 0) return undefined;
    const exclude = constraints?.exclude;
    const one = constraints?.avoidCluster;
    const many = constraints?.avoidClusters;
    const avoid = one === undefined ? many : many === undefined ? [one] : [...many, one];
    if (exclude === undefined && avoid === undefined) {
      const e = this.#pickOnce(plans);
      return e === undefined || this.#fits(this.#picked!)
        ? e
        : this.#fallback(this.#scan(plans, undefined, undefined));
    }
    // A retry: a few ordinary picks usually find an allowed endpoint in O(1).
    for (let i = 0; i < 4; i++) {
      const e = this.#pickOnce(plans);
      if (
        e !== undefined &&
        !avoid?.includes(e.cluster) &&
        !exclude?.includes(e.id) &&
        this.#fits(this.#picked!)
      ) {
        return e;
      }
    }
    this.#sawFull = false;
    // Untried in another cluster; untried; then, unless hard, a tried one (still preferring another cluster).
    let e = avoid === undefined ? undefined : this.#scan(plans, exclude, avoid);
    e ??= this.#scan(plans, exclude, undefined);
    if (e === undefined && exclude !== undefined && constraints?.hard !== true) {
      if (avoid !== undefined) e = this.#scan(plans, undefined, avoid);
      e ??= this.#scan(plans, undefined, undefined);
    }
    return this.#fallback(e);
  }

  /**
   * The health record the transport reports to for an endpoint: the one
   * the last {@link Balancer.pick} drew when it is that endpoint (a
   * transport asks for the endpoint it was just handed), else a lookup.
   */
  healthOf(endpoint: Endpoint): EndpointHealth {
    const picked = this.#picked;
    return picked !== undefined && picked.id === endpoint.id ? picked : this.#health.get(endpoint.id);
  }

  /** The tier of an endpoint for this caller. */
  tierOf(endpoint: Endpoint): TierInfo {
    return this.#tiers.of(endpoint);
  }

  /** The tiers as they stand: size, health, share of traffic, panic. */
  tiers(): TierState[] {
    this.#current();
    return this.#view.map((p) => ({
      tier: p.tier,
      total: p.total,
      healthy: p.healthy,
      load: p.load,
      panic: p.panic,
    }));
  }

  /** Every known endpoint in the router's order (tier, then available first), ejected ones too. */
  order(): RoutedEndpoint[] {
    const endpoints = this.#endpoints;
    const usableSet = new Set(usable(endpoints));
    const now = this.#health.now();
    const rows = endpoints.map((endpoint) => {
      const health = this.#health.view(endpoint.id, now);
      let reason: string | undefined;
      if (!usableSet.has(endpoint)) reason = endpoint.terminating ? "terminating" : "not-ready";
      else if (health.state !== "healthy") reason = health.state;
      return {
        endpoint,
        tier: this.#tiers.of(endpoint),
        available: reason === undefined,
        unavailableReason: reason,
        health,
      };
    });
    return rows.sort((a, b) => a.tier.rank - b.tier.rank || Number(b.available) - Number(a.available));
  }

  /**
   * Subscribes to changes of this service's endpoints or plan (a health
   * change of one of its endpoints, an ejection ending); a new pick may
   * choose differently (grpc-js publishes a new picker). Listeners are
   * called synchronously; one that throws is reported as a process warning
   * and the others still run.
   */
  onChange(listener: (balancer: Balancer) => void): Subscription {
    const subscription = this.#events.subscribe(listener);
    if (!this.#closed) {
      this.#current();
      this.#events.wakeAt(this.#nextExpiry);
    }
    return subscription;
  }

  /**
   * Stops following the watch and lets go of the endpoints' health records
   * (the tracker forgets those no other balancer uses); no more events.
   * Idempotent. The registry closes the balancer of a service it forgets.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watchSubscription.dispose();
    for (const h of this.#held.values()) this.#health.untrack(h, this.#onHealth);
    this.#held = new Map();
    this.#events.clear();
  }

  #scan(
    plans: readonly Plan[],
    exclude: readonly string[] | undefined,
    avoid: readonly string[] | undefined,
  ): Endpoint | undefined {
    const found = scanPlans(plans, exclude, avoid, this.#maxPerEndpoint, this.#random);
    if (found.full) this.#sawFull = true;
    return found.endpoint;
  }

  #fits(h: EndpointHealth): boolean {
    return this.#maxPerEndpoint === Number.POSITIVE_INFINITY || h.outstanding < this.#maxPerEndpoint;
  }

  /** What a scan found; when nothing, whether a full bulkhead is why. */
  #fallback(e: Endpoint | undefined): Endpoint | undefined {
    if (e === undefined) this.#saturated = this.#sawFull;
    this.#sawFull = false;
    return e;
  }

  #pickOnce(plans: readonly Plan[]): Endpoint | undefined {
    let plan = plans[0]!;
    if (plans.length > 1) {
      const r = this.#random();
      for (let i = 0; i < plans.length; i++) {
        plan = plans[i]!;
        if (r < plan.upTo) break;
      }
    }
    const groups = plan.groups;
    let group: Group = groups[0]!;
    if (groups.length > 1) {
      const upTo = plan.groupUpTo;
      const r = this.#random() * upTo[upTo.length - 1]!;
      for (let i = 0; i < groups.length; i++) {
        group = groups[i]!;
        if (r < upTo[i]!) break;
      }
    }
    const i = this.#picker.pick(group);
    if (i < 0) return undefined;
    this.#picked = group.health[i];
    return group.endpoints[i];
  }

  #current(): readonly Plan[] {
    // The clock is read only while some endpoint is ejected.
    if (
      this.#stale ||
      (this.#nextExpiry !== Number.POSITIVE_INFINITY && this.#health.now() >= this.#nextExpiry)
    ) {
      const health = this.#health;
      const planned = planTraffic(this.#table, this.#tiers, health, health.now(), this.#planOptions);
      this.#plans = planned.plans;
      this.#view = planned.view;
      this.#nextExpiry = planned.nextExpiry;
      this.#stale = false;
    }
    return this.#plans;
  }

  /** Tracks the records of a new endpoint array, lets go of those that left, and rebuilds the table. */
  #follow(endpoints: readonly Endpoint[]): void {
    const health = this.#health;
    let held = this.#held;
    // Most updates change an endpoint's weight or readiness, not the ids:
    // then the records held are the same, and no map is rebuilt.
    const prev = this.#endpoints;
    let sameIds = endpoints.length === prev.length && held.size > 0;
    for (let i = 0; sameIds && i < endpoints.length; i++) sameIds = endpoints[i]!.id === prev[i]!.id;
    if (!sameIds) {
      const next = new Map<string, EndpointHealth>();
      for (const e of endpoints) {
        if (!next.has(e.id)) next.set(e.id, held.get(e.id) ?? health.track(e.id, this.#onHealth));
      }
      for (const [id, h] of held) if (!next.has(id)) health.untrack(h, this.#onHealth);
      this.#held = held = next;
    }
    const list = usable(endpoints);
    // Slow start ramps the endpoints that join after the first snapshot with endpoints.
    if (this.#picker.slowStart) {
      const known = this.#known;
      if (known !== undefined) {
        const now = health.now();
        for (const e of list) if (!known.has(e.id)) held.get(e.id)!.warmingSince = now;
      }
      if (list.length > 0) this.#known = new Set(list.map((e) => e.id));
    }
    this.#table = buildTable(list, this.#tiers, (e) => held.get(e.id)!);
    this.#endpoints = endpoints;
    this.#stale = true;
  }

  /** One of this service's endpoints changed state. */
  #healthChanged(h: EndpointHealth): void {
    this.#stale = true;
    if (h.state === "ejected") this.#events.wakeAt(h.ejectedUntil);
    this.#events.emit();
  }
}

/**
 * The `meshlink` load-balancer type for grpc-js. It does not balance by
 * itself: the mesh's router does (tiers, spill-over, panic, P2C/EWMA,
 * ejection), shared with HTTP. This type keeps one subchannel per endpoint
 * of the service — reused as long as the endpoint's address and identity
 * stay, released when discovery drops it — connects those the router
 * currently sends traffic to, and publishes a new immutable
 * {@link MeshPicker} whenever the router's balancer changes (endpoints,
 * health, an ejection ending) or a subchannel changes state.
 *
 * The channel's state follows: CONNECTING while discovery has not
 * answered (calls queue), TRANSIENT_FAILURE with the router's reason when
 * no endpoint may be used, else READY as soon as one subchannel is.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import { EgressDeniedError, MeshClosedError } from "../../errors.js";
import { noEndpointError } from "../../resilience/admission.js";
import type { EndpointHealth } from "../../routing/health.js";
import type { Balancer } from "../../routing/router.js";
import type { Subscription } from "../../subscription.js";
import type { ConnectivityView, ServiceBinding } from "./binding.js";
import { ENDPOINT_OPTION } from "./connections.js";
import { CONNECTING, type GrpcKit, IDLE, PICK_COMPLETE, READY, TRANSIENT_FAILURE } from "./kit.js";
import { MeshPicker, type PickEntry, type PickerHost } from "./picker.js";
import { BINDING_ATTRIBUTE } from "./resolver.js";
import { Status } from "./status.js";
import { SCHEME } from "./target.js";
import type {
  GrpcAddressList,
  GrpcChannelControlHelper,
  GrpcChannelOptions,
  GrpcConnectivityListener,
  GrpcLoadBalancer,
  GrpcPickResult,
  GrpcStatusOr,
  GrpcSubchannel,
} from "./types.js";

/** grpc-js's `LoadBalancerConstructor`. */
type LoadBalancerConstructor = new (helper: GrpcChannelControlHelper) => GrpcLoadBalancer;
/** grpc-js's `TypedLoadBalancingConfigConstructor`. */
type ConfigConstructor = { new (): MeshLbConfig; createFromJson(json: unknown): MeshLbConfig };

/** The `meshlink` load-balancing config: it has no fields (the router's options are the mesh's). */
class MeshLbConfig {
  getLoadBalancerName(): string {
    return SCHEME;
  }
  toJsonObject(): object {
    return { [SCHEME]: {} };
  }
  static createFromJson(_json: unknown): MeshLbConfig {
    return new MeshLbConfig();
  }
}

/** One endpoint's subchannel, with its two pick results made once. */
class Entry implements PickEntry {
  endpoint: Endpoint;
  /** The endpoint as the subchannel was made for it (its options carry this object). */
  readonly connectsAs: Endpoint;
  readonly sub: GrpcSubchannel | undefined;
  readonly denied: Error | undefined;
  error: string | undefined = undefined;
  /** The router sends traffic to it now: keep it connected. */
  warm = false;
  readonly complete: GrpcPickResult;
  readonly tracked: GrpcPickResult;
  readonly listener: GrpcConnectivityListener;

  constructor(endpoint: Endpoint, sub: GrpcSubchannel | undefined, denied: Error | undefined, lb: EntryHost) {
    this.endpoint = endpoint;
    this.connectsAs = endpoint;
    this.sub = sub;
    this.denied = denied;
    this.complete = {
      pickResultType: PICK_COMPLETE,
      subchannel: sub ?? null,
      status: null,
      onCallStarted: null,
      onCallEnded: null,
    };
    // A call without the interceptors reports to health here: UNAVAILABLE is
    // the endpoint's failure; CANCELLED and DEADLINE_EXCEEDED cannot be told
    // from the caller's own and count for nothing; any other status is an answer.
    this.tracked = {
      pickResultType: PICK_COMPLETE,
      subchannel: sub ?? null,
      status: null,
      onCallStarted: () => lb.health((b, h) => b.health.start(h), this.endpoint),
      onCallEnded: (code) =>
        lb.health((b, h) => {
          if (code === Status.UNAVAILABLE) b.health.failure(h, "GRPC_UNAVAILABLE");
          else if (code === Status.CANCELLED || code === Status.DEADLINE_EXCEEDED) b.health.release(h);
          else b.health.success(h);
        }, this.endpoint),
    };
    this.listener = (_sub, _previous, next, _keepalive, errorMessage) => {
      this.error = next === TRANSIENT_FAILURE ? errorMessage : undefined;
      if (next === IDLE && this.warm) lb.connect(this.endpoint);
      lb.subchannelChanged();
    };
  }
}

/** What an entry calls back into: its load balancer. */
interface EntryHost {
  /** Runs `fn` with the service's balancer and the endpoint's health record, while the service is bound. */
  health(fn: (b: Balancer, h: EndpointHealth) => void, endpoint: Endpoint): void;
  /** Starts connecting the endpoint's idle subchannel, soon. */
  connect(endpoint: Endpoint): void;
  /** A subchannel changed state: publish a new picker. */
  subchannelChanged(): void;
}

/** The `meshlink` load-balancer type and its config class, for one grpc-js module. */
export function loadBalancerTypes(kit: GrpcKit): {
  LoadBalancer: LoadBalancerConstructor;
  Config: ConfigConstructor;
} {
  const UnavailablePicker = kit.grpc.experimental.UnavailablePicker;

  class MeshLoadBalancer implements GrpcLoadBalancer, ConnectivityView, PickerHost, EntryHost {
    readonly #helper: GrpcChannelControlHelper;
    #binding: ServiceBinding | undefined;
    #change: Subscription | undefined;
    #entries = new Map<string, Entry>();
    #endpoints: readonly Endpoint[] | undefined;
    #args: GrpcChannelOptions = {};
    #state = IDLE;
    #picker: MeshPicker | undefined;
    #message: string | null = null;
    #destroyed = false;
    #refreshPlanned = false;
    #connecting: Entry[] = [];
    #rebinding = false;

    constructor(helper: GrpcChannelControlHelper) {
      this.#helper = helper;
    }

    updateAddressList(
      _endpoints: GrpcStatusOr<GrpcAddressList[]>,
      _config: unknown,
      options: GrpcChannelOptions,
    ): boolean {
      if (this.#destroyed) return false;
      const binding = options[BINDING_ATTRIBUTE] as ServiceBinding | undefined;
      if (binding === undefined || typeof binding.pickReady !== "function") {
        const details = "meshlink: the meshlink load balancer serves meshlink:// targets only";
        this.#helper.updateState(
          TRANSIENT_FAILURE,
          new UnavailablePicker({ code: Status.UNAVAILABLE, details, metadata: kit.metadata() }),
          details,
        );
        return false;
      }
      const { [BINDING_ATTRIBUTE]: _binding, ...args } = options;
      this.#args = args;
      if (binding !== this.#binding) {
        this.#detach();
        this.#binding = binding;
        binding.view = this;
        // Health and ejection changes arrive inside calls: answer them once the call's own work is done.
        this.#change = binding.balancer.onChange(() => this.#refreshSoon());
        this.#rebinding = false;
      }
      this.#refresh();
      return true;
    }

    exitIdle(): void {
      for (const e of this.#entries.values()) {
        if (e.warm && e.sub?.getConnectivityState() === IDLE) this.connect(e.endpoint);
      }
    }

    resetBackoff(): void {}

    destroy(): void {
      this.#destroyed = true;
      this.#detach();
      for (const e of this.#entries.values()) this.#release(e);
      this.#entries = new Map();
      this.#endpoints = undefined;
    }

    getTypeName(): string {
      return SCHEME;
    }

    // ConnectivityView and PickerHost.

    stateOf(endpoint: Endpoint): number | undefined {
      return this.#entries.get(endpoint.id)?.sub?.getConnectivityState();
    }

    connect(endpoint: Endpoint): void {
      const entry = this.#entries.get(endpoint.id);
      if (entry?.sub === undefined || this.#connecting.includes(entry)) return;
      this.#connecting.push(entry);
      if (this.#connecting.length > 1) return;
      // Never inside a pick: a state change would publish a picker while grpc-js is picking.
      process.nextTick(() => {
        const list = this.#connecting;
        this.#connecting = [];
        for (const e of list) {
          if (
            !this.#destroyed &&
            this.#entries.get(e.endpoint.id) === e &&
            e.sub?.getConnectivityState() === IDLE
          ) {
            e.sub.startConnecting();
          }
        }
      });
    }

    repick(): void {
      if (this.#picker !== undefined && !this.#destroyed) {
        this.#helper.updateState(this.#state, this.#picker, this.#message);
      }
    }

    get behind(): boolean {
      return (
        this.#binding !== undefined && this.#binding.balancer.watch.snapshot.endpoints !== this.#endpoints
      );
    }

    rebind(): void {
      if (this.#rebinding || this.#destroyed) return;
      this.#rebinding = true;
      process.nextTick(() => {
        if (!this.#destroyed) this.#helper.requestReresolution();
      });
    }

    connectFailed(endpoint: Endpoint, reason: string): void {
      this.health((b, h) => {
        b.health.start(h);
        b.health.failure(h, reason);
      }, endpoint);
    }

    // Entries.

    health(fn: (b: Balancer, h: EndpointHealth) => void, endpoint: Endpoint): void {
      const b = this.#binding?.balancer;
      if (b !== undefined) fn(b, b.healthOf(endpoint));
    }

    subchannelChanged(): void {
      if (!this.#destroyed && this.#binding !== undefined) this.#publish();
    }

    // Internals.

    #detach(): void {
      this.#change?.dispose();
      this.#change = undefined;
      if (this.#binding?.view === this) this.#binding.view = undefined;
    }

    #refreshSoon(): void {
      if (this.#refreshPlanned) return;
      this.#refreshPlanned = true;
      queueMicrotask(() => {
        this.#refreshPlanned = false;
        this.#refresh();
      });
    }

    #refresh(): void {
      const binding = this.#binding;
      if (this.#destroyed || binding === undefined) return;
      if (binding.stale) this.rebind();
      const endpoints = binding.balancer.watch.snapshot.endpoints;
      if (endpoints !== this.#endpoints) this.#reconcile(binding, endpoints);
      this.#warm(binding);
      this.#publish();
    }

    /** One entry per endpoint id: kept while the address and identity stay, made for new ones, released for gone ones. */
    #reconcile(binding: ServiceBinding, endpoints: readonly Endpoint[]): void {
      const next = new Map<string, Entry>();
      for (const e of endpoints) {
        if (next.has(e.id)) continue;
        let entry = this.#entries.get(e.id);
        const p = entry?.endpoint;
        if (
          entry !== undefined &&
          p!.address === e.address &&
          p!.port === e.port &&
          p!.identity === e.identity
        ) {
          entry.endpoint = e;
        } else {
          entry = this.#create(binding, e);
        }
        next.set(e.id, entry);
      }
      for (const [id, entry] of this.#entries) if (next.get(id) !== entry) this.#release(entry);
      this.#entries = next;
      this.#endpoints = endpoints;
    }

    #create(binding: ServiceBinding, e: Endpoint): Entry {
      // An address the egress guard refuses gets no subchannel (a host name is checked once resolved, by the credentials).
      const v = binding.host.egress?.check(e.address);
      if (v !== undefined) return new Entry(e, undefined, new EgressDeniedError(v.address, v.rule), this);
      const sub = this.#helper.createSubchannel(
        { host: e.address, port: e.port },
        { ...this.#args, [ENDPOINT_OPTION]: e },
      );
      const entry = new Entry(e, sub, undefined, this);
      sub.addConnectivityStateListener(entry.listener);
      sub.ref();
      return entry;
    }

    #release(entry: Entry): void {
      if (entry.sub === undefined) return;
      entry.sub.removeConnectivityStateListener(entry.listener);
      entry.sub.unref();
    }

    /** Keeps connected the endpoints the router sends traffic to now: available ones in tiers with a share of the load. */
    #warm(binding: ServiceBinding): void {
      const b = binding.balancer;
      const active = new Set<number>();
      for (const t of b.tiers()) if (t.load > 0) active.add(t.tier.rank);
      for (const row of b.order()) {
        const entry = this.#entries.get(row.endpoint.id);
        if (entry === undefined) continue;
        entry.warm = row.available && active.has(row.tier.rank);
        if (entry.warm && entry.sub?.getConnectivityState() === IDLE) this.connect(entry.endpoint);
      }
    }

    #publish(): void {
      const binding = this.#binding!;
      const b = binding.balancer;
      let queue = false;
      let state: number;
      let message: string | null = null;
      if (binding.host.closed) {
        state = TRANSIENT_FAILURE;
        message = new MeshClosedError().message;
      } else if (!b.watch.isSettled && b.watch.snapshot.endpoints.length === 0) {
        state = CONNECTING;
        queue = true;
      } else if (b.pick() === undefined && !b.saturated) {
        state = TRANSIENT_FAILURE;
        message = noEndpointError(binding, binding.policy, []).message;
      } else {
        state = this.#connectivity();
        if (state === TRANSIENT_FAILURE) message = "meshlink: no connection could be made to any endpoint";
      }
      this.#state = state;
      this.#message = message;
      this.#picker = new MeshPicker(kit, this, binding, this.#entries, queue);
      this.#helper.updateState(state, this.#picker, message);
    }

    /** READY when a subchannel is; CONNECTING while one may become so; else TRANSIENT_FAILURE. */
    #connectivity(): number {
      let connecting = false;
      for (const e of this.#entries.values()) {
        const s = e.sub?.getConnectivityState();
        if (s === READY) return READY;
        if (s === CONNECTING || s === IDLE) connecting = true;
      }
      return connecting || this.#entries.size === 0 ? CONNECTING : TRANSIENT_FAILURE;
    }
  }

  return { LoadBalancer: MeshLoadBalancer, Config: MeshLbConfig };
}

/**
 * What ties a grpc-js channel to a mesh service: the mesh as the gRPC
 * transport sees it ({@link GrpcMeshHost}), and one {@link ServiceBinding}
 * per channel and service — the call engine's route (name, balancer, call
 * state, timers) plus the connectivity of the channel's subchannels, which
 * the channel's load balancer lends it. The resolver makes the binding and
 * hands it to the load balancer in its resolution attributes; the picker
 * hands it to each call it binds.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import type { ServiceName } from "../../discovery/names.js";
import type { ServiceRoute } from "../../resilience/admission.js";
import type { CallPolicy, ServiceCallState } from "../../resilience/policy.js";
import type { TimerWheel } from "../../resilience/timer.js";
import type { Balancer, PickConstraints } from "../../routing/router.js";
import type { EgressGuard } from "../egress.js";
import { IDLE, READY } from "./kit.js";

/** A mesh as its gRPC transport sees it. The façade implements it. */
export interface GrpcMeshHost {
  /** The mesh's id in targets (`meshlink://<id>/…`). */
  readonly id: string;
  /** The call policy. */
  readonly policy: CallPolicy;
  /** True once the mesh is closed. */
  readonly closed: boolean;
  /** The wheel for deadlines, per-try timeouts, back-off and hedge delays. */
  readonly timers: TimerWheel;
  /** The egress guard: an address it refuses gets no subchannel, and no connection. */
  readonly egress: EgressGuard | undefined;
  /** The balancer of a service (a gRPC target always names a mesh service). */
  balancerFor(name: ServiceName): Balancer;
}

/** What a binding needs from the load balancer of its channel. */
export interface ConnectivityView {
  /** The connectivity state of an endpoint's subchannel (grpc-js's numbering), or undefined when it has none. */
  stateOf(endpoint: Endpoint): number | undefined;
  /** Starts connecting an endpoint's idle subchannel, soon (never inside a pick). */
  connect(endpoint: Endpoint): void;
  /** Publishes the picker again, so that grpc-js picks its queued calls again. */
  repick(): void;
}

/** One service as one channel serves it: the engine's route, and the channel's connectivity. */
export class ServiceBinding implements ServiceRoute {
  /** The service. */
  readonly name: ServiceName;
  /** Its balancer (the mesh's, shared with HTTP). */
  readonly balancer: Balancer;
  /** Its call state (budgets, calls in flight). */
  readonly state: ServiceCallState;
  /** The mesh's timer wheel. */
  readonly timers: TimerWheel;
  /** The mesh. */
  readonly host: GrpcMeshHost;
  /** The load balancer serving this binding, while there is one. */
  view: ConnectivityView | undefined = undefined;

  constructor(host: GrpcMeshHost, name: ServiceName) {
    this.host = host;
    this.name = name;
    this.balancer = host.balancerFor(name);
    this.state = host.policy.service(name.key, name.id);
    this.timers = host.timers;
  }

  /** The call policy. */
  get policy(): CallPolicy {
    return this.host.policy;
  }

  /** True once the mesh forgot the service (its balancer closed): the resolver binds again. */
  get stale(): boolean {
    return this.balancer.closed;
  }

  /**
   * Picks as the router does, then prefers a READY subchannel within the
   * tier the router chose: a connecting endpoint would hold the call, a
   * failed one fail it, while a connected neighbour can take it now. Idle
   * subchannels it meets start connecting. Never leaves the tier: a
   * locality must not lose its traffic because its connections are
   * still being made.
   */
  pickReady(constraints?: PickConstraints): Endpoint | undefined {
    const b = this.balancer;
    const e = b.pick(constraints);
    const view = this.view;
    if (e === undefined || view === undefined) return e;
    const state = view.stateOf(e);
    if (state === READY) return e;
    if (state === IDLE) view.connect(e);
    const rank = b.tierOf(e).rank;
    const exclude = constraints?.exclude === undefined ? [e.id] : [...constraints.exclude, e.id];
    const others: PickConstraints = {
      exclude,
      avoidCluster: constraints?.avoidCluster,
      avoidClusters: constraints?.avoidClusters,
      hard: true,
    };
    for (let i = 0; i < 3; i++) {
      const f = b.pick(others);
      if (f === undefined || b.tierOf(f).rank !== rank) break;
      const s = view.stateOf(f);
      if (s === READY) return f;
      if (s === IDLE) view.connect(f);
      exclude.push(f.id);
    }
    return e;
  }
}

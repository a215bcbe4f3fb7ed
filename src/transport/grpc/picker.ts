/**
 * The picker the `meshlink` load balancer publishes: immutable (a new one
 * with every change of the endpoints, their health or a subchannel's
 * state), synchronous, and allocation-free on the common path.
 *
 * A call made through `mesh.grpc.interceptors` carries its leg in its
 * metadata's options (grpc-js hands the same options object to the
 * picker): the call engine has chosen the endpoint, and the picker only
 * finds its subchannel — waiting while it connects, failing the leg as a
 * connect failure when it cannot connect, so that the engine retries
 * elsewhere at once. The leg's first pick also binds its call to this
 * channel's service (an interceptor cannot see the channel's target).
 * Any other call is picked here through the router, preferring a READY
 * subchannel in the chosen tier, and reports its status to health.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import { MeshClosedError } from "../../errors.js";
import { noEndpointError } from "../../resilience/admission.js";
import type { ServiceBinding } from "./binding.js";
import { lastConnectError } from "./connections.js";
import {
  CONNECTING,
  type GrpcKit,
  IDLE,
  PICK_DROP,
  PICK_QUEUE,
  PICK_TRANSIENT_FAILURE,
  READY,
} from "./kit.js";
import { Status, statusOf } from "./status.js";
import type {
  GrpcMetadata,
  GrpcPickArgs,
  GrpcPicker,
  GrpcPickResult,
  GrpcSubchannel,
  GrpcStatusObject as StatusObject,
} from "./types.js";

/**
 * The key under which an attempt's metadata options carry its leg. A
 * registered symbol: another copy of meshlink's picker reads it too.
 */
export const kLeg = Symbol.for("meshlink.grpc.leg");

/** What the picker asks of a call's leg (one attempt's grpc-js call). */
export interface PickedLeg {
  /**
   * Where this leg goes: the endpoint the engine chose; undefined while the
   * call waits (discovery, binding); an Error when the leg must fail. The
   * first pick of a call's first leg binds the call to `binding`.
   */
  target(binding: ServiceBinding): Endpoint | undefined | Error;
  /**
   * The pick completed: from now the request may reach the wire (in
   * `metadata`, the copy grpc-js sends). False when the attempt was given up.
   */
  started(metadata: GrpcMetadata): boolean;
  /** Why the picker failed the leg (its status is then UNAVAILABLE). */
  failure: Error | undefined;
}

/** The picker's view of one endpoint's subchannel. */
export interface PickEntry {
  /** The endpoint. */
  readonly endpoint: Endpoint;
  /** The endpoint object its subchannel was made with (the key of its connection errors). */
  readonly connectsAs: Endpoint;
  /** Its subchannel; undefined when the egress rule denies it one. */
  readonly sub: GrpcSubchannel | undefined;
  /** The egress rule's refusal, when denied. */
  readonly denied: Error | undefined;
  /** The last connection error, while in TRANSIENT_FAILURE. */
  readonly error: string | undefined;
  /** The pick of an engine's attempt (health is the engine's). */
  readonly complete: GrpcPickResult;
  /** The pick of a call without the interceptors, which reports its status to health. */
  readonly tracked: GrpcPickResult;
}

/** What the picker needs of its load balancer. */
export interface PickerHost {
  /** Starts connecting an endpoint's idle subchannel, soon. */
  connect(endpoint: Endpoint): void;
  /** True when the balancer's endpoints changed after the entries were made (a refresh is on its way). */
  readonly behind: boolean;
  /** The mesh forgot the service: ask grpc-js to resolve again. */
  rebind(): void;
  /** A call without the interceptors met an endpoint it cannot connect to: health counts it, as the engine would. */
  connectFailed(endpoint: Endpoint, reason: string): void;
}

const QUEUE: GrpcPickResult = {
  pickResultType: PICK_QUEUE,
  subchannel: null,
  status: null,
  onCallStarted: null,
  onCallEnded: null,
};

/** A connection that could not be made: its errno code (`ECONNREFUSED`, …) is the reason recorded for the endpoint. */
export class ConnectFailedError extends Error {
  /** The errno code found in grpc-js's message, else `GRPC_CONNECT_FAILED`. */
  readonly code: string;

  constructor(endpoint: Endpoint, message: string | undefined) {
    super(`could not connect to ${endpoint.id}${message ? `: ${message}` : ""}`);
    this.name = "ConnectFailedError";
    this.code = /\b(E[A-Z]{3,})\b/.exec(message ?? "")?.[1] ?? "GRPC_CONNECT_FAILED";
  }
}

/** The immutable picker of one state of a `meshlink` load balancer. */
export class MeshPicker implements GrpcPicker {
  readonly #kit: GrpcKit;
  readonly #host: PickerHost;
  readonly #binding: ServiceBinding;
  readonly #entries: ReadonlyMap<string, PickEntry>;
  /** Discovery has not answered yet: calls without a leg wait. */
  readonly #queue: boolean;

  constructor(
    kit: GrpcKit,
    host: PickerHost,
    binding: ServiceBinding,
    entries: ReadonlyMap<string, PickEntry>,
    queue: boolean,
  ) {
    this.#kit = kit;
    this.#host = host;
    this.#binding = binding;
    this.#entries = entries;
    this.#queue = queue;
  }

  pick(args: GrpcPickArgs): GrpcPickResult {
    const leg = (args.metadata.getOptions() as { [kLeg]?: PickedLeg })[kLeg];
    return leg === undefined ? this.#pick() : this.#pinned(leg, args.metadata);
  }

  /** An engine attempt: the endpoint is chosen; find its subchannel. */
  #pinned(leg: PickedLeg, metadata: GrpcMetadata): GrpcPickResult {
    // The mesh forgot the service: this call goes on with the last plan, the next ones get a new binding.
    if (this.#binding.balancer.closed) this.#host.rebind();
    const target = leg.target(this.#binding);
    if (target === undefined) return QUEUE;
    if (target instanceof Error) return this.#drop(Status.UNAVAILABLE, target.message);
    const entry = this.#entries.get(target.id);
    let failure: Error;
    if (entry === undefined) {
      if (this.#host.behind) return QUEUE;
      failure = new ConnectFailedError(target, "the endpoint left discovery");
    } else if (entry.sub === undefined) {
      failure = entry.denied!;
    } else {
      const state = entry.sub.getConnectivityState();
      if (state === READY) {
        return leg.started(metadata) ? entry.complete : this.#drop(Status.CANCELLED, "attempt given up");
      }
      if (state === IDLE) this.#host.connect(target);
      if (state === IDLE || state === CONNECTING) return QUEUE;
      failure = lastConnectError(entry.connectsAs) ?? new ConnectFailedError(target, entry.error);
    }
    leg.failure = failure;
    return this.#drop(Status.UNAVAILABLE, failure.message);
  }

  /** A call without the interceptors: pick through the router. */
  #pick(): GrpcPickResult {
    const binding = this.#binding;
    const b = binding.balancer;
    b.watch.used = true;
    if (binding.host.closed) return this.#fail(new MeshClosedError());
    if (b.closed) this.#host.rebind();
    if (this.#queue) return QUEUE;
    const e = binding.pickReady();
    if (e === undefined) return this.#fail(noEndpointError(binding, binding.policy, []));
    const entry = this.#entries.get(e.id);
    if (entry === undefined) return QUEUE;
    if (entry.sub === undefined) return this.#fail(entry.denied!);
    const state = entry.sub.getConnectivityState();
    if (state === READY) return entry.tracked;
    if (state === IDLE) this.#host.connect(e);
    if (state === IDLE || state === CONNECTING) return QUEUE;
    const failure = lastConnectError(entry.connectsAs) ?? new ConnectFailedError(e, entry.error);
    this.#host.connectFailed(e, (failure as { code?: string }).code ?? failure.name);
    return this.#transientFailure(this.#status(Status.UNAVAILABLE, failure.message));
  }

  /** Fails a call without a leg: UNAVAILABLE as TRANSIENT_FAILURE (a call that waits for ready waits), else dropped. */
  #fail(err: Error): GrpcPickResult {
    const status = statusOf(err, this.#kit.metadata);
    if (status.code === Status.UNAVAILABLE) return this.#transientFailure(status);
    return { pickResultType: PICK_DROP, subchannel: null, status, onCallStarted: null, onCallEnded: null };
  }

  #transientFailure(status: StatusObject): GrpcPickResult {
    return {
      pickResultType: PICK_TRANSIENT_FAILURE,
      subchannel: null,
      status,
      onCallStarted: null,
      onCallEnded: null,
    };
  }

  #drop(code: number, details: string): GrpcPickResult {
    return {
      pickResultType: PICK_DROP,
      subchannel: null,
      status: this.#status(code, details),
      onCallStarted: null,
      onCallEnded: null,
    };
  }

  #status(code: number, details: string): StatusObject {
    return { code, details: `meshlink: ${details}`, metadata: this.#kit.metadata() };
  }
}

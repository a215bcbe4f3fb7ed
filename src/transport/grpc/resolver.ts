/**
 * The `meshlink` resolver for grpc-js. It resolves `meshlink://<mesh>/<service>:<port>`
 * through the mesh's registry: its first answer waits until discovery
 * settles (grpc-js queues the channel's calls meanwhile), and from then on
 * every change of the service's endpoints is pushed to the channel as it
 * happens — the registry's own update, not a re-resolution timer. Each
 * answer carries the service config that selects the `meshlink` load
 * balancer and, as an attribute, the channel's {@link ServiceBinding}.
 *
 * As grpc-js asks of resolvers: never an answer synchronously from the
 * constructor or from `updateResolution`, none after `destroy`.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import type { Subscription } from "../../subscription.js";
import { ServiceBinding } from "./binding.js";
import type { GrpcKit } from "./kit.js";
import { Status } from "./status.js";
import { findMesh, SCHEME, serviceOfPath } from "./target.js";
import type { GrpcAddressList, GrpcResolver, GrpcResolverListener, GrpcUri } from "./types.js";

/** The resolution attribute (and so channel option of the load balancer) that carries the binding. */
export const BINDING_ATTRIBUTE = "meshlink.binding";

/** grpc-js's `ResolverConstructor`. */
export interface ResolverConstructor {
  new (target: GrpcUri, listener: GrpcResolverListener): GrpcResolver;
  getDefaultAuthority(target: GrpcUri): string;
}
type ServiceConfigResult = NonNullable<Parameters<GrpcResolverListener>[2]>;

const SERVICE_CONFIG: ServiceConfigResult = {
  ok: true,
  value: { loadBalancingConfig: [{ [SCHEME]: {} }], methodConfig: [] },
};

function addressOf(e: Endpoint): GrpcAddressList {
  return { addresses: [{ host: e.address, port: e.port }] };
}

/** The resolver class of one grpc-js module. */
export function resolverClass(kit: GrpcKit): ResolverConstructor {
  return class MeshResolver implements GrpcResolver {
    readonly #meshId: string | undefined;
    readonly #path: string;
    readonly #listener: GrpcResolverListener;
    #binding: ServiceBinding | undefined;
    #subscription: Subscription | undefined;
    /** The endpoint array of the last answer; undefined before the first. */
    #reported: readonly Endpoint[] | undefined;
    /** Between `updateResolution` and `destroy`. */
    #live = false;
    #scheduled = false;
    #failure: string | undefined;

    constructor(target: GrpcUri, listener: GrpcResolverListener) {
      this.#meshId = target.authority;
      this.#path = target.path;
      this.#listener = listener;
    }

    /** grpc-js's `:authority` for the channel: the service as the target names it. */
    static getDefaultAuthority(target: GrpcUri): string {
      return target.path;
    }

    updateResolution(): void {
      this.#live = true;
      const bound = this.#bind();
      if (typeof bound === "string") {
        this.#failure = bound;
        this.#soon();
        return;
      }
      this.#failure = undefined;
      const watch = bound.balancer.watch;
      if (watch.isSettled || watch.closed) this.#soon();
      else void watch.settled().then(() => this.#soon());
    }

    destroy(): void {
      this.#live = false;
      this.#subscription?.dispose();
      this.#subscription = undefined;
      this.#binding = undefined;
      this.#reported = undefined;
    }

    /** The binding, made again when the mesh forgot the service; a string says why there is none. */
    #bind(): ServiceBinding | string {
      const current = this.#binding;
      if (current !== undefined && !current.stale && !current.host.closed) return current;
      const host = findMesh(this.#meshId);
      if (typeof host === "string") return host;
      if (host.closed) return `mesh ${host.id} is closed`;
      const name = serviceOfPath(this.#path);
      if (name === undefined) return `${JSON.stringify(this.#path)} is not <service>:<port>`;
      let binding: ServiceBinding;
      try {
        binding = new ServiceBinding(host, name);
      } catch (err) {
        return (err as Error)?.message ?? String(err);
      }
      this.#subscription?.dispose();
      this.#binding = binding;
      this.#reported = undefined;
      // After the first answer, every change of the endpoints goes to the channel at once.
      this.#subscription = binding.balancer.watch.onUpdate((snapshot) => {
        if (this.#live && this.#reported !== undefined && snapshot.endpoints !== this.#reported)
          this.#answer();
      });
      return binding;
    }

    #soon(): void {
      if (this.#scheduled) return;
      this.#scheduled = true;
      process.nextTick(() => {
        this.#scheduled = false;
        if (!this.#live) return;
        if (this.#failure === undefined) {
          this.#answer();
          return;
        }
        const error = {
          code: Status.UNAVAILABLE,
          details: `meshlink: ${this.#failure}`,
          metadata: kit.metadata(),
        };
        this.#listener({ ok: false, error }, {}, null, "");
      });
    }

    #answer(): void {
      const binding = this.#binding;
      if (binding === undefined || !this.#live) return;
      const endpoints = binding.balancer.watch.snapshot.endpoints;
      this.#reported = endpoints;
      this.#listener(
        { ok: true, value: endpoints.map(addressOf) },
        { [BINDING_ATTRIBUTE]: binding },
        SERVICE_CONFIG,
        "",
      );
    }
  };
}

/**
 * The application's `@grpc/grpc-js`, as meshlink uses it. grpc-js is an
 * optional peer dependency: nothing here imports it; the application hands
 * its own module to `mesh.grpc.register(grpc)` (or `register()` imports it
 * then), so that the resolver and balancer land in the grpc-js its clients
 * actually use, and an application without gRPC never loads it.
 *
 * Registration is per grpc-js module and idempotent (grpc-js-xds's
 * `register()`): the `meshlink` resolver and load-balancer type are
 * installed once; every mesh shares them.
 *
 * @module
 */

import { ConfigError } from "../../errors.js";
import { loadBalancerTypes } from "./balancer.js";
import { resolverClass } from "./resolver.js";
import { SCHEME } from "./target.js";
import type { GrpcMetadata, GrpcModuleShape } from "./types.js";

/**
 * The application's `@grpc/grpc-js` module, as `import * as grpc from "@grpc/grpc-js"`
 * gives it. Typed as any object: meshlink's declarations never name grpc-js
 * (an optional peer dependency); {@link MeshGrpc.register} checks it.
 */
export type GrpcModule = object;

/** grpc-js's connectivity states (its `connectivityState` enum, checked at registration). */
export const IDLE = 0;
/** Connecting. */
export const CONNECTING = 1;
/** Connected. */
export const READY = 2;
/** The last connection attempt failed; grpc-js backs off. */
export const TRANSIENT_FAILURE = 3;
/** Shut down. */
export const SHUTDOWN = 4;

/** grpc-js's pick results (`experimental.PickResultType`, checked at registration). */
export const PICK_COMPLETE = 0;
/** Wait for the next picker. */
export const PICK_QUEUE = 1;
/** Fail the call unless it waits for ready. */
export const PICK_TRANSIENT_FAILURE = 2;
/** Fail the call, whatever it waits for. */
export const PICK_DROP = 3;

/** What meshlink uses of one grpc-js module. */
export interface GrpcKit {
  /** The module. */
  readonly grpc: GrpcModuleShape;
  /** A new, empty `Metadata` of this module. */
  readonly metadata: () => GrpcMetadata;
}

const kits = new WeakMap<object, GrpcKit>();

/** The module behind what the application passed (an ESM namespace of CommonJS grpc-js has it as `default`). */
function moduleOf(grpc: unknown): GrpcModuleShape | undefined {
  const m = grpc as { default?: unknown } | null | undefined;
  const candidates = [m?.default, m];
  for (const c of candidates) {
    const g = c as GrpcModuleShape | undefined;
    if (
      typeof g?.experimental?.registerResolver === "function" &&
      typeof g.experimental.registerLoadBalancerType === "function" &&
      typeof g.Metadata === "function" &&
      typeof g.ChannelCredentials === "function"
    ) {
      return g;
    }
  }
  return undefined;
}

function checkConstants(g: GrpcModuleShape): string | undefined {
  const c = g.connectivityState;
  const p = g.experimental.PickResultType;
  if (
    c.IDLE !== IDLE ||
    c.CONNECTING !== CONNECTING ||
    c.READY !== READY ||
    c.TRANSIENT_FAILURE !== TRANSIENT_FAILURE ||
    c.SHUTDOWN !== SHUTDOWN ||
    p.COMPLETE !== PICK_COMPLETE ||
    p.QUEUE !== PICK_QUEUE ||
    p.TRANSIENT_FAILURE !== PICK_TRANSIENT_FAILURE ||
    p.DROP !== PICK_DROP
  ) {
    return "its connectivity states or pick results are numbered differently from @grpc/grpc-js 1.14";
  }
  return undefined;
}

/**
 * Installs the `meshlink` resolver and load-balancer type on a grpc-js
 * module, once, and returns what meshlink uses of it.
 *
 * @throws {@link ConfigError} when `grpc` is not a usable `@grpc/grpc-js` (1.14 or later).
 */
export function installOn(grpc: unknown): GrpcKit {
  const g = moduleOf(grpc);
  if (g === undefined) {
    throw new ConfigError(
      "mesh.grpc.register(grpc)",
      grpc,
      "not a @grpc/grpc-js module (import * as grpc from '@grpc/grpc-js')",
    );
  }
  let kit = kits.get(g);
  if (kit !== undefined) return kit;
  const problem = checkConstants(g);
  if (problem !== undefined) throw new ConfigError("mesh.grpc.register(grpc)", "@grpc/grpc-js", problem);
  const Metadata = g.Metadata;
  kit = { grpc: g, metadata: () => new Metadata() };
  const types = loadBalancerTypes(kit);
  g.experimental.registerLoadBalancerType(SCHEME, types.LoadBalancer, types.Config);
  g.experimental.registerResolver(SCHEME, resolverClass(kit));
  kits.set(g, kit);
  return kit;
}

/**
 * The backend-kind registry: the discovery kinds a config file may name
 * (`- static: …`, `- dns: …`), registered by name as grpc-js registers its
 * resolvers. A backend package registers its kind once; the config loader
 * looks kinds up here and never keeps a table of its own.
 *
 * @module
 */

import type { DiscoveryBackend } from "./discovery.js";

/**
 * Builds a backend from its config-file entry. `options` is the entry as
 * written (validate it: it is user input); `source` names the entry for
 * errors, e.g. `/etc/meshlink.yaml: discovery[1].dns`.
 */
export type DiscoveryKindFactory = (options: unknown, source: string) => DiscoveryBackend;

const kinds = new Map<string, DiscoveryKindFactory>();

const KIND = /^[a-z][a-z0-9-]*$/;

/**
 * Registers a discovery backend kind for config files. Registering the
 * same factory again is a no-op; another factory under a taken name throws.
 *
 * @example
 * ```ts
 * registerDiscoveryKind("etcd", (options, source) => etcdDiscovery(parseEtcdOptions(options, source)));
 * ```
 */
export function registerDiscoveryKind(kind: string, factory: DiscoveryKindFactory): void {
  if (!KIND.test(kind))
    throw new TypeError(`discovery kind ${JSON.stringify(kind)}: lowercase letters, digits and '-' only`);
  const existing = kinds.get(kind);
  if (existing !== undefined && existing !== factory) {
    throw new TypeError(`discovery kind ${JSON.stringify(kind)} is already registered`);
  }
  kinds.set(kind, factory);
}

/** The factory of a registered kind, or undefined. Only own entries: `constructor` is no kind. */
export function discoveryKind(kind: string): DiscoveryKindFactory | undefined {
  return kinds.get(kind);
}

/** Every registered kind, in registration order. */
export function discoveryKinds(): string[] {
  return [...kinds.keys()];
}

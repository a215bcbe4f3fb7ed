/**
 * Registers the discovery kinds that ship with meshlink. Called by
 * `createMesh`; idempotent, and nothing happens on import.
 *
 * @module
 */

import { consulDiscoveryKind } from "./consul/consul.js";
import { dnsDiscovery } from "./dns.js";
import { type DiscoveryKindFactory, registerDiscoveryKind } from "./kinds.js";
import { kubernetesDiscovery } from "./kubernetes/kubernetes.js";
import { staticDiscovery } from "./static.js";

/** @internal Registers the built-in kinds (static, dns, consul, kubernetes). Idempotent. */
export function registerBuiltinDiscoveryKinds(): void {
  registerDiscoveryKind("static", staticDiscovery as unknown as DiscoveryKindFactory);
  registerDiscoveryKind("dns", dnsDiscovery as unknown as DiscoveryKindFactory);
  registerDiscoveryKind("kubernetes", kubernetesDiscovery as unknown as DiscoveryKindFactory);
  registerDiscoveryKind("consul", consulDiscoveryKind);
}

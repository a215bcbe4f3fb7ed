import type { ServiceName } from "../../src/discovery/names.js";
import { Registry } from "../../src/discovery/registry.js";
import { type StaticEndpoint, staticDiscovery } from "../../src/discovery/static.js";
import { CallPolicy, type CallPolicyOptions } from "../../src/resilience/policy.js";
import { HealthTracker } from "../../src/routing/health.js";
import { Balancer } from "../../src/routing/router.js";
import { TierMap } from "../../src/routing/tiers.js";
import type { HttpRoutes } from "../../src/transport/http/routes.js";

/** The HTTP transport's view of a mesh, wired as `createMesh` wires it, for dispatchers and interceptors built by hand. */
export function meshRoutes(
  services: Record<string, StaticEndpoint[]>,
  options: { region?: string; zone?: string; failover?: string[]; policy?: CallPolicyOptions } = {},
): HttpRoutes & { close(): Promise<void> } {
  const registry = new Registry([staticDiscovery({ services })]);
  const health = new HealthTracker();
  const tiers = new TierMap({
    region: options.region ?? "east",
    zone: options.zone ?? "east-a",
    failover: options.failover ?? ["west"],
  });
  const balancers = new Map<string, Balancer>();
  const balancer = (name: ServiceName): Balancer => {
    let b = balancers.get(name.id);
    if (b === undefined) {
      b = new Balancer(registry.watch(name), tiers, health);
      balancers.set(name.id, b);
    }
    return b;
  };
  return {
    policy: new CallPolicy(options.policy),
    get closed() {
      return registry.closed;
    },
    balancerFor: (name, explicit) => (explicit || registry.claims(name) ? balancer(name) : undefined),
    close: () => registry.close(),
  };
}

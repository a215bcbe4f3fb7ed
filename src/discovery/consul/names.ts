/**
 * Which Consul service, datacenters and tags a mesh name stands for:
 *
 * - `svc.service.consul`: service `svc` in every configured datacenter;
 * - `svc.service.<dc>.consul`: in datacenter `<dc>` only (one not
 *   configured is asked too, with an unknown region, as Consul DNS would);
 * - `svc.ns` and `svc.ns.svc.cluster.local`: the service the `serviceName`
 *   template makes of them (by default `svc`), in every datacenter;
 * - a named port on a Consul name is a tag, as in Consul DNS's
 *   `<tag>.<svc>.service.consul`.
 *
 * Multi-Cluster Services names (`….svc.clusterset.local`) are not Consul's.
 *
 * @module
 */

import type { ServiceName } from "../names.js";
import type { ConsulSettings, ResolvedDatacenter } from "./settings.js";

/** What a watch of one mesh name asks Consul. */
export interface ServicePlan {
  /** The Consul service name. */
  readonly service: string;
  /** The datacenters to ask. */
  readonly datacenters: readonly ResolvedDatacenter[];
  /** `tag` filters. */
  readonly tags: readonly string[];
}

/** Fills a `{service}`/`{namespace}` template. */
export function applyServiceTemplate(template: string, service: string, namespace: string): string {
  return template.replace(/\{(service|namespace)\}/g, (_, field: string) =>
    field === "service" ? service : namespace,
  );
}

/** The plan for a name, or undefined when this backend does not serve such names. @internal */
export function planService(name: ServiceName, settings: ConsulSettings): ServicePlan | undefined {
  switch (name.kind) {
    case "consul": {
      let datacenters = settings.datacenters;
      if (name.datacenter !== undefined) {
        const dc = name.datacenter;
        const known = settings.datacenters.find((d) => d.name === dc);
        datacenters = [
          known ?? {
            name: dc,
            label: dc,
            region: "",
            zone: "",
            cluster: dc,
            wan: dc !== settings.localDatacenter,
          },
        ];
      }
      const tags = name.portName === undefined ? settings.tags : [...settings.tags, name.portName];
      return { service: name.service, datacenters, tags };
    }
    case "kubernetes":
      if (settings.serviceName === false) return undefined;
      return {
        service: applyServiceTemplate(settings.serviceName, name.service, name.namespace ?? ""),
        datacenters: settings.datacenters,
        tags: settings.tags,
      };
    default:
      return undefined;
  }
}

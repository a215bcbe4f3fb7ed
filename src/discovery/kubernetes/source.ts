/**
 * What one cluster says about one Service: its EndpointSlices
 * (`labelSelector=kubernetes.io/service-name=<svc>`) and the Service itself
 * (`fieldSelector=metadata.name=<svc>`), each a list + watch. Shared by
 * every watch of the service in that cluster (`web.default:80`,
 * `web.default:http`, the clusterset name), and stopped when the last one ends.
 *
 * @module
 */

import type { ApiClient } from "./client.js";
import type { ServiceKnowledge } from "./mapping.js";
import { Reflector } from "./reflector.js";
import { ENDPOINT_SLICES, type EndpointSlice, SERVICES, type Service } from "./schemas.js";

/** Timing shared by every reflector of a backend. */
export interface SourceSettings {
  readonly timeoutSeconds: number;
  readonly pageSize: number;
  readonly backoff: { readonly base: number; readonly max: number };
  readonly random: () => number;
  readonly now: () => number;
}

/** The EndpointSlices and the Service of one service in one cluster. */
export class ServiceSource {
  /** The slices. */
  readonly slices: Reflector<EndpointSlice>;
  /** The Service (zero or one object). */
  readonly service: Reflector<Service>;
  readonly #listeners = new Set<() => void>();
  readonly #abort = new AbortController();
  readonly #onEmpty: () => void;

  /**
   * @param onServiceChange Called when the Service appears or goes (for `claims()`).
   * @param onEmpty Called once the last subscriber has left and the source has stopped.
   */
  constructor(
    client: ApiClient,
    namespace: string,
    name: string,
    settings: SourceSettings,
    onServiceChange: (present: boolean) => void,
    onEmpty: () => void,
  ) {
    this.#onEmpty = onEmpty;
    const notify = () => {
      for (const listener of this.#listeners) listener();
    };
    const ns = encodeURIComponent(namespace);
    this.slices = new Reflector<EndpointSlice>({
      ...settings,
      client,
      path: `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`,
      selector: { labelSelector: `kubernetes.io/service-name=${name}` },
      resource: ENDPOINT_SLICES,
      onChange: notify,
    });
    let present = false;
    this.service = new Reflector<Service>({
      ...settings,
      client,
      path: `/api/v1/namespaces/${ns}/services`,
      selector: { fieldSelector: `metadata.name=${name}` },
      resource: SERVICES,
      onChange: () => {
        const now = this.service.items.length > 0;
        if (now !== present) {
          present = now;
          onServiceChange(now);
        }
        notify();
      },
    });
  }

  /** What is known of the Service. */
  get knowledge(): ServiceKnowledge {
    if (!this.service.synced) return { state: "unknown" };
    const service = this.service.items[0];
    return service === undefined ? { state: "absent" } : { state: "known", service };
  }

  /** Subscribes to changes, starting the watches on the first subscriber; returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    const first = this.#listeners.size === 0 && !this.#abort.signal.aborted;
    this.#listeners.add(listener);
    if (first) {
      void this.slices.run(this.#abort.signal);
      void this.service.run(this.#abort.signal);
    }
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      this.stop();
    };
  }

  /** Stops both watches. Idempotent. */
  stop(): void {
    if (this.#abort.signal.aborted) return;
    this.#listeners.clear();
    this.#abort.abort();
    this.#onEmpty();
  }
}

import { type ConsulBackend, createConsulBackend } from "../../src/discovery/consul/consul.js";
import type { QueryDependencies } from "../../src/discovery/consul/query.js";
import type { DiscoveryUpdate } from "../../src/discovery/discovery.js";
import { parseServiceName } from "../../src/discovery/names.js";
import type { ConsulDiscoveryOptions } from "../../src/index.js";

export { until } from "./watch.js";

/** Two datacenters, east first (the agent's own). */
export const DATACENTERS = [
  { name: "dc-east", region: "us-east-1" },
  { name: "dc-west", region: "us-west-2" },
];

/** A backend on `url` with no environment, quick back-off and no rate limit unless given. */
export function consulBackend(
  url: string,
  options: Partial<ConsulDiscoveryOptions> = {},
  deps: Partial<QueryDependencies> = {},
): ConsulBackend {
  return createConsulBackend(
    {
      address: url,
      datacenters: DATACENTERS,
      backoff: { base: 5, max: 20 },
      rateLimit: { interval: 0 },
      env: {},
      ...options,
    } as Parameters<typeof createConsulBackend>[0],
    "",
    deps,
  );
}

/** Iterates one watch of a backend. */
export function watchOf(backend: ConsulBackend, name: string, port?: number | string) {
  const abort = new AbortController();
  const it = backend.watch(parseServiceName(name, port), { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    abort,
    it,
    async next(): Promise<DiscoveryUpdate> {
      const r = await it.next();
      if (r.done) throw new Error("the watch ended");
      return r.value;
    },
  };
}

/** Resolves with the first snapshot of `watch` for which `pred` holds (now or later). */
/** The ids of a bound update's endpoints. */
export function ids(update: DiscoveryUpdate): string[] {
  return update.kind === "bound" ? update.endpoints.map((e) => e.id) : [];
}

/**
 * Delays the test controls: each asked delay is recorded; the first `free`
 * resolve at once, the rest wait for `release()` (or the loop's abort).
 */
export function manualDelays(free = 0) {
  const asked: number[] = [];
  const blocked: (() => void)[] = [];
  const waiting: { n: number; resolve: () => void }[] = [];
  return {
    asked,
    delay(ms: number, signal: AbortSignal): Promise<void> {
      asked.push(ms);
      for (const w of [...waiting]) {
        if (asked.length >= w.n) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve();
        }
      }
      if (asked.length <= free) return Promise.resolve();
      return new Promise<void>((resolve) => {
        blocked.push(resolve);
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    },
    /** Resolves once `n` delays were asked for. */
    asks(n: number): Promise<void> {
      if (asked.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiting.push({ n, resolve }));
    },
    /** Ends every delay waiting now. */
    release(): void {
      for (const r of blocked.splice(0)) r();
    },
  };
}

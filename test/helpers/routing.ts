import { createEndpoint, type Endpoint, type EndpointInit } from "../../src/discovery/endpoint.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { ServiceWatch } from "../../src/discovery/registry.js";

/** A clock the test moves by hand, in ms. */
export interface ManualClock {
  (): number;
  /** Moves the clock forward. */
  advance(ms: number): void;
  /** Sets the clock. */
  set(ms: number): void;
}

export function manualClock(start = 1_000_000): ManualClock {
  let t = start;
  const clock = (() => t) as ManualClock;
  clock.advance = (ms) => {
    t += ms;
  };
  clock.set = (ms) => {
    t = ms;
  };
  return clock;
}

/** A deterministic random source (mulberry32), so that tests of random picks are repeatable. */
export function seededRandom(seed = 42): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Builds endpoints: `n` addresses in one cluster and locality. */
export function endpoints(
  n: number,
  init: Partial<EndpointInit> & { cluster: string; region?: string; zone?: string },
  first = 1,
): Endpoint[] {
  const out: Endpoint[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      createEndpoint({
        address: `10.${first}.${Math.floor(i / 250)}.${(i % 250) + 1}`,
        port: 8080,
        backend: "test",
        ...init,
      }),
    );
  }
  return out;
}

/** A service watch whose endpoints the test sets synchronously. */
export function fixedWatch(eps: readonly Endpoint[]): ServiceWatch & { set(eps: readonly Endpoint[]): void } {
  const watch = new ServiceWatch(
    parseServiceName("api.default"),
    [{ name: "test", watch: () => (async function* () {})() }],
    {
      settleTimeout: 1000,
      now: Date.now,
    },
  ) as ServiceWatch & { set(eps: readonly Endpoint[]): void };
  watch.set = (list) => watch.apply(0, { kind: "bound", endpoints: [...list] });
  watch.set(eps);
  return watch;
}

/** Counts picks per cluster over `n` picks. */
export function countBy<T>(
  n: number,
  pick: () => T | undefined,
  key: (t: T) => string,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const t = pick();
    const k = t === undefined ? "none" : key(t);
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

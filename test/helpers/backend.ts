import type { DiscoveryBackend, DiscoveryUpdate } from "../../src/discovery/discovery.js";
import type { ServiceName } from "../../src/discovery/names.js";

/** A discovery backend whose updates the test pushes, to drive the registry through every outcome. */
export interface ScriptedBackend extends DiscoveryBackend {
  push(update: DiscoveryUpdate | unknown): void;
  fail(error: Error): void;
  /** Services watched, and how many watches are still running. */
  readonly watched: ServiceName[];
  readonly active: number;
}

export function scriptedBackend(name: string): ScriptedBackend {
  const queue: { update?: unknown; error?: Error }[] = [];
  const wakers = new Set<() => void>();
  const watched: ServiceName[] = [];
  let active = 0;
  const wake = () => {
    for (const w of [...wakers]) w();
  };
  return {
    name,
    watched,
    get active() {
      return active;
    },
    push(update) {
      queue.push({ update });
      wake();
    },
    fail(error) {
      queue.push({ error });
      wake();
    },
    async *watch(service, { signal }) {
      watched.push(service);
      active++;
      try {
        while (!signal.aborted) {
          const next = queue.shift();
          if (next?.error) throw next.error;
          if (next) {
            yield next.update as DiscoveryUpdate;
            continue;
          }
          await new Promise<void>((resolve) => {
            const done = () => {
              wakers.delete(done);
              signal.removeEventListener("abort", done);
              resolve();
            };
            wakers.add(done);
            signal.addEventListener("abort", done);
          });
        }
      } finally {
        active--;
      }
    },
  };
}

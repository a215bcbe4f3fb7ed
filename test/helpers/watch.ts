/**
 * Waiting on a registry watch in tests: the first snapshot (now or later)
 * that satisfies a predicate, so that a test awaits the event it expects
 * instead of sleeping.
 */

import type { ServiceSnapshot, ServiceWatch } from "../../src/discovery/registry.js";

/** Resolves with the first snapshot of `watch` for which `pred` holds (now or later). */
export function until(watch: ServiceWatch, pred: (s: ServiceSnapshot) => boolean): Promise<ServiceSnapshot> {
  if (pred(watch.snapshot)) return Promise.resolve(watch.snapshot);
  return new Promise((resolve) => {
    const sub = watch.onUpdate((s) => {
      if (pred(s)) {
        sub.dispose();
        resolve(s);
      }
    });
  });
}

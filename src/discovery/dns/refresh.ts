/**
 * The per-cluster refresh loop of one watch: ask, record the outcome, sleep
 * until the answer's TTL (or the negative TTL, or a back-off) runs out, ask
 * again — until the watch's signal aborts, which cancels the lookup in
 * flight and the sleep at once.
 *
 * @module
 */

import type { ClusterStatus } from "../discovery.js";
import type { Endpoint } from "../endpoint.js";
import type { DnsSettings, ResolvedCluster } from "./options.js";
import { type DnsQueryPlan, resolvePlan } from "./plan.js";
import { ABSENT_CODES, DnsQueryError, type DnsTransport } from "./transport.js";

/** One cluster's state inside one watch. */
export interface ClusterState {
  readonly cluster: ResolvedCluster;
  status: "pending" | "bound" | "not-found" | "failed";
  /** The last good endpoints (kept while failing). */
  endpoints: readonly Endpoint[];
  updatedAt: number | undefined;
  error: DnsQueryError | undefined;
  failures: number;
}

/** A fresh state for a cluster nobody has asked yet. */
export function pendingState(cluster: ResolvedCluster): ClusterState {
  return { cluster, status: "pending", endpoints: [], updatedAt: undefined, error: undefined, failures: 0 };
}

/** A failing cluster's error, naming the cluster and its servers. */
export function describeError(state: ClusterState): string {
  return `${state.error?.message ?? "unknown error"} (cluster ${state.cluster.name}, ${state.cluster.where})`;
}

/** A cluster's state for `describe()`. */
export function statusOf(s: ClusterState): ClusterStatus {
  return Object.freeze({
    cluster: s.cluster.name,
    fresh: s.status === "bound" || s.status === "not-found",
    updatedAt: s.updatedAt,
    error: s.status === "failed" ? describeError(s) : undefined,
  });
}

/** Live timers and lookups of a backend, for its `stats()`. */
export interface RefreshCounters {
  timers: number;
  lookups: number;
}

/** What a refresh loop needs from its watch. */
export interface RefreshContext {
  readonly settings: DnsSettings;
  readonly now: () => number;
  readonly random: () => number;
  /** The watch's signal: aborting it ends the loop at once. */
  readonly signal: AbortSignal;
  /** Called after each outcome (the state has changed or been confirmed). */
  readonly notify: (state: ClusterState) => void;
  readonly counters: RefreshCounters;
}

/** How long until the next lookup of a cluster, after its latest outcome. */
export function delayAfter(
  settings: DnsSettings,
  random: () => number,
  state: ClusterState,
  answerTtlMs: number | undefined,
): number {
  const clamp = (ms: number) => Math.min(settings.maxTtl, Math.max(settings.minTtl, ms));
  const jittered = (ms: number) => Math.round(ms * (1 - settings.jitter * random()));
  switch (state.status) {
    case "bound":
      return jittered(clamp(answerTtlMs ?? settings.defaultTtl));
    case "not-found": {
      const server = answerTtlMs ?? settings.negativeTtl;
      return jittered(Math.max(settings.minTtl, Math.min(settings.negativeTtl, server)));
    }
    default:
      // Back off from minTtl, doubling up to maxTtl, while the cluster fails.
      return jittered(clamp(settings.minTtl * 2 ** Math.min(state.failures - 1, 20)));
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer is released either way. */
function sleep(ms: number, signal: AbortSignal, counters: RefreshCounters): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      counters.timers--;
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    // A background refresh should not keep a process alive by itself.
    timer.unref?.();
    counters.timers++;
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Refreshes one cluster's answer for `plan` into `state` until
 * `ctx.signal` aborts. Never rejects: every failure is recorded in the
 * state (a loop nobody awaits must not make an unhandled rejection).
 */
export async function refreshCluster(
  ctx: RefreshContext,
  state: ClusterState,
  transport: DnsTransport,
  plan: DnsQueryPlan,
): Promise<void> {
  const { settings, signal, counters } = ctx;
  while (!signal.aborted) {
    let answerTtlMs: number | undefined;
    counters.lookups++;
    try {
      const answer = await resolvePlan(settings, state.cluster, transport, plan, signal);
      if (signal.aborted) return;
      answerTtlMs = answer.ttlMs;
      state.status = answer.endpoints.length > 0 ? "bound" : "not-found";
      state.endpoints = answer.endpoints;
      state.updatedAt = ctx.now();
      state.error = undefined;
      state.failures = 0;
    } catch (err) {
      if (signal.aborted) return;
      const e =
        err instanceof DnsQueryError
          ? err
          : new DnsQueryError("EUNKNOWN", (err as Error)?.message ?? String(err), { cause: err });
      if (ABSENT_CODES.has(e.code)) {
        answerTtlMs = e.ttl === undefined ? undefined : e.ttl * 1000;
        state.status = "not-found";
        state.endpoints = [];
        state.updatedAt = ctx.now();
        state.error = undefined;
        state.failures = 0;
      } else {
        state.status = "failed";
        state.error = e;
        state.failures++;
      }
    } finally {
      counters.lookups--;
    }
    ctx.notify(state);
    await sleep(delayAfter(settings, ctx.random, state, answerTtlMs), signal, counters);
  }
}

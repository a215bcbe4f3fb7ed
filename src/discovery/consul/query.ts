/**
 * One blocking-query loop per (Consul service, datacenter, tags), shared
 * by every watch that needs it, run as Consul's "Blocking Queries"
 * documentation prescribes:
 *
 * - the first query (and the first after a failure) has no `index` and
 *   answers at once; each next one sends the last `X-Consul-Index` with
 *   `wait` and is held by Consul until something changes or the wait ends;
 * - an index lower than the last one (a snapshot restore, a new cluster
 *   after an agent restart) resets the loop: the next query has index 0;
 * - an index that is not greater than 0 is a Consul bug that would make
 *   the next query answer at once, forever; the next query uses index 1,
 *   which the docs say is always safe;
 * - when answers keep coming without a change of endpoints (the index
 *   moved for something this backend does not read, or the wait ran out),
 *   the loop is rate-limited by a token bucket (burst 2 by default, as the
 *   docs suggest), so that churn degrades into polling instead of a busy
 *   loop; a change of endpoints never waits;
 * - a failed query is retried after a jittered exponential back-off.
 *
 * @module
 */

import { equalJitterBackoff } from "../../clock.js";
import type { Endpoint } from "../endpoint.js";
import { type ConsulClient, ConsulQueryError } from "./client.js";
import { endpointSetKey, toEndpoints } from "./payload.js";
import type { ConsulSettings, ResolvedDatacenter } from "./settings.js";

/** Replaceable parts, for tests. */
export interface QueryDependencies {
  /** Clock, ms; default `Date.now`. */
  readonly now: () => number;
  /** Uniform in [0, 1); default `Math.random`. */
  readonly random: () => number;
  /** Waits `ms` or until `signal` aborts, whichever is first; never rejects. */
  readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** What one query loop asks. */
export interface QueryTarget {
  /** The Consul service name. */
  readonly service: string;
  /** The datacenter. */
  readonly datacenter: ResolvedDatacenter;
  /** Instances must carry every one of these tags. */
  readonly tags: readonly string[];
}

/** The state of a loop: its last outcome. */
export type QueryStatus = "pending" | "bound" | "not-found" | "failed";

/** A token bucket that only answers changes-free answers charge. */
class RateLimiter {
  #tokens: number;
  #at: number;
  readonly #burst: number;
  readonly #interval: number;
  readonly #now: () => number;

  constructor(burst: number, interval: number, now: () => number) {
    this.#burst = burst;
    this.#interval = interval;
    this.#now = now;
    this.#tokens = burst;
    this.#at = now();
  }

  #refill(): void {
    const now = this.#now();
    if (this.#interval > 0)
      this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) / this.#interval);
    this.#at = now;
  }

  /** Takes a token for an answer that changed nothing. */
  charge(): void {
    if (this.#interval <= 0) return;
    this.#refill();
    this.#tokens -= 1;
  }

  /** How long to wait before the next query: 0 while a token is left. */
  wait(): number {
    if (this.#interval <= 0) return 0;
    this.#refill();
    return this.#tokens >= 1 ? 0 : Math.ceil((1 - this.#tokens) * this.#interval);
  }
}

/**
 * One blocking-query loop. Starts when the first listener subscribes, stops
 * when the last one leaves (or the backend closes); its state is read by
 * every watch that subscribed.
 */
export class DatacenterQuery {
  /** What is asked. */
  readonly target: QueryTarget;
  /** The last outcome. */
  status: QueryStatus = "pending";
  /** The last good endpoints (kept while failing). */
  endpoints: readonly Endpoint[] = [];
  /** When the datacenter last answered (epoch ms). */
  updatedAt: number | undefined;
  /** The last error, while failing. */
  error: ConsulQueryError | undefined;
  /** Failures in a row. */
  failures = 0;
  /** The datacenter's name as its entries say (`Node.Datacenter`), for an unnamed datacenter. */
  seenDatacenter: string | undefined;

  readonly #client: ConsulClient;
  readonly #settings: ConsulSettings;
  readonly #deps: QueryDependencies;
  readonly #listeners = new Set<() => void>();
  readonly #stop = new AbortController();
  readonly #limiter: RateLimiter;
  #index = 0;
  #key = "";
  #started = false;

  constructor(target: QueryTarget, client: ConsulClient, settings: ConsulSettings, deps: QueryDependencies) {
    this.target = target;
    this.#client = client;
    this.#settings = settings;
    this.#deps = deps;
    this.#limiter = new RateLimiter(settings.rateBurst, settings.rateInterval, deps.now);
  }

  /** The datacenter's name for `describe()` and errors. */
  get label(): string {
    return this.target.datacenter.name ?? this.seenDatacenter ?? this.target.datacenter.label;
  }

  /** Listeners subscribed now. */
  get listeners(): number {
    return this.#listeners.size;
  }

  /** Calls `listener` after every change of state; starts the loop on first use. Returns the unsubscribe function. */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    if (!this.#started) {
      this.#started = true;
      void this.#run();
    }
    return () => this.#listeners.delete(listener);
  }

  /** Stops the loop and aborts its query in flight. Idempotent. */
  stop(): void {
    this.#stop.abort();
  }

  #emit(): void {
    for (const listener of [...this.#listeners]) listener();
  }

  #fail(err: unknown): void {
    this.error =
      err instanceof ConsulQueryError
        ? err
        : new ConsulQueryError("ECONNECT", (err as Error)?.message ?? String(err), { cause: err });
    this.status = "failed";
    this.failures++;
    // After a failure, ask afresh: whatever index the agent had may be gone
    // (a restart), and a fresh query shows the current set at once.
    this.#index = 0;
    this.#emit();
  }

  /** Jittered exponential back-off after this many failures in a row. */
  #backoff(): number {
    const s = this.#settings;
    return equalJitterBackoff(this.failures, s.backoffBase, s.backoffMax, this.#deps.random);
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    const { service, datacenter, tags } = this.target;
    const s = this.#settings;
    // Nothing may escape this loop: nobody awaits it.
    try {
      while (!signal.aborted) {
        const pause = this.#limiter.wait();
        if (pause > 0) {
          await this.#deps.delay(pause, signal);
          if (signal.aborted) return;
        }
        const previous = this.#index;
        let answer: Awaited<ReturnType<ConsulClient["health"]>>;
        try {
          answer = await this.#client.health(
            { service, datacenter: datacenter.name, tags, index: previous },
            signal,
          );
        } catch (err) {
          if (signal.aborted) return;
          this.#fail(err);
          await this.#deps.delay(this.#backoff(), signal);
          continue;
        }
        if (signal.aborted) return;

        if (answer.index < previous) this.#index = 0;
        else if (answer.index <= 0) this.#index = 1;
        else this.#index = answer.index;

        if (answer.filteredByAcls && answer.entries.length === 0) {
          this.#fail(
            new ConsulQueryError(
              "EACL",
              `every instance was filtered out by ACLs (X-Consul-Results-Filtered-By-ACLs) from ${this.#client.where}: the token needs service:read and node:read`,
            ),
          );
          await this.#deps.delay(this.#backoff(), signal);
          continue;
        }

        this.seenDatacenter ??= answer.entries[0]?.Node.Datacenter || undefined;
        const endpoints = toEndpoints(answer.entries, {
          datacenter,
          passingOnly: s.passingOnly,
          zoneKeys: s.zoneKeys,
          translated: answer.translated,
          backend: s.name,
        });
        const key = endpointSetKey(endpoints);
        const status = endpoints.length > 0 ? "bound" : "not-found";
        const changed = key !== this.#key || status !== this.status;
        this.updatedAt = this.#deps.now();
        this.failures = 0;
        this.error = undefined;
        if (changed) {
          this.#key = key;
          this.endpoints = Object.freeze(endpoints);
          this.status = status;
          this.#emit();
        } else {
          this.#limiter.charge();
        }
      }
    } catch (err) {
      // A bug, not a Consul failure; still a value, never an unhandled rejection.
      if (!signal.aborted) this.#fail(err);
    }
  }
}

/** Keeps one {@link DatacenterQuery} per target while someone uses it. */
export class QueryPool {
  readonly #queries = new Map<string, DatacenterQuery>();
  readonly #client: ConsulClient;
  readonly #settings: ConsulSettings;
  readonly #deps: QueryDependencies;

  constructor(client: ConsulClient, settings: ConsulSettings, deps: QueryDependencies) {
    this.#client = client;
    this.#settings = settings;
    this.#deps = deps;
  }

  /** Loops running now. */
  get size(): number {
    return this.#queries.size;
  }

  /** Subscribes to the loop of `target`, starting it if needed; returns it and the release function. */
  acquire(target: QueryTarget, listener: () => void): { query: DatacenterQuery; release: () => void } {
    const dc = target.datacenter;
    const key = JSON.stringify([
      dc.name,
      dc.region,
      dc.zone,
      dc.cluster,
      dc.wan,
      target.service,
      target.tags,
    ]);
    let query = this.#queries.get(key);
    if (query === undefined) {
      query = new DatacenterQuery(target, this.#client, this.#settings, this.#deps);
      this.#queries.set(key, query);
    }
    const q = query;
    const unsubscribe = q.subscribe(listener);
    let released = false;
    return {
      query: q,
      release: () => {
        if (released) return;
        released = true;
        unsubscribe();
        if (q.listeners === 0) {
          q.stop();
          if (this.#queries.get(key) === q) this.#queries.delete(key);
        }
      },
    };
  }

  /** Stops every loop. */
  close(): void {
    for (const q of this.#queries.values()) q.stop();
    this.#queries.clear();
  }
}

/**
 * List + watch of one kind of object under one selector, kept in a local
 * store (client-go's Reflector): list, then watch from the list's
 * `resourceVersion`; after a watch ends normally, watch again from the last
 * version seen (an event's or a BOOKMARK's); on `410 Gone` (as a status or
 * an ERROR event) list again — the store keeps every object until the new
 * list replaces it, so the endpoints never drop in between; on any other
 * failure keep the store, record the error, and retry after a jittered
 * exponential back-off.
 *
 * @module
 */

import { equalJitterBackoff, sleep } from "../../clock.js";
import { describeIssue } from "../../config/validate.js";
import { KubernetesError } from "../../errors.js";
import { type ApiClient, statusError } from "./client.js";
import { listSchema, type ResourceKind, statusSchema, type WatchEvent } from "./schemas.js";

/** The parts of an object a reflector reads. */
export interface KubeObject {
  readonly kind?: string | undefined;
  readonly metadata: { readonly name?: string | undefined; readonly resourceVersion?: string | undefined };
}

/** Options of a {@link Reflector}. */
export interface ReflectorOptions<T> {
  /** The cluster's client. */
  readonly client: ApiClient;
  /** The collection's path, e.g. `/apis/discovery.k8s.io/v1/namespaces/default/endpointslices`. */
  readonly path: string;
  /** `labelSelector` and/or `fieldSelector`. */
  readonly selector: Readonly<Record<string, string>>;
  /** What is listed. */
  readonly resource: ResourceKind<T>;
  /** A watch's `timeoutSeconds`. */
  readonly timeoutSeconds: number;
  /** A list's `limit`. */
  readonly pageSize: number;
  /** Back-off after failures: first delay and ceiling, ms. */
  readonly backoff: { readonly base: number; readonly max: number };
  /** Uniform in [0, 1). */
  readonly random: () => number;
  /** Clock, ms. */
  readonly now: () => number;
  /** Called (synchronously) whenever the store, `synced` or `error` changes. */
  readonly onChange: () => void;
}

/** One list + watch loop and its store. */
export class Reflector<T extends KubeObject> {
  readonly #o: ReflectorOptions<T>;
  readonly #store = new Map<string, T>();
  #items: readonly T[] | undefined;
  #rv: string | undefined;
  #synced = false;
  #error: KubernetesError | undefined;
  #updatedAt: number | undefined;

  constructor(options: ReflectorOptions<T>) {
    this.#o = options;
  }

  /** True once a list has succeeded. */
  get synced(): boolean {
    return this.#synced;
  }

  /** The last failure, until the next list or watch succeeds. */
  get error(): KubernetesError | undefined {
    return this.#error;
  }

  /** When the server last answered (epoch ms). */
  get updatedAt(): number | undefined {
    return this.#updatedAt;
  }

  /** The resource version the next watch starts from (for tests and `describe`). */
  get resourceVersion(): string | undefined {
    return this.#rv;
  }

  /** The objects in the store (last-known-good while failing). */
  get items(): readonly T[] {
    this.#items ??= Object.freeze([...this.#store.values()]);
    return this.#items;
  }

  #changed(): void {
    this.#items = undefined;
  }

  /** Tells the owner; a listener's throw must not end the loop (nothing may escape `run`). */
  #notify(): void {
    try {
      this.#o.onChange();
    } catch {
      // the owner's listeners are ours and do not throw; this is a guard
    }
  }

  #fail(problem: KubernetesError["reason"], message: string): never {
    throw new KubernetesError(this.#o.client.cluster, problem, `${this.#o.path}: ${message}`);
  }

  /** Parses one object; `inList` objects carry no kind (the list does). */
  #object(raw: unknown, where: string): T {
    const kind = (raw as { kind?: unknown } | null)?.kind;
    if (kind !== undefined && kind !== this.#o.resource.kind) {
      this.#fail("wrong-kind", `${where} is a ${String(kind)}, not a ${this.#o.resource.kind}`);
    }
    const parsed = this.#o.resource.schema.safeParse(raw);
    if (!parsed.success)
      this.#fail(
        "bad-payload",
        `${where} is not a valid ${this.#o.resource.kind}: ${describeIssue(parsed.error)}`,
      );
    const object = parsed.data as T;
    if (!object.metadata.name) this.#fail("bad-payload", `${where} has no metadata.name`);
    return object;
  }

  /** Lists every page; replaces the store only once the whole list is in. */
  async #list(signal: AbortSignal, consistent: boolean): Promise<void> {
    const o = this.#o;
    const items = new Map<string, T>();
    let cont: string | undefined;
    let rv: string | undefined;
    let restarted = false;
    for (;;) {
      const query: Record<string, string> = { ...o.selector, limit: String(o.pageSize) };
      // The first list may come from the API server's watch cache (client-go's
      // resourceVersion=0); after a 410 the list must be current.
      if (cont !== undefined) query.continue = cont;
      else if (!consistent) query.resourceVersion = "0";
      let data: unknown;
      try {
        data = await o.client.get(o.path, query, signal);
      } catch (err) {
        // A continue token expires like a watch does: start the list over, once.
        if (err instanceof KubernetesError && err.reason === "expired" && cont !== undefined && !restarted) {
          restarted = true;
          items.clear();
          cont = undefined;
          consistent = true;
          continue;
        }
        throw err;
      }
      const kind = (data as { kind?: unknown } | null)?.kind;
      if (kind !== o.resource.listKind) {
        this.#fail("wrong-kind", `the list is a ${String(kind)}, not a ${o.resource.listKind}`);
      }
      const list = listSchema.safeParse(data);
      if (!list.success)
        this.#fail("bad-payload", `malformed ${o.resource.listKind}: ${describeIssue(list.error)}`);
      for (const [i, raw] of (list.data.items ?? []).entries()) {
        const object = this.#object(raw, `items[${i}]`);
        items.set(object.metadata.name!, object);
      }
      rv = list.data.metadata?.resourceVersion;
      cont = list.data.metadata?.continue || undefined;
      if (cont === undefined) break;
    }
    if (!rv) this.#fail("bad-payload", `the ${o.resource.listKind} has no metadata.resourceVersion`);
    this.#store.clear();
    for (const [name, object] of items) this.#store.set(name, object);
    this.#rv = rv;
    this.#synced = true;
    this.#error = undefined;
    this.#updatedAt = o.now();
    this.#changed();
    this.#notify();
  }

  #apply(batch: readonly WatchEvent[]): void {
    let changed = false;
    try {
      for (const event of batch) {
        if (event.type === "ERROR") {
          const status = statusSchema.safeParse(event.object);
          if (!status.success) this.#fail("bad-payload", "an ERROR event without a Status");
          throw statusError(
            this.#o.client.cluster,
            status.data.code ?? 500,
            JSON.stringify(status.data),
            `watch ${this.#o.path}`,
          );
        }
        if (event.type === "BOOKMARK") {
          // A bookmark carries only a resourceVersion (the rest is the kind's zero value).
          const kind = event.object.kind;
          if (kind !== undefined && kind !== this.#o.resource.kind) {
            this.#fail("wrong-kind", `a BOOKMARK is a ${String(kind)}, not a ${this.#o.resource.kind}`);
          }
          const rv = (event.object.metadata as { resourceVersion?: unknown } | undefined)?.resourceVersion;
          if (typeof rv === "string" && rv !== "") this.#rv = rv;
          continue;
        }
        const object = this.#object(event.object, `a ${event.type} event`);
        if (event.type === "DELETED") this.#store.delete(object.metadata.name!);
        else this.#store.set(object.metadata.name!, object);
        if (object.metadata.resourceVersion) this.#rv = object.metadata.resourceVersion;
        changed = true;
      }
    } finally {
      // Events before a bad one in the same chunk still count.
      if (changed) {
        this.#updatedAt = this.#o.now();
        this.#changed();
        this.#notify();
      }
    }
  }

  #delay(n: number): number {
    const { base, max } = this.#o.backoff;
    return equalJitterBackoff(n, base, max, this.#o.random);
  }

  /** Lists and watches until `signal` aborts. Never rejects. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    let failures = 0;
    let expired = 0;
    let quick = 0;
    let consistent = false;
    while (!signal.aborted) {
      try {
        if (this.#rv === undefined) {
          await this.#list(signal, consistent);
          consistent = true;
          failures = 0;
        }
        const started = o.now();
        let events = 0;
        await o.client.watch(
          o.path,
          {
            ...o.selector,
            watch: "1",
            resourceVersion: this.#rv!,
            allowWatchBookmarks: "true",
            timeoutSeconds: String(o.timeoutSeconds),
          },
          signal,
          {
            opened: () => {
              failures = 0;
              this.#updatedAt = o.now();
              if (this.#error !== undefined) {
                this.#error = undefined;
                this.#notify();
              }
            },
            events: (batch) => {
              events += batch.length;
              this.#apply(batch);
              expired = 0;
            },
          },
        );
        // Ended normally: resume from the last version. A server that ends
        // every watch at once must not make this loop spin.
        if (events === 0 && o.now() - started < 250) await sleep(this.#delay(++quick), signal);
        else quick = 0;
      } catch (err) {
        if (signal.aborted) return;
        const e =
          err instanceof KubernetesError
            ? err
            : new KubernetesError(o.client.cluster, "network", (err as Error)?.message ?? String(err), {
                cause: err,
              });
        if (e.reason === "expired") {
          // Compacted: list again (current, not from the cache), keeping the store meanwhile.
          this.#rv = undefined;
          consistent = true;
          if (++expired > 1) await sleep(this.#delay(expired - 1), signal);
          continue;
        }
        if (e.reason === "wrong-kind" || e.reason === "bad-payload") {
          // What the stream said is in doubt: start over from a list.
          this.#rv = undefined;
          consistent = true;
        }
        this.#error = e;
        this.#notify();
        await sleep(this.#delay(++failures), signal);
      }
    }
  }
}

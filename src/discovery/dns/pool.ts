/**
 * The DNS backend's client pool: one client per cluster, shared by every
 * watch of the backend — one c-ares channel, or one pipelined TCP
 * connection per server — instead of one per watch and cluster. Clients are
 * reference-counted: the last watch of a cluster to end closes its client.
 *
 * @module
 */

import type { ResolvedCluster } from "./options.js";
import type { DnsTransport } from "./transport.js";

interface Entry {
  readonly client: DnsTransport;
  refs: number;
}

/** @internal Reference-counted DNS clients, one per cluster. */
export class DnsClientPool {
  readonly #make: (cluster: ResolvedCluster) => DnsTransport;
  readonly #entries = new Map<string, Entry>();

  /** `make` builds a cluster's client on its first use (and again after the last release). */
  constructor(make: (cluster: ResolvedCluster) => DnsTransport) {
    this.#make = make;
  }

  /** Clients open now. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The cluster's client, built on first use; pair every call with one
   * {@link DnsClientPool.release}.
   *
   * @throws what `make` throws; nothing is then held.
   */
  acquire(cluster: ResolvedCluster): DnsTransport {
    let entry = this.#entries.get(cluster.name);
    if (entry === undefined) {
      entry = { client: this.#make(cluster), refs: 0 };
      this.#entries.set(cluster.name, entry);
    }
    entry.refs++;
    return entry.client;
  }

  /** Gives a client back; the last release closes it. */
  release(cluster: ResolvedCluster): void {
    const entry = this.#entries.get(cluster.name);
    if (entry === undefined) return;
    if (--entry.refs > 0) return;
    this.#entries.delete(cluster.name);
    closeQuietly(entry.client);
  }

  /** Closes every client, whoever holds it. */
  close(): void {
    for (const entry of this.#entries.values()) closeQuietly(entry.client);
    this.#entries.clear();
  }
}

function closeQuietly(client: DnsTransport): void {
  try {
    client.close();
  } catch {
    // A client that fails to close has nothing left to release here.
  }
}

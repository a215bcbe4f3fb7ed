import { getEventListeners } from "node:events";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DiscoveryUpdate } from "../../src/discovery/discovery.js";
import {
  type AddressRecord,
  DnsQueryError,
  type DnsTransport,
  type SrvRecord,
} from "../../src/discovery/dns/transport.js";
import {
  createDnsBackend,
  type DnsDependencies,
  dnsDiscovery,
  dnsQueryPlan,
} from "../../src/discovery/dns.js";
import { parseServiceName } from "../../src/discovery/names.js";
import { Registry } from "../../src/discovery/registry.js";
import { ConfigError, DiscoveryError, ErrorCodes } from "../../src/errors.js";

type Answer = AddressRecord[] | SrvRecord[] | DnsQueryError;

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/**
 * A scripted DNS: per cluster, `"A name"` → records or an error; a missing
 * entry is NXDOMAIN. Every lookup is logged with the fake clock's time. A
 * held cluster's lookups wait until it is released or cancelled.
 */
class FakeDns {
  readonly tables = new Map<string, Map<string, Answer>>();
  readonly log: { cluster: string; query: string; at: number }[] = [];
  readonly cancelled: string[] = [];
  readonly #held = new Map<string, Set<Waiter>>();
  readonly #holds = new Map<string, (query: string) => boolean>();

  /** Holds the cluster's lookups (those `which` picks) until released. */
  hold(cluster: string, which: (query: string) => boolean = () => true): () => void {
    const waiters = new Set<Waiter>();
    this.#held.set(cluster, waiters);
    this.#holds.set(cluster, which);
    return () => {
      this.#held.delete(cluster);
      this.#holds.delete(cluster);
      for (const w of waiters) w.resolve();
    };
  }

  set(cluster: string, query: string, answer: Answer): void {
    let t = this.tables.get(cluster);
    if (t === undefined) this.tables.set(cluster, (t = new Map()));
    t.set(query, answer);
  }

  delete(cluster: string, query: string): void {
    this.tables.get(cluster)?.delete(query);
  }

  count(cluster: string, query: string): number {
    return this.log.filter((l) => l.cluster === cluster && l.query === query).length;
  }

  /** Clients built, per cluster. */
  readonly created: string[] = [];
  /** Clients closed, per cluster. */
  readonly closed: string[] = [];

  transport: NonNullable<DnsDependencies["transport"]> = ({ cluster }) => {
    this.created.push(cluster);
    const lookup = (query: string) => {
      const answer = this.tables.get(cluster)?.get(query) ?? new DnsQueryError("ENOTFOUND", query);
      return answer instanceof DnsQueryError ? Promise.reject(answer) : Promise.resolve(answer);
    };
    const ask = (query: string, signal: AbortSignal | undefined) => {
      if (signal?.aborted) return Promise.reject(new DnsQueryError("ECANCELLED", query));
      this.log.push({ cluster, query, at: Date.now() });
      const held = this.#held.get(cluster);
      if (held === undefined || !this.#holds.get(cluster)!(query)) return lookup(query);
      return new Promise<Answer>((resolve, reject) => {
        const onAbort = () => w.reject(new DnsQueryError("ECANCELLED", query));
        const w: Waiter = {
          resolve: () => {
            signal?.removeEventListener("abort", onAbort);
            lookup(query).then(resolve, reject);
          },
          reject: (err) => {
            held.delete(w);
            signal?.removeEventListener("abort", onAbort);
            this.cancelled.push(cluster);
            reject(err);
          },
        };
        held.add(w);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    };
    const t: DnsTransport = {
      a: (name, signal) => ask(`A ${name}`, signal) as Promise<AddressRecord[]>,
      aaaa: (name, signal) => ask(`AAAA ${name}`, signal) as Promise<AddressRecord[]>,
      srv: (name, signal) => ask(`SRV ${name}`, signal) as Promise<SrvRecord[]>,
      close: () => {
        this.closed.push(cluster);
        for (const w of this.#held.get(cluster) ?? []) w.reject(new DnsQueryError("ECANCELLED", "closed"));
      },
    };
    return t;
  };
}

const WEB = "web.default.svc.cluster.local";
const a = (...ips: string[]) => ips.map((address) => ({ address, ttl: 5 }));
const nodata = () => new DnsQueryError("ENODATA", "no records");

let dns: FakeDns;

beforeEach(() => {
  vi.useFakeTimers();
  dns = new FakeDns();
});

afterEach(() => {
  vi.useRealTimers();
});

function backend(options: Parameters<typeof createDnsBackend>[0] = {}, random = () => 0) {
  return createDnsBackend(
    {
      clusters: [
        { name: "east", region: "us-east-1", zone: "us-east-1a", servers: ["10.0.0.10"] },
        { name: "west", region: "us-west-2", servers: ["10.1.0.10"] },
      ],
      ...options,
    },
    { transport: dns.transport, random },
  );
}

/** Iterates a watch; `next(ms)` advances the fake clock until the next update arrives. */
function watch(b: ReturnType<typeof backend>, name = "web.default", port: number | string = 8080) {
  const abort = new AbortController();
  const it = b.watch(parseServiceName(name, port), { signal: abort.signal })[Symbol.asyncIterator]();
  return {
    abort,
    it,
    async next(ms = 0): Promise<DiscoveryUpdate> {
      const p = it.next();
      let settled = false;
      void p.then(() => (settled = true));
      await vi.advanceTimersByTimeAsync(0);
      for (let waited = 0; !settled && waited < ms; waited += 10) await vi.advanceTimersByTimeAsync(10);
      if (!settled) throw new Error(`no update within ${ms} ms`);
      const r = await p;
      if (r.done) throw new Error("watch ended");
      return r.value;
    },
  };
}

describe("dnsDiscovery", () => {
  describe("options", () => {
    it("rejects a server that is not an address, naming the option path and value", () => {
      const err = (() => {
        try {
          dnsDiscovery(
            { clusters: [{ name: "east", region: "r", servers: ["dns.example:53"] }] },
            "cfg: discovery[0].dns",
          );
        } catch (e) {
          return e as ConfigError;
        }
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect(err?.code).toBe(ErrorCodes.CONFIG);
      expect(err?.source).toBe("cfg: discovery[0].dns.clusters[0].servers[0]");
      expect(err?.value).toBe("dns.example:53");
    });

    it.each([
      [
        {
          clusters: [
            { name: "a", region: "r" },
            { name: "a", region: "r" },
          ],
        },
        "clusters[1].name",
      ],
      [{ minTtl: 5000, maxTtl: 1000 }, "minTtl"],
      [{ minTtl: 0 }, "minTtl"],
      [{ jitter: 2 }, "jitter"],
      [{ clusters: [{ name: "a", region: "r", servers: ["10.0.0.1:70000"] }] }, "clusters[0].servers[0]"],
      [{ clusters: [{ name: "a", region: "r", domain: "Not A Domain" }] }, "clusters[0].domain"],
      [{ clusters: [] }, "clusters"],
      [{ timeot: 5 }, "timeot"],
      // node:dns cannot ask over TCP: TCP needs the servers listed.
      [{ clusters: [{ name: "a", region: "r", tcp: true }] }, "clusters[0].tcp"],
      [{ defaultTtl: -1 }, "defaultTtl"],
    ])("rejects %j at %s", (options, path) => {
      try {
        dnsDiscovery(options as never);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        expect((err as ConfigError).source).toBe(path);
      }
    });

    it("accepts IPv4 and IPv6 servers with and without ports, and no clusters at all", () => {
      expect(
        dnsDiscovery({
          clusters: [
            { name: "a", region: "r", servers: ["10.0.0.1", "10.0.0.1:5353", "::1", "[fd00::10]:53"] },
          ],
        }).name,
      ).toBe("dns");
      expect(dnsDiscovery().name).toBe("dns");
      expect(dnsDiscovery({ name: "dns-east" }).name).toBe("dns-east");
    });
  });

  describe("query names", () => {
    it.each([
      ["web.default", 8080, { type: "address", name: WEB, port: 8080 }],
      ["web.default.svc.cluster.local", undefined, { type: "address", name: WEB, port: 80 }],
      ["web.default", "grpc", { type: "srv", name: `_grpc._tcp.${WEB}` }],
      [
        "web.default.svc.clusterset.local",
        9000,
        { type: "address", name: "web.default.svc.clusterset.local", port: 9000 },
      ],
      [
        "web.default.svc.clusterset.local",
        "http",
        { type: "srv", name: "_http._tcp.web.default.svc.clusterset.local" },
      ],
      ["web.service.consul", undefined, { type: "srv", name: "web.service.consul" }],
      ["web.service.dc-east.consul", undefined, { type: "srv", name: "web.service.dc-east.consul" }],
      ["web.service.consul", "primary", { type: "srv", name: "primary.web.service.consul" }],
      ["web.service.consul", 8500, { type: "srv", name: "web.service.consul" }],
    ] as const)("asks %s (port %s) as %j", (name, port, plan) => {
      expect(dnsQueryPlan(parseServiceName(name, port), "cluster.local", "tcp", 80)).toEqual(plan);
    });

    it("builds Kubernetes names from the cluster's domain", () => {
      expect(dnsQueryPlan(parseServiceName("web.default", "dns"), "west.example", "udp", 80)).toEqual({
        type: "srv",
        name: "_dns._udp.web.default.svc.west.example",
      });
    });
  });

  describe("watch", () => {
    it("merges every cluster's A and AAAA addresses into one set with each cluster's locality", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.2", "10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, [{ address: "fd00::1", ttl: 5 }]);
      dns.set("west", `A ${WEB}`, a("10.1.0.1"));
      dns.set("west", `AAAA ${WEB}`, nodata());
      const w = watch(backend());
      const update = await w.next();
      w.abort.abort();
      expect(update.kind).toBe("bound");
      if (update.kind !== "bound") return;
      expect(update.endpoints.map((e) => e.id)).toEqual([
        "east/10.0.0.1:8080",
        "east/10.0.0.2:8080",
        "east/[fd00::1]:8080",
        "west/10.1.0.1:8080",
      ]);
      expect(update.endpoints[0]).toMatchObject({
        cluster: "east",
        backend: "dns",
        weight: 1,
        backup: false,
        locality: { region: "us-east-1", zone: "us-east-1a", subzone: "" },
      });
      expect(update.endpoints[3]!.locality).toMatchObject({ region: "us-west-2", zone: "" });
      expect(update.clusters).toEqual([
        { cluster: "east", fresh: true, updatedAt: Date.now(), error: undefined },
        { cluster: "west", fresh: true, updatedAt: Date.now(), error: undefined },
      ]);
    });

    it("maps SRV priority to backup, weight 0 to 1, and targets to their addresses", async () => {
      const srv = `_http._tcp.${WEB}`;
      dns.set("east", `SRV ${srv}`, [
        { priority: 20, weight: 0, port: 9090, target: `pod-c.${WEB}`, ttl: undefined },
        { priority: 10, weight: 0, port: 8080, target: `pod-a.${WEB}`, ttl: undefined },
        { priority: 10, weight: 7, port: 8081, target: `pod-b.${WEB}`, ttl: undefined },
        { priority: 10, weight: 3, port: 8082, target: `gone.${WEB}`, ttl: undefined },
        { priority: 10, weight: 3, port: 8083, target: ".", ttl: undefined },
      ]);
      for (const [pod, ip] of [
        ["pod-a", "10.0.0.1"],
        ["pod-b", "10.0.0.2"],
        ["pod-c", "10.0.0.3"],
      ] as const) {
        dns.set("east", `A ${pod}.${WEB}`, a(ip));
        dns.set("east", `AAAA ${pod}.${WEB}`, nodata());
      }
      dns.set("west", `SRV ${srv}`, [{ priority: 50, weight: 1, port: 7070, target: "10.1.0.9", ttl: 5 }]);
      const w = watch(backend(), "web.default", "http");
      const update = await w.next();
      w.abort.abort();
      if (update.kind !== "bound") throw new Error(update.kind);
      expect(update.endpoints.map((e) => [e.id, e.weight, e.backup])).toEqual([
        ["east/10.0.0.1:8080", 1, false],
        ["east/10.0.0.2:8081", 7, false],
        ["east/10.0.0.3:9090", 1, true],
        // Each cluster's lowest priority is its primary tier.
        ["west/10.1.0.9:7070", 1, false],
      ]);
    });

    it("refreshes when the TTL runs out, clamped to [minTtl, maxTtl], and jittered early", async () => {
      dns.set("east", `A ${WEB}`, [{ address: "10.0.0.1", ttl: 3 }]);
      dns.set("east", `AAAA ${WEB}`, nodata());
      dns.set("west", `A ${WEB}`, [{ address: "10.1.0.1", ttl: 0 }]);
      dns.set("west", `AAAA ${WEB}`, nodata());
      const w = watch(backend({ minTtl: 500, maxTtl: 2000, jitter: 0.5 }, () => 0.5));
      await w.next();
      const start = Date.now();
      await vi.advanceTimersByTimeAsync(6000);
      w.abort.abort();
      const times = (cluster: string) =>
        dns.log.filter((l) => l.cluster === cluster && l.query.startsWith("A ")).map((l) => l.at - start);
      // east: TTL 3 s clamped to 2 s, times (1 − 0.5 × 0.5) = 1.5 s.
      expect(times("east")).toEqual([0, 1500, 3000, 4500, 6000]);
      // west: TTL 0 clamped to 0.5 s, times 0.75.
      expect(times("west")[1]).toBe(375);
      expect(times("west")).toHaveLength(17);
    });

    it("takes the smallest TTL of an SRV answer and its targets", async () => {
      const srv = `_http._tcp.${WEB}`;
      dns.set("east", `SRV ${srv}`, [{ priority: 0, weight: 1, port: 80, target: `p.${WEB}`, ttl: 20 }]);
      dns.set("east", `A p.${WEB}`, [{ address: "10.0.0.1", ttl: 4 }]);
      dns.set("east", `AAAA p.${WEB}`, nodata());
      const w = watch(
        backend({ clusters: [{ name: "east", region: "" }], maxTtl: 60_000 }),
        "web.default",
        "http",
      );
      await w.next();
      await vi.advanceTimersByTimeAsync(4000);
      w.abort.abort();
      expect(dns.count("east", `SRV ${srv}`)).toBe(2);
    });

    it("asks again after defaultTtl, not every minTtl, when the answer's TTL is unknown", async () => {
      // node:dns reports no TTL for SRV records; a target that is an address has none either.
      const srv = `_http._tcp.${WEB}`;
      dns.set("east", `SRV ${srv}`, [
        { priority: 0, weight: 1, port: 80, target: "10.0.0.1", ttl: undefined },
      ]);
      const w = watch(
        backend({ clusters: [{ name: "east", region: "" }], minTtl: 100 }),
        "web.default",
        "http",
      );
      expect((await w.next()).kind).toBe("bound");
      await vi.advanceTimersByTimeAsync(4990);
      expect(dns.count("east", `SRV ${srv}`)).toBe(1);
      await vi.advanceTimersByTimeAsync(10);
      expect(dns.count("east", `SRV ${srv}`)).toBe(2);
      w.abort.abort();

      const custom = watch(
        backend({ clusters: [{ name: "east", region: "" }], minTtl: 100, defaultTtl: 2000 }),
        "web.default",
        "http",
      );
      await custom.next();
      await vi.advanceTimersByTimeAsync(2000);
      custom.abort.abort();
      expect(dns.count("east", `SRV ${srv}`)).toBe(4);
    });

    it("counts an unknown SRV TTL as defaultTtl next to its targets' TTLs", async () => {
      const srv = `_http._tcp.${WEB}`;
      dns.set("east", `SRV ${srv}`, [
        { priority: 0, weight: 1, port: 80, target: `p.${WEB}`, ttl: undefined },
      ]);
      dns.set("east", `A p.${WEB}`, [{ address: "10.0.0.1", ttl: 30 }]);
      dns.set("east", `AAAA p.${WEB}`, nodata());
      const w = watch(
        backend({ clusters: [{ name: "east", region: "" }], maxTtl: 60_000, defaultTtl: 3000 }),
        "web.default",
        "http",
      );
      await w.next();
      await vi.advanceTimersByTimeAsync(3000);
      w.abort.abort();
      expect(dns.count("east", `SRV ${srv}`)).toBe(2);
    });

    it("uses the SRV answer's target addresses and asks only for the targets it lacks", async () => {
      const srv = `_http._tcp.${WEB}`;
      dns.set("east", `SRV ${srv}`, [
        {
          priority: 0,
          weight: 1,
          port: 80,
          target: `p.${WEB}`,
          ttl: 5,
          addresses: [
            { address: "10.0.0.1", ttl: 5 },
            { address: "fd00::1", ttl: 5 },
          ],
        },
        { priority: 0, weight: 1, port: 80, target: `q.${WEB}`, ttl: 5 },
      ]);
      dns.set("east", `A q.${WEB}`, a("10.0.0.2"));
      dns.set("east", `AAAA q.${WEB}`, nodata());
      const w = watch(
        backend({ clusters: [{ name: "east", region: "" }], family: 4 }),
        "web.default",
        "http",
      );
      const update = await w.next();
      w.abort.abort();
      if (update.kind !== "bound") throw new Error(update.kind);
      // family 4: the glue's AAAA record is not used.
      expect(update.endpoints.map((e) => e.id)).toEqual(["east/10.0.0.1:80", "east/10.0.0.2:80"]);
      expect(dns.log.map((l) => l.query)).toEqual([`SRV ${srv}`, `A q.${WEB}`]);
    });

    it("yields only when the set changes, whatever order the answer lists it in", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1", "10.0.0.2"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      dns.set("west", `A ${WEB}`, a("10.1.0.1"));
      dns.set("west", `AAAA ${WEB}`, nodata());
      const w = watch(backend({ minTtl: 1000, maxTtl: 1000 }));
      await w.next();
      dns.set("east", `A ${WEB}`, a("10.0.0.2", "10.0.0.1"));
      const pending = w.next(3500);
      await vi.advanceTimersByTimeAsync(2500);
      expect(dns.count("east", `A ${WEB}`)).toBe(3);
      dns.set("east", `A ${WEB}`, a("10.0.0.2", "10.0.0.3"));
      const update = await pending;
      w.abort.abort();
      if (update.kind !== "bound") throw new Error(update.kind);
      expect(update.endpoints.map((e) => e.address)).toEqual(["10.0.0.2", "10.0.0.3", "10.1.0.1"]);
    });

    it("waits for every cluster before the first update", async () => {
      const release = dns.hold("west");
      dns.set("west", `A ${WEB}`, a("10.1.0.1"));
      dns.set("west", `AAAA ${WEB}`, nodata());
      const w = watch(backend());
      let first: DiscoveryUpdate | undefined;
      const pending = w.it.next().then((r) => (first = r.value as DiscoveryUpdate));
      await vi.advanceTimersByTimeAsync(100);
      // east said NXDOMAIN at once; west has not answered: nothing yet.
      expect(dns.count("east", `A ${WEB}`)).toBe(1);
      expect(first).toBeUndefined();
      release();
      await pending;
      w.abort.abort();
      expect(first).toMatchObject({ kind: "bound", endpoints: [{ id: "west/10.1.0.1:8080" }] });
    });

    it("says not-found on NXDOMAIN and asks again only after the negative TTL", async () => {
      const w = watch(backend({ negativeTtl: 3000, minTtl: 100 }));
      expect((await w.next()).kind).toBe("not-found");
      await vi.advanceTimersByTimeAsync(2990);
      expect(dns.count("east", `A ${WEB}`)).toBe(1);
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      const update = await w.next(100);
      w.abort.abort();
      expect(update.kind).toBe("bound");
      expect(dns.count("east", `A ${WEB}`)).toBe(2);
    });

    it("believes a shorter negative TTL from the server, but no less than minTtl", async () => {
      dns.set("east", `A ${WEB}`, new DnsQueryError("ENOTFOUND", "nx", { ttl: 1 }));
      dns.set("east", `AAAA ${WEB}`, new DnsQueryError("ENOTFOUND", "nx", { ttl: 1 }));
      const w = watch(
        backend({ clusters: [{ name: "east", region: "" }], negativeTtl: 10_000, minTtl: 200 }),
      );
      await w.next();
      await vi.advanceTimersByTimeAsync(1000);
      w.abort.abort();
      expect(dns.count("east", `A ${WEB}`)).toBe(2);
    });

    it("keeps a failing cluster's last good endpoints, marked stale, and the others' fresh ones", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      dns.set("west", `A ${WEB}`, a("10.1.0.1"));
      dns.set("west", `AAAA ${WEB}`, nodata());
      const b = backend({ minTtl: 1000, maxTtl: 1000 });
      const registry = new Registry([b]);
      const service = registry.watch(parseServiceName("web.default", 8080));
      const updates: string[] = [];
      service.onUpdate((s) => updates.push(`${s.sources[0]!.state}${s.sources[0]!.stale ? "/stale" : ""}`));
      await vi.advanceTimersByTimeAsync(0);
      expect(service.snapshot.endpoints).toHaveLength(2);
      const boundAt = Date.now();

      dns.set("east", `A ${WEB}`, new DnsQueryError("ESERVFAIL", "servfail"));
      await vi.advanceTimersByTimeAsync(1000);
      let source = service.snapshot.sources[0]!;
      expect(source.stale).toBe(true);
      expect(source.error).toBeInstanceOf(DiscoveryError);
      expect(source.error?.code).toBe(ErrorCodes.DISCOVERY);
      expect(source.error?.message).toContain("ESERVFAIL");
      expect(source.error?.message).toContain("cluster east");
      expect(source.clusters).toEqual([
        { cluster: "east", fresh: false, updatedAt: boundAt, error: expect.stringContaining("ESERVFAIL") },
        { cluster: "west", fresh: true, updatedAt: boundAt, error: undefined },
      ]);
      expect(service.snapshot.endpoints.map((e) => e.id)).toEqual([
        "east/10.0.0.1:8080",
        "west/10.1.0.1:8080",
      ]);

      // The other cluster changes while east still fails: its new set comes
      // through, east's last good endpoint stays, and the stale mark too.
      dns.set("west", `A ${WEB}`, a("10.1.0.2"));
      await vi.advanceTimersByTimeAsync(1000);
      source = service.snapshot.sources[0]!;
      expect(service.snapshot.endpoints.map((e) => e.id)).toEqual([
        "east/10.0.0.1:8080",
        "west/10.1.0.2:8080",
      ]);
      expect(source.stale).toBe(true);

      // east answers again: fresh, with no new set needed.
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      await vi.advanceTimersByTimeAsync(4000);
      source = service.snapshot.sources[0]!;
      expect(source.stale).toBe(false);
      expect(source.error).toBeUndefined();
      expect(source.clusters?.every((c) => c.fresh)).toBe(true);
      expect(updates).toEqual(["bound", "bound/stale", "bound", "bound/stale", "bound"]);
      await registry.close();
    });

    it("fails the first answer, rather than guessing not-found, when a cluster cannot be asked", async () => {
      dns.set("east", `A ${WEB}`, new DnsQueryError("ETIMEOUT", "timeout"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      const w = watch(backend());
      const update = await w.next();
      w.abort.abort();
      expect(update.kind).toBe("failed");
      if (update.kind !== "failed") return;
      expect(update.error.code).toBe(ErrorCodes.DISCOVERY);
      expect(update.clusters?.map((c) => c.fresh)).toEqual([false, true]);
    });

    it("fails the lookup when AAAA fails even though A answered", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, new DnsQueryError("EREFUSED", "refused"));
      const w = watch(backend({ clusters: [{ name: "east", region: "" }] }));
      const update = await w.next();
      w.abort.abort();
      expect(update.kind).toBe("failed");
    });

    it("asks only A with family 4", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      const w = watch(backend({ clusters: [{ name: "east", region: "" }], family: 4 }));
      expect((await w.next()).kind).toBe("bound");
      w.abort.abort();
      expect(dns.count("east", `AAAA ${WEB}`)).toBe(0);
    });

    it("backs off from minTtl to maxTtl while a cluster fails", async () => {
      dns.set("east", `A ${WEB}`, new DnsQueryError("ECONNREFUSED", "refused"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      const w = watch(backend({ clusters: [{ name: "east", region: "" }], minTtl: 100, maxTtl: 800 }));
      await w.next();
      await vi.advanceTimersByTimeAsync(3100);
      w.abort.abort();
      const at = dns.log.filter((l) => l.query.startsWith("A ")).map((l) => l.at);
      expect(at.slice(1).map((t, i) => t - at[i]!)).toEqual([100, 200, 400, 800, 800, 800]);
    });

    it("cancels pending lookups and timers at once when the signal aborts, and yields nothing after", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      const w = watch(backend());
      expect((await w.next()).kind).toBe("bound");
      dns.hold("west");
      // west is asked again after the negative TTL (5 s) and hangs; east's
      // refresh finds the same set and yields nothing.
      const pending = w.it.next();
      await vi.advanceTimersByTimeAsync(5500);
      expect(dns.count("west", `A ${WEB}`)).toBe(2);
      w.abort.abort();
      expect(await pending).toEqual({ done: true, value: undefined });
      // west's lookup in flight is cancelled; both clients close with the last watch.
      expect(new Set(dns.cancelled)).toEqual(new Set(["west"]));
      expect(dns.closed.sort()).toEqual(["east", "west"]);
      expect(vi.getTimerCount()).toBe(0);
    });

    it("shares one client per cluster across watches and closes it when the last watch of it ends", async () => {
      dns.set("east", `A ${WEB}`, a("10.0.0.1"));
      dns.set("east", `AAAA ${WEB}`, nodata());
      const b = backend();
      const first = watch(b);
      const second = watch(b, "api.default");
      const third = watch(b, "web.default", "http");
      await first.next();
      await second.next();
      await third.next();
      expect(dns.created.sort()).toEqual(["east", "west"]);
      expect(b.stats().clients).toBe(2);
      first.abort.abort();
      second.abort.abort();
      await vi.advanceTimersByTimeAsync(0);
      expect(dns.closed).toEqual([]);
      third.abort.abort();
      await vi.advanceTimersByTimeAsync(0);
      expect(dns.closed.sort()).toEqual(["east", "west"]);
      expect(b.stats().clients).toBe(0);
      // A later watch gets a new client.
      const fourth = watch(b);
      await fourth.next();
      fourth.abort.abort();
      expect(dns.created).toHaveLength(4);
    });

    it("releases every timer, lookup and client of 20 000 ended watches, and asks nothing more", async () => {
      const b = backend({ clusters: [{ name: "east", region: "", servers: ["10.0.0.10"] }] });
      // Odd names exist (their watches then sleep on a refresh timer); the
      // lookups of even ones hang.
      dns.hold("east", (query) => Number(/name-(\d+)/.exec(query)?.[1]) % 2 === 0);
      const signals: AbortController[] = [];
      for (let i = 0; i < 20_000; i++) {
        if (i % 2 === 1) {
          dns.set("east", `A name-${i}.default.svc.cluster.local`, a("10.0.0.1"));
          dns.set("east", `AAAA name-${i}.default.svc.cluster.local`, nodata());
        }
        const abort = new AbortController();
        signals.push(abort);
        void b
          .watch(parseServiceName(`name-${i}.default`, 8080), { signal: abort.signal })
          [Symbol.asyncIterator]()
          .next();
      }
      await vi.advanceTimersByTimeAsync(0);
      expect(b.stats()).toEqual({ watches: 20_000, clients: 1, timers: 10_000, lookups: 10_000 });
      // The consumers pull no further: the watches end on their signals alone.
      for (const s of signals) s.abort();
      expect(b.stats()).toMatchObject({ watches: 0, clients: 0, timers: 0 });
      expect(dns.closed).toEqual(["east"]);
      await vi.advanceTimersByTimeAsync(0);
      expect(b.stats()).toEqual({ watches: 0, clients: 0, timers: 0, lookups: 0 });
      expect(vi.getTimerCount()).toBe(0);
      const asked = dns.log.length;
      await vi.advanceTimersByTimeAsync(60_000);
      expect(dns.log.length).toBe(asked);
    });

    it("listens once on a signal that many watches share, and lets go of it when they end", async () => {
      const b = backend();
      const shared = new AbortController();
      for (let i = 0; i < 20; i++) {
        void b
          .watch(parseServiceName(`name-${i}.default`, 8080), { signal: shared.signal })
          [Symbol.asyncIterator]()
          .next();
      }
      await vi.advanceTimersByTimeAsync(0);
      expect(b.stats().watches).toBe(20);
      expect(getEventListeners(shared.signal, "abort")).toHaveLength(1);
      await b.close?.();
      expect(b.stats().watches).toBe(0);
      expect(getEventListeners(shared.signal, "abort")).toHaveLength(0);

      const other = backend();
      const again = new AbortController();
      for (let i = 0; i < 20; i++) {
        void other
          .watch(parseServiceName(`name-${i}.default`, 8080), { signal: again.signal })
          [Symbol.asyncIterator]()
          .next();
      }
      await vi.advanceTimersByTimeAsync(0);
      again.abort();
      expect(other.stats()).toMatchObject({ watches: 0, clients: 0, timers: 0 });
    });

    it("claims a short name only once a cluster has answered it with records", async () => {
      dns.set("west", `A ${WEB}`, a("10.1.0.1"));
      dns.set("west", `AAAA ${WEB}`, nodata());
      const b = backend();
      const web = parseServiceName("web.default", 8080);
      expect(b.claims?.(web)).toBe(false);
      const w = watch(b);
      const nope = watch(b, "nope.default");
      await w.next();
      await nope.next();
      expect(b.claims?.(parseServiceName("web.default", 443))).toBe(true);
      expect(b.claims?.(parseServiceName("nope.default", 8080))).toBe(false);
      // The claim outlives the watch (a forgotten service is still a mesh name).
      w.abort.abort();
      nope.abort.abort();
      expect(b.claims?.(web)).toBe(true);
      // An unknown port name (SRV NXDOMAIN) says nothing about the service...
      const port = watch(b, "web.default", "nope");
      expect((await port.next()).kind).toBe("not-found");
      port.abort.abort();
      expect(b.claims?.(web)).toBe(true);
      // ...but every cluster saying the name is gone does.
      dns.delete("west", `A ${WEB}`);
      const again = watch(b);
      expect((await again.next()).kind).toBe("not-found");
      again.abort.abort();
      expect(b.claims?.(web)).toBe(false);
    });

    it("ends every watch on close()", async () => {
      dns.hold("west");
      const b = backend();
      const w = watch(b);
      const pending = w.it.next();
      await vi.advanceTimersByTimeAsync(10);
      await b.close?.();
      expect(await pending).toEqual({ done: true, value: undefined });
      expect(vi.getTimerCount()).toBe(0);
      // A watch started after close() ends at once.
      expect(await watch(b).it.next()).toEqual({ done: true, value: undefined });
    });
  });
});

/**
 * Priority tiers: where each endpoint stands for this caller. Own zone →
 * own region → failover regions in order → the rest → backups; or, with
 * `failoverPriority`, by how many of the listed labels match the caller's
 * (Istio's `localityLbSetting.failoverPriority`); and, with a `distribute`
 * rule that matches the caller, a first tier that splits traffic between
 * localities by fixed weights (Istio's `localityLbSetting.distribute`).
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";

/** A label `failoverPriority` can compare between the caller and an endpoint. */
export type PriorityLabel = "region" | "zone" | "subzone" | "cluster";

/**
 * A fixed split of traffic between localities for callers in `from`
 * (Istio's `distribute`). Localities are `region/zone/subzone`, each part
 * may be `*`, and missing trailing parts match anything.
 */
export interface DistributeRule {
  /** The callers the rule applies to, e.g. `us-east-1/us-east-1a/*`. */
  readonly from: string;
  /** Target localities and their relative weights, e.g. `{ "us-east-1/us-east-1a/*": 80, "us-east-1/*": 20 }`. */
  readonly to: Readonly<Record<string, number>>;
}

/** The caller's place and how it orders the others. */
export interface RouterOptions {
  /** The caller's region (`MESHLINK_REGION`); empty when unknown. */
  readonly region: string;
  /** The caller's zone (`MESHLINK_ZONE`); empty when unknown. */
  readonly zone: string;
  /** The caller's sub-zone; default empty. */
  readonly subzone?: string | undefined;
  /** The caller's cluster, for a `cluster` label in `failoverPriority`; default empty. */
  readonly cluster?: string | undefined;
  /** Regions to fail over to, in order (`MESHLINK_FAILOVER`). */
  readonly failover: readonly string[];
  /**
   * Labels compared in order with the caller's: an endpoint matching all of
   * them is in the first tier, one matching all but the last in the second,
   * and so on; those matching none follow in `failover` order. Replaces the
   * default zone/region tiers when given.
   */
  readonly failoverPriority?: readonly PriorityLabel[] | undefined;
  /** Fixed locality splits; the first rule whose `from` matches the caller applies. */
  readonly distribute?: readonly DistributeRule[] | undefined;
}

/** Where an endpoint stands for this caller. Lower ranks are preferred. */
export interface TierInfo {
  /** The rank: 0 is tried first. */
  readonly rank: number;
  /**
   * A label for traces and `describe()`: `zone`, `region`, `failover:<region>`,
   * `other`, `backup`, `distribute`, or `priority:<n>` with `failoverPriority`.
   */
  readonly label: string;
}

/** A locality group inside a `distribute` tier: the `to` key an endpoint matched and its weight. */
export interface LocalityGroup {
  /** The `to` key. */
  readonly key: string;
  /** Its weight. */
  readonly weight: number;
}

const tier = (rank: number, label: string): TierInfo => Object.freeze({ rank, label });

/** Matches a locality pattern (`region/zone/subzone`, `*` parts) against a locality. */
export function matchLocality(pattern: string, region: string, zone: string, subzone: string): boolean {
  const parts = pattern.split("/");
  const values = [region, zone, subzone];
  for (let i = 0; i < parts.length && i < 3; i++) {
    const p = parts[i]!;
    if (p !== "*" && p !== values[i]) return false;
  }
  return true;
}

/** Computes the tiers for a caller; one instance serves every service. */
export class TierMap {
  readonly #options: RouterOptions;
  readonly #ranked: readonly TierInfo[];
  readonly #failover: readonly TierInfo[];
  readonly #other: TierInfo;
  readonly #backup: TierInfo;
  readonly #offset: number;
  readonly #distribute: readonly { key: string; weight: number }[] | undefined;
  readonly #distributeTier = tier(0, "distribute");

  constructor(options: RouterOptions) {
    this.#options = options;
    const labels = options.failoverPriority;
    const rule = options.distribute?.find((r) =>
      matchLocality(r.from, options.region, options.zone, options.subzone ?? ""),
    );
    this.#distribute =
      rule === undefined
        ? undefined
        : Object.entries(rule.to)
            .filter(([, w]) => w > 0)
            .map(([key, weight]) => ({ key, weight }));
    const offset = this.#distribute === undefined ? 0 : 1;
    this.#offset = offset;
    const ranked =
      labels !== undefined && labels.length > 0
        ? labels.map((_, i) => tier(offset + i, `priority:${i}`))
        : [tier(offset, "zone"), tier(offset + 1, "region")];
    this.#ranked = ranked;
    const base = offset + ranked.length;
    this.#failover = options.failover.map((region, i) => tier(base + i, `failover:${region}`));
    this.#other = tier(base + options.failover.length, "other");
    this.#backup = tier(base + options.failover.length + 1, "backup");
  }

  /** The caller's options. */
  get options(): RouterOptions {
    return this.#options;
  }

  /** The `distribute` group of an endpoint when the caller has a rule and the endpoint matches a target; else undefined. */
  groupOf(endpoint: Endpoint): LocalityGroup | undefined {
    const d = this.#distribute;
    if (d === undefined || endpoint.backup) return undefined;
    const loc = endpoint.locality;
    for (const g of d) if (matchLocality(g.key, loc.region, loc.zone, loc.subzone)) return g;
    return undefined;
  }

  /** The tier of an endpoint. */
  of(endpoint: Endpoint): TierInfo {
    if (endpoint.backup) return this.#backup;
    if (this.#distribute !== undefined && this.groupOf(endpoint) !== undefined) return this.#distributeTier;
    const o = this.#options;
    const loc = endpoint.locality;
    const labels = o.failoverPriority;
    if (labels !== undefined && labels.length > 0) {
      let matched = 0;
      for (const label of labels) {
        const mine =
          label === "cluster" ? (o.cluster ?? "") : label === "subzone" ? (o.subzone ?? "") : o[label];
        const theirs = label === "cluster" ? endpoint.cluster : loc[label];
        if (mine === "" || mine !== theirs) break;
        matched++;
      }
      if (matched > 0) return this.#ranked[labels.length - matched]!;
    } else {
      if (o.region !== "" && loc.region === o.region) {
        return o.zone !== "" && loc.zone === o.zone ? this.#ranked[0]! : this.#ranked[1]!;
      }
      if (o.region === "" && o.zone !== "" && loc.zone === o.zone) return this.#ranked[0]!;
    }
    const i = loc.region === "" ? -1 : o.failover.indexOf(loc.region);
    return i >= 0 ? this.#failover[i]! : this.#other;
  }

  /** True when `rank` is the backup tier. */
  isBackup(rank: number): boolean {
    return rank === this.#backup.rank;
  }

  /** How many ranks precede the first locality tier (1 with a `distribute` rule, else 0). */
  get offset(): number {
    return this.#offset;
  }
}

/**
 * Metrics through `@opentelemetry/api` only: the application brings the SDK.
 *
 * The API has no proxy meter: a meter taken before the SDK registers stays
 * a no-op for ever. So the instruments are taken from the meter provider in
 * force, once per provider, and {@link meshInstruments} hands them out
 * only while a real provider is registered. With none, a call asks one
 * global lookup and records nothing: no attribute object, no instrument
 * call.
 *
 * Gauges (healthy endpoints per tier, discovery staleness) are observed:
 * every live mesh registers a {@link GaugeSource}, read when the SDK
 * collects.
 *
 * @module
 */

import {
  type Attributes,
  type BatchObservableResult,
  type Counter,
  createNoopMeter,
  type Histogram,
  type MeterProvider,
  metrics,
  type ObservableGauge,
} from "@opentelemetry/api";
import type { ServiceWatch } from "../discovery/registry.js";
import type { Balancer } from "../routing/router.js";
import type { Subscription } from "../subscription.js";

/** The instrumentation scope name of meshlink's meter. */
export const METER_NAME = "meshlink";

/** The names of meshlink's metrics. See docs/observability.md for their attributes. */
export const Metric = {
  /** Histogram, seconds: one logical call, from dispatch to the end of its response (or its error). */
  CALL_DURATION: "meshlink.call.duration",
  /** Counter: attempts sent (a call's first, its retries and hedges), by outcome. */
  ATTEMPTS: "meshlink.attempts",
  /** Counter: retries sent, by the reason the previous endpoint was left. */
  RETRIES: "meshlink.retries",
  /** Counter: hedges sent. */
  HEDGES: "meshlink.hedges",
  /** Counter: retries the retry budget refused. */
  BUDGET_EXHAUSTED: "meshlink.retry_budget.exhausted",
  /** Counter: endpoint ejections by outlier detection. */
  EJECTIONS: "meshlink.ejections",
  /** Gauge: endpoints that may take traffic now, per service and tier. */
  HEALTHY_ENDPOINTS: "meshlink.endpoints.healthy",
  /** Gauge: endpoints known, per service and tier. */
  ENDPOINTS: "meshlink.endpoints",
  /** Gauge, seconds: how old a failing discovery backend's last good answer is (0 while it answers). */
  DISCOVERY_STALENESS: "meshlink.discovery.staleness",
  /** Gauge, seconds: time left before each certificate of the mesh's TLS material expires (negative once expired). */
  CERTIFICATE_EXPIRY: "meshlink.tls.certificate.time_to_expiry",
} as const;

/** The instruments a call records to; obtained once per meter provider. */
export interface MeshInstruments {
  /** {@link Metric.CALL_DURATION}. */
  readonly callDuration: Histogram;
  /** {@link Metric.ATTEMPTS}. */
  readonly attempts: Counter;
  /** {@link Metric.RETRIES}. */
  readonly retries: Counter;
  /** {@link Metric.HEDGES}. */
  readonly hedges: Counter;
  /** {@link Metric.BUDGET_EXHAUSTED}. */
  readonly budgetExhausted: Counter;
  /** {@link Metric.EJECTIONS}. */
  readonly ejections: Counter;
}

/** What a mesh offers to the gauges: its balancers, one per service in use, and its certificates. */
export interface GaugeSource {
  /** The balancers of the services the mesh follows now. */
  balancers(): Iterable<Balancer>;
  /** The certificates in use (role, subject, not-after), when the mesh has TLS material. */
  certificates?(): Iterable<{ readonly role: string; readonly subject: string; readonly notAfter: string }>;
}

const NOOP_METER = createNoopMeter();
const sources = new Set<GaugeSource>();
let provider: MeterProvider | undefined;
let current: MeshInstruments | undefined;

/**
 * The instruments of the meter provider in force, or undefined while no
 * SDK is registered (then record nothing). Cheap: one global lookup, and
 * new instruments only when the provider changes.
 */
export function meshInstruments(): MeshInstruments | undefined {
  const p = metrics.getMeterProvider();
  if (p === provider) return current;
  provider = p;
  const meter = p.getMeter(METER_NAME);
  if (meter === NOOP_METER) {
    current = undefined;
    return current;
  }
  current = {
    callDuration: meter.createHistogram(Metric.CALL_DURATION, {
      unit: "s",
      description: "Duration of a call through the mesh, attempts, back-off and response body included.",
      advice: {
        explicitBucketBoundaries: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10],
      },
    }),
    attempts: meter.createCounter(Metric.ATTEMPTS, {
      unit: "{attempt}",
      description: "Attempts sent to endpoints: first attempts, retries and hedges, by outcome.",
    }),
    retries: meter.createCounter(Metric.RETRIES, {
      unit: "{retry}",
      description: "Retries sent, by why the previous endpoint was left.",
    }),
    hedges: meter.createCounter(Metric.HEDGES, { unit: "{hedge}", description: "Hedged attempts sent." }),
    budgetExhausted: meter.createCounter(Metric.BUDGET_EXHAUSTED, {
      unit: "{retry}",
      description: "Retries that the retry budget refused.",
    }),
    ejections: meter.createCounter(Metric.EJECTIONS, {
      unit: "{ejection}",
      description: "Endpoints ejected by outlier detection.",
    }),
  };
  const healthy = meter.createObservableGauge(Metric.HEALTHY_ENDPOINTS, {
    unit: "{endpoint}",
    description: "Endpoints that may take traffic now, per service and tier.",
  });
  const total = meter.createObservableGauge(Metric.ENDPOINTS, {
    unit: "{endpoint}",
    description: "Endpoints known, per service and tier.",
  });
  const staleness = meter.createObservableGauge(Metric.DISCOVERY_STALENESS, {
    unit: "s",
    description: "Age of a failing discovery backend's last good answer; 0 while it answers.",
  });
  const expiry = meter.createObservableGauge(Metric.CERTIFICATE_EXPIRY, {
    unit: "s",
    description: "Time left before a certificate of the mesh's TLS material expires; negative once expired.",
  });
  meter.addBatchObservableCallback(
    (result) => {
      observeGauges(result, healthy, total, staleness);
      observeCertificates(result, expiry);
    },
    [healthy, total, staleness, expiry],
  );
  return current;
}

/** Adds a mesh to the gauges until the subscription is disposed (when the mesh closes). */
export function addGaugeSource(source: GaugeSource): Subscription {
  sources.add(source);
  // Take the instruments now, so that the gauges exist before the first call.
  meshInstruments();
  return { dispose: () => sources.delete(source) };
}

/** One value per attribute set: services asked on several ports add up (staleness: the worst). */
function observeGauges(
  result: BatchObservableResult,
  healthyGauge: ObservableGauge,
  totalGauge: ObservableGauge,
  stalenessGauge: ObservableGauge,
): void {
  const tiers = new Map<string, { attrs: Attributes; healthy: number; total: number }>();
  const stale = new Map<string, { attrs: Attributes; seconds: number }>();
  const now = Date.now();
  for (const source of sources) {
    for (const b of source.balancers()) {
      if (b.closed) continue;
      const service = b.watch.service.key;
      for (const t of b.tiers()) {
        const key = `${service}\0${t.tier.label}`;
        let row = tiers.get(key);
        if (row === undefined) {
          row = {
            attrs: { "meshlink.service": service, "meshlink.tier": t.tier.label },
            healthy: 0,
            total: 0,
          };
          tiers.set(key, row);
        }
        row.healthy += t.healthy;
        row.total += t.total;
      }
      for (const s of b.watch.snapshot.sources) {
        const seconds = stalenessOf(s, now);
        if (seconds === undefined) continue;
        const key = `${service}\0${s.backend}`;
        const row = stale.get(key);
        if (row === undefined) {
          stale.set(key, { attrs: { "meshlink.service": service, "meshlink.backend": s.backend }, seconds });
        } else row.seconds = Math.max(row.seconds, seconds);
      }
    }
  }
  for (const row of tiers.values()) {
    result.observe(healthyGauge, row.healthy, row.attrs);
    result.observe(totalGauge, row.total, row.attrs);
  }
  for (const row of stale.values()) result.observe(stalenessGauge, row.seconds, row.attrs);
}

function observeCertificates(result: BatchObservableResult, gauge: ObservableGauge): void {
  const now = Date.now();
  for (const source of sources) {
    for (const c of source.certificates?.() ?? []) {
      result.observe(gauge, (Date.parse(c.notAfter) - now) / 1000, {
        "meshlink.tls.role": c.role,
        "meshlink.tls.subject": c.subject,
      });
    }
  }
}

/**
 * How stale a backend's view is, in seconds: 0 while its last try
 * succeeded, the age of its last good answer while it fails, undefined
 * while it never answered.
 */
export function stalenessOf(
  source: ServiceWatch["snapshot"]["sources"][number],
  now: number,
): number | undefined {
  if (source.updatedAt === undefined) return undefined;
  return source.error === undefined ? 0 : Math.max(0, (now - source.updatedAt) / 1000);
}

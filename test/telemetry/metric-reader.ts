import { metrics } from "@opentelemetry/api";
import {
  type DataPoint,
  type Histogram,
  MeterProvider,
  type MetricData,
  MetricReader,
} from "@opentelemetry/sdk-metrics";

/** A metric reader that collects on demand, as an exporter's would. */
class InMemoryReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** What the SDK collected, by metric name. */
export interface Collected {
  /** Every metric of meshlink's meter, by name. */
  readonly byName: Map<string, MetricData>;
  /** The data points of a metric whose attributes include `attrs`. */
  points(name: string, attrs?: Record<string, unknown>): DataPoint<number | Histogram>[];
  /** The sum of a counter's (or gauge's) values over the points matching `attrs`. */
  value(name: string, attrs?: Record<string, unknown>): number;
}

/** Registers an SDK meter provider with an in-memory reader, as an application would. */
export function installMetrics(): { collect(): Promise<Collected>; uninstall(): Promise<void> } {
  const reader = new InMemoryReader();
  const provider = new MeterProvider({ readers: [reader] });
  metrics.setGlobalMeterProvider(provider);
  return {
    async collect() {
      const { resourceMetrics } = await reader.collect();
      const byName = new Map<string, MetricData>();
      for (const scope of resourceMetrics.scopeMetrics) {
        if (scope.scope.name !== "meshlink") continue;
        for (const m of scope.metrics) byName.set(m.descriptor.name, m);
      }
      const points = (name: string, attrs: Record<string, unknown> = {}) =>
        ((byName.get(name)?.dataPoints ?? []) as DataPoint<number | Histogram>[]).filter((p) =>
          Object.entries(attrs).every(([k, v]) => p.attributes[k] === v),
        );
      return {
        byName,
        points,
        value: (name, attrs) => points(name, attrs).reduce((sum, p) => sum + (p.value as number), 0),
      };
    },
    async uninstall() {
      metrics.disable();
      await provider.shutdown();
    },
  };
}

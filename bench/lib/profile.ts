/**
 * CPU profiles: taking one with the inspector's `Profiler` domain, and
 * summarising it per request — self time by category (meshlink, undici's
 * compose wrappers, the rest of undici, OpenTelemetry, node, GC) and the top
 * frames, with meshlink's own frames mapped back to their TypeScript lines
 * through the source maps tsx registers.
 *
 * @module
 */

import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { findSourceMap } from "node:module";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";

/** A V8 CPU profile, as `Profiler.stop` returns it. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One frame's cost. */
export interface FrameCost {
  /** Function name (`(anonymous)` when it has none). */
  readonly name: string;
  /** `file:line`, repository-relative; TypeScript lines for meshlink's own files. */
  readonly location: string;
  /** Category: `meshlink`, `undici-compose`, `undici`, `node-undici` (Node's bundled undici), `otel`, `cockatiel`, `node`, `gc`, `native`, `idle`. */
  readonly category: string;
  /** Self time per request, µs. */
  readonly selfUs: number;
  /** Inclusive time per request, µs (callees included, recursion counted once). */
  readonly totalUs: number;
}

/** A profile, summarised per request. */
export interface ProfileSummary {
  /** Requests completed while profiling. */
  readonly requests: number;
  /** Profiled wall time, ms. */
  readonly durationMs: number;
  /** Samples taken. */
  readonly samples: number;
  /** Self time per request by category, µs. */
  readonly categories: Record<string, number>;
  /** The frames with the most self time. */
  readonly topSelf: readonly FrameCost[];
  /** Every busy frame with at least 0.01 µs of self time per request (to compare two profiles). */
  readonly frames: readonly FrameCost[];
  /** meshlink's own frames, by self time. */
  readonly meshlink: readonly FrameCost[];
  /** undici's compose machinery (WrapHandler, UnwrapHandler, the compose wrapper, header conversions). */
  readonly undiciCompose: readonly FrameCost[];
  /** The file the raw profile was written to (open it in Chrome DevTools or speedscope). */
  readonly file: string;
}

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** undici files that exist only to adapt handlers between its two handler APIs. */
const COMPOSE_FILES = [
  "lib/handler/wrap-handler.js",
  "lib/handler/unwrap-handler.js",
  "lib/dispatcher/dispatcher.js",
];

function categorize(url: string, name: string): string {
  if (url === "") {
    if (name === "(garbage collector)") return "gc";
    if (name === "(idle)") return "idle";
    if (name === "(program)") return "program";
    if (name === "(root)") return "root";
    return "native";
  }
  if (url.includes("/node_modules/undici/")) {
    return COMPOSE_FILES.some((f) => url.endsWith(f)) ? "undici-compose" : "undici";
  }
  if (url.includes("/node_modules/@opentelemetry/")) return "otel";
  if (url.includes("/node_modules/cockatiel/")) return "cockatiel";
  if (url.includes("/node_modules/")) return "deps";
  if (url.includes("/src/") && url.startsWith("file:")) return "meshlink";
  if (url.startsWith("file:")) return "bench";
  // Node's own bundled undici: global fetch's machinery.
  if (url.includes("internal/deps/undici")) return "node-undici";
  return "node";
}

function locate(url: string, line: number, column: number): string {
  if (url === "") return "";
  if (!url.startsWith("file:")) return `${url}:${line + 1}`;
  const path = fileURLToPath(url);
  const rel = relative(REPO_ROOT, path);
  try {
    const entry = findSourceMap(path)?.findEntry(line, column) as { originalLine?: number } | undefined;
    if (entry?.originalLine !== undefined) return `${rel}:${entry.originalLine + 1}`;
  } catch {
    // no source map: generated line
  }
  return `${rel}:${line + 1}`;
}

/** Summarises a profile; `requests` is how many requests completed while it ran. */
export function summarize(profile: CpuProfile, requests: number, file: string): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    // A sample's time is the gap to the next one.
    const dt = timeDeltas[i + 1] ?? timeDeltas[i] ?? 0;
    self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + dt);
  }
  const keyOf = (id: number) => {
    const f = byId.get(id)!.callFrame;
    return `${f.functionName}\0${f.url}\0${f.lineNumber}\0${f.columnNumber}`;
  };
  const frames = new Map<string, { node: number; self: number; total: number }>();
  // Inclusive time per node, then per function key, counting a key once per stack.
  const inclusive = new Map<number, number>();
  const order: number[] = [];
  const root = profile.nodes[0]!.id;
  const stack: number[] = [root];
  while (stack.length > 0) {
    const id = stack.pop()!;
    order.push(id);
    for (const c of byId.get(id)!.children ?? []) stack.push(c);
  }
  for (let i = order.length - 1; i >= 0; i--) {
    const n = byId.get(order[i]!)!;
    let t = self.get(n.id) ?? 0;
    for (const c of n.children ?? []) t += inclusive.get(c) ?? 0;
    inclusive.set(n.id, t);
  }
  const walk: { id: number; open: ReadonlySet<string> }[] = [{ id: root, open: new Set() }];
  while (walk.length > 0) {
    const { id, open } = walk.pop()!;
    const key = keyOf(id);
    let f = frames.get(key);
    if (f === undefined) {
      f = { node: id, self: 0, total: 0 };
      frames.set(key, f);
    }
    f.self += self.get(id) ?? 0;
    let next = open;
    if (!open.has(key)) {
      f.total += inclusive.get(id) ?? 0;
      next = new Set(open).add(key);
    }
    for (const c of byId.get(id)!.children ?? []) walk.push({ id: c, open: next });
  }
  const perReq = (us: number) => (requests > 0 ? us / requests : 0);
  const costs: FrameCost[] = [];
  const categories: Record<string, number> = {};
  for (const f of frames.values()) {
    const cf = byId.get(f.node)!.callFrame;
    const category = categorize(cf.url, cf.functionName);
    categories[category] = (categories[category] ?? 0) + perReq(f.self);
    costs.push({
      name: cf.functionName || "(anonymous)",
      location: locate(cf.url, cf.lineNumber, cf.columnNumber),
      category,
      selfUs: perReq(f.self),
      totalUs: perReq(f.total),
    });
  }
  const bySelf = (a: FrameCost, b: FrameCost) => b.selfUs - a.selfUs;
  const busy = costs.filter((c) => !["idle", "root", "program"].includes(c.category));
  return {
    requests,
    durationMs: (profile.endTime - profile.startTime) / 1000,
    samples: samples.length,
    categories: Object.fromEntries(Object.entries(categories).sort((a, b) => b[1] - a[1])),
    topSelf: busy.sort(bySelf).slice(0, 25),
    frames: busy.filter((c) => c.selfUs >= 0.01),
    meshlink: costs
      .filter((c) => c.category === "meshlink")
      .sort(bySelf)
      .slice(0, 25),
    undiciCompose: costs
      .filter(
        (c) =>
          c.category === "undici-compose" ||
          (c.category === "undici" && c.name === "parseHeaders") ||
          (c.category === "node" && c.name === "from"),
      )
      .sort(bySelf)
      .slice(0, 15),
    file,
  };
}

/**
 * A CPU profile in progress (the inspector's sampling profiler, every
 * `intervalUs`), so that a process can be profiled over interleaved blocks:
 * what it samples between its blocks is idle time, which the summary leaves out.
 */
export class Profiling {
  readonly #session = new Session();

  /** Starts sampling. */
  async start(intervalUs: number): Promise<void> {
    this.#session.connect();
    await this.#session.post("Profiler.enable");
    await this.#session.post("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.#session.post("Profiler.start");
  }

  /** Stops, writes the raw profile to `file` and returns it. */
  async stop(file: string): Promise<CpuProfile> {
    try {
      const { profile: p } = (await this.#session.post("Profiler.stop")) as unknown as {
        profile: CpuProfile;
      };
      writeFileSync(file, JSON.stringify(p));
      return p;
    } finally {
      this.#session.disconnect();
    }
  }
}

/** Profiles `run` with the inspector (sampling every `intervalUs`), writes the raw profile to `file`. */
export async function profile<T>(
  file: string,
  intervalUs: number,
  run: () => Promise<T>,
): Promise<{ result: T; profile: CpuProfile }> {
  const p = new Profiling();
  await p.start(intervalUs);
  let result: T;
  try {
    result = await run();
  } catch (err) {
    await p.stop(file);
    throw err;
  }
  return { result, profile: await p.stop(file) };
}

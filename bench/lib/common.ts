/**
 * Shared helpers of the benchmarks: flags, statistics, tables, targets and
 * the JSON results file. Node built-ins only.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** The `bench/` folder. */
export const BENCH_DIR = fileURLToPath(new URL("..", import.meta.url));
/** Where results go (git-ignored). */
export const RESULTS_DIR = join(BENCH_DIR, "results");

/** Command-line flags common to every benchmark. */
export interface Flags {
  /** A short pass that only checks that the benchmark still works (CI). */
  readonly smoke: boolean;
  /** Exit non-zero when a target is missed (never in smoke mode). */
  readonly strict: boolean;
  /** `--name=value` flags, raw. */
  readonly values: ReadonlyMap<string, string>;
}

/** Parses `--smoke`, `--strict` and `--name=value` flags. */
export function parseFlags(argv: readonly string[] = process.argv.slice(2)): Flags {
  const values = new Map<string, string>();
  let smoke = false;
  let strict = false;
  for (const arg of argv) {
    if (arg === "--smoke") smoke = true;
    else if (arg === "--strict") strict = true;
    else if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      if (eq > 0) values.set(arg.slice(2, eq), arg.slice(eq + 1));
      else values.set(arg.slice(2), "true");
    }
  }
  return { smoke, strict, values };
}

/** A numeric flag, or the fallback. */
export function numberFlag(flags: Flags, name: string, fallback: number): number {
  const raw = flags.values.get(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}=${raw}: expected a positive number`);
  return n;
}

/** A list flag (`--name=a,b`), or the fallback. */
export function listFlag(flags: Flags, name: string, fallback: readonly string[]): string[] {
  const raw = flags.values.get(name);
  return raw === undefined ? [...fallback] : raw.split(",").filter((s) => s !== "");
}

/** The median of a list (NaN when empty). */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** The q-quantile of a list, linear between the two nearest ranks (NaN when empty). */
export function quantile(values: readonly number[] | Float64Array, q: number): number {
  const n = values.length;
  if (n === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const pos = (n - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Formats a number with a fixed count of decimals, or `-` for NaN/undefined. */
export function fmt(value: number | undefined, decimals = 1): string {
  if (value === undefined || !Number.isFinite(value)) return "-";
  return value.toFixed(decimals);
}

/** Prints an aligned text table (numbers right-aligned). */
export function printTable(
  title: string,
  header: readonly string[],
  rows: readonly (readonly string[])[],
): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const numeric = header.map((_, i) => rows.every((r) => /^[-+]?[\d.,x%µ [\]−-]*$/.test(r[i] ?? "")));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (numeric[i] && i > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ");
  console.log(`\n${title}`);
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** One performance target, evaluated. */
export interface TargetResult {
  /** Stable id, e.g. `request-mesh-rps-ratio-c16`. */
  readonly id: string;
  /** What is compared, in words. */
  readonly description: string;
  /** The measured value. */
  readonly value: number;
  /** Its unit (`x`, `µs`, `ms`, `MB`). */
  readonly unit: string;
  /** `>=` or `<=`. */
  readonly op: ">=" | "<=";
  /** The limit. */
  readonly limit: number;
  /** Whether the value meets the limit. */
  readonly pass: boolean;
  /** How the value was measured. */
  readonly how: string;
}

/** Evaluates a target. */
export function target(
  id: string,
  description: string,
  value: number,
  op: ">=" | "<=",
  limit: number,
  unit: string,
  how: string,
): TargetResult {
  const pass = Number.isFinite(value) && (op === ">=" ? value >= limit : value <= limit);
  return { id, description, value, unit, op, limit, pass, how };
}

/** Prints targets as PASS/MISS lines. */
export function printTargets(targets: readonly TargetResult[], smoke: boolean): void {
  console.log(`\nTargets${smoke ? " (smoke pass: too short to judge, shown only to prove the wiring)" : ""}`);
  for (const t of targets) {
    const decimals = t.unit === "x" ? 2 : t.unit === "µs" && Math.abs(t.value) < 10 ? 2 : 1;
    console.log(
      `  ${t.pass ? "PASS" : "MISS"}  ${t.description}: ${fmt(t.value, decimals)} ${t.unit} (target ${t.op} ${t.limit} ${t.unit})`,
    );
  }
}

/** What machine the numbers came from. */
export interface MachineInfo {
  readonly nproc: number;
  readonly cpu: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly undici: string;
  /** The undici bundled in Node (its global `fetch`). */
  readonly nodeUndici: string;
  readonly platform: string;
  readonly kernel: string;
}

/** Collects {@link MachineInfo}. */
export function machineInfo(): MachineInfo {
  let nproc = cpus().length;
  try {
    nproc = Number(execFileSync("nproc", { encoding: "utf8" }).trim()) || nproc;
  } catch {
    // nproc missing: os.cpus() is close enough
  }
  let undici = "?";
  try {
    undici = JSON.parse(
      readFileSync(join(BENCH_DIR, "..", "node_modules", "undici", "package.json"), "utf8"),
    ).version;
  } catch {
    // not installed where expected
  }
  let kernel = "?";
  try {
    kernel = execFileSync("uname", ["-r"], { encoding: "utf8" }).trim();
  } catch {
    // no uname
  }
  return {
    nproc,
    cpu: cpus()[0]?.model ?? "?",
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    undici,
    nodeUndici: process.versions.undici ?? "?",
    platform: `${process.platform}-${process.arch}`,
    kernel,
  };
}

/** Which code was measured: the commit, and whether src/ differed from it. */
export function sourceInfo(): { commit: string; srcDirty: boolean } {
  try {
    const cwd = join(BENCH_DIR, "..");
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], {
      cwd,
      encoding: "utf8",
    }).trim();
    return { commit, srcDirty: dirty !== "" };
  } catch {
    return { commit: "?", srcDirty: false };
  }
}

/** Writes `bench/results/<name>.json` and returns its path. */
export function writeResults(name: string, data: Record<string, unknown>): string {
  const file = join(RESULTS_DIR, `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(
    file,
    `${JSON.stringify({ name, date: new Date().toISOString(), machine: machineInfo(), source: sourceInfo(), ...data }, null, 2)}\n`,
  );
  return file;
}

/** Ends the process: 1 when a target was missed under `--strict` (never in smoke mode), else 0. */
export function finish(flags: Flags, targets: readonly TargetResult[], file: string): void {
  console.log(`\nresults: ${file}`);
  const missed = targets.filter((t) => !t.pass);
  if (flags.strict && !flags.smoke && missed.length > 0) {
    console.log(`${missed.length} target(s) missed (--strict)`);
    process.exitCode = 1;
  }
}

/** Waits, unref'd. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A full, synchronous garbage collection (`--expose-gc` turned on at run time). */
export function gcFunction(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

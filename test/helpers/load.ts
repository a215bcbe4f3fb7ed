import type { Mesh } from "../../src/mesh.js";

/** One request's outcome in a load run. */
export interface Outcome {
  /** When it ended, ms since the run started. */
  readonly at: number;
  /** The server that answered (from its JSON body), or undefined when the request failed. */
  readonly server: string | undefined;
  /** The error code or message of a failed request. */
  readonly error: string | undefined;
}

/** Runs closed-loop GET traffic with `workers` concurrent callers until `until()` is true or `maxMs` passes. */
export async function runLoad(
  mesh: Mesh,
  url: string,
  options: { workers?: number; maxMs: number; until?: (outcomes: readonly Outcome[]) => boolean },
): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const start = performance.now();
  let done = false;
  const worker = async () => {
    while (!done) {
      try {
        const res = await mesh.fetch(url);
        const body = (await res.json()) as { server?: string };
        outcomes.push({
          at: performance.now() - start,
          server: res.ok ? body.server : undefined,
          error: res.ok ? undefined : `status ${res.status}`,
        });
      } catch (err) {
        const e = err as Error & { cause?: { code?: string } };
        outcomes.push({
          at: performance.now() - start,
          server: undefined,
          error: `${e.cause?.code ?? e.message}: ${(e.cause as Error | undefined)?.message ?? ""}`,
        });
      }
      if (performance.now() - start >= options.maxMs || options.until?.(outcomes) === true) done = true;
    }
  };
  await Promise.all(Array.from({ length: options.workers ?? 8 }, worker));
  return outcomes;
}

/** The share of the last `n` outcomes whose server's name starts with `prefix`. */
export function shareOfLast(outcomes: readonly Outcome[], n: number, prefix: string): number {
  const last = outcomes.slice(-n);
  if (last.length < n) return 0;
  return last.filter((o) => o.server?.startsWith(prefix)).length / n;
}

/** The failed outcomes. */
export function failures(outcomes: readonly Outcome[]): Outcome[] {
  return outcomes.filter((o) => o.server === undefined);
}

/**
 * Validation helpers shared by the config loader and every plug-in factory
 * (backends, policies): a zod failure becomes a {@link ConfigError} that
 * names the option path and the offending value. An unknown key is named
 * itself, with the nearest known key when it looks like a typo.
 *
 * @module
 */

import type { z } from "zod";
import { ConfigError } from "../errors.js";

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** A key as written in a message: keys are user input too, and may be long. */
function keyText(key: string): string {
  return key.length > 64 ? `${key.slice(0, 60)}…` : key;
}

function pathString(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (typeof seg === "string" && !IDENTIFIER.test(seg)) out += `[${JSON.stringify(keyText(seg))}]`;
    else {
      const text = typeof seg === "string" ? keyText(seg) : String(seg);
      out += out === "" || out.endsWith(" ") ? text : `.${text}`;
    }
  }
  return out.trim().replace(/:$/, "") || "options";
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const seg of path) {
    if (v === null || typeof v !== "object" || !Object.hasOwn(v, seg)) return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/** The parts of a zod issue this module reads (zod's own types are a wide union). */
interface Issue {
  readonly code: string;
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly keys?: readonly string[];
  readonly errors?: readonly (readonly Issue[])[];
}

/**
 * The issue to report. A union (`budget: false | {…}`) fails as a whole; the
 * useful issue is inside the branch that matched the value's shape — the one
 * whose issues do not all sit at the union itself — with its path made
 * absolute. When no branch matched (`budget: true`), the union's own issue.
 */
function innermost(issue: Issue): Issue {
  if (issue.code !== "invalid_union" || !issue.errors) return issue;
  const branch = issue.errors.find((issues) =>
    issues.some((i) => i.path.length > 0 || i.code === "unrecognized_keys"),
  );
  const inner = branch?.[0];
  if (inner === undefined) return issue;
  return innermost({ ...inner, path: [...issue.path, ...inner.path] });
}

/** The minimal view of a zod schema's definition that {@link keysAt} walks. */
interface Def {
  readonly type: string;
  readonly shape?: Record<string, { readonly def: Def }>;
  readonly innerType?: { readonly def: Def };
  readonly in?: { readonly def: Def };
  readonly element?: { readonly def: Def };
  readonly valueType?: { readonly def: Def };
  readonly options?: readonly { readonly def: Def }[];
}

/** The keys the object schema at `path` accepts (every branch of a union). */
function keysAt(def: Def | undefined, path: readonly PropertyKey[]): string[] {
  if (def === undefined) return [];
  const [seg, ...rest] = path;
  switch (def.type) {
    case "optional":
    case "nullable":
    case "default":
    case "prefault":
    case "readonly":
    case "catch":
    case "nonoptional":
      return keysAt(def.innerType?.def, path);
    case "pipe":
      return keysAt(def.in?.def, path);
    case "union":
      return [...new Set((def.options ?? []).flatMap((o) => keysAt(o.def, path)))];
    case "object":
      if (seg === undefined) return Object.keys(def.shape ?? {});
      return typeof seg === "string" && def.shape && Object.hasOwn(def.shape, seg)
        ? keysAt(def.shape[seg]?.def, rest)
        : [];
    case "array":
      return typeof seg === "number" ? keysAt(def.element?.def, rest) : [];
    case "record":
      return seg === undefined ? [] : keysAt(def.valueType?.def, rest);
    default:
      return [];
  }
}

/** Optimal string alignment distance (Damerau–Levenshtein with adjacent transpositions). */
function distance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) rows.push([i]);
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i]!;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, row[j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      row[j] = d;
    }
  }
  return rows[a.length]![b.length]!;
}

/**
 * The known key `key` is most likely a typo of, or undefined: the same key
 * in another case, else the nearest within 1 edit (keys of up to 4
 * characters), 2 (up to 8) or 3.
 *
 * @internal
 */
export function didYouMean(key: string, known: readonly string[]): string | undefined {
  if (key.length > 64) return undefined;
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = key.length <= 4 ? 1 : key.length <= 8 ? 2 : 3;
  for (const candidate of known) {
    const d = candidate.toLowerCase() === lower ? 0 : distance(lower, candidate.toLowerCase());
    if (d < bestDistance || (d === bestDistance && best === undefined)) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * Parses `value` with `schema`; on failure throws a {@link ConfigError} for
 * the first issue, naming `prefix` + the issue's path and the bad value. An
 * unknown key is named itself (`regoin`, not the object holding it), with
 * its value and the key it most likely means.
 *
 * @internal
 */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw issueError(schema, value, prefix, result.error.issues[0] as unknown as Issue, result.error);
}

/**
 * Every problem of `value` against `schema`, one {@link ConfigError} per
 * zod issue, worded as {@link parseOptions} words the first; empty when
 * the value is valid. For `meshlink config check`, which reports them all.
 *
 * @internal
 */
export function validationErrors(schema: z.ZodType, value: unknown, prefix: string): ConfigError[] {
  const result = schema.safeParse(value);
  if (result.success) return [];
  return result.error.issues.map((issue) =>
    issueError(schema, value, prefix, issue as unknown as Issue, result.error),
  );
}

function issueError(
  schema: z.ZodType,
  value: unknown,
  prefix: string,
  first: Issue,
  cause: unknown,
): ConfigError {
  const issue = innermost(first);
  const what = prefix.includes(": ") ? "field" : "option";
  if (issue.code === "unrecognized_keys" && issue.keys && issue.keys.length > 0) {
    const [key, ...others] = issue.keys as [string, ...string[]];
    const path = [...issue.path, key];
    const known = keysAt((schema as unknown as { def: Def }).def, issue.path);
    const guess = didYouMean(key, known);
    const problem =
      `unknown ${what}` +
      (guess === undefined ? "" : `; did you mean ${JSON.stringify(guess)}?`) +
      (others.length > 0
        ? ` (also unknown: ${others.slice(0, 5).map(keyText).join(", ")}${others.length > 5 ? ", …" : ""})`
        : "");
    return new ConfigError(pathString(prefix, path), valueAt(value, path), problem, { cause });
  }
  return new ConfigError(pathString(prefix, issue.path), valueAt(value, issue.path), issue.message, {
    cause,
  });
}

/**
 * The first problem of a payload (an API answer, a plugin's output) that
 * did not match its schema, as `path: problem` (`items[0].metadata.name:
 * Invalid input: expected string`); `root` names the payload itself when
 * the problem is with the whole of it.
 */
export function describeIssue(error: z.ZodError, root = "(root)"): string {
  const issue = error.issues[0];
  if (issue === undefined) return "invalid";
  const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
  return `${path.replace(/^\./, "") || root}: ${issue.message}`;
}

/**
 * Validation helpers shared by the config loader and every plug-in factory
 * (backends, policies): a zod failure becomes a {@link ConfigError} that
 * names the option path and the offending value.
 *
 * @module
 */

import type { z } from "zod";
import { ConfigError } from "../errors.js";

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function pathString(prefix: string, path: readonly PropertyKey[]): string {
  let out = prefix;
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (typeof seg === "string" && !IDENTIFIER.test(seg)) out += `[${JSON.stringify(seg)}]`;
    else out += out === "" || out.endsWith(" ") ? String(seg) : `.${String(seg)}`;
  }
  return out.trim().replace(/:$/, "") || "options";
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const seg of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/**
 * Parses `value` with `schema`; on failure throws a {@link ConfigError} for
 * the first issue, naming `prefix` + the issue's path and the bad value.
 *
 * @internal
 */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path;
  throw new ConfigError(pathString(prefix, path), valueAt(value, path), issue.message, {
    cause: result.error,
  });
}

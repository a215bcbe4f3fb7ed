/**
 * How a value appears in an error message or a configuration view: short
 * (about 60 characters, a preview of an object or array that stops early),
 * and never showing a secret — the value of a key named like one (`token`,
 * `privateKey`, `CONSUL_HTTP_TOKEN`) or given at an option path named like
 * one is `[redacted]`. Errors name the thing and the value (DESIGN.md,
 * "What users can rely on when things go wrong") through these.
 *
 * @module
 */

/** What a redacted value shows instead of its content. */
export const REDACTED = "[redacted]";

/** Words that make a key name a secret's: its value is never shown in an error. */
const SECRET_WORD =
  /^(?:tokens?|passwords?|passwd|passphrase|secrets?|credentials?|keys?|apikey|authorization)$/i;

/** Splits `apiKey`, `MESHLINK_TLS_KEY`, `x-api-key` into words. */
const WORD_BREAK = /[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])/;

/** True when a key name names a secret: `token`, `privateKey`, `CONSUL_HTTP_TOKEN` (not `keycloak`). */
function namesSecret(key: string): boolean {
  for (const word of key.split(WORD_BREAK)) if (SECRET_WORD.test(word)) return true;
  return false;
}

/** Longest rendering of a value in an error message, in characters (about). */
const MAX_VALUE_CHARS = 60;

/** Segments of an option path: `a.b[0]["c.d"]` → `a`, `b`, `c.d`. */
const PATH_SEGMENT = /\["((?:[^"\\]|\\.)*)"\]|\[\d+\]|([^.[\]]+)/g;

/**
 * True when a segment of the field path in `source` names a secret. The
 * file name before `: ` is no key (a file may be called `secrets.yaml`).
 */
export function isSecretSource(source: string): boolean {
  const at = source.indexOf(": ");
  const path = at === -1 ? source : source.slice(at + 2);
  for (const m of path.matchAll(PATH_SEGMENT)) {
    const segment = m[1] ?? m[2];
    if (segment !== undefined && namesSecret(segment)) return true;
  }
  return false;
}

function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return Array.isArray(value) || proto === Object.prototype || proto === null;
}

/**
 * `value` with every entry under a secret key redacted: the same value when
 * there is none, else a copy (of plain objects and arrays, to depth 8 and
 * 1 000 entries; what lies beyond is dropped rather than risked).
 *
 * @internal Also what the admin endpoint shows the configuration through.
 */
export function redactValue(value: unknown): unknown {
  try {
    return redactedCopy(value);
  } catch {
    // A getter that throws, a proxy: nothing of it can be shown safely.
    return REDACTED;
  }
}

function redactedCopy(value: unknown): unknown {
  let budget = 1000;
  const hasSecret = (v: unknown, depth: number): boolean => {
    if (typeof v !== "object" || v === null || !isPlain(v)) return false;
    if (depth > 8) return true;
    for (const key of Object.keys(v)) {
      if (--budget < 0) return true;
      if (namesSecret(key) || hasSecret((v as Record<string, unknown>)[key], depth + 1)) return true;
    }
    return false;
  };
  if (!hasSecret(value, 0)) return value;
  budget = 1000;
  const copy = (v: unknown, depth: number): unknown => {
    if (typeof v !== "object" || v === null || !isPlain(v)) return v;
    if (depth > 8) return REDACTED;
    const out: Record<string, unknown> | unknown[] = Array.isArray(v) ? [] : {};
    for (const key of Object.keys(v)) {
      if (--budget < 0) break;
      const inner = (v as Record<string, unknown>)[key];
      (out as Record<string, unknown>)[key] = namesSecret(key) ? REDACTED : copy(inner, depth + 1);
    }
    return out;
  };
  return copy(value, 0);
}

/**
 * @internal Renders a value for an error message: strings quoted, the rest
 * as JSON, cut to about 60 characters (a long string says how long it was),
 * entries under secret keys redacted. Never serialises more than it shows:
 * a 10 MB value costs what a short one does.
 */
export function formatValue(value: unknown): string {
  if (typeof value === "string") {
    if (value.length <= MAX_VALUE_CHARS) {
      const quoted = JSON.stringify(value);
      if (quoted.length <= MAX_VALUE_CHARS + 2) return quoted;
    }
    return `${JSON.stringify(value.slice(0, MAX_VALUE_CHARS - 20)).slice(0, -1)}…" (${value.length} chars)`;
  }
  let text: string;
  try {
    text = preview(value, MAX_VALUE_CHARS);
  } catch {
    // A getter that throws, a proxy: say what it is rather than fail.
    text = Object.prototype.toString.call(value);
  }
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

/** A JSON-like rendering of `value` that stops soon after `budget` characters. */
function preview(value: unknown, budget: number): string {
  let out = "";
  const seen = new Set<object>();
  const walk = (v: unknown, depth: number): void => {
    if (out.length > budget) return;
    switch (typeof v) {
      case "string":
        out += JSON.stringify(v.length > budget ? v.slice(0, budget) : v);
        return;
      case "bigint":
        out += `${v}n`;
        return;
      case "symbol":
        out += v.toString();
        return;
      case "function":
        out += `[function ${v.name || "anonymous"}]`;
        return;
      case "object":
        break;
      default:
        out += String(v);
        return;
    }
    if (v === null) {
      out += "null";
      return;
    }
    if (seen.has(v)) {
      out += "[circular]";
      return;
    }
    if (v instanceof Date) {
      out += Number.isNaN(v.getTime()) ? "Invalid Date" : v.toISOString();
      return;
    }
    if (v instanceof Error) {
      out += `[${v.name}]`;
      return;
    }
    if (v instanceof Map || v instanceof Set) {
      out += `${v.constructor.name}(${v.size})`;
      return;
    }
    if (ArrayBuffer.isView(v)) {
      out += `${v.constructor.name}(${v.byteLength} bytes)`;
      return;
    }
    if (depth >= 4) {
      out += Array.isArray(v) ? "[…]" : "{…}";
      return;
    }
    seen.add(v);
    if (Array.isArray(v)) {
      out += "[";
      for (let i = 0; i < v.length && out.length <= budget; i++) {
        if (i > 0) out += ",";
        walk(v[i], depth + 1);
      }
      out += "]";
    } else {
      out += "{";
      let first = true;
      for (const key in v) {
        if (out.length > budget) break;
        if (!Object.hasOwn(v, key)) continue;
        out += `${first ? "" : ","}${JSON.stringify(key)}:`;
        first = false;
        if (namesSecret(key)) out += REDACTED;
        else walk((v as Record<string, unknown>)[key], depth + 1);
      }
      out += "}";
    }
    seen.delete(v);
  };
  walk(value, 0);
  return out;
}

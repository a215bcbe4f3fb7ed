/**
 * Reading the config file: a regular file of at most
 * {@link MAX_CONFIG_FILE_BYTES}, JSON or YAML parsed with limits. A file is
 * user input that may be wrong in every way — a FIFO, `/dev/zero`, a 10 MB
 * list, a key file named by mistake — and `createMesh` reads it
 * synchronously, so every way must end quickly in a {@link ConfigError}
 * that never repeats the file's content.
 *
 * @module
 */

import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { parseDocument, type YAMLError } from "yaml";
import { ConfigError } from "../errors.js";

/**
 * The largest config file read, in bytes (1 MiB). A real one is a few
 * kilobytes; parsing a 1 MiB YAML list already takes about a second, during
 * which `createMesh` blocks the event loop.
 */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/**
 * The most alias nodes a YAML file may resolve (the yaml package's
 * `maxAliasCount`): anchors are fine for sharing a cluster list, a
 * "billion laughs" expansion is not.
 */
export const MAX_YAML_ALIAS_COUNT = 100;

/**
 * The deepest nesting of YAML collections accepted. The yaml package
 * recurses per level: some 100 000 levels (`[[[[…`, or `- - - …` on one
 * line, 200 KB of text) exhaust the heap and abort the process, which no
 * catch can stop; a real config nests a handful of levels.
 */
export const MAX_YAML_DEPTH = 64;

// Opening a FIFO for reading blocks until a writer comes, unless non-blocking.
// Windows has no O_NONBLOCK (and no FIFOs in the file system).
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isSocket()) return "a socket";
  return "not a regular file";
}

/**
 * Reads the config file at `path` as UTF-8 text, refusing anything but a
 * regular file of at most {@link MAX_CONFIG_FILE_BYTES}. `source` names
 * where the path came from (`MESHLINK_CONFIG` or `config`).
 *
 * @throws {@link ConfigError} naming `source`, the path and the reason.
 */
export function readConfigText(path: string, source: string): string {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FLAGS);
  } catch (err) {
    throw new ConfigError(source, path, `cannot read config file: ${(err as Error).message}`, { cause: err });
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      throw new ConfigError(source, path, `config file must be a regular file; this is ${kindOf(stats)}`);
    }
    const tooBig = (size: string) =>
      new ConfigError(source, path, `config file is ${size}; at most ${MAX_CONFIG_FILE_BYTES} bytes (1 MiB)`);
    if (stats.size > MAX_CONFIG_FILE_BYTES) throw tooBig(`${stats.size} bytes`);
    // Read to the end rather than trust the size: the file may be growing.
    const buf = Buffer.allocUnsafe(MAX_CONFIG_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buf, length, buf.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > MAX_CONFIG_FILE_BYTES) throw tooBig("larger than that");
    }
    const text = buf.toString("utf8", 0, length);
    return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(source, path, `cannot read config file: ${(err as Error).message}`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** `line L, column C` of a 0-based offset into `text`. */
function lineColumn(text: string, offset: number): string {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    start = i + 1;
  }
  return `line ${line}, column ${offset - start + 1}`;
}

/**
 * Where JSON text first goes wrong, and how: V8's `JSON.parse` messages
 * quote the text (a secret among it) and often give no position, so the
 * position is found again by this scan, which only runs on failure. It is
 * iterative: deep nesting cannot overflow the stack.
 */
function jsonError(text: string): { offset: number; problem: string } | undefined {
  const n = text.length;
  let i = 0;
  const stack: number[] = []; // 0x7b "{" or 0x5b "["
  const fail = (problem: string) => ({ offset: i, problem: i >= n ? "unexpected end of input" : problem });
  const space = () => {
    for (
      let c = text.charCodeAt(i);
      c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
      c = text.charCodeAt(++i)
    );
  };
  const string = (): boolean => {
    i++; // the opening quote
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return true;
      }
      if (c < 0x20) return false;
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === "u") {
          if (!/^[0-9A-Fa-f]{4}$/.test(text.slice(i + 2, i + 6))) return false;
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else return false;
      } else i++;
    }
    return false;
  };
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const key = (): { offset: number; problem: string } | undefined => {
    space();
    if (text[i] !== '"') return fail("expected a double-quoted property name");
    if (!string()) return fail("bad string");
    space();
    if (text[i] !== ":") return fail("expected ':' after a property name");
    i++;
    return undefined;
  };
  for (;;) {
    // A value is expected.
    space();
    const c = text[i];
    if (c === "{" || c === "[") {
      i++;
      space();
      if (text[i] === (c === "{" ? "}" : "]")) i++;
      else {
        stack.push(c.charCodeAt(0));
        if (c === "{") {
          const bad = key();
          if (bad) return bad;
        }
        continue;
      }
    } else if (c === '"') {
      if (!string()) return fail("bad string");
    } else if (c === "t" || c === "f" || c === "n") {
      const word = c === "t" ? "true" : c === "f" ? "false" : "null";
      if (!text.startsWith(word, i)) return fail("unexpected character");
      i += word.length;
    } else {
      NUMBER.lastIndex = i;
      if (!NUMBER.test(text)) return fail("unexpected character");
      i = NUMBER.lastIndex;
    }
    // After a value: a separator, a closing bracket, or the end.
    for (;;) {
      space();
      const top = stack[stack.length - 1];
      if (top === undefined) return i < n ? fail("unexpected character after the end") : undefined;
      const d = text.charCodeAt(i);
      if (d === top + 2) {
        // "{" + 2 is "}", "[" + 2 is "]".
        stack.pop();
        i++;
        continue;
      }
      if (d !== 0x2c) return fail(top === 0x7b ? "expected ',' or '}'" : "expected ',' or ']'");
      i++;
      if (top === 0x7b) {
        const bad = key();
        if (bad) return bad;
      }
      break;
    }
  }
}

/**
 * The offset at which YAML text nests deeper than {@link MAX_YAML_DEPTH}, or
 * -1. One linear pass that counts what opens a level: a line indented
 * deeper than the lines it sits under, a compact block indicator (`- - -`,
 * `? `) at the start of a line, a flow bracket outside quoted scalars and
 * comments. Brackets in plain scalars count too; that can only overstate
 * the depth, and only by brackets nobody writes sixty-four of.
 */
function tooDeep(text: string): number {
  const n = text.length;
  const blank = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
  const indents: number[] = []; // the indentation of each open block level
  let flow = 0;
  let lineStart = true;
  let width = 0;
  let block = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x0a) {
      lineStart = true;
      width = 0;
      continue;
    }
    if (lineStart) {
      if (c === 0x20) {
        if (width >= 0) width++;
        continue;
      }
      if (c === 0x09) continue;
      if (width >= 0) {
        // The first character of a line: its indentation closes and opens block levels.
        if (flow === 0 && c !== 0x23 && c !== 0x0d) {
          while (indents.length > 0 && indents[indents.length - 1]! >= width) indents.pop();
          indents.push(width);
        }
        block = indents.length;
        width = -1;
      }
      // "-", "?" or ":" followed by a blank opens one level more.
      if ((c === 0x2d || c === 0x3f || c === 0x3a) && (i + 1 === n || blank(text.charCodeAt(i + 1)))) {
        if (++block + flow > MAX_YAML_DEPTH) return i;
        continue;
      }
      lineStart = false;
      if (block + flow > MAX_YAML_DEPTH) return i;
    }
    const prev = i === 0 ? 0x0a : text.charCodeAt(i - 1);
    // A quote opens a quoted scalar, and "#" a comment, only at the start of a token.
    const tokenStart = blank(prev) || prev === 0x5b || prev === 0x7b || prev === 0x2c || prev === 0x3a;
    if (c === 0x23 && blank(prev)) {
      const end = text.indexOf("\n", i);
      i = (end === -1 ? n : end) - 1;
    } else if (c === 0x22 && tokenStart) {
      for (i++; i < n && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x27 && tokenStart) {
      for (i++; i < n; i++) {
        if (text.charCodeAt(i) !== 0x27) continue;
        if (text.charCodeAt(i + 1) !== 0x27) break;
        i++; // '' is an escaped quote
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (block + ++flow > MAX_YAML_DEPTH) return i;
    } else if ((c === 0x5d || c === 0x7d) && flow > 0) {
      flow--;
    }
  }
  return -1;
}

function yamlProblem(err: YAMLError): string {
  const at = err.linePos?.[0];
  // The code, not the message: yaml's messages quote the text around the error.
  const what = err.code.toLowerCase().replaceAll("_", " ");
  return at ? `${what} at line ${at.line}, column ${at.col}` : what;
}

function describe(data: unknown): string {
  if (data === null) return "null";
  if (Array.isArray(data)) return "a list";
  return typeof data === "object" ? "an object" : `a ${typeof data}`;
}

/**
 * Parses config text: JSON when `path` ends in `.json`, YAML (1.2 core
 * schema, no custom or YAML 1.1 tags, unique keys, at most
 * {@link MAX_YAML_ALIAS_COUNT} aliases) otherwise. The result is a mapping
 * (an empty file is an empty one).
 *
 * @throws {@link ConfigError} naming `source` and the path, with the line and
 * column of a syntax error — never the text.
 */
export function parseConfigText(text: string, path: string, source: string): Record<string, unknown> {
  const json = /\.json$/i.test(path);
  let data: unknown;
  if (json) {
    try {
      data = JSON.parse(text);
    } catch {
      const at = jsonError(text);
      throw new ConfigError(
        source,
        path,
        `config file is not valid JSON${at ? `: ${at.problem} at ${lineColumn(text, at.offset)}` : ""}`,
      );
    }
  } else {
    const invalid = (problem: string) =>
      new ConfigError(source, path, `config file is not valid YAML: ${problem}`);
    const deep = tooDeep(text);
    if (deep !== -1)
      throw invalid(`nested more than ${MAX_YAML_DEPTH} levels deep at ${lineColumn(text, deep)}`);
    let doc: ReturnType<typeof parseDocument>;
    try {
      doc = parseDocument(text, {
        schema: "core",
        resolveKnownTags: false,
        customTags: [],
        merge: false,
        uniqueKeys: true,
        logLevel: "silent",
      });
    } catch {
      // The parser recurses on nesting; thousands of levels overflow the stack.
      throw invalid("nested too deeply");
    }
    const bad = doc.errors[0] ?? doc.warnings.find((w) => w.code === "TAG_RESOLVE_FAILED");
    if (bad !== undefined) throw invalid(yamlProblem(bad));
    try {
      data = doc.toJS({ maxAliasCount: MAX_YAML_ALIAS_COUNT });
    } catch (err) {
      throw invalid(
        err instanceof ReferenceError && /alias/i.test(err.message)
          ? `more than ${MAX_YAML_ALIAS_COUNT} aliases resolved`
          : "nested too deeply",
      );
    }
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) {
    // Not the value: a file named by mistake (a token, a key) would be repeated.
    throw new ConfigError(
      source,
      path,
      `config file must hold a mapping of options; it holds ${describe(data)}`,
    );
  }
  return data as Record<string, unknown>;
}

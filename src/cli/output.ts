/**
 * What the CLI writes: plain text, aligned tables, and colours only on a
 * terminal (never in a pipe, a file or CI logs, and never with `NO_COLOR`
 * or `TERM=dumb`), or JSON with `--json`.
 *
 * @module
 */

/** A stream the CLI writes to. */
export interface OutStream {
  write(text: string): unknown;
  /** True for a terminal. */
  readonly isTTY?: boolean | undefined;
}

/** Where the CLI reads and writes: the process's own, or a test's. */
export interface CliIo {
  readonly stdout: OutStream;
  readonly stderr: OutStream;
  readonly env: Record<string, string | undefined>;
}

/** ANSI styles, by name. */
const STYLES = {
  bold: [1, 22],
  dim: [2, 22],
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  cyan: [36, 39],
} as const;

/** A style's name. */
export type Style = keyof typeof STYLES;

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escapes are what it matches.
const ANSI = /\u001b\[[0-9;]*m/g;

/** The width of a text as a terminal shows it (escape codes take none). */
export function visibleLength(text: string): number {
  return text.replace(ANSI, "").length;
}

/** True when `stream` should get colours: a terminal, without `NO_COLOR` or `TERM=dumb`. */
export function colorsFor(stream: OutStream, env: Record<string, string | undefined>): boolean {
  if (stream.isTTY !== true) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  return env.TERM !== "dumb";
}

/** Writes text, tables and JSON to one stream. */
export class Output {
  readonly #stream: OutStream;
  /** True when styles become colours. */
  readonly color: boolean;

  constructor(stream: OutStream, env: Record<string, string | undefined>) {
    this.#stream = stream;
    this.color = colorsFor(stream, env);
  }

  /** `text` in a style when colours are on, else as it is. */
  style(style: Style, text: string): string {
    if (!this.color || text === "") return text;
    const [on, off] = STYLES[style];
    return `\u001b[${on}m${text}\u001b[${off}m`;
  }

  /** Writes a line. */
  line(text = ""): void {
    this.#stream.write(`${text}\n`);
  }

  /** Writes a value as indented JSON. */
  json(value: unknown): void {
    this.#stream.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /**
   * Writes a table: a header row, then the rows, columns padded to their
   * widest cell. `right` lists the columns aligned right (numbers).
   */
  table(
    headers: readonly string[],
    rows: readonly (readonly string[])[],
    right: readonly number[] = [],
  ): void {
    const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ""))));
    const format = (cells: readonly string[]) =>
      cells
        .map((cell, i) => {
          const pad = " ".repeat(Math.max(0, widths[i]! - visibleLength(cell)));
          if (i === cells.length - 1 && !right.includes(i)) return cell;
          return right.includes(i) ? pad + cell : cell + pad;
        })
        .join("  ");
    this.line(this.style("bold", format(headers)));
    for (const row of rows) this.line(format(row));
  }
}

/** A duration in ms for people: `0.4 ms`, `12 ms`, `3.2 s`, `5 min`. */
export function formatMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return "-";
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 10_000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/** A share in [0, 1] as a percentage. */
export function formatShare(share: number): string {
  return `${Math.round(share * 1000) / 10}%`;
}

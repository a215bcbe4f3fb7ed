/**
 * What a CLI command is: its usage text, its options (for `node:util`'s
 * `parseArgs`) and what it does.
 *
 * @module
 */

import type { ParseArgsConfig } from "node:util";
import type { Output } from "./output.js";

/** What a command runs with. */
export interface CommandContext {
  /** Standard output. */
  readonly out: Output;
  /** Standard error. */
  readonly err: Output;
  /** The environment (the library reads the same). */
  readonly env: Record<string, string | undefined>;
  /** `--json`: one JSON document on standard output. */
  readonly json: boolean;
}

/** The parsed options of a command. */
export type OptionValues = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** One `meshlink` command. */
export interface Command {
  /** Its name, e.g. `resolve`. */
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The full `--help` text. */
  readonly usage: string;
  /** Its own options (`--json` and `--help` are every command's). */
  readonly options: NonNullable<ParseArgsConfig["options"]>;
  /** Runs it; returns the exit code. Throws for errors, which the CLI maps to exit codes. */
  run(values: OptionValues, positionals: string[], ctx: CommandContext): Promise<number>;
}

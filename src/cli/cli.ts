/**
 * The `meshlink` command line: `resolve`, `describe`, `call`, `config
 * check`, each with `--help` and `--json`, parsed with `node:util`'s
 * `parseArgs`. {@link run} returns the exit code instead of exiting, so
 * that it can be called in-process; `main.ts` is the executable.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { Command, CommandContext } from "./command.js";
import { callCommand } from "./commands/call.js";
import { configCommand } from "./commands/config.js";
import { describeCommand } from "./commands/describe.js";
import { resolveCommand } from "./commands/resolve.js";
import { ExitCode, errorCodeOf, exitCodeOf, UsageError } from "./exit.js";
import { type CliIo, Output } from "./output.js";

const COMMANDS: readonly Command[] = [resolveCommand, describeCommand, callCommand, configCommand];

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `Usage: meshlink <command> [options]

meshlink is an in-process service mesh; this tool shows why a call goes
where it goes, from the same environment and config file as the library.

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

Every command takes --json (one JSON document on standard output) and
--help. Colours only on a terminal (never with NO_COLOR).

Exit codes: 0 ok, 1 the call got a response of 400 or more, 2 bad usage,
3 invalid configuration, 4 service not found, 5 unavailable, 70 internal error.

Run 'meshlink <command> --help' for a command's options.`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** Runs the CLI with `argv` (without `node` and the script); returns the exit code. */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const out = new Output(io.stdout, io.env);
  const err = new Output(io.stderr, io.env);
  const [first, ...rest] = argv;
  if (first === undefined) {
    err.line(help());
    return ExitCode.USAGE;
  }
  if (first === "-h" || first === "--help") {
    out.line(help());
    return ExitCode.OK;
  }
  if (first === "-v" || first === "--version") {
    out.line(version());
    return ExitCode.OK;
  }
  if (first === "help") {
    const cmd = COMMANDS.find((c) => c.name === rest[0]);
    out.line(cmd?.usage ?? help());
    return cmd !== undefined || rest.length === 0 ? ExitCode.OK : ExitCode.USAGE;
  }
  const command = COMMANDS.find((c) => c.name === first);
  const json = rest.includes("--json");
  if (command === undefined) {
    return report(new UsageError(`unknown command ${JSON.stringify(first)}`), undefined, json, out, err);
  }
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest as string[],
      options: { ...command.options, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (e) {
    // parseArgs says what is wrong (an unknown option, a missing value).
    return report(new UsageError((e as Error).message, command.name), command, json, out, err);
  }
  if (values.help === true) {
    out.line(command.usage);
    return ExitCode.OK;
  }
  const ctx: CommandContext = { out, err, env: io.env, json: values.json === true };
  try {
    return await command.run(values as Record<string, string | boolean | undefined>, positionals, ctx);
  } catch (e) {
    return report(e, command, ctx.json, out, err);
  }
}

function report(e: unknown, command: Command | undefined, json: boolean, out: Output, err: Output): number {
  const code = exitCodeOf(e);
  const message = e instanceof Error ? e.message : String(e);
  if (json) {
    out.json({ error: { code: errorCodeOf(e), message, exitCode: code } });
    return code;
  }
  const name = command === undefined ? "meshlink" : `meshlink ${command.name}`;
  err.line(`${name}: ${err.style("red", "error")}: ${message}`);
  if (e instanceof UsageError) {
    err.line(
      command === undefined ? "Run 'meshlink --help' for the commands." : `Run '${name} --help' for usage.`,
    );
  } else if (code === ExitCode.INTERNAL && e instanceof Error && e.stack !== undefined) {
    err.line(err.style("dim", e.stack));
  }
  return code;
}

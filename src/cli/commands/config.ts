/**
 * `meshlink config check`: validates the environment and a config file as
 * `createMesh` reads them, for CI pipelines — every problem, not only the
 * first, and an exit code that fails the pipeline.
 *
 * @module
 */

import { checkConfig } from "../../config/check.js";
import type { Command, CommandContext, OptionValues } from "../command.js";
import { ExitCode, UsageError } from "../exit.js";

const USAGE = `Usage: meshlink config check [--config <file>] [--json]

Validates the MESHLINK_* environment variables and the config file
(--config, else MESHLINK_CONFIG) exactly as createMesh() reads them, and
reports every problem found, not only the first: unknown keys, bad values,
discovery backends whose options are wrong. Nothing is started and no
server is asked. Secrets are never shown.

  --config <file>   the config file to check instead of MESHLINK_CONFIG
  --json            one JSON document on standard output: { ok, file, variables, problems }
  -h, --help        this help

Exit codes: 0 valid, 2 bad usage, 3 problems found.`;

/** `meshlink config`. */
export const configCommand: Command = {
  name: "config",
  summary: "config check: validate the environment and a config file (for CI)",
  usage: USAGE,
  options: {
    config: { type: "string", short: "c" },
  },
  async run(values: OptionValues, positionals: string[], ctx: CommandContext): Promise<number> {
    const [sub, ...rest] = positionals;
    if (sub !== "check") {
      throw new UsageError(
        sub === undefined ? "config what? try 'config check'" : `unknown config command ${sub}`,
        "config",
      );
    }
    if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`, "config");
    const result = checkConfig(ctx.env, values.config as string | undefined);
    const ok = result.problems.length === 0;
    if (ctx.json) {
      ctx.out.json({ ok, ...result });
      return ok ? ExitCode.OK : ExitCode.CONFIG;
    }
    const out = ctx.out;
    const checked = [
      ...(result.file === undefined ? [] : [result.file]),
      ...result.variables.filter((v) => v !== "MESHLINK_CONFIG"),
    ];
    out.line(
      `checked ${checked.length === 0 ? "the defaults (no config file, no MESHLINK_* variable)" : checked.join(", ")}`,
    );
    if (ok) {
      out.line(out.style("green", "✓ the configuration is valid"));
      return ExitCode.OK;
    }
    for (const p of result.problems) out.line(`${out.style("red", "✗")} ${p.message}`);
    out.line(out.style("red", `${result.problems.length} problem${result.problems.length === 1 ? "" : "s"}`));
    return ExitCode.CONFIG;
  },
};

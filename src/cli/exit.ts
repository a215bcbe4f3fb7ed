/**
 * The CLI's exit codes: stable, so that scripts and CI pipelines can tell
 * a bad invocation from a bad configuration from a service that is down.
 *
 * @module
 */

import { ErrorCodes, isMeshError } from "../errors.js";

/** Exit codes of `meshlink`. */
export const ExitCode = {
  /** Done: found, answered, valid. */
  OK: 0,
  /** `call`: the service answered with a status of 400 or more. */
  ERROR_RESPONSE: 1,
  /** Bad usage: unknown command or option, missing or malformed argument. */
  USAGE: 2,
  /** The configuration (environment or config file) is invalid. */
  CONFIG: 3,
  /** No discovery backend knows the service. */
  NOT_FOUND: 4,
  /** Unavailable: discovery failed, no healthy endpoint, the call failed, the admin endpoint cannot be reached. */
  UNAVAILABLE: 5,
  /** A bug in meshlink. */
  INTERNAL: 70,
} as const;

/** A mistake in how the CLI was called. */
export class UsageError extends Error {
  /** The command whose help to point at, if any. */
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message);
    this.name = "UsageError";
    this.command = command;
  }
}

/** Something the CLI could not reach or read (the admin endpoint). */
export class UnavailableError extends Error {
  /** `MESHLINK_CLI_UNAVAILABLE`. */
  readonly code = "MESHLINK_CLI_UNAVAILABLE";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UnavailableError";
  }
}

/** The exit code for an error. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return ExitCode.USAGE;
  if (err instanceof UnavailableError) return ExitCode.UNAVAILABLE;
  if (isMeshError(err)) {
    switch (err.code) {
      case ErrorCodes.CONFIG:
        return ExitCode.CONFIG;
      case ErrorCodes.SERVICE_NAME:
        return ExitCode.USAGE;
      case ErrorCodes.SERVICE_NOT_FOUND:
        return ExitCode.NOT_FOUND;
      default:
        return ExitCode.UNAVAILABLE;
    }
  }
  const code = (err as { code?: unknown; cause?: { code?: unknown } } | null)?.cause?.code;
  // fetch's "fetch failed" for a host that is no mesh name: the network said no.
  if (typeof code === "string" && /^(E[A-Z]+|UND_ERR_)/.test(code)) return ExitCode.UNAVAILABLE;
  return ExitCode.INTERNAL;
}

/** The stable code of an error, for `--json` output. */
export function errorCodeOf(err: unknown): string {
  if (err instanceof UsageError) return "MESHLINK_CLI_USAGE";
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  if (typeof e?.code === "string") return e.code;
  if (typeof e?.cause?.code === "string") return e.cause.code;
  return "MESHLINK_CLI_INTERNAL";
}

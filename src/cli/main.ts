#!/usr/bin/env node
/**
 * The `meshlink` executable (the package's `bin`). See `cli.ts`.
 *
 * @module
 */

import { run } from "./cli.js";

process.exitCode = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  // A plain copy: `process.env` is an exotic object that option validation refuses.
  env: { ...process.env },
});

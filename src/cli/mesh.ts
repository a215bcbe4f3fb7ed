/**
 * The mesh a CLI command runs: built from the environment and config file
 * exactly as an application's `createMesh()` would be, except that it
 * never opens an admin endpoint (the application's may be listening on
 * the address `MESHLINK_ADMIN` names).
 *
 * @module
 */

import { createMesh, type Mesh } from "../mesh.js";
import type { CommandContext } from "./command.js";

/** Runs `fn` with a mesh from the environment (and `configFile`, else `MESHLINK_CONFIG`); closes it after. */
export async function withMesh<T>(
  ctx: CommandContext,
  configFile: string | undefined,
  fn: (mesh: Mesh) => Promise<T>,
): Promise<T> {
  const mesh = createMesh({
    env: ctx.env,
    admin: false,
    ...(configFile !== undefined && { config: configFile }),
  });
  try {
    return await fn(mesh);
  } finally {
    await mesh.close();
  }
}

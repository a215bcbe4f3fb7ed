/**
 * meshlink targets for grpc-js, `meshlink://<mesh-id>/<service>:<port>`,
 * and the process-wide table that turns a target's mesh id back into its
 * mesh. The id travels in the target's authority so that two meshes in one
 * process (two tenants, a library's own mesh beside the application's)
 * never resolve each other's names; `meshlink:///<service>:<port>`, with no
 * authority, names the one mesh of a process that has only one.
 *
 * The table lives on `globalThis` under a registered symbol: grpc-js keeps
 * one resolver per scheme, so when two copies of meshlink register on one
 * grpc-js, the last one's resolver must still find the other copy's meshes.
 *
 * @module
 */

import { type ServiceName, tryParseServiceName } from "../../discovery/names.js";
import type { GrpcMeshHost } from "./binding.js";

/** The URI scheme of meshlink targets. */
export const SCHEME = "meshlink";

interface MeshTable {
  next: number;
  readonly meshes: Map<string, GrpcMeshHost>;
}

const kMeshes = Symbol.for("meshlink.grpc.meshes");

function table(): MeshTable {
  const g = globalThis as { [kMeshes]?: MeshTable };
  g[kMeshes] ??= { next: 1, meshes: new Map() };
  return g[kMeshes];
}

/** A new mesh id, unique in the process: `mesh1`, `mesh2`, … */
export function nextMeshId(): string {
  return `mesh${table().next++}`;
}

/** Makes a mesh's targets resolvable. */
export function addMesh(host: GrpcMeshHost): void {
  table().meshes.set(host.id, host);
}

/** Stops resolving a mesh's targets (it closed). */
export function removeMesh(host: GrpcMeshHost): void {
  const meshes = table().meshes;
  if (meshes.get(host.id) === host) meshes.delete(host.id);
}

/**
 * The mesh a target names: by id, or, for a target without one, the only
 * mesh of the process. A string says why there is none.
 */
export function findMesh(id: string | undefined): GrpcMeshHost | string {
  const meshes = table().meshes;
  if (id !== undefined && id !== "") {
    return meshes.get(id) ?? `no open mesh ${id} in this process (closed, or made by another process)`;
  }
  if (meshes.size === 1) return meshes.values().next().value as GrpcMeshHost;
  return meshes.size === 0
    ? "no open mesh in this process"
    : `${meshes.size} meshes are open: the target must name one (use mesh.grpc.target())`;
}

/** The target of a service of a mesh. */
export function formatTarget(meshId: string, host: string, port: number | string): string {
  return `${SCHEME}://${meshId}/${host}:${port}`;
}

/** The service a target's path (`svc.ns:50051`, `svc.ns:grpc`) names, or undefined when it names none. */
export function serviceOfPath(path: string): ServiceName | undefined {
  const colon = path.lastIndexOf(":");
  if (colon <= 0 || colon === path.length - 1) return undefined;
  return tryParseServiceName(path.slice(0, colon), path.slice(colon + 1));
}

/**
 * The parent side of the benchmark processes: the HTTP server process and
 * the client processes, over IPC.
 *
 * @module
 */

import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import type { BlockStats, ClientRequest, RunStats } from "./client-worker.js";
import type { ClientSpec } from "./paths.js";
import type { ProfileSummary } from "./profile.js";

const SERVER = fileURLToPath(new URL("./echo-server.ts", import.meta.url));
const CLIENT = fileURLToPath(new URL("./client-worker.ts", import.meta.url));

/** The server process: one listener per name. */
export interface ServerProcess {
  readonly pid: number;
  /** Port by listener name. */
  readonly ports: Readonly<Record<string, number>>;
  /** The server process's CPU so far (µs) and the requests it answered. */
  cpu(): Promise<{ us: number; requests: number; byName: Record<string, number> }>;
  close(): Promise<void>;
}

const children = new Set<ChildProcess>();
// A benchmark that dies must not leave its children running.
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function spawnChild(file: string, args: readonly string[]): ChildProcess {
  // fork() reuses this process's execArgv: the tsx loader comes along.
  const child = fork(file, [...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.disconnect?.();
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

/** Starts the HTTP server process with listeners `names` on free loopback ports. */
export async function startServer(names: readonly string[] = ["a"]): Promise<ServerProcess> {
  const child = spawnChild(SERVER, [names.join(",")]);
  const [ready] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(() => {
      throw new Error("the bench server exited before it was ready");
    }),
  ])) as [{ type: string; ports: Record<string, number> }];
  return {
    pid: child.pid!,
    ports: ready.ports,
    async cpu() {
      child.send({ type: "cpu" });
      const [msg] = (await once(child, "message")) as [
        { usage: { user: number; system: number }; requests: number; byName: Record<string, number> },
      ];
      return { us: msg.usage.user + msg.usage.system, requests: msg.requests, byName: msg.byName };
    },
    close: () => stop(child),
  };
}

type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

/** A client process running one path. */
export interface ClientProcess {
  readonly spec: ClientSpec;
  readonly pid: number;
  run(concurrency: number, warmupMs: number, durationMs: number): Promise<RunStats>;
  /** Starts a series of blocks: empties the totals. */
  seriesStart(): Promise<unknown>;
  /** Runs one block; its requests count in the series when `record`. */
  block(concurrency: number, durationMs: number, record: boolean): Promise<BlockStats>;
  /** The series' totals: requests, elapsed time and CPU summed, latencies pooled over its blocks. */
  seriesEnd(): Promise<RunStats>;
  /** Starts the CPU profiler (sampling every `intervalUs`); the requests of the blocks that follow are counted. */
  profileStart(intervalUs?: number): Promise<unknown>;
  /** Stops it, writes the raw profile to `file` and summarises it per request. */
  profileStop(file: string): Promise<ProfileSummary>;
  close(): Promise<void>;
}

/** Starts a client process and sets its path up (one request is made to prove it works). */
export async function startClient(spec: ClientSpec): Promise<ClientProcess> {
  const child = spawnChild(CLIENT, []);
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on("message", (msg: { id: number; result?: unknown; error?: string }) => {
    const p = pending.get(msg.id);
    if (p === undefined) return;
    pending.delete(msg.id);
    if (msg.error !== undefined) p.reject(new Error(`client ${spec.path}: ${msg.error}`));
    else p.resolve(msg.result);
  });
  child.on("exit", (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`client ${spec.path} exited (${code ?? signal})`));
    pending.clear();
  });
  const ask = <T>(req: WithoutId<ClientRequest>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...req, id });
    });
  await ask({ type: "setup", spec });
  return {
    spec,
    pid: child.pid!,
    run: (concurrency, warmupMs, durationMs) => ask({ type: "run", concurrency, warmupMs, durationMs }),
    seriesStart: () => ask({ type: "series-start" }),
    block: (concurrency, durationMs, record) => ask({ type: "block", concurrency, durationMs, record }),
    seriesEnd: () => ask({ type: "series-end" }),
    profileStart: (intervalUs = 100) => ask({ type: "profile-start", intervalUs }),
    profileStop: (file) => ask({ type: "profile-stop", file }),
    async close() {
      await ask({ type: "close" }).catch(() => {});
      await stop(child);
    },
  };
}

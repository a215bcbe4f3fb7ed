/**
 * The client paths the HTTP benchmarks compare, each with its unmeshed twin.
 * Each path is set up in its own client process (see `client-worker.ts`), so
 * JIT state, garbage and the global dispatcher of one never leak into
 * another; modules are imported lazily for the same reason (plain global
 * `fetch` must not load npm undici, whose import installs its own global
 * dispatcher).
 *
 * @module
 */

import type { StaticEndpoint } from "meshlink";
import type { Dispatcher as DispatcherTypes } from "undici";

/** The logical name the meshed paths call; static discovery maps it to the bench servers. */
export const MESH_SERVICE = "echo.bench";
/** The URL the meshed paths call (the port in it is not where the mesh connects). */
export const MESH_URL = "http://echo.bench.svc.cluster.local:8080/";
/** The caller's locality in every benchmark mesh. */
export const MESH_LOCALITY = { region: "bench-1", zone: "bench-1a" } as const;

/** What a client process needs to know to set up a path. */
export interface ClientSpec {
  /** Which path. */
  readonly path: PathId;
  /** For unmeshed paths: the origin to call, `http://127.0.0.1:port`. */
  readonly origin?: string;
  /** For meshed paths: the static endpoints of {@link MESH_SERVICE}. */
  readonly endpoints?: readonly StaticEndpoint[];
  /**
   * For meshed paths: another copy of meshlink's source to load instead of
   * this one (the path of its `src/index.ts`), to compare two versions of
   * the code in one run (`--baseline`).
   */
  readonly meshlink?: string;
}

/** A path, set up: one call reads the whole response body. */
export interface PathSetup {
  call(): Promise<unknown>;
  close(): Promise<void>;
}

/** Every path, with what it is and its twin. */
export const PATHS = {
  "pool.request": {
    family: "request",
    meshed: false,
    label: "undici Pool.request (raw reference)",
    twin: undefined,
  },
  "request+Pool": {
    family: "request",
    meshed: false,
    label: "undici.request, dispatcher: raw Pool",
    twin: undefined,
  },
  "request+Agent": {
    family: "request",
    meshed: false,
    label: "undici.request, dispatcher: raw Agent",
    twin: undefined,
  },
  "request+Pool(mesh loaded)": {
    family: "request",
    meshed: false,
    label: "undici.request, dispatcher: raw Pool, in a process that also loaded meshlink and made a mesh",
    twin: "request+Pool",
  },
  "request+noop": {
    family: "request",
    meshed: false,
    label: "undici.request, dispatcher: Agent.compose(no-op interceptor)",
    twin: "request+Pool",
  },
  "request+rewrite": {
    family: "request",
    meshed: false,
    label: "undici.request, dispatcher: a Dispatcher subclass that only rewrites the origin (no compose)",
    twin: "request+Pool",
  },
  "request+mesh": {
    family: "request",
    meshed: true,
    label: "undici.request, dispatcher: mesh.dispatcher",
    twin: "request+Pool",
  },
  "request+mesh(other host)": {
    family: "request",
    meshed: true,
    label: "undici.request to 127.0.0.1 (not a mesh name), dispatcher: mesh.dispatcher",
    twin: "request+Agent",
  },
  "fetch+Agent": {
    family: "fetch",
    meshed: false,
    label: "global fetch, dispatcher: raw Agent (init option)",
    twin: undefined,
  },
  "fetch+Agent(mesh loaded)": {
    family: "fetch",
    meshed: false,
    label: "global fetch, dispatcher: raw Agent, in a process that also loaded meshlink and made a mesh",
    twin: "fetch+Agent",
  },
  "fetch+rewrite": {
    family: "fetch",
    meshed: false,
    label: "global fetch, dispatcher: a Dispatcher subclass that only rewrites the origin (no compose)",
    twin: "fetch+Agent",
  },
  "mesh.fetch": {
    family: "fetch",
    meshed: true,
    label: "mesh.fetch",
    twin: "fetch+Agent",
  },
  "fetch(global)": {
    family: "global",
    meshed: false,
    label: "global fetch, Node's own default dispatcher",
    twin: undefined,
  },
  "fetch(global=Agent)": {
    family: "global",
    meshed: false,
    label: "global fetch after setGlobalDispatcher(new Agent())",
    twin: undefined,
  },
  "fetch(global=mesh)": {
    family: "global",
    meshed: true,
    label: "global fetch after setGlobalDispatcher(mesh.dispatcher)",
    twin: "fetch(global=Agent)",
  },
} as const satisfies Record<
  string,
  { family: string; meshed: boolean; label: string; twin: string | undefined }
>;

/** A path id. */
export type PathId = keyof typeof PATHS;

async function createBenchMesh(spec: ClientSpec) {
  const endpoints = spec.endpoints;
  if (endpoints === undefined) throw new Error("a meshed path needs endpoints");
  const { createMesh, staticDiscovery } = (await import(
    spec.meshlink ?? "meshlink"
  )) as typeof import("meshlink");
  return createMesh({
    ...MESH_LOCALITY,
    failover: [],
    discovery: [staticDiscovery({ services: { [MESH_SERVICE]: [...endpoints] } })],
    // Ignore the environment: MESHLINK_* of the shell must not change what is measured.
    env: {},
  });
}

function needOrigin(spec: ClientSpec): string {
  if (spec.origin === undefined) throw new Error(`path ${spec.path} needs an origin`);
  return spec.origin;
}

/**
 * The floor of any origin-rewriting dispatcher: a `Dispatcher` subclass that
 * hands the caller's handler and a copy of its options, with `target` as the
 * origin, straight to `agent` (default a new `Agent`; no compose(), no
 * handler wrapping).
 */
export async function rewriteDispatcher(target: string, given?: DispatcherTypes) {
  const { Agent, Dispatcher } = await import("undici");
  const agent = given ?? new Agent();
  class Rewrite extends Dispatcher {
    override dispatch(
      opts: DispatcherTypes.DispatchOptions,
      handler: DispatcherTypes.DispatchHandler,
    ): boolean {
      return agent.dispatch({ ...opts, origin: target }, handler);
    }
    override close(): Promise<void> {
      return agent.close();
    }
    override destroy(): Promise<void> {
      return agent.destroy();
    }
  }
  return { dispatcher: new Rewrite(), agent };
}

/** The twins with meshlink loaded, and the path each runs. */
const LOADED_TWINS = {
  "request+Pool(mesh loaded)": "request+Pool",
  "fetch+Agent(mesh loaded)": "fetch+Agent",
} as const satisfies Partial<Record<PathId, PathId>>;

/** Sets up a path in this process. */
export async function setupPath(spec: ClientSpec): Promise<PathSetup> {
  const twin = LOADED_TWINS[spec.path as keyof typeof LOADED_TWINS];
  if (twin !== undefined) {
    // The twin in a process that has loaded meshlink and made a mesh, never called: the meshed
    // path's heap and loaded code without its calls (one call would also show undici's code the
    // mesh's options and handlers). What carrying meshlink costs a process's own calls
    // (docs/performance.md, "The fetch path, fifth pass").
    const mesh = await createBenchMesh(spec);
    const base = await setupPath({ ...spec, path: twin });
    return {
      call: base.call,
      close: async () => {
        await base.close();
        await mesh.close();
      },
    };
  }
  const url = spec.origin === undefined ? MESH_URL : `${spec.origin}/`;
  switch (spec.path) {
    case "pool.request": {
      const { Pool } = await import("undici");
      const pool = new Pool(needOrigin(spec));
      return {
        call: async () => (await pool.request({ path: "/", method: "GET" })).body.text(),
        close: () => pool.close(),
      };
    }
    case "request+Pool":
    case "request+Agent":
    case "request+noop": {
      const { Agent, Pool, request } = await import("undici");
      const origin = needOrigin(spec);
      const base = spec.path === "request+Pool" ? new Pool(origin) : new Agent();
      // The no-op interceptor: what undici's compose() costs by itself (WrapHandler + UnwrapHandler).
      const dispatcher =
        spec.path === "request+noop"
          ? base.compose((dispatch) => (opts, handler) => dispatch(opts, handler))
          : base;
      return {
        call: async () => (await request(url, { dispatcher })).body.text(),
        close: () => base.close(),
      };
    }
    case "request+rewrite": {
      // The floor of any origin-rewriting dispatcher: no compose(), no handler wrapping, the caller's
      // handler straight to the Agent. What a mesh could cost if it spoke the caller's handler API.
      const { request } = await import("undici");
      const { dispatcher, agent } = await rewriteDispatcher(needOrigin(spec));
      return {
        call: async () => (await request(MESH_URL, { dispatcher })).body.text(),
        close: () => agent.close(),
      };
    }
    case "request+mesh": {
      const { request } = await import("undici");
      const mesh = await createBenchMesh(spec);
      const dispatcher = mesh.dispatcher;
      return {
        call: async () => (await request(MESH_URL, { dispatcher })).body.text(),
        close: () => mesh.close(),
      };
    }
    case "request+mesh(other host)": {
      // Traffic to any other host through the mesh's dispatcher (setGlobalDispatcher): what it pays.
      const { request } = await import("undici");
      const mesh = await createBenchMesh(spec);
      const dispatcher = mesh.dispatcher;
      const target = `${needOrigin(spec)}/`;
      return {
        call: async () => (await request(target, { dispatcher })).body.text(),
        close: () => mesh.close(),
      };
    }
    case "fetch+Agent": {
      const { Agent } = await import("undici");
      const agent = new Agent();
      const init = { dispatcher: agent } as unknown as RequestInit;
      needOrigin(spec);
      return {
        call: async () => (await fetch(url, init)).text(),
        close: () => agent.close(),
      };
    }
    case "fetch+rewrite": {
      // The floor of any origin-rewriting dispatcher under fetch: fetch's own handler straight to the Agent.
      const { dispatcher, agent } = await rewriteDispatcher(needOrigin(spec));
      const init = { dispatcher } as unknown as RequestInit;
      return {
        call: async () => (await fetch(MESH_URL, init)).text(),
        close: () => agent.close(),
      };
    }
    case "mesh.fetch": {
      const mesh = await createBenchMesh(spec);
      return {
        call: async () => (await mesh.fetch(MESH_URL)).text(),
        close: () => mesh.close(),
      };
    }
    case "fetch(global)": {
      needOrigin(spec);
      return { call: async () => (await fetch(url)).text(), close: async () => {} };
    }
    case "fetch(global=Agent)": {
      const { Agent, setGlobalDispatcher } = await import("undici");
      const agent = new Agent();
      setGlobalDispatcher(agent);
      needOrigin(spec);
      return { call: async () => (await fetch(url)).text(), close: () => agent.close() };
    }
    case "fetch(global=mesh)": {
      const { setGlobalDispatcher } = await import("undici");
      const mesh = await createBenchMesh(spec);
      setGlobalDispatcher(mesh.dispatcher);
      return { call: async () => (await fetch(MESH_URL)).text(), close: () => mesh.close() };
    }
  }
  // The loaded twins, set up above.
  throw new Error(`path ${spec.path} has no set-up of its own`);
}

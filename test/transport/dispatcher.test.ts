import { once } from "node:events";
import { Agent, Dispatcher, errors, request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MeshDispatcher } from "../../src/transport/http/dispatcher.js";
import { startServer, type TestServer } from "../helpers/servers.js";
import { meshRoutes } from "./mesh-routes.js";

const MESH_ORIGIN = "http://api.default.svc.cluster.local";

/** A dispatcher that records what it is given and hands it on to `inner` (or answers `result`). */
class SpyDispatcher extends Dispatcher {
  readonly calls: { opts: Dispatcher.DispatchOptions; handler: Dispatcher.DispatchHandler }[] = [];
  closes = 0;
  destroys: (Error | null)[] = [];
  constructor(
    readonly inner: Dispatcher | undefined,
    readonly result = true,
  ) {
    super();
  }
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.calls.push({ opts, handler });
    return this.inner === undefined ? this.result : this.inner.dispatch(opts, handler);
  }
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    this.closes++;
    if (callback === undefined) return Promise.resolve();
    queueMicrotask(callback);
  }
  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(err?: Error | null | (() => void), callback?: () => void): Promise<void> | void {
    this.destroys.push(typeof err === "function" ? null : (err ?? null));
    const cb = typeof err === "function" ? err : callback;
    if (cb === undefined) return Promise.resolve();
    queueMicrotask(cb);
  }
}

/** A handler of undici's new API that collects the response. */
function collector() {
  const chunks: Buffer[] = [];
  let status = 0;
  let controller: Dispatcher.DispatchController | undefined;
  let settle!: { resolve: (v: { status: number; body: string }) => void; reject: (e: Error) => void };
  const done = new Promise<{ status: number; body: string }>((resolve, reject) => {
    settle = { resolve, reject };
  });
  const handler: Dispatcher.DispatchHandler = {
    onRequestStart(c) {
      controller = c;
    },
    onResponseStart(_c, statusCode) {
      status = statusCode;
    },
    onResponseData(_c, chunk) {
      chunks.push(chunk);
    },
    onResponseEnd() {
      settle.resolve({ status, body: Buffer.concat(chunks).toString() });
    },
    onResponseError(_c, err) {
      settle.reject(err);
    },
  };
  return { handler, done, controller: () => controller };
}

let server: TestServer;
let routes: ReturnType<typeof meshRoutes>;

beforeAll(async () => {
  server = await startServer("api", { address: "127.0.72.1" });
  routes = meshRoutes({ "api.default": [{ address: server.address, port: server.port, cluster: "east" }] });
});

afterAll(async () => {
  await routes.close();
  await server.stop();
});

afterEach(() => {
  server.requests.length = 0;
});

describe("MeshDispatcher", () => {
  it("hands a request to another host to its agent as it came: same options, same handler, its return value", async () => {
    const spy = new SpyDispatcher(undefined, false);
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    const opts = { origin: "http://example.test:8080", path: "/x", method: "GET" as const };
    const legacy = {
      onConnect() {},
      onHeaders: () => true,
      onData: () => true,
      onComplete() {},
      onError() {},
    };
    const modern = collector().handler;
    expect(dispatcher.dispatch(opts, legacy)).toBe(false);
    expect(dispatcher.dispatch(opts, modern)).toBe(false);
    expect(spy.calls).toHaveLength(2);
    expect(spy.calls[0]!.opts).toBe(opts);
    expect(spy.calls[0]!.handler).toBe(legacy);
    expect(spy.calls[1]!.handler).toBe(modern);
  });

  it("sends the attempts of a legacy caller to the agent as legacy handlers, which undici does not wrap", async () => {
    const agent = new Agent();
    const spy = new SpyDispatcher(agent);
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    const res = await request(`${MESH_ORIGIN}/legacy`, { dispatcher });
    expect(JSON.parse(await res.body.text()).server).toBe("api");
    const attempt = spy.calls[0]!.handler;
    expect(attempt.onRequestStart).toBeUndefined();
    expect(typeof attempt.onHeaders).toBe("function");
    expect(spy.calls[0]!.opts.origin).toBe(`http://${server.address}:${server.port}`);
    await agent.close();
  });

  it("answers a new-API caller in the new API, with new-API attempts", async () => {
    const agent = new Agent();
    const spy = new SpyDispatcher(agent);
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    const { handler, done } = collector();
    dispatcher.dispatch({ origin: MESH_ORIGIN, path: "/modern", method: "GET" }, handler);
    const res = await done;
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body).url).toBe("/modern");
    expect(typeof spy.calls[0]!.handler.onRequestStart).toBe("function");
    await agent.close();
  });

  it("keeps the caller's other options, and sends the original host as Host header and TLS server name", async () => {
    const spy = new SpyDispatcher(new Agent());
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    await (await request(`${MESH_ORIGIN}:8080/opts`, { dispatcher, reset: true })).body.text();
    const sent = spy.calls[0]!.opts as Dispatcher.DispatchOptions & Record<string, unknown>;
    expect(sent.reset).toBe(true);
    expect(sent.dispatcher).toBe(dispatcher);
    expect(sent.servername).toBe("api.default.svc.cluster.local");
    expect(server.requests[0]!.headers.host).toBe("api.default.svc.cluster.local:8080");
    await spy.inner!.close();
  });

  it("hands the agent the request options undici reads, with the Host of the URL", async () => {
    const dispatcher = new MeshDispatcher(routes);
    const res = await request(`${MESH_ORIGIN}:8080/fields`, {
      dispatcher,
      query: { a: "1" },
      reset: true,
      headers: { "x-test": "yes" },
    });
    await res.body.text();
    const seen = server.requests[0]!;
    // query → the path; reset → the connection closes after this request; the headers and the Host.
    expect(seen.url).toBe("/fields?a=1");
    expect(seen.headers.connection).toBe("close");
    expect(seen.headers["x-test"]).toBe("yes");
    expect(seen.headers.host).toBe("api.default.svc.cluster.local:8080");
    await dispatcher.close();
  });

  /** A legacy handler shaped like `fetch`'s (it has `onResponseStarted`), resolving with the status. */
  function fetchLikeHandler(): { handler: Dispatcher.DispatchHandler; done: Promise<number> } {
    let status = 0;
    let settle!: { resolve: (s: number) => void; reject: (e: Error) => void };
    const done = new Promise<number>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const handler = {
      onConnect() {},
      onResponseStarted() {},
      onHeaders(code: number) {
        status = code;
        return true;
      },
      onData() {
        return true;
      },
      onComplete() {
        settle.resolve(status);
      },
      onError(err: Error) {
        settle.reject(err);
      },
    } as unknown as Dispatcher.DispatchHandler;
    return { handler, done };
  }

  /** `fetch`'s seven fields, with two more that undici reads and one it does not. */
  function fetchLikeOptions(path: string): Dispatcher.DispatchOptions {
    return {
      path,
      origin: `${MESH_ORIGIN}:8080`,
      method: "GET",
      body: null,
      headers: { "x-test": "yes" },
      maxRedirections: 0,
      upgrade: undefined,
      query: { a: "1" },
      reset: true,
      custom: "kept",
    } as unknown as Dispatcher.DispatchOptions;
  }

  /** Dispatches a `fetch`-shaped call through `dispatcher`; resolves with its status. */
  function dispatchFetchLike(dispatcher: MeshDispatcher, path: string): Promise<number> {
    const { handler, done } = fetchLikeHandler();
    dispatcher.dispatch(fetchLikeOptions(path), handler);
    return done;
  }

  it("copies a fetch's options field by field for a plain undici agent: every field undici reads arrives", async () => {
    const spy = new SpyDispatcher(new Agent());
    const dispatcher = new MeshDispatcher(routes, { agent: spy, plainAgent: true });
    expect(await dispatchFetchLike(dispatcher, "/fields")).toBe(200);
    const seen = server.requests[0]!;
    expect(seen.url).toBe("/fields?a=1");
    expect(seen.headers.connection).toBe("close");
    expect(seen.headers["x-test"]).toBe("yes");
    expect(seen.headers.host).toBe("api.default.svc.cluster.local:8080");
    const opts = spy.calls[0]!.opts as unknown as Record<string, unknown>;
    expect(opts.origin).toBe(`http://${server.address}:${server.port}`);
    // The agent reads only undici's fields: the others are not copied.
    expect(opts.custom).toBeUndefined();
    await dispatcher.close();
  });

  it("copies every field of a fetch's options for an agent that may read any", async () => {
    const spy = new SpyDispatcher(new Agent());
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    expect(await dispatchFetchLike(dispatcher, "/any")).toBe(200);
    expect(server.requests[0]!.url).toBe("/any?a=1");
    expect((spy.calls[0]!.opts as unknown as Record<string, unknown>).custom).toBe("kept");
    await dispatcher.close();
  });

  it("leaves undici the caller's own headers timeout: the per-try timeout is the engine's", async () => {
    // A headers timeout unlike the body timeout makes undici replace its
    // connection timer on every request instead of refreshing it.
    const spy = new SpyDispatcher(new Agent());
    const dispatcher = new MeshDispatcher(routes, { agent: spy, plainAgent: true });
    expect(await dispatchFetchLike(dispatcher, "/fields")).toBe(200);
    await (await request(`${MESH_ORIGIN}:8080/own`, { dispatcher, headersTimeout: 2500 })).body.text();
    const [fetchLike, own] = spy.calls.map((c) => c.opts as unknown as Record<string, unknown>);
    expect(fetchLike!.headersTimeout).toBeUndefined();
    expect(own!.headersTimeout).toBe(2500);
    await dispatcher.close();
  });

  it("gives undici a per-try timeout longer than its own 300 s headers timeout, which would cut it short", async () => {
    const long = meshRoutes(
      { "api.default": [{ address: server.address, port: server.port, cluster: "east" }] },
      { policy: { perTryTimeout: 400_000 } },
    );
    const spy = new SpyDispatcher(new Agent());
    const dispatcher = new MeshDispatcher(long, { agent: spy });
    await (await request(`${MESH_ORIGIN}:8080/long`, { dispatcher })).body.text();
    expect((spy.calls[0]!.opts as unknown as Record<string, unknown>).headersTimeout).toBe(400_000);
    await dispatcher.close();
    await long.close();
  });

  it("fails a mesh call whose legacy handler lacks a callback, as undici fails it", async () => {
    const dispatcher = new MeshDispatcher(routes, { agent: new SpyDispatcher(undefined) });
    let failed: Error | undefined;
    dispatcher.dispatch(
      { origin: MESH_ORIGIN, path: "/", method: "GET" },
      {
        onConnect() {},
        onData: () => true,
        onComplete() {},
        onError(err) {
          failed = err;
        },
      },
    );
    expect(failed).toBeInstanceOf(errors.InvalidArgumentError);
    expect((failed as errors.UndiciError).code).toBe("UND_ERR_INVALID_ARG");
    expect(() =>
      dispatcher.dispatch({ origin: MESH_ORIGIN, path: "/", method: "GET" }, { onConnect() {} }),
    ).toThrow(errors.InvalidArgumentError);
  });

  it("gives a legacy caller an abort that ends the call while it runs and does nothing once it has ended", async () => {
    const agent = new Agent();
    const dispatcher = new MeshDispatcher(routes, { agent });
    const call = (abortAtConnect: boolean) => {
      const seen = { abort: (_reason?: Error) => {}, status: 0, errors: [] as Error[], completed: 0 };
      const ended = new Promise<void>((resolve) => {
        dispatcher.dispatch({ origin: MESH_ORIGIN, path: "/abort", method: "GET" }, {
          onConnect(abort: (reason?: Error) => void) {
            seen.abort = abort;
            if (abortAtConnect) abort();
          },
          onHeaders(status: number) {
            seen.status = status;
            return true;
          },
          onData: () => true,
          onComplete() {
            seen.completed++;
            resolve();
          },
          onError(err: Error) {
            seen.errors.push(err);
            resolve();
          },
        } as unknown as Dispatcher.DispatchHandler);
      });
      return { seen, ended };
    };
    const aborted = call(true);
    await aborted.ended;
    expect(aborted.seen.errors.map((e) => (e as errors.UndiciError).code)).toEqual(["UND_ERR_ABORTED"]);
    const done = call(false);
    await done.ended;
    expect(done.seen.status).toBe(200);
    // An abort after the end neither throws nor reaches the handler again.
    expect(() => done.seen.abort(new Error("late"))).not.toThrow();
    await new Promise((resolve) => setImmediate(resolve));
    expect(done.seen.errors).toEqual([]);
    expect(done.seen.completed).toBe(1);
    await agent.close();
  });

  it("closes and destroys its agent", async () => {
    const spy = new SpyDispatcher(undefined);
    const dispatcher = new MeshDispatcher(routes, { agent: spy });
    await dispatcher.close();
    await new Promise<void>((resolve) => dispatcher.close(resolve));
    const reason = new Error("gone");
    await dispatcher.destroy(reason);
    await new Promise<void>((resolve) => dispatcher.destroy(resolve));
    expect(spy.closes).toBe(2);
    expect(spy.destroys).toEqual([reason, null]);
  });

  it("listens to its agent's events only once someone listens to its own", async () => {
    const agent = new Agent();
    const dispatcher = new MeshDispatcher(routes, { agent });
    const events = ["connect", "disconnect", "connectionError", "drain"] as const;
    const count = () => events.map((e) => agent.listenerCount(e));
    const before = count();
    await (await request(`${MESH_ORIGIN}/quiet`, { dispatcher })).body.text();
    expect(count()).toEqual(before);
    dispatcher.on("drain", () => {});
    dispatcher.on("drain", () => {});
    expect(count()).toEqual([before[0], before[1], before[2], before[3]! + 1]);
    await dispatcher.close();
  });

  it("reports the state of its agent and re-emits its connection events with itself first", async () => {
    const dispatcher = new MeshDispatcher(routes);
    const connected = once(dispatcher, "connect");
    await (await request(`${MESH_ORIGIN}/events`, { dispatcher })).body.text();
    const [origin, targets] = (await connected) as [URL, Dispatcher[]];
    expect(String(origin)).toContain(`${server.address}:${server.port}`);
    expect(targets[0]).toBe(dispatcher);
    expect(dispatcher.closed).toBe(false);
    await dispatcher.close();
    expect(dispatcher.closed).toBe(true);
    expect(dispatcher.destroyed).toBe(true);
  });
});

// The call engine's decisions, driven through the HTTP transport with a
// scripted agent: each attempt does exactly what the test says on the wire.
import { Dispatcher, request } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { MeshDispatcher } from "../../src/transport/http/dispatcher.js";
import { rejection } from "../helpers/assert.js";
import { meshRoutes } from "../transport/mesh-routes.js";

type Step = (handler: Dispatcher.DispatchHandler) => void;

/** An agent whose n-th dispatch plays the n-th step. */
class ScriptedAgent extends Dispatcher {
  readonly origins: string[] = [];
  constructor(readonly steps: Step[]) {
    super();
  }
  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.origins.push(String(opts.origin));
    const step = this.steps[this.origins.length - 1];
    queueMicrotask(() => step?.(handler));
    return true;
  }
  override async close(): Promise<void> {}
  override async destroy(): Promise<void> {}
}

const coded = (code: string) => Object.assign(new Error(code), { code });
const legacy = (h: Dispatcher.DispatchHandler) =>
  h as unknown as {
    onConnect(abort: () => void): void;
    onHeaders(status: number, headers: Buffer[], resume: () => void, text: string): boolean;
    onData(chunk: Buffer): boolean;
    onComplete(trailers: null): void;
    onError(err: Error): void;
  };
const ok: Step = (h) => {
  const l = legacy(h);
  l.onConnect(() => {});
  l.onHeaders(200, [], () => {}, "OK");
  l.onData(Buffer.from("ok"));
  l.onComplete([] as unknown as null);
};

const routesList: ReturnType<typeof meshRoutes>[] = [];
afterEach(async () => {
  for (const r of routesList.splice(0)) await r.close();
});

function dispatcherWith(steps: Step[]): { agent: ScriptedAgent; dispatcher: MeshDispatcher } {
  const routes = meshRoutes({
    "api.default": [
      { address: "10.0.0.1", port: 80, cluster: "east", region: "east", zone: "east-a" },
      { address: "10.0.0.2", port: 80, cluster: "west", region: "west", zone: "west-a" },
    ],
  });
  routesList.push(routes);
  const agent = new ScriptedAgent(steps);
  return { agent, dispatcher: new MeshDispatcher(routes, { agent }) };
}

const URL_ = "http://api.default.svc.cluster.local/";

describe("EngineCall", () => {
  it("does not resend a POST whose bytes may have reached the wire, whatever the error code says", async () => {
    const { agent, dispatcher } = dispatcherWith([
      (h) => {
        legacy(h).onConnect(() => {});
        legacy(h).onError(coded("EHOSTUNREACH"));
      },
      ok,
    ]);
    const err = await rejection(request(URL_, { method: "POST", body: "order #1", dispatcher }));
    expect(err.code).toBe("MESHLINK_ERR_REQUEST_FAILED");
    expect(agent.origins).toHaveLength(1);
  });

  it("resends a POST that failed before it started writing, whatever the error code says", async () => {
    const { agent, dispatcher } = dispatcherWith([(h) => legacy(h).onError(coded("ECONNRESET")), ok]);
    const res = await request(URL_, { method: "POST", body: "order #2", dispatcher });
    expect(await res.body.text()).toBe("ok");
    expect(agent.origins).toEqual(["http://10.0.0.1:80", "http://10.0.0.2:80"]);
  });

  it("counts a malformed response as a retryable endpoint failure for a GET", async () => {
    const { agent, dispatcher } = dispatcherWith([
      (h) => {
        legacy(h).onConnect(() => {});
        legacy(h).onError(
          Object.assign(new Error("bad"), { name: "HTTPParserError", code: "HPE_INVALID_CONSTANT" }),
        );
      },
      ok,
    ]);
    const res = await request(URL_, { dispatcher });
    expect(await res.body.text()).toBe("ok");
    expect(agent.origins).toHaveLength(2);
  });

  it("gives a legacy caller its abort before discovery and connecting, and ends at once on it", async () => {
    const { agent, dispatcher } = dispatcherWith([() => {}]);
    const ac = new AbortController();
    const pending = request(URL_, { dispatcher, signal: ac.signal });
    await new Promise((r) => setImmediate(r));
    expect(agent.origins).toHaveLength(1);
    ac.abort(new Error("stop"));
    expect((await rejection(pending)).message).toBe("stop");
  });
});

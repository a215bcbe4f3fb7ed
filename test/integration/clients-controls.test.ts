import { once } from "node:events";
import { request } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import {
  createMesh,
  ErrorCodes,
  isMeshError,
  type Mesh,
  type MeshCallOptions,
  type MeshOptions,
  RETRYABLE_HEADER,
} from "../../src/index.js";
import { type CaughtError, rejection } from "../helpers/assert.js";
import { answerAfter } from "../helpers/faults.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Per-call controls given in code (the `meshlink` option), the switch for header controls, and what
// a failed POST says. Servers on 127.0.110.0/24: home (.81–.82, the caller's region), west (.91).
const URL_ = "http://pay.shop.svc.cluster.local:8080/charge";

let home: TestServer[];
let west: TestServer;
let mesh: Mesh;

function meshWith(options: MeshOptions = {}, homeServers: TestServer[] = home): Mesh {
  const ep = (s: TestServer, cluster: string, region: string) => ({
    address: s.address,
    port: s.port,
    cluster,
    region,
  });
  mesh = createMesh({
    env: {},
    region: "us-east-1",
    failover: ["us-west-2"],
    discovery: [
      staticDiscovery({
        services: {
          "pay.shop": [...homeServers.map((s) => ep(s, "home", "us-east-1")), ep(west, "west", "us-west-2")],
        },
      }),
    ],
    ...options,
  });
  return mesh;
}

/** Every home endpoint breaks the connection of each request it reads: the bytes reached it, no answer came. */
function breakHome(): void {
  for (const s of home) s.handler = (req) => req.socket.destroy();
}

/** undici.request through the mesh; `meshlink` spread in, as undici's option types do not list it. */
async function post(meshlink?: MeshCallOptions, headers: Record<string, string> = {}) {
  const res = await request(URL_, {
    dispatcher: mesh.dispatcher,
    method: "POST",
    body: "charge 10",
    headers,
    ...(meshlink === undefined ? {} : { meshlink }),
  });
  return { status: res.statusCode, body: (await res.body.json()) as { server: string } };
}

const fetchCause = async (p: Promise<unknown>): Promise<CaughtError> => {
  const err = await rejection(p);
  return (err.cause ?? err) as CaughtError;
};

beforeEach(async () => {
  home = await Promise.all([1, 2].map((i) => startServer(`home-${i}`, { address: `127.0.110.${80 + i}` })));
  west = await startServer("west-1", { address: "127.0.110.91" });
});

afterEach(async () => {
  await mesh?.close();
  await Promise.all([...home, west].filter((s) => s.listening).map((s) => s.stop()));
});

describe("MeshCallOptions", () => {
  it("resends a POST marked retryable with undici.request, on another cluster", async () => {
    meshWith();
    breakHome();
    const res = await post({ retryable: true });
    expect(res.body.server).toBe("west-1");
    expect(home.flatMap((s) => s.requests)).toHaveLength(1);
  });

  it("does not resend an unmarked POST, and says why", async () => {
    meshWith();
    breakHome();
    const err = await rejection(post());
    expect(err.code).toBe(ErrorCodes.REQUEST_FAILED);
    expect(err).toMatchObject({ notRetried: "not-idempotent", method: "POST" });
    expect(west.requests).toHaveLength(0);
  });

  it("keeps a GET marked not retryable from being resent", async () => {
    meshWith();
    breakHome();
    const err = await fetchCause(mesh.fetch(URL_, { meshlink: { retryable: false } }));
    expect(err.code).toBe(ErrorCodes.REQUEST_FAILED);
    expect(err).toMatchObject({ notRetried: "marked-not-retryable", method: "GET" });
  });

  it("resends a POST marked retryable with mesh.fetch", async () => {
    meshWith();
    breakHome();
    const res = await mesh.fetch(URL_, { method: "POST", body: "charge 10", meshlink: { retryable: true } });
    expect(((await res.json()) as { server: string }).server).toBe("west-1");
  });

  it("fails a call past its deadline with DeadlineExceededError", async () => {
    meshWith();
    for (const s of home) s.handler = answerAfter(s.name, 5_000);
    const err = await fetchCause(mesh.fetch(URL_, { meshlink: { deadline: 100 } }));
    expect(err.code).toBe(ErrorCodes.DEADLINE_EXCEEDED);
    expect(err).toMatchObject({ timeoutMs: 100 });
    const viaRequest = await rejection(
      request(URL_, { dispatcher: mesh.dispatcher, ...{ meshlink: { deadline: 100 } } }),
    );
    expect(viaRequest.code).toBe(ErrorCodes.DEADLINE_EXCEEDED);
  });

  it("hedges a call to another endpoint when the first is slow", async () => {
    const slow = home[0]!;
    slow.handler = answerAfter(slow.name, 5_000);
    // The hedge budget allows hedges from the first call on (by default 1 % of calls, none at first).
    meshWith({ policy: { hedging: { minPerSecond: 10 } } }, [slow]);
    const res = await mesh.fetch(URL_, { meshlink: { hedge: 50 } });
    expect(((await res.json()) as { server: string }).server).toBe("west-1");
    expect(slow.requests).toHaveLength(1); // it has the request; its answer would come in 5 s
  });

  it("wins over the control headers", async () => {
    meshWith();
    breakHome();
    const res = await post({ retryable: true }, { [RETRYABLE_HEADER]: "false" });
    expect(res.body.server).toBe("west-1");
  });

  it("fails the call with ConfigError naming a bad field", async () => {
    meshWith();
    const bad = await rejection(
      request(URL_, { dispatcher: mesh.dispatcher, ...{ meshlink: { deadline: -1 } } }),
    );
    expect(bad.code).toBe(ErrorCodes.CONFIG);
    expect(bad).toMatchObject({ source: "meshlink.deadline", value: -1 });
    const unknown = await fetchCause(mesh.fetch(URL_, { meshlink: { retry: true } as MeshCallOptions }));
    expect(unknown).toMatchObject({ code: ErrorCodes.CONFIG, source: "meshlink.retry" });
    const hedge = await fetchCause(mesh.fetch(URL_, { meshlink: { hedge: "soon" as never } }));
    expect(hedge).toMatchObject({ code: ErrorCodes.CONFIG, source: "meshlink.hedge" });
    expect(home.flatMap((s) => s.requests)).toHaveLength(0);
  });
});

describe("policy.headerControls", () => {
  it("reads the control headers by default", async () => {
    meshWith();
    breakHome();
    const res = await post(undefined, { [RETRYABLE_HEADER]: "true" });
    expect(res.body.server).toBe("west-1");
  });

  it("strips and ignores the control headers when off, and the meshlink option still works", async () => {
    meshWith({ policy: { headerControls: false } });
    breakHome();
    const err = await rejection(post(undefined, { [RETRYABLE_HEADER]: "true", "x-meshlink-hedge": "10" }));
    expect(err.code).toBe(ErrorCodes.REQUEST_FAILED);
    const seen = home.flatMap((s) => s.requests);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers[RETRYABLE_HEADER]).toBeUndefined();
    expect(seen[0]!.headers["x-meshlink-hedge"]).toBeUndefined();
    expect((await post({ retryable: true })).body.server).toBe("west-1");
  });
});

describe("isMeshError", () => {
  it("narrows to the class of the code, with its fields", async () => {
    meshWith();
    await Promise.all([...home, west].map((s) => s.stop()));
    try {
      await mesh.fetch(URL_);
      expect.unreachable();
    } catch (err) {
      const cause = (err as Error).cause;
      // `tried` type-checks only because isMeshError narrowed `cause` to RequestFailedError.
      if (!isMeshError(cause, ErrorCodes.REQUEST_FAILED)) throw err;
      expect(cause.tried.length).toBeGreaterThan(0);
    }
  });
});

describe("createMesh warnings", () => {
  const warningsOf = async (options: MeshOptions): Promise<string[]> => {
    const seen: string[] = [];
    const listener = (w: Error & { code?: string }) => seen.push(w.code ?? "");
    process.on("warning", listener);
    try {
      const m = createMesh({ env: {}, ...options });
      // Process warnings are emitted on the next tick.
      await new Promise((r) => setImmediate(r));
      expect(m.config.warnings.map((w) => w.code)).toEqual(seen);
      await m.close();
    } finally {
      process.off("warning", listener);
    }
    return seen;
  };

  it("warns when the failover list names the caller's own region", async () => {
    const warned = once(process, "warning");
    const m = createMesh({ env: { MESHLINK_REGION: "us-east-1", MESHLINK_FAILOVER: "us-east-1,us-west-2" } });
    const [w] = (await warned) as [Error & { code?: string }];
    expect(w.code).toBe("MESHLINK_W_FAILOVER_OWN_REGION");
    expect(m.config.warnings[0]).toMatchObject({ source: "MESHLINK_FAILOVER" });
    await m.close();
  });

  it("warns when the zone belongs to another region, and only then", async () => {
    expect(await warningsOf({ region: "us-east-1", zone: "us-west-2a" })).toEqual([
      "MESHLINK_W_ZONE_OUTSIDE_REGION",
    ]);
    expect(await warningsOf({ region: "europe-west4", zone: "us-central1-f" })).toEqual([
      "MESHLINK_W_ZONE_OUTSIDE_REGION",
    ]);
    for (const [region, zone] of [
      ["us-east-1", "us-east-1a"],
      ["us-east-1", "us-east-1-bos-1a"], // an AWS Local Zone
      ["europe-west4", "europe-west4-b"],
      ["eastus", "eastus-1"],
      ["eastus", "1"],
      ["dc1", "rack-7"],
    ] as const) {
      expect(await warningsOf({ region, zone })).toEqual([]);
    }
  });
});

// The faults a real fleet produces every day, each on the wire against real
// loopback servers: what the caller sees and what health makes of it.
import { execFile } from "node:child_process";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import dns from "node:dns";
import { once } from "node:events";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { FormData, request } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DiscoveryBackend } from "../../src/discovery/discovery.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { DiscoveryError } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { rejection } from "../helpers/assert.js";
import { startBlackhole, startUnaccepting } from "../helpers/faults.js";
import { startServer, type TestServer } from "../helpers/servers.js";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..", "..");
const URL_ = "http://api.default.svc.cluster.local/";

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function meshOf(
  endpoints: { address: string; port: number; cluster: string; region: string }[],
  extra: Parameters<typeof createMesh>[0] = {},
): Mesh {
  const mesh = createMesh({
    env: {},
    region: "home",
    failover: ["away"],
    discovery: [staticDiscovery({ services: { "api.default": endpoints } })],
    ...extra,
  });
  closers.push(() => mesh.close());
  return mesh;
}

async function server(name: string, address: string): Promise<TestServer> {
  const s = await startServer(name, { address });
  closers.push(() => s.stop());
  return s;
}

/** A TCP server that answers every request with `reply` and then closes the connection. */
async function rawServer(address: string, reply: string): Promise<{ port: number; requests: number }> {
  const sockets = new Set<Socket>();
  const state = { port: 0, requests: 0 };
  const srv: NetServer = createNetServer((sock) => {
    sockets.add(sock);
    sock.on("error", () => {});
    sock.on("close", () => sockets.delete(sock));
    sock.once("data", () => {
      state.requests++;
      sock.end(reply);
    });
  });
  srv.listen(0, address);
  await once(srv, "listening");
  state.port = (srv.address() as { port: number }).port;
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return state;
}

describe("a call waiting to retry", () => {
  it.each([
    ["retry-after", "a 503 with Retry-After"],
    ["timeout", "a per-try timeout"],
  ])("keeps the process alive until it settles after %s (%s)", async (mode) => {
    // The servers live in this process; the caller in a child with nothing else to do.
    const good = await server("good", "127.0.81.2");
    let first: string;
    if (mode === "retry-after") {
      let n = 0;
      good.handler = (_req, res) => {
        if (n++ === 0) {
          res.writeHead(503, { "retry-after": "1" });
          res.end("busy");
        } else res.end("ok");
      };
      first = `${good.address}:${good.port}`;
    } else {
      const hole = await startBlackhole("127.0.81.1");
      closers.push(() => hole.close());
      first = `${hole.address}:${hole.port}`;
      good.handler = (_req, res) => res.end("ok");
    }
    const tsx = join(root, "node_modules", ".bin", "tsx");
    const targets = mode === "retry-after" ? [first] : [first, `${good.address}:${good.port}`];
    const { stdout } = await run(tsx, [join("test", "fixtures", "waiting-call.ts"), mode, ...targets], {
      cwd: root,
      timeout: 15_000,
    });
    expect(stdout).toContain("settled 200 ok");
  });
});

describe("protocol errors", () => {
  it("treat a response that is not HTTP as an endpoint failure: retried elsewhere, the endpoint ejected", async () => {
    const bad = await rawServer("127.0.81.11", "this is not HTTP\r\n\r\n");
    const good = await server("good", "127.0.81.12");
    const mesh = meshOf([
      { address: "127.0.81.11", port: bad.port, cluster: "home", region: "home" },
      { address: good.address, port: good.port, cluster: "away", region: "away" },
    ]);
    for (let i = 0; i < 30; i++) {
      const res = await mesh.fetch(URL_);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { server: string }).server).toBe("good");
    }
    const [home] = await mesh.resolve("api.default");
    expect(home!.endpoint.cluster).toBe("home");
    expect(home!.health.state).toBe("ejected");
    expect(home!.health.lastFailure).toMatch(/^HPE_|HTTPParserError/);
  });

  it("count a body shorter than its Content-Length against the endpoint, which is ejected", async () => {
    const bad = await rawServer("127.0.81.13", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    const good = await server("good", "127.0.81.14");
    const mesh = meshOf(
      [
        { address: "127.0.81.13", port: bad.port, cluster: "home", region: "home" },
        { address: good.address, port: good.port, cluster: "away", region: "away" },
      ],
      { outlierDetection: { consecutiveFailures: 3 } },
    );
    const outcomes: string[] = [];
    for (let i = 0; i < 20; i++) {
      try {
        const res = await mesh.fetch(URL_);
        outcomes.push(JSON.parse(await res.text()).server);
      } catch {
        outcomes.push("failed");
      }
    }
    // The response had started, so those calls fail; after three the endpoint is out.
    expect(outcomes.slice(0, 3)).toEqual(["failed", "failed", "failed"]);
    expect(outcomes.slice(3)).toEqual(new Array(17).fill("good"));
    const [home] = await mesh.resolve("api.default");
    expect(home!.health.state).toBe("ejected");
  });
});

describe("stale keep-alive connections", () => {
  it("retry an idempotent request that broke on a reused connection, without charging the endpoint", async () => {
    // The server closes each connection a moment after its response, while
    // advertising keep-alive: the client often writes its next request into a
    // connection being closed.
    let srv: Server | undefined;
    const sockets = new Set<Socket>();
    srv = createHttpServer((req, res) => {
      req.resume();
      res.end("ok", () => setTimeout(() => req.socket.destroy(), 2));
    });
    srv.on("connection", (s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    });
    srv.listen(0, "127.0.81.21");
    await once(srv, "listening");
    const port = (srv.address() as { port: number }).port;
    closers.push(async () => {
      for (const s of sockets) s.destroy();
      srv?.close();
    });
    const mesh = meshOf([{ address: "127.0.81.21", port, cluster: "home", region: "home" }], {
      outlierDetection: { consecutiveFailures: 1000, failureRate: false },
    });
    let failed = 0;
    for (let i = 0; i < 300; i++) {
      try {
        const res = await mesh.fetch(URL_);
        await res.text();
      } catch {
        failed++;
      }
      // Land the next request around the moment the server closes the connection.
      await new Promise((r) => setTimeout(r, i % 4));
    }
    expect(failed).toBe(0);
    const [ep] = await mesh.resolve("api.default");
    expect(ep!.health.lastFailure).toBeUndefined();
  });
});

describe("a service with one endpoint", () => {
  it("retries on the same endpoint when it is the only candidate", async () => {
    const only = await server("only", "127.0.81.31");
    let n = 0;
    only.handler = (_req, res) => {
      res.writeHead(n++ === 0 ? 503 : 200);
      res.end(String(n));
    };
    const mesh = meshOf([{ address: only.address, port: only.port, cluster: "home", region: "home" }]);
    const res = await mesh.fetch(URL_);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("2");
  });
});

describe("a public two-label host", () => {
  it("is never captured by asking about it: the dispatcher passes it through afterwards", async () => {
    const pub = await server("public", "127.0.0.1");
    const mesh = meshOf([]);
    const url = `http://example.invalid:${pub.port}/`;
    expect((await rejection(mesh.fetch(url))).cause?.code).toMatch(/^MESHLINK_ERR_/);
    expect((await rejection(mesh.resolve("example.invalid", pub.port))).code).toMatch(/^MESHLINK_ERR_/);
    // Resolve example.invalid to loopback for this test only: no traffic leaves the machine.
    const lookup = dns.lookup;
    dns.lookup = ((host: string, opts: unknown, cb: unknown) => {
      if (host !== "example.invalid") return (lookup as (...a: unknown[]) => void)(host, opts, cb);
      const callback = (typeof opts === "function" ? opts : cb) as (...a: unknown[]) => void;
      const all = typeof opts === "object" && (opts as { all?: boolean }).all;
      if (all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
      else callback(null, "127.0.0.1", 4);
    }) as typeof dns.lookup;
    try {
      const res = await request(url, { dispatcher: mesh.dispatcher });
      expect((await res.body.json()) as { server: string }).toMatchObject({ server: "public" });
    } finally {
      dns.lookup = lookup;
    }
  });
});

describe("the deadline and the caller's abort while discovery settles", () => {
  /** A backend that never answers. */
  const silent: DiscoveryBackend = {
    name: "silent",
    async *watch(_service, { signal }) {
      if (!signal.aborted) await once(signal, "abort");
      yield* [];
    },
  };

  it("fails the call at its deadline, not at the settle timeout", async () => {
    const mesh = createMesh({
      env: {},
      discovery: [silent],
      settleTimeout: 60_000,
      policy: { deadline: 100 },
    });
    closers.push(() => mesh.close());
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe("MESHLINK_ERR_DEADLINE_EXCEEDED");
  });

  it("fails the call at once when the caller aborts", async () => {
    const mesh = createMesh({ env: {}, discovery: [silent], settleTimeout: 60_000 });
    closers.push(() => mesh.close());
    const ac = new AbortController();
    const pending = request(URL_, { dispatcher: mesh.dispatcher, signal: ac.signal });
    setImmediate(() => ac.abort(new Error("caller gave up")));
    const err = await rejection(pending);
    expect(err.message).toBe("caller gave up");
  });
});

describe("connecting", () => {
  it("is covered by the per-try timeout: a host that never accepts is left for another cluster", async () => {
    const stuck = await startUnaccepting("127.0.81.41");
    closers.push(() => stuck.close());
    const good = await server("good", "127.0.81.42");
    const mesh = meshOf(
      [
        { address: stuck.address, port: stuck.port, cluster: "home", region: "home" },
        { address: good.address, port: good.port, cluster: "away", region: "away" },
      ],
      // undici's 10 s connect timeout would overrun the deadline.
      { policy: { perTryTimeout: 300, deadline: 3_000 } },
    );
    const res = await mesh.fetch(URL_);
    expect(((await res.json()) as { server: string }).server).toBe("good");
  });

  it("ends at once when the caller aborts", async () => {
    const stuck = await startUnaccepting("127.0.81.43");
    closers.push(() => stuck.close());
    const mesh = meshOf([{ address: stuck.address, port: stuck.port, cluster: "home", region: "home" }], {
      policy: { perTryTimeout: 60_000 },
    });
    const ac = new AbortController();
    const connecting = new Promise<void>((resolve) => {
      const onConnect = () => {
        unsubscribe("undici:client:beforeConnect", onConnect);
        resolve();
      };
      subscribe("undici:client:beforeConnect", onConnect);
    });
    const pending = request(URL_, { dispatcher: mesh.dispatcher, signal: ac.signal });
    await connecting;
    ac.abort(new Error("caller gave up"));
    expect((await rejection(pending)).message).toBe("caller gave up");
  });
});

describe("request bodies through mesh.dispatcher", () => {
  let echo: TestServer;
  let mesh: Mesh;
  beforeAll(async () => {
    echo = await startServer("echo", { address: "127.0.81.51" });
    echo.handler = (req, res, body) => res.end(JSON.stringify({ type: req.headers["content-type"], body }));
    mesh = createMesh({
      env: {},
      discovery: [
        staticDiscovery({
          services: { "api.default": [{ address: echo.address, port: echo.port, cluster: "home" }] },
        }),
      ],
    });
  });
  afterAll(async () => {
    await mesh.close();
    await echo.stop();
  });

  it("sends FormData as multipart, intact", async () => {
    const form = new FormData();
    form.append("field", "value");
    const res = await request(URL_, { method: "POST", body: form, dispatcher: mesh.dispatcher });
    const got = (await res.body.json()) as { type: string; body: string };
    expect(got.type).toMatch(/^multipart\/form-data; boundary=/);
    expect(got.body).toContain('name="field"\r\n\r\nvalue');
  });

  it("sends a Blob's bytes", async () => {
    const res = await request(URL_, {
      method: "POST",
      body: new Blob(["blob bytes"]) as unknown as string,
      dispatcher: mesh.dispatcher,
    });
    expect(((await res.body.json()) as { body: string }).body).toBe("blob bytes");
  });

  it("sends URLSearchParams as its string", async () => {
    const res = await request(URL_, {
      method: "POST",
      body: new URLSearchParams({ a: "1", b: "2" }) as unknown as string,
      dispatcher: mesh.dispatcher,
    });
    expect(((await res.body.json()) as { body: string }).body).toBe("a=1&b=2");
  });
});

describe("discovery failing from the first lookup", () => {
  it("surfaces as the DiscoveryError, not as 'no healthy endpoint'", async () => {
    const broken: DiscoveryBackend = {
      name: "broken",
      async *watch(service) {
        yield { kind: "failed", error: new DiscoveryError("broken", service.key, "server down") };
      },
    };
    const mesh = createMesh({ env: {}, discovery: [broken] });
    closers.push(() => mesh.close());
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe("MESHLINK_ERR_DISCOVERY");
    expect(err.cause?.message).toContain("server down");
  });
});

describe("mesh.close()", () => {
  it("leaves every other host working through mesh.dispatcher", async () => {
    const other = await server("other", "127.0.81.61");
    const mesh = meshOf([]);
    const before = await request(`http://${other.address}:${other.port}/`, { dispatcher: mesh.dispatcher });
    await before.body.text();
    await mesh.close();
    const after = await request(`http://${other.address}:${other.port}/`, { dispatcher: mesh.dispatcher });
    expect((await after.body.json()) as { server: string }).toMatchObject({ server: "other" });
    const err = await rejection(mesh.fetch(URL_));
    expect(err.cause?.code).toBe("MESHLINK_ERR_CLOSED");
  });
});

describe("a hedge timer while a retryable response drains", () => {
  it("does not send the retry before Retry-After", async () => {
    const slow = await server("slow", "127.0.81.71");
    const other = await server("other", "127.0.81.72");
    const times: number[] = [];
    slow.handler = (_req, res) => {
      times.push(performance.now());
      res.writeHead(503, { "retry-after": "1" });
      res.write("draining…");
      setTimeout(() => res.end(), 700);
    };
    other.handler = (_req, res) => {
      times.push(performance.now());
      res.end("ok");
    };
    const mesh = meshOf(
      [
        { address: slow.address, port: slow.port, cluster: "home", region: "home" },
        { address: other.address, port: other.port, cluster: "away", region: "away" },
      ],
      // The hedge delay passes while the 503's body drains.
      { policy: { hedging: { delay: 200, minPerSecond: 100 } } },
    );
    const res = await mesh.fetch(URL_, { headers: { "x-meshlink-hedge": "true" } });
    expect(await res.text()).toBe("ok");
    expect(times).toHaveLength(2);
    // The wheel never fires early: the retry waited out the server's Retry-After.
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(990);
  });
});

import { Readable, Writable } from "node:stream";
import { pipeline as pipelineStreams } from "node:stream/promises";
import {
  type Dispatcher,
  getGlobalDispatcher,
  pipeline,
  request,
  setGlobalDispatcher,
  stream,
  fetch as undiciFetch,
} from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../src/discovery/static.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// One mesh service and one plain host, each on its own loopback address.
let api: TestServer;
let outside: TestServer;
let mesh: Mesh;
let outsideUrl: string;

const MESH_URL = "http://api.default.svc.cluster.local:8080";

type Answer = { server: string; method: string; url: string; body: string };

beforeAll(async () => {
  api = await startServer("api", { address: "127.0.74.1" });
  outside = await startServer("outside", { address: "127.0.74.2" });
  outsideUrl = `http://${outside.address}:${outside.port}`;
  mesh = createMesh({
    env: {},
    discovery: [
      staticDiscovery({
        services: { "api.default": [{ address: api.address, port: api.port, cluster: "c" }] },
      }),
    ],
  });
});

afterAll(async () => {
  await mesh.close();
  await Promise.all([api.stop(), outside.stop()]);
});

/** Calls `url` with each of undici's verbs through `dispatcher`; returns each answer, by verb. */
async function everyVerb(url: string, dispatcher: Dispatcher): Promise<Record<string, Answer>> {
  const answers: Record<string, Answer> = {};
  answers.request = (await (await request(`${url}/request`, { dispatcher })).body.json()) as Answer;
  answers.fetch = (await (
    await undiciFetch(`${url}/fetch`, { dispatcher } as Parameters<typeof undiciFetch>[1])
  ).json()) as Answer;
  const streamed: Buffer[] = [];
  await stream(
    `${url}/stream`,
    { dispatcher, method: "GET" },
    () =>
      new Writable({
        write(chunk, _encoding, callback) {
          streamed.push(chunk);
          callback();
        },
      }),
  );
  answers.stream = JSON.parse(Buffer.concat(streamed).toString()) as Answer;
  const piped: Buffer[] = [];
  await pipelineStreams(
    Readable.from([Buffer.from("piped body")]),
    pipeline(`${url}/pipeline`, { dispatcher, method: "POST" }, ({ body }) => body),
    new Writable({
      write(chunk, _encoding, callback) {
        piped.push(chunk);
        callback();
      },
    }),
  );
  answers.pipeline = JSON.parse(Buffer.concat(piped).toString()) as Answer;
  return answers;
}

describe("mesh.dispatcher", () => {
  it("passes a request to another host through unchanged, whichever of undici's verbs makes it", async () => {
    outside.requests.length = 0;
    const answers = await everyVerb(outsideUrl, mesh.dispatcher);
    for (const [verb, answer] of Object.entries(answers)) {
      expect(answer, verb).toMatchObject({ server: "outside", url: `/${verb}` });
    }
    expect(answers.pipeline!.body).toBe("piped body");
    expect(outside.requests.map((r) => r.headers.host)).toEqual(
      Array(4).fill(`${outside.address}:${outside.port}`),
    );
    expect(api.requests).toHaveLength(0);
  });

  it("routes a mesh name, whichever of undici's verbs calls it", async () => {
    api.requests.length = 0;
    const answers = await everyVerb(MESH_URL, mesh.dispatcher);
    for (const [verb, answer] of Object.entries(answers)) {
      expect(answer, verb).toMatchObject({ server: "api", url: `/${verb}` });
    }
    expect(answers.pipeline!.body).toBe("piped body");
    expect(new Set(api.requests.map((r) => r.headers.host))).toEqual(
      new Set(["api.default.svc.cluster.local:8080"]),
    );
  });

  it("passes a new-API handler to another host through and answers it in that API", async () => {
    const chunks: Buffer[] = [];
    const status = await new Promise<number>((resolve, reject) => {
      let code = 0;
      mesh.dispatcher.dispatch(
        { origin: outsideUrl, path: "/modern", method: "GET" },
        {
          onRequestStart() {},
          onResponseStart(_controller, statusCode) {
            code = statusCode;
          },
          onResponseData(_controller, chunk) {
            chunks.push(chunk);
          },
          onResponseEnd() {
            resolve(code);
          },
          onResponseError(_controller, err) {
            reject(err);
          },
        },
      );
    });
    expect(status).toBe(200);
    expect(JSON.parse(Buffer.concat(chunks).toString())).toMatchObject({ server: "outside", url: "/modern" });
  });

  it("serves undici's own fetch and request and Node's global fetch as the global dispatcher", async () => {
    const previous = getGlobalDispatcher();
    setGlobalDispatcher(mesh.dispatcher);
    try {
      const viaUndiciFetch = (await (await undiciFetch(`${MESH_URL}/undici-fetch`)).json()) as Answer;
      const viaRequest = (await (await request(`${MESH_URL}/undici-request`)).body.json()) as Answer;
      const viaNodeFetch = (await (await fetch(`${MESH_URL}/node-fetch`)).json()) as Answer;
      expect([viaUndiciFetch.server, viaRequest.server, viaNodeFetch.server]).toEqual(["api", "api", "api"]);
      const passed = (await (await fetch(`${outsideUrl}/node-fetch`)).json()) as Answer;
      const passedUndici = (await (await undiciFetch(`${outsideUrl}/undici-fetch`)).json()) as Answer;
      expect([passed.server, passedUndici.server]).toEqual(["outside", "outside"]);
    } finally {
      setGlobalDispatcher(previous);
    }
  });
});

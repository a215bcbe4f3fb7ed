/**
 * The benchmarks' HTTP server, run in its own process (`fork`) so that its
 * CPU does not share the client's event loop: a minimal node:http server
 * with keep-alive that answers every request with a small JSON body. One
 * listener per name given in argv (`a,b,c`), each on a free loopback port.
 *
 * IPC: sends `{ type: "ready", ports: { name: port } }`; answers
 * `{ type: "cpu" }` with `{ type: "cpu", usage: process.cpuUsage(), requests, byName }`.
 * Exits when the parent disconnects.
 *
 * @module
 */

import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

const names = (process.argv[2] ?? "a").split(",");
const BODY = Buffer.from('{"ok":true}');
const HEADERS = { "content-type": "application/json", "content-length": String(BODY.length) };
let requests = 0;
const byName: Record<string, number> = {};

const ports: Record<string, number> = {};
for (const name of names) {
  byName[name] = 0;
  const server = createServer((req, res) => {
    requests++;
    byName[name]!++;
    // A GET has no body, but drain whatever came so the socket stays reusable.
    req.resume();
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
  server.keepAliveTimeout = 600_000;
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  ports[name] = (server.address() as AddressInfo).port;
}

process.on("message", (msg: { type?: string }) => {
  if (msg?.type === "cpu") process.send?.({ type: "cpu", usage: process.cpuUsage(), requests, byName });
});
process.on("disconnect", () => process.exit(0));
process.send?.({ type: "ready", ports });

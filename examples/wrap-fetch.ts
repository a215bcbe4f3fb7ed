/**
 * Wrapping an application's existing fetch calls: one line at start-up,
 * `setGlobalDispatcher(mesh.dispatcher)`, and every `fetch()` to a mesh name
 * goes through meshlink, while calls to any other host go out unchanged.
 *
 * Run: npx tsx examples/wrap-fetch.ts
 */

import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createMesh, staticDiscovery } from "meshlink";
import { setGlobalDispatcher } from "undici";

// Two "clusters" of the inventory service and one unrelated host, on loopback.
async function serve(address: string, name: string) {
  const server = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ served_by: name, host: req.headers.host }));
  });
  server.listen(0, address);
  await once(server, "listening");
  return { server, port: (server.address() as AddressInfo).port };
}
const east = await serve("127.0.0.1", "inventory in us-east-1");
const west = await serve("127.0.0.2", "inventory in us-west-2");
const other = await serve("127.0.0.1", "a host outside the mesh");

// Start-up: create the mesh once and make it the global dispatcher.
const mesh = createMesh({
  region: "us-west-2",
  discovery: [
    staticDiscovery({
      services: {
        "inventory.shop": [
          { address: "127.0.0.1", port: east.port, cluster: "east", region: "us-east-1" },
          { address: "127.0.0.2", port: west.port, cluster: "west", region: "us-west-2" },
        ],
      },
    }),
  ],
});
setGlobalDispatcher(mesh.dispatcher);

// The application's code is unchanged: plain fetch with its usual URLs.
const inMesh = await fetch("http://inventory.shop.svc.cluster.local:8080/items/42");
console.log("mesh name  →", await inMesh.json());
const outside = await fetch(`http://localhost:${other.port}/status`);
console.log("other host →", await outside.json());

await mesh.close();
for (const s of [east, west, other]) s.server.close();

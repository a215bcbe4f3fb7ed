import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A real HTTP server on a loopback address, for tests, the demo and benchmarks. */
export interface TestServer {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  /** Requests seen, with their headers. */
  readonly requests: { method: string; url: string; headers: IncomingMessage["headers"]; body: string }[];
  /** Answers with this status from now on (default 200). */
  status: number;
  /** Replaces the default JSON answer from now on (undefined: the default). */
  handler: ((req: IncomingMessage, res: ServerResponse, body: string) => void) | undefined;
  /** True while the server accepts connections. */
  readonly listening: boolean;
  /** Stops listening and destroys open connections (a dead server: connections are refused). */
  stop(): Promise<void>;
  /** Listens again on the same address and port. */
  start(): Promise<void>;
}

/** Starts an HTTP server that answers `{ server: name, … }` as JSON. */
export async function startServer(
  name: string,
  options: {
    address?: string;
    port?: number;
    handler?: (req: IncomingMessage, res: ServerResponse, body: string) => void;
  } = {},
): Promise<TestServer> {
  const address = options.address ?? "127.0.0.1";
  const sockets = new Set<Socket>();
  let server: Server;
  const state: TestServer = {
    name,
    address,
    port: options.port ?? 0,
    requests: [],
    status: 200,
    handler: options.handler,
    get listening() {
      return server.listening;
    },
    async stop() {
      const closed = once(server, "close");
      server.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
    async start() {
      server = make();
      server.listen(state.port, address);
      await once(server, "listening");
    },
  };
  const make = () => {
    const s = createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        state.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
        if (state.handler) return state.handler(req, res, body);
        res.writeHead(state.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ server: name, method: req.method, url: req.url, body }));
      });
    });
    s.on("connection", (sock) => {
      sockets.add(sock);
      sock.on("close", () => sockets.delete(sock));
    });
    return s;
  };
  server = make();
  server.listen(state.port, address);
  await once(server, "listening");
  (state as { port: number }).port = (server.address() as AddressInfo).port;
  return state;
}

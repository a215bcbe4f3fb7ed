import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import type { TestServer } from "./servers.js";

/** A server that accepts connections and reads requests but never answers (a blackholed host). */
export interface Blackhole {
  readonly address: string;
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Stops listening and destroys every connection. */
  close(): Promise<void>;
}

/** Starts a blackhole on `address:port` (port 0: any). */
export async function startBlackhole(address: string, port = 0): Promise<Blackhole> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((sock) => {
    accepted++;
    sockets.add(sock);
    sock.on("data", () => {});
    sock.on("error", () => {});
    sock.on("close", () => sockets.delete(sock));
  });
  server.listen(port, address);
  await once(server, "listening");
  const bound = server.address() as { port: number };
  return {
    address,
    port: bound.port,
    get accepted() {
      return accepted;
    },
    async close() {
      const closed = once(server, "close");
      server.close();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** A handler that answers like the default one, `{ server: name }`, after `ms`. */
export function answerAfter(
  name: string,
  ms: number,
): (req: IncomingMessage, res: ServerResponse, body: string) => void {
  return (req, res) => {
    const timer = setTimeout(() => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ server: name, url: req.url }));
    }, ms);
    res.on("close", () => clearTimeout(timer));
  };
}

/** Stops and starts servers every `periodMs` until `stop()`, which leaves them up. */
export function flap(
  servers: readonly TestServer[],
  periodMs: number,
): { toggles: number; stop(): Promise<void> } {
  let up = true;
  let busy: Promise<unknown> = Promise.resolve();
  const state = { toggles: 0, stop: async () => {} };
  const timer = setInterval(() => {
    busy = busy.then(async () => {
      up = !up;
      state.toggles++;
      await Promise.all(servers.map((s) => (up ? s.start() : s.stop())));
    });
  }, periodMs);
  state.stop = async () => {
    clearInterval(timer);
    await busy;
    if (!up) await Promise.all(servers.map((s) => s.start()));
    up = true;
  };
  return state;
}

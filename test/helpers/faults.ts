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

/**
 * A listener that never accepts (a host whose accept queue is full): TCP
 * connects to it hang, as to a host that drops SYNs. Node's own servers
 * always accept, so a python3 process holds the listening socket with a
 * backlog of 0 and the helper fills the queue.
 */
export interface Unaccepting {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts a never-accepting listener on `address` (any port). Needs python3. */
export async function startUnaccepting(address: string): Promise<Unaccepting> {
  const { spawn } = await import("node:child_process");
  const net = await import("node:net");
  const child = spawn(
    "python3",
    [
      "-c",
      [
        "import socket, sys",
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        `s.bind((${JSON.stringify(address)}, 0))`,
        "s.listen(0)",
        "print(s.getsockname()[1], flush=True)",
        "sys.stdin.read()",
      ].join("\n"),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  const port = Number(line.toString().trim());
  // Fill the accept queue: later SYNs are dropped and their connects hang.
  const fillers: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const s = net.connect({ host: address, port });
    s.on("error", () => {});
    fillers.push(s);
  }
  await Promise.all(fillers.slice(0, 1).map((s) => once(s, "connect")));
  return {
    address,
    port,
    async close() {
      for (const s of fillers) s.destroy();
      const exited = once(child, "exit");
      child.stdin!.end();
      child.kill();
      await exited;
    },
  };
}

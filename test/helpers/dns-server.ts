/**
 * A real DNS server (dnsmasq from Debian) on a loopback address and a free
 * port, for the DNS backend's integration tests and the DNS example.
 *
 * dnsmasq reads A/AAAA records from a hosts file, which SIGHUP re-reads at
 * run time; SRV records are command-line options, read only at start, so an
 * SRV change restarts the server on the same address and port.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/** One SRV record. */
export interface SrvHost {
  /** The SRV owner name, e.g. `_http._tcp.web.default.svc.cluster.local`. */
  name: string;
  /** The target host name. */
  target: string;
  port: number;
  priority?: number;
  weight?: number;
}

/** The records a server answers with. */
export interface DnsRecords {
  /** Address records: host name → IPv4/IPv6 addresses. */
  hosts?: Record<string, string[]>;
  /** SRV records. */
  srv?: SrvHost[];
}

/** A running dnsmasq. */
export interface TestDnsServer {
  /** The loopback address it listens on. */
  readonly address: string;
  /** Its port (UDP and TCP). */
  readonly port: number;
  /** `address:port`, as a DNS backend's `servers` entry. */
  readonly server: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** Replaces the address records; resolves once dnsmasq has re-read them (SIGHUP). */
  setHosts(hosts: Record<string, string[]>): Promise<void>;
  /** Replaces the SRV records; restarts the server, since dnsmasq reads SRV lines only at start. */
  setSrv(srv: SrvHost[]): Promise<void>;
  /** Kills the server (queries are then refused by the kernel). */
  stop(): Promise<void>;
  /** Starts it again on the same address and port, with the current records. */
  start(): Promise<void>;
  /** Stops it and removes its files. */
  close(): Promise<void>;
}

/** Options of {@link startDnsServer}. */
export interface DnsServerOptions {
  /** Loopback address to listen on; default 127.0.0.53. */
  address?: string;
  /** The records' TTL, seconds; default 1. */
  ttl?: number;
  /** The records. */
  records?: DnsRecords;
  /** Domains answered locally (NXDOMAIN for unknown names); others get REFUSED. */
  domains?: string[];
}

const SEARCH = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/** The dnsmasq binary, or undefined when it is not installed. */
export function dnsmasqPath(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), ...SEARCH];
  for (const dir of dirs) {
    if (dir === "") continue;
    const candidate = join(dir, "dnsmasq");
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A port free for both UDP and TCP on `address`. */
async function freePort(address: string): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const udp = createSocket(address.includes(":") ? "udp6" : "udp4");
    const port = await new Promise<number>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(0, address, () => resolve(udp.address().port));
    });
    const tcpFree = await new Promise<boolean>((resolve) => {
      const tcp = createServer();
      tcp.once("error", () => resolve(false));
      tcp.listen(port, address, () => tcp.close(() => resolve(true)));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (tcpFree) return port;
  }
  throw new Error(`no free port on ${address}`);
}

function hostsFile(hosts: Record<string, string[]>): string {
  const lines: string[] = [];
  for (const [name, addresses] of Object.entries(hosts)) {
    for (const address of addresses) lines.push(`${address} ${name}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Starts dnsmasq on `address` (default 127.0.0.53) and a free port.
 *
 * @throws when dnsmasq is not installed or does not start.
 */
export async function startDnsServer(options: DnsServerOptions = {}): Promise<TestDnsServer> {
  const binary = dnsmasqPath();
  if (binary === undefined) throw new Error("dnsmasq is not installed (apt-get install dnsmasq)");
  const address = options.address ?? "127.0.0.53";
  const ttl = options.ttl ?? 1;
  const domains = options.domains ?? ["cluster.local", "clusterset.local", "consul"];
  const dir = await mkdtemp(join(tmpdir(), "meshlink-dnsmasq-"));
  const hostsPath = join(dir, "hosts");
  let hosts = options.records?.hosts ?? {};
  let srv = options.records?.srv ?? [];
  await writeFile(hostsPath, hostsFile(hosts));
  let port = await freePort(address);
  let child: ChildProcess | undefined;
  let stderr = "";
  const readers = new Set<(line: string) => void>();

  const args = () => [
    "--keep-in-foreground",
    "--log-facility=-",
    `--port=${port}`,
    `--listen-address=${address}`,
    "--bind-interfaces",
    "--no-resolv",
    "--no-hosts",
    "--conf-file=/dev/null",
    "--pid-file=",
    // Stay root: the hosts file lives in a private temporary directory.
    "--user=root",
    `--local-ttl=${ttl}`,
    `--addn-hosts=${hostsPath}`,
    ...domains.map((d) => `--local=/${d}/`),
    ...srv.map((r) => `--srv-host=${r.name},${r.target},${r.port},${r.priority ?? 0},${r.weight ?? 0}`),
  ];

  /** Resolves on the next log line that contains `text`. */
  const logLine = (text: string, what: string) =>
    new Promise<void>((resolve, reject) => {
      const onLine = (line: string) => {
        if (line === "\0exit") {
          readers.delete(onLine);
          reject(
            new Error(`dnsmasq exited while ${what}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`),
          );
        } else if (line.includes(text)) {
          readers.delete(onLine);
          resolve();
        }
      };
      readers.add(onLine);
    });

  const launch = async () => {
    stderr = "";
    const proc = spawn(binary, args(), { stdio: ["ignore", "ignore", "pipe"] });
    child = proc;
    running.add(proc);
    let partial = "";
    proc.stderr!.setEncoding("utf8");
    proc.stderr!.on("data", (chunk: string) => {
      stderr += chunk;
      partial += chunk;
      const lines = partial.split("\n");
      partial = lines.pop()!;
      for (const line of lines) for (const r of [...readers]) r(line);
    });
    proc.once("exit", () => {
      running.delete(proc);
      if (child === proc) child = undefined;
      for (const r of [...readers]) r("\0exit");
    });
    // dnsmasq opens its sockets before it reads the hosts file, so this line
    // means it answers with the records.
    await logLine(`read ${hostsPath}`, "starting");
  };

  const start = async (retryPort: boolean) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await launch();
        return;
      } catch (err) {
        // Someone took the port between the probe and the bind: pick another
        // one, unless the test needs this very port (a restart).
        if (!retryPort || attempt >= 4 || !/in use/i.test(String(err))) throw err;
        port = await freePort(address);
      }
    }
  };

  const stop = async () => {
    const proc = child;
    if (proc === undefined) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    await exited;
  };

  await start(true);

  return {
    address,
    get port() {
      return port;
    },
    get server() {
      return `${address}:${port}`;
    },
    get running() {
      return child !== undefined;
    },
    async setHosts(next) {
      hosts = next;
      await writeFile(hostsPath, hostsFile(hosts));
      if (child === undefined) return;
      const reread = logLine(`read ${hostsPath}`, "re-reading its hosts file");
      child.kill("SIGHUP");
      await reread;
    },
    async setSrv(next) {
      srv = next;
      if (child === undefined) return;
      await stop();
      await start(false);
    },
    stop,
    async start() {
      if (child === undefined) await start(false);
    },
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One question a {@link TcpDnsProxy} saw, in the order it arrived. */
export interface SeenQuestion {
  /** The record type: `A`, `AAAA`, `SRV` or the type number. */
  readonly type: string;
  /** The name asked, lower-case, without the trailing dot. */
  readonly name: string;
}

/** A TCP relay in front of a DNS server that counts connections and questions. */
export interface TcpDnsProxy {
  /** `address:port`, as a DNS backend's `servers` entry. */
  readonly server: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections open now. */
  readonly open: number;
  /** Every question relayed, in order. */
  readonly questions: readonly SeenQuestion[];
  /** Resolves once no connection is open (at once when none is). */
  idle(): Promise<void>;
  /** Stops listening and cuts every connection. */
  close(): Promise<void>;
}

/** Options of {@link startTcpDnsProxy}. */
export interface TcpDnsProxyOptions {
  /** Loopback address to listen on. */
  address: string;
  /** Close the client's connection after relaying each answer (as some servers and middleboxes do). */
  closeAfterAnswer?: boolean;
}

const TYPES: Record<number, string> = { 1: "A", 28: "AAAA", 33: "SRV" };

/** Splits a TCP DNS stream into messages (two-byte length prefix, RFC 1035 §4.2.2). */
function framer(onMessage: (message: Buffer, frame: Buffer) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
      const end = 2 + buf.readUInt16BE(0);
      onMessage(buf.subarray(2, end), buf.subarray(0, end));
      buf = buf.subarray(end);
    }
  };
}

/** The question of a query message (uncompressed, as clients write it). */
function questionOf(message: Buffer): SeenQuestion {
  const labels: string[] = [];
  let pos = 12;
  while (pos < message.length && message[pos]! > 0) {
    labels.push(message.subarray(pos + 1, pos + 1 + message[pos]!).toString("latin1"));
    pos += 1 + message[pos]!;
  }
  const type = pos + 3 <= message.length ? message.readUInt16BE(pos + 1) : 0;
  return { type: TYPES[type] ?? String(type), name: labels.join(".").toLowerCase() };
}

/**
 * Starts a TCP relay on `options.address` and a free port in front of
 * `target` (a {@link TestDnsServer}): every connection to the relay gets its
 * own upstream connection, so the relay sees exactly the connections and
 * questions a client makes. No UDP listens on the relay's port, so only a
 * TCP client gets answers through it.
 */
export async function startTcpDnsProxy(
  target: { address: string; port: number },
  options: TcpDnsProxyOptions,
): Promise<TcpDnsProxy> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const questions: SeenQuestion[] = [];
  const idleWaiters = new Set<() => void>();
  const server = createServer((client) => {
    connections++;
    sockets.add(client);
    const upstream = connect(target.port, target.address);
    client.on(
      "data",
      framer((message, frame) => {
        questions.push(questionOf(message));
        upstream.write(frame);
      }),
    );
    upstream.on(
      "data",
      framer((_message, frame) => {
        if (client.destroyed) return;
        client.write(frame);
        if (options.closeAfterAnswer) {
          client.end();
          upstream.destroy();
        }
      }),
    );
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => client.end());
    client.on("close", () => {
      upstream.destroy();
      sockets.delete(client);
      if (sockets.size === 0) for (const w of [...idleWaiters]) w();
    });
  });
  server.listen(0, options.address);
  await once(server, "listening");
  const port = (server.address() as AddressInfo).port;
  return {
    server: `${options.address}:${port}`,
    get connections() {
      return connections;
    },
    get open() {
      return sockets.size;
    },
    questions,
    idle: () =>
      sockets.size === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => {
            const done = () => {
              idleWaiters.delete(done);
              resolve();
            };
            idleWaiters.add(done);
          }),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

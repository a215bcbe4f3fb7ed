/**
 * NGINX as the proxy hop of `proxy-hop.ts`: Debian's `nginx` binary,
 * started in the foreground with a generated config in a temp dir on a free
 * loopback port, one worker, an upstream with weights, a backup server and
 * keep-alive connections to the upstreams; stopped (by its pid) after.
 *
 * @module
 */

import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sleep } from "./common.js";

/** One upstream server. */
export interface Upstream {
  readonly port: number;
  readonly weight?: number;
  readonly backup?: boolean;
}

/** A running nginx. */
export interface Nginx {
  readonly port: number;
  readonly pid: number;
  readonly version: string;
  /** CPU used so far by the master and its workers, µs (from /proc/<pid>/schedstat, ns). */
  cpuUs(): number;
  /** The generated config. */
  readonly config: string;
  close(): Promise<void>;
}

const CANDIDATES = ["nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"];

/** The nginx binary and its version, or `undefined` with the reason. */
export function findNginx(): { bin: string; version: string } | { bin: undefined; reason: string } {
  for (const bin of CANDIDATES) {
    const r = spawnSync(bin, ["-v"], { encoding: "utf8" });
    if (r.error === undefined && r.status === 0) {
      return { bin, version: (r.stderr || r.stdout).trim().replace(/^nginx version: /, "") };
    }
  }
  return {
    bin: undefined,
    reason: `no nginx binary (tried ${CANDIDATES.join(", ")}); apt-get install -y nginx`,
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  server.close();
  await once(server, "close");
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU time of a process, µs; 0 once it is gone. From the scheduler's
 * nanosecond account of its threads when
 * the kernel keeps it, else utime + stime in 10 ms ticks, too coarse for
 * blocks of a quarter of a second.
 */
function processCpuUs(pid: number): number {
  try {
    let ns = 0;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
    }
    if (Number.isFinite(ns) && ns > 0) return ns / 1000;
  } catch {
    // no schedstat: fall back to the ticks
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After the command: state is field 3 (index 0 here); utime 14 and stime 15 (indexes 11, 12).
    return ((Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND) * 1e6;
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function configFor(dir: string, port: number, upstreams: readonly Upstream[], keepalive: number): string {
  const servers = upstreams
    .map(
      (u) =>
        `    server 127.0.0.1:${u.port}${u.weight ? ` weight=${u.weight}` : ""}${u.backup ? " backup" : ""};`,
    )
    .join("\n");
  // As root, nginx would switch its workers to `nobody`, who cannot read the temp dir.
  const user = process.getuid?.() === 0 ? "user root;\n" : "";
  return `${user}worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream echo {
${servers}
    keepalive ${keepalive};
    keepalive_requests 1000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:${port};
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

/** Starts nginx in the foreground in front of `upstreams`. */
export async function startNginx(
  nginx: { bin: string; version: string },
  upstreams: readonly Upstream[],
  keepalive = 128,
): Promise<Nginx> {
  const { bin, version } = nginx;
  const dir = mkdtempSync(join(tmpdir(), "meshlink-bench-nginx-"));
  const port = await freePort();
  const config = configFor(dir, port, upstreams, keepalive);
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, config);
  const check = spawnSync(bin, ["-t", "-q", "-p", dir, "-e", join(dir, "error.log"), "-c", conf], {
    encoding: "utf8",
  });
  if (check.status !== 0) throw new Error(`nginx -t failed: ${check.stderr}`);
  const child: ChildProcess = spawn(
    bin,
    ["-p", dir, "-e", join(dir, "error.log"), "-c", conf, "-g", "daemon off;"],
    {
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  const kill = () => child.kill("SIGKILL");
  process.once("exit", kill);
  let exited = false;
  child.once("exit", () => {
    exited = true;
    process.off("exit", kill);
  });
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > deadline) {
      let log = "";
      try {
        log = readFileSync(join(dir, "error.log"), "utf8");
      } catch {
        // no log
      }
      child.kill("SIGKILL");
      throw new Error(`nginx did not start on 127.0.0.1:${port}: ${log}`);
    }
    await sleep(20);
  }
  const pid = child.pid!;
  const workers = childrenOf(pid);
  return {
    port,
    pid,
    version,
    config,
    cpuUs: () => processCpuUs(pid) + workers.reduce((s, w) => s + processCpuUs(w), 0),
    async close() {
      if (!exited) {
        const done = once(child, "exit");
        child.kill("SIGQUIT");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        await done;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A protocol-faithful stand-in for a Consul agent's HTTP API, for tests and
 * benchmarks (no Consul binary can be installed on these machines). It
 * implements what the Consul backend uses, as Consul documents and sends it:
 *
 * - `GET /v1/health/service/<name>` with `dc` (one server, several federated
 *   datacenters; an unknown one answers 500 "No path to datacenter"),
 *   `passing`, `tag` (repeatable: every tag), `node-meta=key:value`
 *   (repeatable), `index` and `wait` (Go durations, default 5m, capped at
 *   10m, plus up to wait/16 of jitter): a request whose index is not behind
 *   the service's index is held until the service changes or the wait ends;
 * - JSON shaped as Consul's `ServiceEntry` (Node, Service, Checks, with the
 *   tagged addresses, meta, weights and serfHealth check Consul adds);
 * - `X-Consul-Index` (per service: the last change of one of its instances;
 *   for an unknown service the datacenter's index), `X-Consul-KnownLeader`,
 *   `X-Consul-LastContact`, `X-Consul-Effective-Consistency`;
 * - ACLs: `X-Consul-Token` (or `Authorization: Bearer`, or `?token=`); an
 *   unknown token gets 403 "ACL not found"; a token that may not read a
 *   service or node has those entries filtered out, with
 *   `X-Consul-Results-Filtered-By-ACLs: true`;
 * - an index reset (a snapshot restore: every held query wakes and the index
 *   goes backwards) and a restart (connections dropped, index reset);
 * - faults: garbage, a wrong shape, 500, 403 "Permission denied", a missing
 *   or zero index, a request that never answers.
 *
 * @module
 */

import { once } from "node:events";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";

/** A check's state. */
export type CheckStatus = "passing" | "warning" | "critical";

/** One service instance on one node, as registered. */
export interface ConsulInstance {
  /** The node's name. */
  node: string;
  /** The node's address. */
  address: string;
  /** The service's name. */
  service: string;
  /** The instance's ID; default `<service>-<node>`. */
  id?: string;
  /** The service's own address; default "" (the node's is used). */
  serviceAddress?: string;
  /** The service's port. */
  port: number;
  tags?: string[];
  meta?: Record<string, string>;
  nodeMeta?: Record<string, string>;
  weights?: { Passing: number; Warning: number };
  /** Tagged addresses of the service, added to the ones Consul derives (`lan_ipv4`, `wan_ipv4`). */
  serviceTaggedAddresses?: Record<string, { Address: string; Port: number }>;
  /** Tagged addresses of the node, added to the derived `lan`, `lan_ipv4`, `wan`, `wan_ipv4`. */
  nodeTaggedAddresses?: Record<string, string>;
  /** The service's checks; default one passing check. */
  checks?: { id?: string; status: CheckStatus; output?: string }[];
  /** The node's serfHealth check; default passing. */
  nodeStatus?: CheckStatus;
}

/** A fault the server answers with instead of the truth. */
export type ConsulFault =
  | "garbage"
  | "wrong-shape"
  | "500"
  | "forbidden"
  | "no-index"
  | "zero-index"
  | "hang";

/** What a token may read (prefixes, as Consul's `service_prefix`/`node_prefix`; "" is everything). */
export interface AclPolicy {
  services: string[];
  nodes: string[];
}

/** One request the server saw. */
export interface ConsulRequest {
  readonly path: string;
  readonly service: string;
  readonly query: URLSearchParams;
  readonly token: string | undefined;
  readonly index: number;
  readonly dc: string;
}

interface Stored {
  instance: ConsulInstance;
  createIndex: number;
  modifyIndex: number;
}

interface Datacenter {
  index: number;
  services: Map<string, Stored>; // by instance ID
  serviceIndex: Map<string, number>;
}

interface Waiter {
  dc: string;
  service: string;
  index: number;
  record: ConsulRequest;
  answer: () => void;
}

/** Options of {@link startConsulServer}. */
export interface ConsulServerOptions {
  /** The datacenters; the first is the agent's own. Default `["dc1"]`. */
  datacenters?: string[];
  /** Loopback address to listen on; default 127.0.0.1. */
  address?: string;
  /** A unix socket to listen on instead. */
  socketPath?: string;
  /** HTTPS with this certificate; `ca` makes client certificates required (Consul's verify_incoming). */
  tls?: { cert: string; key: string; ca?: string };
  /** ACLs on: tokens (secret → policy) and the anonymous token's policy (default: nothing). */
  acl?: { tokens: Record<string, AclPolicy>; anonymous?: AclPolicy };
}

/** A running test agent. */
export interface TestConsulServer {
  /** `http(s)://address:port`, or `unix://path`. */
  readonly url: string;
  readonly address: string;
  readonly port: number;
  /** Every health request, in order. */
  readonly requests: ConsulRequest[];
  /** Requests held now. */
  readonly holding: number;
  register(dc: string, instance: ConsulInstance): number;
  deregister(dc: string, id: string): number;
  setCheck(dc: string, id: string, status: CheckStatus): number;
  /** An idempotent write: the service's index moves, nothing it answers changes. */
  touch(dc: string, service: string): number;
  /** The index goes backwards in every datacenter (a snapshot restore): held queries wake at once. */
  resetIndex(): void;
  /** Answers with a fault from now on, in one datacenter or all (`dc` omitted); `undefined` clears it. */
  fault(mode: ConsulFault | undefined, dc?: string): void;
  /** Resolves with a request matching `match` (default any) that is held (blocking) now, or the next one. */
  held(match?: (r: ConsulRequest) => boolean): Promise<ConsulRequest>;
  /** Resolves with the first request matching `match`, past or future. */
  request(match: (r: ConsulRequest) => boolean): Promise<ConsulRequest>;
  /** Resolves with the next request matching `match` when it arrives. */
  nextRequest(match?: (r: ConsulRequest) => boolean): Promise<ConsulRequest>;
  /** Resolves with the next held request matching `match` once it ends (answered, or its connection closed). */
  nextReleased(match?: (r: ConsulRequest) => boolean): Promise<ConsulRequest>;
  /** Stops listening and drops every connection (the agent is down). */
  stop(): Promise<void>;
  /** Listens again on the same address and port. */
  start(): Promise<void>;
  /** An agent restart: down, the index reset, up again on the same port. */
  restart(): Promise<void>;
}

const MAX_WAIT = 10 * 60_000;
const GO_DURATION = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a Go duration ("10s", "1m30s", "250ms") into ms, or undefined. */
function goDuration(text: string): number | undefined {
  if (!GO_DURATION.test(text)) return undefined;
  let ms = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(m[1]) * UNITS[m[2]!]!;
  return ms;
}

const isIpv4 = (a: string) => /^\d{1,3}(\.\d{1,3}){3}$/.test(a);

function render(dc: string, s: Stored): Record<string, unknown> {
  const i = s.instance;
  const id = i.id ?? `${i.service}-${i.node}`;
  const serviceAddress = i.serviceAddress ?? "";
  const svcTagged: Record<string, { Address: string; Port: number }> = {};
  if (isIpv4(serviceAddress)) {
    svcTagged.lan_ipv4 = { Address: serviceAddress, Port: i.port };
    svcTagged.wan_ipv4 = { Address: serviceAddress, Port: i.port };
  }
  Object.assign(svcTagged, i.serviceTaggedAddresses);
  const nodeChecks = {
    Node: i.node,
    CheckID: "serfHealth",
    Name: "Serf Health Status",
    Status: i.nodeStatus ?? "passing",
    Notes: "",
    Output: "Agent alive and reachable",
    ServiceID: "",
    ServiceName: "",
    ServiceTags: [],
    Type: "",
    Interval: "",
    Timeout: "",
    ExposedPort: 0,
    Definition: {},
    CreateIndex: s.createIndex,
    ModifyIndex: s.createIndex,
  };
  const serviceChecks = (i.checks ?? [{ status: "passing" as const }]).map((c, n) => ({
    Node: i.node,
    CheckID: c.id ?? `service:${id}${n === 0 ? "" : `:${n + 1}`}`,
    Name: `Service '${i.service}' check`,
    Status: c.status,
    Notes: "",
    Output: c.output ?? (c.status === "passing" ? "HTTP GET /health: 200 OK" : "HTTP GET /health: 503"),
    ServiceID: id,
    ServiceName: i.service,
    ServiceTags: i.tags ?? [],
    Type: "http",
    Interval: "10s",
    Timeout: "1s",
    ExposedPort: 0,
    Definition: {},
    CreateIndex: s.createIndex,
    ModifyIndex: s.modifyIndex,
  }));
  return {
    Node: {
      ID: `${i.node.padEnd(8, "0").slice(0, 8)}-0000-4000-8000-000000000000`,
      Node: i.node,
      Address: i.address,
      Datacenter: dc,
      TaggedAddresses: {
        lan: i.address,
        lan_ipv4: i.address,
        wan: i.address,
        wan_ipv4: i.address,
        ...i.nodeTaggedAddresses,
      },
      Meta: { "consul-network-segment": "", ...i.nodeMeta },
      CreateIndex: s.createIndex,
      ModifyIndex: s.createIndex,
    },
    Service: {
      ID: id,
      Service: i.service,
      Tags: i.tags ?? [],
      Address: serviceAddress,
      ...(Object.keys(svcTagged).length > 0 ? { TaggedAddresses: svcTagged } : {}),
      Meta: i.meta ?? {},
      Port: i.port,
      Weights: i.weights ?? { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
      Proxy: { Mode: "", MeshGateway: {}, Expose: {} },
      Connect: {},
      PeerName: "",
      CreateIndex: s.createIndex,
      ModifyIndex: s.modifyIndex,
    },
    Checks: [nodeChecks, ...serviceChecks],
  };
}

function allows(prefixes: readonly string[], name: string): boolean {
  return prefixes.some((p) => name.startsWith(p));
}

/** Starts a test Consul agent on a loopback port (or unix socket). */
export async function startConsulServer(options: ConsulServerOptions = {}): Promise<TestConsulServer> {
  const names = options.datacenters ?? ["dc1"];
  const dcs = new Map<string, Datacenter>(
    names.map((n) => [n, { index: 10, services: new Map(), serviceIndex: new Map() }]),
  );
  const faults = new Map<string, ConsulFault>();
  const waiters = new Set<Waiter>();
  const requests: ConsulRequest[] = [];
  type Moment = "arrived" | "held" | "released";
  const watchers = new Set<{
    moment: Moment;
    match: (r: ConsulRequest) => boolean;
    resolve: (r: ConsulRequest) => void;
  }>();
  const sockets = new Set<Socket>();
  const address = options.address ?? "127.0.0.1";
  let port = 0;

  const queryIndex = (dc: Datacenter, service: string) => dc.serviceIndex.get(service) ?? dc.index;

  const wake = (dcName: string) => {
    const dc = dcs.get(dcName)!;
    for (const w of [...waiters]) {
      if (w.dc === dcName && queryIndex(dc, w.service) > w.index) w.answer();
    }
  };

  const write = (dcName: string, service: string): number => {
    const dc = dcs.get(dcName);
    if (dc === undefined) throw new Error(`unknown datacenter ${dcName}`);
    dc.index++;
    dc.serviceIndex.set(service, dc.index);
    wake(dcName);
    return dc.index;
  };

  const seen = (r: ConsulRequest, moment: Moment) => {
    for (const w of [...watchers]) {
      if (w.moment === moment && w.match(r)) {
        watchers.delete(w);
        w.resolve(r);
      }
    }
  };

  const fail = (res: ServerResponse, status: number, text: string) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
    res.end(text);
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://consul");
    const m = /^\/v1\/health\/service\/([^/]+)$/.exec(url.pathname);
    if (req.method !== "GET" || m === null) return fail(res, 404, "404 page not found");
    const service = decodeURIComponent(m[1]!);
    const q = url.searchParams;
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const token =
      (req.headers["x-consul-token"] as string | undefined) ?? bearer ?? (q.get("token") || undefined);
    const dcName = q.get("dc") || names[0]!;
    const rawIndex = q.get("index") ?? "0";
    const index = /^\d+$/.test(rawIndex) ? Number(rawIndex) : Number.NaN;
    const record: ConsulRequest = { path: req.url ?? "", service, query: q, token, index, dc: dcName };
    requests.push(record);
    seen(record, "arrived");

    let policy: AclPolicy | undefined;
    if (options.acl !== undefined) {
      policy =
        token === undefined
          ? (options.acl.anonymous ?? { services: [], nodes: [] })
          : options.acl.tokens[token];
      if (policy === undefined) return fail(res, 403, "ACL not found");
    }
    if (Number.isNaN(index)) return fail(res, 400, "Invalid index");
    let wait = 5 * 60_000;
    if (q.has("wait")) {
      const w = goDuration(q.get("wait")!);
      if (w === undefined) return fail(res, 400, "Invalid wait time");
      wait = Math.min(w, MAX_WAIT);
    }
    const passingParam = q.get("passing");
    if (
      passingParam !== null &&
      !["", "1", "0", "true", "false", "t", "f", "TRUE", "FALSE"].includes(passingParam)
    ) {
      return fail(res, 400, "Invalid value for ?passing");
    }
    const passing = passingParam !== null && ["", "1", "true", "t", "TRUE"].includes(passingParam);
    const tags = q.getAll("tag");
    const nodeMeta = q.getAll("node-meta").map((kv) => {
      const i = kv.indexOf(":");
      return i < 0 ? [kv, ""] : [kv.slice(0, i), kv.slice(i + 1)];
    });
    const dc = dcs.get(dcName);
    const currentFault = () => faults.get(dcName) ?? faults.get("*");

    // A held request answers with whatever fault is set when it wakes.
    const answer = () => {
      const fault = currentFault();
      if (fault === "hang") return; // never answers
      if (fault === "500") return fail(res, 500, "rpc error making call: No cluster leader");
      if (fault === "forbidden") return fail(res, 403, "Permission denied");
      if (dc === undefined) return fail(res, 500, "No path to datacenter");
      const headers: Record<string, string> = {
        "content-type": "application/json",
        vary: "Accept-Encoding",
        "x-consul-effective-consistency": "leader",
        "x-consul-knownleader": "true",
        "x-consul-lastcontact": "0",
        "x-consul-query-backend": "blocking-query",
      };
      if (fault !== "no-index")
        headers["x-consul-index"] = fault === "zero-index" ? "0" : String(queryIndex(dc, service));
      if (options.acl !== undefined) headers["x-consul-default-acl-policy"] = "deny";
      let filtered = false;
      const entries = [...dc.services.values()]
        .filter((s) => s.instance.service === service)
        .filter((s) => tags.every((t) => s.instance.tags?.includes(t)))
        .filter((s) =>
          nodeMeta.every(([k, v]) => ({ "consul-network-segment": "", ...s.instance.nodeMeta })[k!] === v),
        )
        .filter((s) => {
          if (
            policy === undefined ||
            (allows(policy.services, service) && allows(policy.nodes, s.instance.node))
          ) {
            return true;
          }
          filtered = true;
          return false;
        })
        .sort((a, b) => (a.instance.node < b.instance.node ? -1 : a.instance.node > b.instance.node ? 1 : 0))
        .map((s) => render(dcName, s))
        .filter((e) => !passing || (e.Checks as { Status: string }[]).every((c) => c.Status === "passing"));
      if (filtered) headers["x-consul-results-filtered-by-acls"] = "true";
      res.writeHead(200, headers);
      if (fault === "garbage") return res.end("<html><body>502 Bad Gateway</body></html>");
      if (fault === "wrong-shape")
        return res.end(JSON.stringify([{ Node: "n1", Service: { ID: 7 }, Checks: {} }]));
      res.end(JSON.stringify(entries));
    };

    const fault = currentFault();
    const blocks =
      fault === "hang" ||
      (dc !== undefined && index > 0 && queryIndex(dc, service) <= index && fault === undefined);
    if (!blocks) return answer();
    let timer: NodeJS.Timeout | undefined;
    const waiter: Waiter = {
      dc: dcName,
      service,
      index,
      record,
      answer: () => {
        waiters.delete(waiter);
        clearTimeout(timer);
        if (!res.destroyed) answer();
      },
    };
    // Consul adds up to wait/16 at random so that waiting clients spread out.
    if (fault !== "hang") timer = setTimeout(waiter.answer, wait + Math.random() * (wait / 16));
    waiters.add(waiter);
    res.on("close", () => {
      waiters.delete(waiter);
      clearTimeout(timer);
      seen(record, "released");
    });
    seen(record, "held");
  };

  const make = (): Server => {
    const s = options.tls
      ? createHttpsServer(
          {
            cert: options.tls.cert,
            key: options.tls.key,
            ca: options.tls.ca,
            requestCert: options.tls.ca !== undefined,
          },
          handle,
        )
      : createHttpServer(handle);
    s.on("connection", (sock: Socket) => {
      sockets.add(sock);
      sock.on("close", () => sockets.delete(sock));
    });
    return s;
  };
  let server = make();
  const listen = async () => {
    if (options.socketPath !== undefined) server.listen(options.socketPath);
    else server.listen(port, address);
    await once(server, "listening");
    if (options.socketPath === undefined) port = (server.address() as AddressInfo).port;
  };
  await listen();

  const state: TestConsulServer = {
    get url() {
      return options.socketPath !== undefined
        ? `unix://${options.socketPath}`
        : `${options.tls ? "https" : "http"}://${address}:${port}`;
    },
    address,
    get port() {
      return port;
    },
    requests,
    get holding() {
      return waiters.size;
    },
    register(dc, instance) {
      const id = instance.id ?? `${instance.service}-${instance.node}`;
      const d = dcs.get(dc);
      if (d === undefined) throw new Error(`unknown datacenter ${dc}`);
      const prev = d.services.get(id);
      // A service that moves to another name changes both names' answers.
      if (prev !== undefined && prev.instance.service !== instance.service) write(dc, prev.instance.service);
      const index = d.index + 1;
      d.services.set(id, {
        instance: { ...instance, id },
        createIndex: prev?.createIndex ?? index,
        modifyIndex: index,
      });
      return write(dc, instance.service);
    },
    deregister(dc, id) {
      const d = dcs.get(dc)!;
      const prev = d.services.get(id);
      if (prev === undefined) return d.index;
      d.services.delete(id);
      return write(dc, prev.instance.service);
    },
    setCheck(dc, id, status) {
      const d = dcs.get(dc)!;
      const s = d.services.get(id)!;
      s.instance = {
        ...s.instance,
        checks: (s.instance.checks ?? [{ status: "passing" }]).map((c) => ({ ...c, status })),
      };
      s.modifyIndex = d.index + 1;
      return write(dc, s.instance.service);
    },
    touch(dc, service) {
      return write(dc, service);
    },
    resetIndex() {
      for (const d of dcs.values()) {
        d.index = 2;
        for (const k of d.serviceIndex.keys()) d.serviceIndex.set(k, 2);
        for (const s of d.services.values()) s.createIndex = s.modifyIndex = 2;
      }
      for (const w of [...waiters]) w.answer();
    },
    fault(mode, dc) {
      if (mode === undefined) faults.delete(dc ?? "*");
      else faults.set(dc ?? "*", mode);
    },
    held(match = () => true) {
      const now = [...waiters].find((w) => match(w.record));
      if (now !== undefined) return Promise.resolve(now.record);
      return new Promise((resolve) => watchers.add({ moment: "held", match, resolve }));
    },
    request(match = () => true) {
      const past = requests.find(match);
      if (past !== undefined) return Promise.resolve(past);
      return state.nextRequest(match);
    },
    nextRequest(match = () => true) {
      return new Promise((resolve) => watchers.add({ moment: "arrived", match, resolve }));
    },
    nextReleased(match = () => true) {
      return new Promise((resolve) => watchers.add({ moment: "released", match, resolve }));
    },
    async stop() {
      if (!server.listening) return;
      const closed = once(server, "close");
      server.close();
      for (const s of sockets) s.destroy();
      for (const w of waiters) waiters.delete(w);
      await closed;
    },
    async start() {
      if (server.listening) return;
      server = make();
      await listen();
    },
    async restart() {
      await state.stop();
      state.resetIndex();
      await state.start();
    },
  };
  return state;
}

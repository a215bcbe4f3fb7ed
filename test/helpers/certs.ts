import { execFileSync } from "node:child_process";
import { once } from "node:events";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer as createHttpsServer } from "node:https";
import { type AddressInfo, connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import type { buildConnector } from "undici";
import type { TlsPolicy, TlsTarget } from "../../src/tls/tls.js";

/** A certificate and its private key, PEM. */
export interface Pem {
  readonly cert: string;
  readonly key: string;
}

/** What a leaf certificate says about its holder. */
export interface LeafOptions {
  /** Subject common name. */
  readonly cn: string;
  /** DNS subject alternative names. */
  readonly dns?: readonly string[];
  /** IP subject alternative names. */
  readonly ips?: readonly string[];
  /** URI subject alternative names (SPIFFE IDs). */
  readonly uris?: readonly string[];
  /** Validity from now, in days; default 30. */
  readonly days?: number;
  /** Validity as explicit UTC times `YYYYMMDDHHMMSSZ` (for expired or not-yet-valid certificates). */
  readonly notBefore?: string;
  readonly notAfter?: string;
}

/** A test certificate authority (ECDSA P-256) made with the openssl CLI. */
export interface TestCa extends Pem {
  /** Issues a leaf certificate (server and client auth) signed by this CA. */
  issue(options: LeafOptions): Pem;
  /** Removes the CA's scratch directory. */
  dispose(): void;
}

const openssl = (args: string[], cwd: string): void => {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
};

/** A new ECDSA P-256 private key, PEM (PKCS#8). */
export function ecKey(): string {
  const dir = mkdtempSync(join(tmpdir(), "meshlink-key-"));
  try {
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"], dir);
    return readFileSync(join(dir, "k.pem"), "utf8");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Creates a CA for tests. Needs the `openssl` command (Debian's openssl package). */
export function createTestCa(name = "meshlink test CA"): TestCa {
  const dir = mkdtempSync(join(tmpdir(), "meshlink-ca-"));
  const key = ecKey();
  writeFileSync(join(dir, "ca.key"), key);
  openssl(
    [
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-subj",
      `/CN=${name}`,
      "-days",
      "3650",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      "ca.pem",
    ],
    dir,
  );
  // `openssl ca` is the one command of OpenSSL 3.0 that takes explicit validity times.
  writeFileSync(join(dir, "index.txt"), "");
  writeFileSync(join(dir, "serial"), "1000\n");
  writeFileSync(
    join(dir, "ca.cnf"),
    [
      "[ca]",
      "default_ca = test",
      "[test]",
      `dir = ${dir}`,
      "database = $dir/index.txt",
      "serial = $dir/serial",
      "new_certs_dir = $dir",
      "certificate = $dir/ca.pem",
      "private_key = $dir/ca.key",
      "default_md = sha256",
      "policy = any",
      "unique_subject = no",
      "copy_extensions = none",
      "[any]",
      "commonName = supplied",
      "",
    ].join("\n"),
  );
  const cert = readFileSync(join(dir, "ca.pem"), "utf8");
  let n = 0;
  return {
    cert,
    key,
    issue(options) {
      const id = `leaf${n++}`;
      const leafKey = ecKey();
      writeFileSync(join(dir, `${id}.key`), leafKey);
      openssl(["req", "-new", "-key", `${id}.key`, "-subj", `/CN=${options.cn}`, "-out", `${id}.csr`], dir);
      const san = [
        ...(options.dns ?? []).map((d) => `DNS:${d}`),
        ...(options.ips ?? []).map((i) => `IP:${i}`),
        ...(options.uris ?? []).map((u) => `URI:${u}`),
      ];
      const ext = [
        "basicConstraints = CA:FALSE",
        "keyUsage = critical, digitalSignature, keyEncipherment",
        "extendedKeyUsage = serverAuth, clientAuth",
        ...(san.length > 0 ? [`subjectAltName = ${san.join(", ")}`] : []),
      ];
      writeFileSync(join(dir, `${id}.ext`), `${ext.join("\n")}\n`);
      const validity =
        options.notBefore !== undefined || options.notAfter !== undefined
          ? [
              ...(options.notBefore !== undefined ? ["-startdate", options.notBefore] : []),
              ...(options.notAfter !== undefined ? ["-enddate", options.notAfter] : []),
            ]
          : ["-days", String(options.days ?? 30)];
      openssl(
        [
          "ca",
          "-batch",
          "-notext",
          "-config",
          "ca.cnf",
          "-extfile",
          `${id}.ext`,
          "-in",
          `${id}.csr`,
          "-out",
          `${id}.pem`,
          ...validity,
        ],
        dir,
      );
      return { cert: readFileSync(join(dir, `${id}.pem`), "utf8"), key: leafKey };
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A directory laid out as kubelet lays out a Kubernetes secret volume: the
 * files live in a timestamped directory, `..data` is a symlink to it, and
 * each visible file is a symlink through `..data`. {@link SecretVolume.swap}
 * rotates the way kubelet does: a new directory, a `..data_tmp` symlink,
 * then one atomic rename over `..data`, then the old directory is removed.
 */
export interface SecretVolume {
  /** The volume's directory. */
  readonly dir: string;
  /** The visible path of a file (`<dir>/tls.crt`). */
  path(name: string): string;
  /** Replaces every file at once. */
  swap(files: Readonly<Record<string, string>>): void;
  /** Removes the volume. */
  dispose(): void;
}

let volumeSerial = 0;

/** Creates a secret volume holding `files`. */
export function createSecretVolume(files: Readonly<Record<string, string>>): SecretVolume {
  const dir = mkdtempSync(join(tmpdir(), "meshlink-secret-"));
  let current: string | undefined;
  const write = (contents: Readonly<Record<string, string>>) => {
    const name = `..2026_01_01_00_00_${String(volumeSerial++).padStart(6, "0")}`;
    mkdirSync(join(dir, name));
    for (const [file, text] of Object.entries(contents)) writeFileSync(join(dir, name, file), text);
    return name;
  };
  current = write(files);
  symlinkSync(current, join(dir, "..data"));
  for (const file of Object.keys(files)) symlinkSync(join("..data", file), join(dir, file));
  return {
    dir,
    path: (name) => join(dir, name),
    swap(contents) {
      const previous = current!;
      current = write(contents);
      symlinkSync(current, join(dir, "..data_tmp"));
      renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
      rmSync(join(dir, previous), { recursive: true, force: true });
    },
    dispose() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What a TLS test server saw of one request's connection. */
export interface SeenRequest {
  /** The client certificate's subject CN (undefined without one). */
  readonly cn: string | undefined;
  /** The client certificate's URI SANs. */
  readonly uris: readonly string[];
  /** Whether the connection resumed a TLS session. */
  readonly reused: boolean;
  /** The server-side connection's number (1, 2, … in order of connection). */
  readonly connection: number;
}

/** An https server on loopback that records each request's client certificate. */
export interface TlsTestServer {
  readonly address: string;
  readonly port: number;
  readonly seen: SeenRequest[];
  /** TLS errors on the server side (a client without a certificate, a handshake failure). */
  readonly tlsErrors: Error[];
  /** Called on every request after it is recorded. */
  onRequest: ((seen: SeenRequest) => void) | undefined;
  close(): Promise<void>;
}

/**
 * Starts a node:https server on `address` (loopback only) with `pem`,
 * requiring a client certificate from `clientCa` when given.
 */
export async function startTlsServer(
  address: string,
  pem: Pem,
  clientCa?: string | readonly string[],
): Promise<TlsTestServer> {
  const connections = new WeakMap<object, number>();
  let connectionCount = 0;
  const state: TlsTestServer = {
    address,
    port: 0,
    seen: [],
    tlsErrors: [],
    onRequest: undefined,
    close: async () => {
      const closed = once(server, "close");
      server.close();
      server.closeAllConnections();
      await closed;
    },
  };
  const server = createHttpsServer(
    {
      cert: pem.cert,
      key: pem.key,
      ...(clientCa !== undefined
        ? { ca: clientCa as string | string[], requestCert: true, rejectUnauthorized: true }
        : {}),
    },
    (req, res) => {
      const socket = req.socket as TLSSocket;
      const peer = socket.getPeerCertificate();
      const seen: SeenRequest = {
        cn: typeof peer?.subject?.CN === "string" ? peer.subject.CN : undefined,
        uris: parseUris(peer?.subjectaltname),
        reused: socket.isSessionReused(),
        connection: connections.get(socket) ?? 0,
      };
      state.seen.push(seen);
      state.onRequest?.(seen);
      res.end(JSON.stringify(seen));
    },
  );
  server.on("secureConnection", (socket) => connections.set(socket, ++connectionCount));
  server.on("tlsClientError", (err) => state.tlsErrors.push(err));
  server.listen(0, address);
  await once(server, "listening");
  (state as { port: number }).port = (server.address() as AddressInfo).port;
  return state;
}

function parseUris(san: string | undefined): string[] {
  return (san ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
}

/**
 * A minimal connector for tests, shaped like undici's `connect` option: it
 * asks the TLS policy whether the connection is TLS and with which options,
 * connects to the endpoint (never to the origin's host name), and keeps TLS
 * sessions by the policy's `sessionKey`, as the real connector must.
 */
export function policyConnector(
  policy: TlsPolicy,
  target: TlsTarget,
  protocol = "http:",
): buildConnector.connector {
  const sessions = new Map<string, Buffer>();
  return (_options, callback) => {
    const { endpoint } = target;
    let socket: Socket;
    let ready: string;
    if (policy.wantsTls(endpoint, protocol)) {
      const o = policy.connectOptions(target);
      const tlsSocket = tlsConnect({
        ...o,
        host: endpoint.address,
        port: endpoint.port,
        ALPNProtocols: ["http/1.1"],
        session: sessions.get(o.sessionKey),
      });
      tlsSocket.on("session", (s: Buffer) => sessions.set(o.sessionKey, s));
      socket = tlsSocket;
      ready = "secureConnect";
    } else {
      socket = netConnect({ host: endpoint.address, port: endpoint.port });
      ready = "connect";
    }
    const onError = (err: Error) => callback(err, null);
    socket.once("error", onError);
    socket.once(ready, () => {
      socket.removeListener("error", onError);
      callback(null, socket);
    });
  };
}

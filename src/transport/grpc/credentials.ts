/**
 * `mesh.grpc.credentials()`: channel credentials whose every connection
 * takes its TLS options from the mesh for the endpoint it goes to — the
 * endpoint's cluster trust bundle, the client certificate, the check of
 * the server's identity (its SPIFFE ID) — read when the connection is made,
 * so that a rotated certificate reaches new connections without
 * rebuilding channels, and calls in flight keep theirs.
 *
 * grpc-js builds one secure connector per subchannel and hands it the
 * subchannel's options; the `meshlink` load balancer puts the endpoint in
 * them ({@link ENDPOINT_OPTION}). This leans on grpc-js's
 * `ChannelCredentials._createSecureConnector` (1.10 and later).
 *
 * The TLS material comes from a {@link GrpcTlsPolicy}: the mesh's TLS
 * policy fits that shape as it is; a `{ secureContext(cluster) }` provider
 * or plain `{ ca, cert, key }` PEM are adapted to it. Without TLS the
 * connections are plaintext, but still meshlink's: the egress guard checks
 * the address each connection reached (a host name is only known to be
 * allowed once resolved).
 *
 * @module
 */

import { isIP, type Socket } from "node:net";
import {
  type ConnectionOptions,
  checkServerIdentity,
  createSecureContext,
  type PeerCertificate,
  type SecureContext,
  connect as tlsConnect,
} from "node:tls";
import type { Endpoint } from "../../discovery/endpoint.js";
import type { ServiceName } from "../../discovery/names.js";
import { ConfigError, EgressDeniedError } from "../../errors.js";
import type { Subscription } from "../../subscription.js";
import { verifyIdentity } from "../../tls/identity.js";
import type { EgressGuard } from "../egress.js";
import { ENDPOINT_OPTION, recordConnectError } from "./connections.js";
import type { GrpcKit } from "./kit.js";
import { serviceOfPath } from "./target.js";
import type {
  GrpcChannelCredentialsBase,
  GrpcChannelOptions,
  GrpcSecureConnector,
  GrpcUri,
} from "./types.js";

/** What a new connection is for (the TLS policy's `TlsTarget`). */
export interface GrpcTlsTarget {
  /** The endpoint being connected to. */
  readonly endpoint: Endpoint;
  /** The service it serves. */
  readonly service: ServiceName;
  /** The TLS server name: the service's host as the target names it. */
  readonly servername: string;
}

/** `tls.connect` options for one connection (the fields of the TLS policy's `TlsConnectOptions` that gRPC uses). */
export interface GrpcTlsConnectOptions {
  /** The context: trust bundle and client certificate. */
  readonly secureContext?: SecureContext | undefined;
  /** Refuse a server whose certificate does not chain to the bundle; default true. */
  readonly rejectUnauthorized?: boolean | undefined;
  /** Checks the server's certificate against the expected identity; returns the error that refuses it. */
  readonly checkServerIdentity?: ((host: string, cert: PeerCertificate) => Error | undefined) | undefined;
  /** SNI; absent for an IP address. */
  readonly servername?: string | undefined;
}

/**
 * The TLS decisions gRPC connections need. The mesh's TLS policy has this
 * shape; so can an application's own.
 */
export interface GrpcTlsPolicy {
  /** `disable` makes {@link MeshGrpc.credentials} insecure. */
  readonly mode: "strict" | "permissive" | "disable";
  /** Whether a connection to `endpoint` is TLS (gRPC asks as for an `http:` mesh URL: strict always, permissive by endpoint). */
  wantsTls(endpoint: Endpoint, urlProtocol: string): boolean;
  /** The options of a new connection; called per connection, so that rotated material applies. */
  connectOptions(target: GrpcTlsTarget): GrpcTlsConnectOptions;
}

/** A source of `SecureContext`s per cluster (trust bundle and client certificate), current at each call. */
export interface SecureContextProvider {
  /** The context for connections to `cluster` (the default one when the cluster has no bundle of its own). */
  secureContext(cluster?: string): SecureContext;
  /** Called after each rotation. Not needed by gRPC, which asks per connection; accepted for the shape's sake. */
  onRotate?(listener: () => void): Subscription;
}

/** Plain TLS material, PEM: the CA to trust, and the client certificate and key for mutual TLS. */
export interface GrpcTlsMaterial {
  /** The trust bundle. */
  readonly ca: string | Buffer;
  /** The client certificate chain. */
  readonly cert?: string | Buffer | undefined;
  /** The client key. */
  readonly key?: string | Buffer | undefined;
}

/** Anything {@link MeshGrpc.credentials} takes TLS from. */
export type GrpcTlsSource = GrpcTlsPolicy | SecureContextProvider | GrpcTlsMaterial;

/**
 * Checks a server: its URI SAN must be the endpoint's expected identity
 * (a SPIFFE ID) when discovery gave one, else its certificate must name
 * the service's host.
 */
function verifyServer(target: GrpcTlsTarget, cert: PeerCertificate): Error | undefined {
  const expected = target.endpoint.identity;
  if (expected === undefined) return checkServerIdentity(target.servername, cert);
  return verifyIdentity(expected, cert, "spiffe");
}

/** A policy over a context provider: every connection is mutual TLS with the endpoint's cluster context. */
function providerPolicy(provider: SecureContextProvider): GrpcTlsPolicy {
  return {
    mode: "strict",
    wantsTls: () => true,
    connectOptions: (target) => ({
      secureContext: provider.secureContext(target.endpoint.cluster),
      rejectUnauthorized: true,
      servername: isIP(target.servername) === 0 ? target.servername : undefined,
      checkServerIdentity: (_host, cert) => verifyServer(target, cert),
    }),
  };
}

/**
 * The policy behind a TLS source.
 *
 * @throws {@link ConfigError} for anything else, or PEM that `tls.createSecureContext` refuses.
 */
export function tlsPolicyOf(source: GrpcTlsSource): GrpcTlsPolicy {
  const s = source as Partial<GrpcTlsPolicy & SecureContextProvider & GrpcTlsMaterial> | null;
  if (typeof s?.connectOptions === "function" && typeof s.wantsTls === "function")
    return source as GrpcTlsPolicy;
  if (typeof s?.secureContext === "function") return providerPolicy(source as SecureContextProvider);
  if (s?.ca !== undefined) {
    let context: SecureContext;
    try {
      context = createSecureContext({ ca: s.ca, cert: s.cert, key: s.key });
    } catch (err) {
      throw new ConfigError("mesh.grpc.credentials(tls)", source, "tls.createSecureContext refused it", {
        cause: err,
      });
    }
    return providerPolicy({ secureContext: () => context });
  }
  throw new ConfigError(
    "mesh.grpc.credentials(tls)",
    source,
    "expected a TLS policy, a { secureContext(cluster) } provider or { ca, cert, key } PEM",
  );
}

type CredentialsClass = new (
  policy: GrpcTlsPolicy | undefined,
  egress: EgressGuard | undefined,
) => GrpcChannelCredentialsBase;

const classes = new WeakMap<GrpcKit, CredentialsClass>();

/**
 * meshlink's channel credentials on one grpc-js module: TLS as `policy`
 * says per endpoint (none without a policy), the egress guard on every
 * connection.
 */
export function meshCredentials(
  kit: GrpcKit,
  policy: GrpcTlsPolicy | undefined,
  egress: EgressGuard | undefined,
): GrpcChannelCredentialsBase {
  let Class = classes.get(kit);
  if (Class === undefined) {
    Class = credentialsClass(kit);
    classes.set(kit, Class);
  }
  return new Class(policy?.mode === "disable" ? undefined : policy, egress);
}

function credentialsClass(kit: GrpcKit): CredentialsClass {
  const grpc = kit.grpc;
  return class MeshChannelCredentials extends grpc.ChannelCredentials {
    readonly #policy: GrpcTlsPolicy | undefined;
    readonly #egress: EgressGuard | undefined;

    constructor(policy: GrpcTlsPolicy | undefined, egress: EgressGuard | undefined) {
      super();
      this.#policy = policy;
      this.#egress = egress;
    }

    /** Call credentials (tokens) would go out in plaintext without TLS: refused, as grpc-js refuses them on insecure credentials. */
    override compose(callCredentials: unknown): unknown {
      if (this.#policy === undefined) throw new Error("Cannot compose insecure credentials");
      return super.compose(callCredentials);
    }

    override _isSecure(): boolean {
      return this.#policy !== undefined;
    }

    override _equals(other: unknown): boolean {
      return other === this;
    }

    override _createSecureConnector(
      target: GrpcUri,
      options: GrpcChannelOptions,
      callCredentials?: unknown,
    ): GrpcSecureConnector {
      const policy = this.#policy;
      const egress = this.#egress;
      const endpoint = options[ENDPOINT_OPTION] as Endpoint | undefined;
      const service = serviceOfPath(target.path);
      const creds = callCredentials ?? grpc.credentials.createEmpty();
      return {
        connect: (socket) => connect(policy, egress, endpoint, service, socket),
        waitForReady: () => Promise.resolve(),
        getCallCredentials: () => creds,
        destroy: () => {},
      };
    }
  };
}

async function connect(
  policy: GrpcTlsPolicy | undefined,
  egress: EgressGuard | undefined,
  endpoint: Endpoint | undefined,
  service: ServiceName | undefined,
  socket: Socket,
): Promise<{ socket: Socket; secure: boolean }> {
  try {
    const violation = socket.remoteAddress === undefined ? undefined : egress?.check(socket.remoteAddress);
    if (violation !== undefined) {
      socket.destroy();
      throw new EgressDeniedError(violation.address, violation.rule);
    }
    if (policy === undefined) return { socket, secure: false };
    if (endpoint === undefined || service === undefined) {
      throw new Error("meshlink's TLS credentials serve channels to meshlink:// targets only");
    }
    const connected = policy.wantsTls(endpoint, "http:")
      ? {
          socket: await connectTls(
            policy.connectOptions({ endpoint, service, servername: service.host }),
            socket,
          ),
          secure: true,
        }
      : { socket, secure: false };
    recordConnectError(endpoint, undefined);
    return connected;
  } catch (err) {
    if (endpoint !== undefined) recordConnectError(endpoint, err as Error);
    throw err;
  }
}

function connectTls(o: GrpcTlsConnectOptions, socket: Socket): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const rejectUnauthorized = o.rejectUnauthorized ?? true;
    // Only the fields given: Node spreads the options over its defaults, and an undefined check would replace its own.
    const options: ConnectionOptions = { socket, rejectUnauthorized, ALPNProtocols: ["h2"] };
    if (o.secureContext !== undefined) options.secureContext = o.secureContext;
    if (o.checkServerIdentity !== undefined) options.checkServerIdentity = o.checkServerIdentity;
    if (o.servername !== undefined) options.servername = o.servername;
    const onError = (err: Error) => reject(err);
    const tls = tlsConnect(options, () => {
      tls.removeListener("error", onError);
      if (rejectUnauthorized && !tls.authorized) {
        reject(tls.authorizationError ?? new Error("server certificate not authorized"));
        tls.destroy();
        return;
      }
      resolve(tls);
    });
    tls.once("error", onError);
  });
}

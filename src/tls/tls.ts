/**
 * Mutual TLS for mesh connections: the family's interfaces, and the
 * built-ins re-exported.
 *
 * - A {@link CertificateSource} owns the material (trust bundles, client
 *   certificate and key), reloads it when its files rotate and pushes each
 *   new version to subscribers — the HTTP connector and the gRPC transport
 *   alike (grpc-js's `CertificateProvider` shape, see
 *   {@link grpcCertificateProvider}).
 * - A {@link TlsPolicy} turns the mode, the material and the identity
 *   settings into per-connection decisions: whether a connection is TLS
 *   ({@link TlsPolicy.wantsTls}) and with which options
 *   ({@link TlsPolicy.connectOptions}: one `SecureContext` per material
 *   version and trust bundle, a server identity check per expected
 *   identity).
 *
 * @module
 */

import type { PeerCertificate, SecureContext } from "node:tls";
import type { Endpoint } from "../discovery/endpoint.js";
import type { ServiceName } from "../discovery/names.js";
import type { Subscription } from "../subscription.js";

/**
 * How mesh calls use TLS (`MESHLINK_TLS_MODE`, `tls.mode`):
 * - `strict`: every mesh connection is mutual TLS, `http://` URLs included
 *   (as a sidecar does; Istio's PeerAuthentication `STRICT`).
 * - `permissive`: mutual TLS to endpoints marked for it (discovery gave an
 *   expected identity) and for `https://` URLs; plaintext otherwise.
 * - `disable`: no mesh TLS; an `https://` URL is ordinary TLS with the
 *   system's trust store and host-name check, without a client certificate.
 */
export type TlsMode = "strict" | "permissive" | "disable";

/** How a server's identity is matched: its SPIFFE ID (URI SAN), or a DNS name (DNS SAN). */
export type IdentityMatch = "spiffe" | "dns";

/** What `describe()` shows of one certificate (never any key material). */
export interface CertificateInfo {
  /** `cert`: the client certificate; `chain`: an intermediate sent with it; `ca`: the default trust bundle; `cluster-ca`: a cluster's bundle. */
  readonly role: "cert" | "chain" | "ca" | "cluster-ca";
  /** The cluster, for a `cluster-ca`. */
  readonly cluster?: string;
  /** Where it was read from: the option or variable, and the path. */
  readonly source: string;
  /** The subject, `CN=…, O=…`. */
  readonly subject: string;
  /** The issuer. */
  readonly issuer: string;
  /** The serial number, hex. */
  readonly serialNumber: string;
  /** URI SANs (the SPIFFE ID). */
  readonly uris: readonly string[];
  /** DNS SANs. */
  readonly dnsNames: readonly string[];
  /** Start of validity, ISO 8601. */
  readonly notBefore: string;
  /** End of validity, ISO 8601. */
  readonly notAfter: string;
  /** SHA-256 fingerprint. */
  readonly fingerprint256: string;
}

/**
 * One version of the TLS material, checked and ready: every certificate
 * parsed, the key matching the certificate, a `SecureContext` built per
 * trust bundle. Immutable; a rotation makes a new one.
 */
export interface TlsMaterial {
  /** Starts at 1 and grows by one with each accepted rotation. */
  readonly version: number;
  /** When it was loaded, epoch ms. */
  readonly loadedAt: number;
  /** The default trust bundle, PEM. */
  readonly ca: string | undefined;
  /** The client certificate chain, PEM. */
  readonly cert: string | undefined;
  /** The client private key, PEM. Never log it; `describe()` never shows it. */
  readonly key: string | undefined;
  /** Cluster trust bundles, PEM, by cluster name. */
  readonly clusters: ReadonlyMap<string, string>;
  /** A `SecureContext` per trust bundle (`""` for the default one, else the cluster name), each with the client certificate. */
  readonly contexts: ReadonlyMap<string, SecureContext>;
  /** Every certificate of the material. */
  readonly certificates: readonly CertificateInfo[];
}

/**
 * The source of TLS material. It pushes every new version to subscribers
 * (never the first: read {@link CertificateSource.current}); a version that
 * fails its checks is never pushed, and the previous one stays current.
 */
export interface CertificateSource {
  /** The current material. */
  current(): TlsMaterial;
  /** Called with each new version. Listeners that throw do not stop the others. */
  onUpdate(listener: (material: TlsMaterial) => void): Subscription;
  /** Called when a reload is refused (unreadable file, bad PEM, mismatched pair); the previous material stays current. */
  onError(listener: (error: Error) => void): Subscription;
  /** The last refused reload, if any. */
  readonly lastError: RefusedReload | undefined;
  /** When the last reload attempt was refused after the last accepted one. */
  readonly stale: boolean;
  /** The files watched. */
  readonly files: readonly string[];
  /** Stops watching. Idempotent. */
  close(): void;
}

/** What a connection is for, as the connector knows it. */
export interface TlsTarget {
  /** The endpoint being connected to. */
  readonly endpoint: Endpoint;
  /** The service it serves. */
  readonly service: ServiceName;
  /** The TLS server name (SNI): the host name the application used. Ignored when it is an IP address. */
  readonly servername: string;
}

/**
 * Options for `tls.connect` (and undici's `connect`, and grpc-js's
 * `createFromSecureContext`): spread them into the connect call. Frozen and
 * cached: the same object for every connection to the same trust bundle,
 * identity and server name until the material rotates.
 */
export interface TlsConnectOptions {
  /** The material's context for the endpoint's trust bundle, with the client certificate. Absent in `disable` mode (system trust). */
  readonly secureContext?: SecureContext;
  /** Always true: a certificate that does not chain to the bundle fails the handshake. */
  readonly rejectUnauthorized?: boolean;
  /** Checks the peer against the expected identity, ignoring the host name; returns a `TlsIdentityError`. Absent in `disable` mode (Node's host-name check). */
  readonly checkServerIdentity?: (host: string, cert: PeerCertificate) => Error | undefined;
  /** The TLS server name (SNI); absent when the target's is an IP address. */
  readonly servername?: string;
  /**
   * A key for the TLS session cache, unique per material version, trust
   * bundle, expected identity and server name. Resumed sessions skip both
   * the certificate exchange and the identity check, so a session must
   * never be resumed across a rotation (the server would still see the old
   * client certificate) or for another identity. Not a `tls.connect` option.
   */
  readonly sessionKey: string;
  /** The identity checked, `undefined` in `disable` mode. Not a `tls.connect` option. */
  readonly expectedIdentity: string | undefined;
}

/** How server identities are expected and matched, as resolved. */
export interface IdentitySettings {
  /** The template for endpoints without an identity of their own. */
  readonly template: string;
  /** The default SPIFFE trust domain. */
  readonly trustDomain: string;
  /** URI SAN (`spiffe`) or DNS SAN (`dns`). */
  readonly match: IdentityMatch;
}

/** A reload that was refused. */
export interface RefusedReload {
  /** Why: a `TlsMaterialError`. */
  readonly error: Error;
  /** When, epoch ms. */
  readonly at: number;
}

/** A rotation that was accepted. */
export interface RotationEvent {
  /** The new material's version. */
  readonly version: number;
  /** Its certificates. */
  readonly certificates: readonly CertificateInfo[];
}

/** A certificate nearing (or past) its not-after. */
export interface ExpiryEvent {
  /** The certificate. */
  readonly certificate: CertificateInfo;
  /** Time left, ms (negative when already expired). */
  readonly remainingMs: number;
}

/** The JSON-ready state of the mesh's TLS policy, in `mesh.describe().tls`. */
export interface TlsDescription {
  /** The mode in force. */
  readonly mode: TlsMode;
  /** The material version in use (0 when there is none). */
  readonly version: number;
  /** When that version was loaded, ISO 8601. */
  readonly loadedAt: string | undefined;
  /** How server identities are matched. */
  readonly identity: IdentitySettings;
  /** Every certificate in use, with its not-after. */
  readonly certificates: readonly CertificateInfo[];
  /** The files watched for rotation. */
  readonly files: readonly string[];
  /** True when the last reload was refused: the material in use is older than the files. */
  readonly stale: boolean;
  /** The last refused rotation. */
  readonly lastError: DescribedError | undefined;
}

/** A refused rotation, as `describe()` shows it. */
export interface DescribedError {
  /** When, ISO 8601. */
  readonly at: string;
  /** The error code, `MESHLINK_ERR_TLS_MATERIAL`. */
  readonly code: string;
  /** What was wrong, naming the file (never any key material). */
  readonly message: string;
}

/**
 * The TLS decisions for mesh connections. Built by {@link createTlsPolicy}.
 */
export interface TlsPolicy {
  /** The mode in force. */
  readonly mode: TlsMode;
  /** The current material version (0 when there is none). */
  readonly version: number;
  /** The certificate source (for the gRPC transport). */
  readonly source: CertificateSource;
  /**
   * Whether a connection to `endpoint` for a URL of scheme `urlProtocol`
   * (`http:` or `https:`; a gRPC channel with secure credentials counts as
   * `https:`) is TLS: `strict` always; `permissive` for `https:` and for
   * endpoints with an expected identity (`endpoint.identity`); `disable`
   * for `https:` only. Never a silent downgrade: the answer depends on the
   * mode and the endpoint, never on whether material is at hand.
   */
  wantsTls(endpoint: Endpoint, urlProtocol: string): boolean;
  /**
   * The expected identity of `endpoint`: `endpoint.identity` when discovery
   * gave it, else the template filled from the service and the endpoint's
   * cluster (its trust domain when configured).
   */
  expectedIdentity(target: TlsTarget): string;
  /**
   * Options for a new TLS connection to `target` (see {@link TlsConnectOptions}).
   * In `strict` and `permissive` modes: the current material's context for
   * the endpoint's cluster bundle (else the default bundle) and the identity
   * check; in `disable` mode: system trust and the host-name check, no
   * client certificate. Cached; cheap to call per connection.
   */
  connectOptions(target: TlsTarget): TlsConnectOptions;
  /** Checks a peer certificate against an expected identity (for transports that verify after the handshake). */
  verifyPeer(expected: string, cert: PeerCertificate | undefined): Error | undefined;
  /** Called after each accepted rotation: new connections use the new material from then on. */
  onRotate(listener: (event: RotationEvent) => void): Subscription;
  /** Called when a rotation is refused; the previous material stays in use. */
  onRotationError(listener: (error: Error) => void): Subscription;
  /**
   * Called once per certificate and material version when the certificate
   * enters its warning window before not-after (`tls.expiryWarning`, by
   * default a fifth of its lifetime, at most 7 days). A listener added
   * later is told at once of certificates already inside the window.
   */
  onExpiring(listener: (event: ExpiryEvent) => void): Subscription;
  /** The state for `mesh.describe()`: mode, certificates with not-after, the last refused rotation. */
  describe(): TlsDescription;
  /** Stops watching files and timers. Idempotent; connections keep working. */
  close(): void;
}

export {
  type GrpcCaListener,
  type GrpcCertificateProvider,
  type GrpcIdentityListener,
  grpcCertificateProvider,
} from "./grpc.js";
export {
  classifyTlsRejection,
  compileIdentityTemplate,
  DEFAULT_DNS_TEMPLATE,
  DEFAULT_SPIFFE_TEMPLATE,
  IDENTITY_PLACEHOLDERS,
  type IdentityTemplate,
  type IdentityVars,
  identityChecker,
  parseSubjectAltName,
  presentedIdentities,
  type SubjectAltNames,
  verifyIdentity,
} from "./identity.js";
export { excerpt, isPem, type MaterialSpec, type MaterialSpecs } from "./material.js";
export {
  type ResolvedTls,
  resolveTlsOptions,
  TLS_ENV,
  type TlsOptions,
  tlsOptionsSchema,
} from "./options.js";
export { createTlsPolicy, type TlsPolicyOptions } from "./policy.js";
export { type CertificateSourceOptions, createCertificateSource, type ReloadOptions } from "./source.js";

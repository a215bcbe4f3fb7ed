/**
 * The certificate source as a grpc-js `CertificateProvider` (the shape of
 * `@grpc/grpc-js/experimental`), so that grpc-js's certificate-provider
 * credentials follow rotations too. Typed structurally: meshlink does not
 * import grpc-js here.
 *
 * grpc-js builds a new `SecureContext` for every connection from provider
 * credentials; the gRPC transport should prefer
 * `credentials.createFromSecureContext(o.secureContext, { checkServerIdentity: o.checkServerIdentity })`
 * with `o = policy.connectOptions(target)`, made again after `onRotate`,
 * which shares one context per material version.
 *
 * @module
 */

import type { Subscription } from "../subscription.js";
import { notify } from "./source.js";
import type { CertificateSource, TlsMaterial } from "./tls.js";

/** grpc-js's `CaCertificateUpdateListener`: the trust bundle, PEM, or null when there is none. */
export type GrpcCaListener = (update: { caCertificate: Buffer } | null) => void;
/** grpc-js's `IdentityCertificateUpdateListener`: the certificate chain and key, PEM, or null when there are none. */
export type GrpcIdentityListener = (update: { certificate: Buffer; privateKey: Buffer } | null) => void;

/** grpc-js's `experimental.CertificateProvider`, structurally. */
export interface GrpcCertificateProvider {
  /** Adds a listener of trust bundle updates; it is called soon with the current bundle. */
  addCaCertificateListener(listener: GrpcCaListener): void;
  /** Removes a trust bundle listener. */
  removeCaCertificateListener(listener: GrpcCaListener): void;
  /** Adds a listener of certificate and key updates; it is called soon with the current pair. */
  addIdentityCertificateListener(listener: GrpcIdentityListener): void;
  /** Removes a certificate listener. */
  removeIdentityCertificateListener(listener: GrpcIdentityListener): void;
}

/**
 * Adapts a {@link CertificateSource} to grpc-js's `CertificateProvider`.
 *
 * @param cluster Serve this cluster's trust bundle instead of the default one (when it has one).
 * @example
 * ```ts
 * import { experimental } from "@grpc/grpc-js";
 * const provider = grpcCertificateProvider(policy.source);
 * const creds = experimental.createCertificateProviderChannelCredentials(provider, provider, { checkServerIdentity });
 * ```
 */
export function grpcCertificateProvider(
  source: CertificateSource,
  cluster?: string,
): GrpcCertificateProvider {
  const caListeners = new Set<GrpcCaListener>();
  const idListeners = new Set<GrpcIdentityListener>();
  let subscription: Subscription | undefined;

  const ca = (m: TlsMaterial) => {
    const pem = (cluster !== undefined ? m.clusters.get(cluster) : undefined) ?? m.ca;
    return pem === undefined ? null : { caCertificate: Buffer.from(pem) };
  };
  const identity = (m: TlsMaterial) =>
    m.cert === undefined || m.key === undefined
      ? null
      : { certificate: Buffer.from(m.cert), privateKey: Buffer.from(m.key) };
  const sync = () => {
    if (caListeners.size + idListeners.size > 0) {
      subscription ??= source.onUpdate((m) => {
        notify(caListeners, ca(m), "gRPC certificate");
        notify(idListeners, identity(m), "gRPC certificate");
      });
    } else {
      subscription?.dispose();
      subscription = undefined;
    }
  };
  // grpc-js waits for a first update before it connects; deliver the current material on the next tick, as its own provider does.
  const first = <T>(set: Set<(u: T) => void>, listener: (u: T) => void, of: (m: TlsMaterial) => T) => {
    process.nextTick(() => {
      if (set.has(listener)) notify(new Set([listener]), of(source.current()), "gRPC certificate");
    });
  };

  return {
    addCaCertificateListener(listener) {
      caListeners.add(listener);
      sync();
      first(caListeners, listener, ca);
    },
    removeCaCertificateListener(listener) {
      caListeners.delete(listener);
      sync();
    },
    addIdentityCertificateListener(listener) {
      idListeners.add(listener);
      sync();
      first(idListeners, listener, identity);
    },
    removeIdentityCertificateListener(listener) {
      idListeners.delete(listener);
      sync();
    },
  };
}

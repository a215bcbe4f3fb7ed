/**
 * Server identity: the identity an endpoint is expected to present, from
 * discovery (`Endpoint.identity`) or a template, and the check of a peer
 * certificate against it — the SPIFFE ID in a URI SAN (what Istio and
 * SPIRE issue), or a DNS name in `dns` mode.
 *
 * The check replaces Node's host-name check: in a mesh the host name is a
 * service name routed to an address that discovery chose, and what must be
 * true is that the server holds the key of the identity that service runs
 * as. The chain is still verified against the trust bundle first; this
 * check runs only on a certificate that chains to it.
 *
 * @module
 */

import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { ConfigError, TlsIdentityError } from "../errors.js";
import type { IdentityMatch } from "./tls.js";

/** The SANs of a certificate, by kind. */
export interface SubjectAltNames {
  /** URI SANs (SPIFFE IDs). */
  readonly uris: readonly string[];
  /** DNS SANs. */
  readonly dns: readonly string[];
  /** IP address SANs. */
  readonly ips: readonly string[];
}

/**
 * Parses Node's `subjectaltname` text (`DNS:a, URI:spiffe://…, IP Address:…`),
 * including the JSON-quoted form Node uses for values with commas, quotes or
 * other special characters — so that a crafted SAN cannot smuggle a second
 * entry into the list.
 */
export function parseSubjectAltName(text: string): SubjectAltNames {
  const uris: string[] = [];
  const dns: string[] = [];
  const ips: string[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) break;
    const kind = text.slice(i, colon).trim();
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(text.slice(j, k + 1)) as string;
      } catch {
        value = text.slice(j + 1, k);
      }
      j = k + 1;
    } else {
      const comma = text.indexOf(", ", j);
      const end = comma < 0 ? text.length : comma;
      value = text.slice(j, end);
      j = end;
    }
    if (kind === "URI") uris.push(value);
    else if (kind === "DNS") dns.push(value);
    else if (kind === "IP Address") ips.push(value);
    i = text.startsWith(", ", j) ? j + 2 : j + 1;
  }
  return { uris, dns, ips };
}

/** The values a template may use. */
export interface IdentityVars {
  /** The trust domain: the cluster's, else the configured one (default `cluster.local`). */
  readonly trustDomain: string;
  /** The service's Kubernetes namespace (`default` when the name has none, as for Consul). */
  readonly namespace: string;
  /** The service's own name. */
  readonly service: string;
  /** The endpoint's cluster. */
  readonly cluster: string;
  /** The Consul datacenter of the name, else the endpoint's cluster. */
  readonly datacenter: string;
  /** The host name the connection is for (the TLS server name). */
  readonly host: string;
}

/** The placeholders an identity template may contain. */
export const IDENTITY_PLACEHOLDERS: readonly (keyof IdentityVars)[] = [
  "trustDomain",
  "namespace",
  "service",
  "cluster",
  "datacenter",
  "host",
];

/** The default template in `spiffe` mode: Istio's and SPIRE's Kubernetes form. */
export const DEFAULT_SPIFFE_TEMPLATE = "spiffe://{trustDomain}/ns/{namespace}/sa/{service}";
/** The default template in `dns` mode: the host name the caller used. */
export const DEFAULT_DNS_TEMPLATE = "{host}";

/** A compiled identity template. */
export type IdentityTemplate = (vars: IdentityVars) => string;

/**
 * Compiles a template such as `spiffe://{trustDomain}/ns/{namespace}/sa/{service}`.
 *
 * @throws {@link ConfigError} naming `source` for an unknown placeholder, a
 *   stray brace, or (in `spiffe` mode) a template that is not a `spiffe://` URI.
 */
export function compileIdentityTemplate(
  template: string,
  match: IdentityMatch,
  source: string,
): IdentityTemplate {
  const parts: (string | keyof IdentityVars)[] = [];
  const names: boolean[] = [];
  let rest = template;
  for (;;) {
    const open = rest.indexOf("{");
    const close = rest.indexOf("}");
    if (open < 0 && close < 0) break;
    if (open < 0 || close < open)
      throw new ConfigError(source, template, "unbalanced '}' in identity template");
    const name = rest.slice(open + 1, close);
    if (name.includes("{")) throw new ConfigError(source, template, "unbalanced '{' in identity template");
    if (!(IDENTITY_PLACEHOLDERS as readonly string[]).includes(name)) {
      throw new ConfigError(
        source,
        template,
        `unknown placeholder {${name}}; known: ${IDENTITY_PLACEHOLDERS.map((p) => `{${p}}`).join(", ")}`,
      );
    }
    parts.push(rest.slice(0, open));
    names.push(false);
    parts.push(name as keyof IdentityVars);
    names.push(true);
    rest = rest.slice(close + 1);
  }
  parts.push(rest);
  names.push(false);
  if (match === "spiffe" && !template.startsWith("spiffe://")) {
    throw new ConfigError(source, template, "in spiffe match mode the template must be a spiffe:// URI");
  }
  return (vars) => {
    let out = "";
    for (let i = 0; i < parts.length; i++) {
      out += names[i] ? vars[parts[i] as keyof IdentityVars] : (parts[i] as string);
    }
    return out;
  };
}

/** The identities a certificate presents in a match mode: its URI SANs, or its DNS and IP SANs. */
export function presentedIdentities(cert: PeerCertificate | undefined, match: IdentityMatch): string[] {
  const san = parseSubjectAltName(cert?.subjectaltname ?? "");
  return match === "spiffe" ? [...san.uris] : [...san.dns, ...san.ips];
}

/**
 * Checks a peer certificate against the expected identity. `undefined` when
 * it matches, else a {@link TlsIdentityError} naming both.
 *
 * In `spiffe` mode the expected SPIFFE ID must be one of the certificate's
 * URI SANs, compared exactly. In `dns` mode Node's host-name rules apply
 * (DNS SANs with wildcards, IP SANs for an address).
 */
export function verifyIdentity(
  expected: string,
  cert: PeerCertificate | undefined,
  match: IdentityMatch,
): TlsIdentityError | undefined {
  if (match === "spiffe") {
    const uris = presentedIdentities(cert, "spiffe");
    return uris.includes(expected) ? undefined : new TlsIdentityError(expected, uris);
  }
  if (cert !== undefined && checkServerIdentity(expected, cert) === undefined) return undefined;
  return new TlsIdentityError(expected, presentedIdentities(cert, "dns"));
}

/**
 * A `checkServerIdentity` function for `tls.connect` (and grpc-js's
 * `VerifyOptions`) that checks the peer against `expected` and ignores the
 * host name it is given.
 */
export function identityChecker(
  expected: string,
  match: IdentityMatch,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => verifyIdentity(expected, cert, match);
}

/** Node's codes for a server certificate that fails chain verification (OpenSSL's `X509_V_ERR_*`). */
const CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/**
 * Whether a connection error means the server's certificate was refused:
 * `identity` for a {@link TlsIdentityError} (a valid certificate of another
 * identity: an impostor, or stale discovery), `certificate` when the chain
 * did not verify (unknown CA, expired, not yet valid, self-signed);
 * `undefined` for anything else (refused, reset, timeout). Either kind is
 * an endpoint failure that a retry on the same endpoint cannot fix.
 */
export function classifyTlsRejection(err: unknown): "identity" | "certificate" | undefined {
  if (err instanceof TlsIdentityError) return "identity";
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && CERTIFICATE_CODES.has(code) ? "certificate" : undefined;
}

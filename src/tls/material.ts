/**
 * TLS material: reading CA bundles, certificate chains and private keys
 * from paths or PEM text, and checking them before anything uses them —
 * every block parses, the key matches the certificate, Node builds a
 * `SecureContext` from them. A set that fails any check is refused whole:
 * a rotation caught between the certificate and the key being written
 * never reaches a connection.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import { TlsMaterialError } from "../errors.js";
import { parseSubjectAltName } from "./identity.js";
import type { CertificateInfo, TlsMaterial } from "./tls.js";

/** Where one piece of material comes from: a file, or PEM text given inline. */
export interface MaterialSpec {
  /** The option or variable that named it, for errors: `tls.cert`, `MESHLINK_TLS_KEY`, `<file>: tls.ca`. */
  readonly source: string;
  /** A file to read (and watch), when the value was a path. */
  readonly path?: string | undefined;
  /** The PEM text, when the value was inline. */
  readonly pem?: string | undefined;
}

/** Every piece of material, as configured. */
export interface MaterialSpecs {
  /** The trust bundle for servers in the caller's own trust domain. */
  readonly ca?: MaterialSpec | undefined;
  /** The client certificate chain, leaf first. */
  readonly cert?: MaterialSpec | undefined;
  /** The client certificate's private key. */
  readonly key?: MaterialSpec | undefined;
  /** Trust bundles of clusters in other trust domains, by cluster name. */
  readonly clusters: ReadonlyMap<string, MaterialSpec>;
}

/** The text of every piece of material, as read. */
export interface MaterialTexts {
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
  readonly clusters: ReadonlyMap<string, string>;
}

/** The key that {@link TlsMaterial.contexts} uses for the default trust bundle. */
export const DEFAULT_BUNDLE = "";

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** True when `text` is PEM (inline material) rather than a path. */
export function isPem(text: string): boolean {
  return text.includes("-----BEGIN ");
}

/**
 * A short, safe rendering of a configured value for error messages: a path
 * as written (truncated), inline PEM as its kind and size — never its
 * content, and never any part of a private key.
 */
export function excerpt(value: string): string {
  if (isPem(value)) {
    const kind = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(value)?.[1] ?? "PEM";
    return `<inline PEM ${kind.toLowerCase()}, ${value.length} bytes>`;
  }
  return value.length > 200 ? `${value.slice(0, 200)}…` : value;
}

function pemBlocks(text: string, source: string): { type: string; pem: string }[] {
  const out: { type: string; pem: string }[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) out.push({ type: m[1]!, pem: m[0] });
  const begins = text.match(/-----BEGIN /g)?.length ?? 0;
  if (begins !== out.length) {
    throw new TlsMaterialError(
      source,
      "truncated PEM (a BEGIN line without its END line; a file caught mid-write?)",
    );
  }
  return out;
}

/** Parses every certificate of a PEM bundle or chain. */
function certificates(text: string, source: string): X509Certificate[] {
  const blocks = pemBlocks(text, source);
  if (blocks.length === 0) throw new TlsMaterialError(source, "no PEM certificate found");
  return blocks.map((b, i) => {
    if (b.type !== "CERTIFICATE") {
      throw new TlsMaterialError(source, `PEM block ${i + 1} is a ${b.type}, expected CERTIFICATE`);
    }
    try {
      return new X509Certificate(b.pem);
    } catch (err) {
      throw new TlsMaterialError(source, `PEM block ${i + 1} is not a valid certificate`, { cause: err });
    }
  });
}

/** What `describe()` shows of one certificate. */
export function certificateInfo(
  cert: X509Certificate,
  role: CertificateInfo["role"],
  source: string,
  cluster?: string,
): CertificateInfo {
  const san = parseSubjectAltName(cert.subjectAltName ?? "");
  return Object.freeze({
    role,
    ...(cluster !== undefined ? { cluster } : {}),
    source,
    subject: cert.subject.replace(/\n/g, ", "),
    issuer: cert.issuer.replace(/\n/g, ", "),
    serialNumber: cert.serialNumber,
    uris: san.uris,
    dnsNames: san.dns,
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: new Date(cert.validTo).toISOString(),
    fingerprint256: cert.fingerprint256,
  });
}

function specName(spec: MaterialSpec): string {
  return spec.path !== undefined ? `${spec.source} (${spec.path})` : spec.source;
}

/** Reads one spec synchronously (start-up). */
export function readSpecSync(spec: MaterialSpec): string {
  if (spec.pem !== undefined) return spec.pem;
  try {
    return readFileSync(spec.path!, "utf8");
  } catch (err) {
    throw new TlsMaterialError(
      specName(spec),
      `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Reads one spec (rotation). */
export async function readSpec(spec: MaterialSpec): Promise<string> {
  if (spec.pem !== undefined) return spec.pem;
  try {
    return await readFile(spec.path!, "utf8");
  } catch (err) {
    throw new TlsMaterialError(
      specName(spec),
      `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Reads every spec synchronously. */
export function readTextsSync(specs: MaterialSpecs): MaterialTexts {
  const clusters = new Map<string, string>();
  for (const [name, spec] of specs.clusters) clusters.set(name, readSpecSync(spec));
  return {
    ca: specs.ca && readSpecSync(specs.ca),
    cert: specs.cert && readSpecSync(specs.cert),
    key: specs.key && readSpecSync(specs.key),
    clusters,
  };
}

/** Reads every spec. */
export async function readTexts(specs: MaterialSpecs): Promise<MaterialTexts> {
  const names = [...specs.clusters.keys()];
  const [ca, cert, key, ...bundles] = await Promise.all([
    specs.ca && readSpec(specs.ca),
    specs.cert && readSpec(specs.cert),
    specs.key && readSpec(specs.key),
    ...names.map((n) => readSpec(specs.clusters.get(n)!)),
  ]);
  return { ca, cert, key, clusters: new Map(names.map((n, i) => [n, bundles[i]!])) };
}

/** True when two reads gave the same text for every piece. */
export function sameTexts(a: MaterialTexts, b: MaterialTexts): boolean {
  if (a.ca !== b.ca || a.cert !== b.cert || a.key !== b.key || a.clusters.size !== b.clusters.size)
    return false;
  for (const [name, text] of a.clusters) if (b.clusters.get(name) !== text) return false;
  return true;
}

/**
 * Checks material and builds its `SecureContext`s: one for the default
 * trust bundle and one per cluster bundle, each with the client certificate.
 *
 * @throws {@link TlsMaterialError} naming the piece that is wrong.
 */
export function buildMaterial(specs: MaterialSpecs, texts: MaterialTexts, version: number): TlsMaterial {
  const infos: CertificateInfo[] = [];
  const name = (spec: MaterialSpec | undefined, fallback: string) => (spec ? specName(spec) : fallback);

  if ((texts.cert === undefined) !== (texts.key === undefined)) {
    const missing = texts.cert === undefined ? "certificate" : "private key";
    throw new TlsMaterialError(
      name(specs.cert ?? specs.key, "tls"),
      `a ${missing} is needed as well: give both or neither`,
    );
  }
  if (texts.cert !== undefined && texts.key !== undefined) {
    const certSource = name(specs.cert, "tls.cert");
    const keySource = name(specs.key, "tls.key");
    const chain = certificates(texts.cert, certSource);
    // `openssl ecparam -genkey` writes an EC PARAMETERS block before the key.
    const keyBlocks = pemBlocks(texts.key, keySource).filter((b) => b.type !== "EC PARAMETERS");
    if (keyBlocks.length !== 1 || !/PRIVATE KEY$/.test(keyBlocks[0]!.type)) {
      throw new TlsMaterialError(keySource, "expected exactly one PEM PRIVATE KEY block");
    }
    let key: ReturnType<typeof createPrivateKey>;
    try {
      key = createPrivateKey(keyBlocks[0]!.pem);
    } catch (err) {
      // OpenSSL's message names the problem (bad decrypt, unsupported), never the key.
      throw new TlsMaterialError(keySource, `not a usable private key: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (!chain[0]!.checkPrivateKey(key)) {
      throw new TlsMaterialError(
        keySource,
        `the private key does not match the certificate from ${certSource} (serial ${chain[0]!.serialNumber}); a pair caught mid-rotation?`,
      );
    }
    infos.push(certificateInfo(chain[0]!, "cert", certSource));
    for (const c of chain.slice(1)) infos.push(certificateInfo(c, "chain", certSource));
  }
  if (texts.ca !== undefined) {
    const source = name(specs.ca, "tls.ca");
    for (const c of certificates(texts.ca, source)) infos.push(certificateInfo(c, "ca", source));
  }
  for (const [cluster, text] of texts.clusters) {
    const source = name(specs.clusters.get(cluster), `tls.clusters.${cluster}.ca`);
    for (const c of certificates(text, source)) infos.push(certificateInfo(c, "cluster-ca", source, cluster));
  }

  const contexts = new Map<string, ReturnType<typeof createSecureContext>>();
  const context = (ca: string | undefined, source: string) => {
    try {
      return createSecureContext({ ca, cert: texts.cert, key: texts.key });
    } catch (err) {
      throw new TlsMaterialError(source, `Node cannot use this material: ${(err as Error).message}`, {
        cause: err,
      });
    }
  };
  if (texts.ca !== undefined || texts.cert !== undefined) {
    contexts.set(DEFAULT_BUNDLE, context(texts.ca, name(specs.ca ?? specs.cert, "tls")));
  }
  for (const [cluster, text] of texts.clusters) {
    contexts.set(cluster, context(text, name(specs.clusters.get(cluster), `tls.clusters.${cluster}.ca`)));
  }

  return Object.freeze({
    version,
    loadedAt: Date.now(),
    ca: texts.ca,
    cert: texts.cert,
    key: texts.key,
    clusters: texts.clusters,
    contexts,
    certificates: Object.freeze(infos),
  });
}

/**
 * The TLS policy: per-connection TLS decisions from the mode, the current
 * material and the identity settings.
 *
 * Connection options are cached per material version, trust bundle,
 * expected identity and server name, so that every connection to the same
 * kind of peer shares one `SecureContext` (building one costs about half a
 * millisecond per handshake) and one identity check. A rotation empties the
 * cache: the next new connection takes the new material; connections
 * already open keep the material they were made with until they close.
 *
 * @module
 */

import { isIP } from "node:net";
import type { PeerCertificate } from "node:tls";
import type { Endpoint } from "../discovery/endpoint.js";
import { isMeshError, TlsMaterialError } from "../errors.js";
import type { Subscription } from "../subscription.js";
import {
  compileIdentityTemplate,
  type IdentityTemplate,
  identityChecker,
  verifyIdentity,
} from "./identity.js";
import { DEFAULT_BUNDLE } from "./material.js";
import type { ResolvedTls } from "./options.js";
import { createCertificateSource, notify } from "./source.js";
import type {
  CertificateInfo,
  CertificateSource,
  ExpiryEvent,
  RotationEvent,
  TlsConnectOptions,
  TlsDescription,
  TlsMaterial,
  TlsMode,
  TlsPolicy,
  TlsTarget,
} from "./tls.js";

/** Options of {@link createTlsPolicy} beyond the resolved configuration. */
export interface TlsPolicyOptions {
  /** The wall clock for expiry warnings, epoch ms; default `Date.now`. */
  readonly now?: (() => number) | undefined;
  /** Watch directories for file events (default true); polling runs either way. */
  readonly watch?: boolean | undefined;
}

const DAY = 86_400_000;
/** The most connect-option objects kept at once; past it the cache starts over. */
const CACHE_LIMIT = 1024;
/** setTimeout's longest delay. */
const MAX_DELAY = 2 ** 31 - 1;

function certId(c: CertificateInfo): string {
  return `${c.role}\0${c.cluster ?? ""}\0${c.fingerprint256}`;
}

class MeshTlsPolicy implements TlsPolicy {
  readonly mode: TlsMode;
  readonly source: CertificateSource;
  readonly #resolved: ResolvedTls;
  readonly #template: IdentityTemplate;
  readonly #now: () => number;
  readonly #cache = new Map<string, TlsConnectOptions>();
  #cacheVersion = -1;
  readonly #rotate = new Set<(e: RotationEvent) => void>();
  readonly #rotationErrors = new Set<(e: Error) => void>();
  readonly #expiring = new Set<(e: ExpiryEvent) => void>();
  /** Certificates of the current version already inside their warning window. */
  #warned = new Map<string, CertificateInfo>();
  #expiryTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(resolved: ResolvedTls, options: TlsPolicyOptions) {
    this.mode = resolved.mode;
    this.#resolved = resolved;
    this.#now = options.now ?? Date.now;
    this.#template = compileIdentityTemplate(
      resolved.identity.template,
      resolved.identity.match,
      "tls.identity.template",
    );
    this.source = createCertificateSource({
      specs: resolved.specs,
      initial: resolved.material,
      reload: resolved.material === undefined ? false : resolved.reload,
      watch: options.watch,
    });
    this.source.onUpdate((m) => {
      // connectOptions() drops cached options of an older version itself.
      this.#startExpiry(m);
      notify(this.#rotate, { version: m.version, certificates: m.certificates }, "onRotate");
    });
    this.source.onError((err) => notify(this.#rotationErrors, err, "onRotationError"));
    this.#startExpiry(this.source.current());
  }

  get version(): number {
    return this.source.current().version;
  }

  wantsTls(endpoint: Endpoint, urlProtocol: string): boolean {
    const https = urlProtocol === "https:" || urlProtocol === "https";
    if (this.mode === "strict") return true;
    if (this.mode === "permissive") return https || endpoint.identity !== undefined;
    return https;
  }

  expectedIdentity(target: TlsTarget): string {
    const { endpoint, service } = target;
    if (endpoint.identity !== undefined) return endpoint.identity;
    return this.#template({
      trustDomain:
        this.#resolved.clusterTrustDomains.get(endpoint.cluster) ?? this.#resolved.identity.trustDomain,
      namespace: service.namespace ?? "default",
      service: service.service,
      cluster: endpoint.cluster,
      datacenter: service.datacenter ?? endpoint.cluster,
      host: target.servername,
    });
  }

  connectOptions(target: TlsTarget): TlsConnectOptions {
    const sni = target.servername !== "" && isIP(target.servername) === 0 ? target.servername : undefined;
    const m = this.source.current();
    if (m.version !== this.#cacheVersion) {
      this.#cache.clear();
      this.#cacheVersion = m.version;
    }
    if (this.mode === "disable") {
      const key = `plain\0${sni ?? ""}`;
      return this.#cached(key, () => ({
        ...(sni !== undefined ? { servername: sni } : {}),
        sessionKey: key,
        expectedIdentity: undefined,
      }));
    }
    const cluster = target.endpoint.cluster;
    const bundle = cluster !== DEFAULT_BUNDLE && m.contexts.has(cluster) ? cluster : DEFAULT_BUNDLE;
    const expected = this.expectedIdentity(target);
    const key = `${bundle}\0${expected}\0${sni ?? ""}`;
    return this.#cached(key, () => {
      const secureContext = m.contexts.get(bundle);
      if (secureContext === undefined) {
        // resolveTlsOptions refuses strict and permissive modes without a CA bundle; this is a misuse.
        throw new TlsMaterialError("tls", `${this.mode} mode has no TLS material loaded`);
      }
      return {
        secureContext,
        rejectUnauthorized: true,
        checkServerIdentity: identityChecker(expected, this.#resolved.identity.match),
        ...(sni !== undefined ? { servername: sni } : {}),
        sessionKey: `${m.version}\0${key}`,
        expectedIdentity: expected,
      };
    });
  }

  #cached(key: string, make: () => TlsConnectOptions): TlsConnectOptions {
    let o = this.#cache.get(key);
    if (o === undefined) {
      o = Object.freeze(make());
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
      this.#cache.set(key, o);
    }
    return o;
  }

  verifyPeer(expected: string, cert: PeerCertificate | undefined): Error | undefined {
    return verifyIdentity(expected, cert, this.#resolved.identity.match);
  }

  onRotate(listener: (event: RotationEvent) => void): Subscription {
    this.#rotate.add(listener);
    return { dispose: () => void this.#rotate.delete(listener) };
  }

  onRotationError(listener: (error: Error) => void): Subscription {
    this.#rotationErrors.add(listener);
    return { dispose: () => void this.#rotationErrors.delete(listener) };
  }

  onExpiring(listener: (event: ExpiryEvent) => void): Subscription {
    this.#expiring.add(listener);
    const already = [...this.#warned.values()];
    if (already.length > 0) {
      queueMicrotask(() => {
        for (const c of already) {
          if (!this.#expiring.has(listener)) return;
          notify(new Set([listener]), this.#expiryEvent(c), "onExpiring");
        }
      });
    }
    return { dispose: () => void this.#expiring.delete(listener) };
  }

  describe(): TlsDescription {
    const m = this.source.current();
    const last = this.source.lastError;
    return {
      mode: this.mode,
      version: m.version,
      loadedAt: m.version > 0 ? new Date(m.loadedAt).toISOString() : undefined,
      identity: { ...this.#resolved.identity },
      certificates: m.certificates,
      files: this.source.files,
      stale: this.source.stale,
      lastError:
        last === undefined
          ? undefined
          : {
              at: new Date(last.at).toISOString(),
              code: isMeshError(last.error) ? last.error.code : "MESHLINK_ERR_TLS_MATERIAL",
              message: last.error.message,
            },
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#expiryTimer);
    this.source.close();
    this.#cache.clear();
    this.#rotate.clear();
    this.#rotationErrors.clear();
    this.#expiring.clear();
  }

  #expiryEvent(c: CertificateInfo): ExpiryEvent {
    return { certificate: c, remainingMs: Date.parse(c.notAfter) - this.#now() };
  }

  #startExpiry(m: TlsMaterial): void {
    clearTimeout(this.#expiryTimer);
    this.#warned = new Map();
    this.#checkExpiry(m);
  }

  /** Warns of every certificate inside its window, then sleeps until the next one enters its own. */
  #checkExpiry(m: TlsMaterial): void {
    if (this.#closed || m !== this.source.current()) return;
    const now = this.#now();
    let next = Number.POSITIVE_INFINITY;
    const due: CertificateInfo[] = [];
    for (const c of m.certificates) {
      const id = certId(c);
      if (this.#warned.has(id)) continue;
      const notAfter = Date.parse(c.notAfter);
      const lifetime = notAfter - Date.parse(c.notBefore);
      const lead = this.#resolved.expiryWarning ?? Math.min(7 * DAY, lifetime / 5);
      const warnAt = notAfter - lead;
      if (warnAt <= now) {
        this.#warned.set(id, c);
        due.push(c);
      } else if (warnAt < next) next = warnAt;
    }
    for (const c of due) notify(this.#expiring, this.#expiryEvent(c), "onExpiring");
    if (next !== Number.POSITIVE_INFINITY) {
      this.#expiryTimer = setTimeout(
        () => this.#checkExpiry(m),
        Math.min(Math.max(next - now, 0), MAX_DELAY),
      );
      this.#expiryTimer.unref();
    }
  }
}

/**
 * Builds the TLS policy of a mesh: starts watching the material's files
 * (unless `reload` is false) and the expiry timers. `close()` stops both.
 *
 * @example
 * ```ts
 * const policy = createTlsPolicy(resolveTlsOptions(options.tls, process.env, file?.tls, path));
 * if (policy.wantsTls(endpoint, url.protocol)) {
 *   const o = policy.connectOptions({ endpoint, service, servername: url.hostname });
 *   tls.connect({ ...o, host: endpoint.address, port: endpoint.port });
 * }
 * ```
 */
export function createTlsPolicy(resolved: ResolvedTls, options: TlsPolicyOptions = {}): TlsPolicy {
  return new MeshTlsPolicy(resolved, options);
}

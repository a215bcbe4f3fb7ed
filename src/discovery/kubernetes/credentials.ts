/**
 * Where a cluster's credentials come from: a token given inline, a token
 * file re-read on every request (so that a rotated service-account token is
 * picked up, as client-go's in-cluster config does), an exec plugin, or
 * nothing beyond the TLS client certificate.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { KubernetesError } from "../../errors.js";

/** What a request authenticates with. */
export interface Credential {
  /** A bearer token. */
  readonly token: string | undefined;
  /** A client certificate (PEM) supplied by an exec plugin; it replaces the configured one. */
  readonly cert: string | undefined;
  /** Its key (PEM). */
  readonly key: string | undefined;
}

/** A source of credentials for one cluster. */
export interface CredentialSource {
  /** The credential to use now. Rejects with a {@link KubernetesError} (`credentials`). */
  get(): Promise<Credential>;
  /** Forgets a cached credential (after a 401), so that the next `get` fetches a new one. */
  invalidate(): void;
}

const NONE: Credential = Object.freeze({ token: undefined, cert: undefined, key: undefined });

/** No bearer token: the TLS client certificate (if any) authenticates. */
export function noCredentials(): CredentialSource {
  const ready = Promise.resolve(NONE);
  return { get: () => ready, invalidate() {} };
}

/** A token given inline. */
export function staticToken(token: string): CredentialSource {
  const ready = Promise.resolve(Object.freeze({ token, cert: undefined, key: undefined }));
  return { get: () => ready, invalidate() {} };
}

/**
 * A token read from a file on every request. Requests are rare (a list, a
 * watch every few minutes), so reading is cheaper than watching the file,
 * and a projected service-account token that the kubelet rotates is used as
 * soon as it changes.
 */
export function tokenFile(path: string, cluster: string): CredentialSource {
  return {
    async get() {
      let text: string;
      try {
        text = await readFile(path, "utf8");
      } catch (err) {
        throw new KubernetesError(
          cluster,
          "credentials",
          `cannot read token file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          { cause: err },
        );
      }
      const token = text.trim();
      if (token === "") throw new KubernetesError(cluster, "credentials", `token file ${path} is empty`);
      return { token, cert: undefined, key: undefined };
    },
    invalidate() {},
  };
}

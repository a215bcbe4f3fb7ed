/**
 * From a cluster's options to how to reach it: the API server URL, the TLS
 * material and the credential source — given directly, from a kubeconfig
 * context, or from the pod's in-cluster service account.
 *
 * @module
 */

import { join } from "node:path";
import { ConfigError } from "../../errors.js";
import { type CredentialSource, noCredentials, staticToken, tokenFile } from "./credentials.js";
import { execCredentials } from "./exec.js";
import { expandHome, type FileAccess, loadKubeconfig, splitPathList } from "./kubeconfig.js";
import type { ParsedKubernetesCluster } from "./options.js";

/** Where the pod's service account is mounted. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** TLS material for the connections to one API server. */
export interface TlsMaterial {
  /** CA bundle (PEM); undefined: the system CAs. */
  readonly ca: string | undefined;
  /** Client certificate (PEM). */
  readonly cert: string | undefined;
  /** Client key (PEM). */
  readonly key: string | undefined;
  /** Skip verifying the server's certificate. */
  readonly insecure: boolean;
  /** The name to verify the certificate against (SNI). */
  readonly servername: string | undefined;
}

/** How to reach one cluster's API server. */
export interface ClusterConnection {
  /** The cluster's name. */
  readonly name: string;
  /** Its region. */
  readonly region: string;
  /** The zone of endpoints whose slice names none. */
  readonly zone: string;
  /** The API server: origin, and a path prefix (no trailing slash) when it has one. */
  readonly origin: string;
  /** Path prefix of the API, `""` for most servers. */
  readonly basePath: string;
  /** TLS material. */
  readonly tls: TlsMaterial;
  /** Bearer token or exec-supplied certificate. */
  readonly credentials: CredentialSource;
  /** For messages: the server, and the kubeconfig context when there is one. */
  readonly where: string;
}

/** What resolving a cluster reads; tests replace it. */
export interface ConnectionEnvironment extends FileAccess {
  /** The environment (`KUBECONFIG`, `KUBERNETES_SERVICE_HOST`, …). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The service account mount; default {@link SERVICE_ACCOUNT_DIR}. */
  readonly serviceAccountDir: string;
  /** Clock, ms (exec credential expiry). */
  readonly now: () => number;
  /** Exec plugin timeout, ms. */
  readonly execTimeout: number;
}

function splitServer(server: string): { origin: string; basePath: string } {
  const url = new URL(server);
  return { origin: url.origin, basePath: url.pathname.replace(/\/+$/, "") };
}

/**
 * Resolves one cluster's options. Reads the kubeconfig, CA and certificate
 * files now (a missing file is a configuration error); token files are read
 * on every request instead.
 *
 * @param at The cluster's option path for errors, e.g. `clusters[1]`.
 * @throws {@link ConfigError} naming the option (or variable) and the value.
 */
export function resolveConnection(
  cluster: ParsedKubernetesCluster,
  at: string,
  io: ConnectionEnvironment,
): ClusterConnection {
  const base = { name: cluster.name, region: cluster.region, zone: cluster.zone ?? "" };
  const read = (path: string, field: string) => {
    try {
      return io.readFile(expandHome(path, io.home));
    } catch (err) {
      throw new ConfigError(
        `${at}.${field}`,
        path,
        `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { cause: err },
      );
    }
  };

  if (cluster.inCluster) {
    const host = io.env.KUBERNETES_SERVICE_HOST;
    const port = io.env.KUBERNETES_SERVICE_PORT;
    if (!host || !port) {
      throw new ConfigError(
        host ? "KUBERNETES_SERVICE_PORT" : "KUBERNETES_SERVICE_HOST",
        host ? port : host,
        `${at}.inCluster: not running in a Kubernetes pod (the variable is not set)`,
      );
    }
    const hostPart = host.includes(":") ? `[${host}]` : host;
    const dir = io.serviceAccountDir;
    return {
      ...base,
      origin: `https://${hostPart}:${port}`,
      basePath: "",
      tls: {
        ca: read(join(dir, "ca.crt"), "inCluster"),
        cert: undefined,
        key: undefined,
        insecure: false,
        servername: undefined,
      },
      credentials: tokenFile(join(dir, "token"), cluster.name),
      where: `in-cluster https://${hostPart}:${port}`,
    };
  }

  if (cluster.server !== undefined) {
    const cert =
      cluster.cert ?? (cluster.certFile === undefined ? undefined : read(cluster.certFile, "certFile"));
    const key = cluster.key ?? (cluster.keyFile === undefined ? undefined : read(cluster.keyFile, "keyFile"));
    const credentials =
      cluster.token !== undefined
        ? staticToken(cluster.token)
        : cluster.tokenFile !== undefined
          ? tokenFile(expandHome(cluster.tokenFile, io.home), cluster.name)
          : noCredentials();
    return {
      ...base,
      ...splitServer(cluster.server),
      tls: {
        ca: cluster.ca ?? (cluster.caFile === undefined ? undefined : read(cluster.caFile, "caFile")),
        cert,
        key,
        insecure: cluster.insecureSkipTlsVerify ?? false,
        servername: cluster.tlsServerName,
      },
      credentials,
      where: cluster.server,
    };
  }

  const explicit = cluster.kubeconfig;
  const list = explicit ?? io.env.KUBECONFIG ?? "";
  const paths = list === "" ? [join(io.home, ".kube", "config")] : splitPathList(list, io.home);
  // One named file must exist; in a list (KUBECONFIG style) missing files are skipped as kubectl skips them.
  const ctx = loadKubeconfig(paths, cluster.context, paths.length === 1, at, io);
  let server: { origin: string; basePath: string };
  try {
    server = splitServer(ctx.server);
  } catch {
    throw new ConfigError(
      `${at}.context`,
      ctx.name,
      `the context's server ${JSON.stringify(ctx.server)} is not a URL`,
    );
  }
  const tls: TlsMaterial = {
    ca: ctx.ca,
    cert: ctx.cert,
    key: ctx.key,
    insecure: ctx.insecure,
    servername: ctx.servername,
  };
  const credentials = ctx.exec
    ? execCredentials(ctx.exec, {
        cluster: cluster.name,
        clusterInfo: {
          server: ctx.server,
          ca: ctx.ca,
          insecure: ctx.insecure,
          servername: ctx.servername,
          config: ctx.execClusterConfig,
        },
        timeout: io.execTimeout,
        env: io.env,
        now: io.now,
      })
    : ctx.token !== undefined
      ? staticToken(ctx.token)
      : ctx.tokenFile !== undefined
        ? tokenFile(ctx.tokenFile, cluster.name)
        : noCredentials();
  return { ...base, ...server, tls, credentials, where: `${ctx.server} (context ${ctx.name})` };
}

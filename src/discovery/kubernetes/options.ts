/**
 * The options of the Kubernetes backend, their zod schema (shared by code and
 * config files) and their defaults.
 *
 * @module
 */

import { z } from "zod";

/**
 * One cluster: where its API server is and how to authenticate, and its
 * locality. Give exactly one of: `server` (with `token`/`tokenFile`, `ca`/
 * `caFile`, `cert`/`certFile` + `key`/`keyFile`), `kubeconfig` and/or
 * `context`, or `inCluster: true`.
 */
export interface KubernetesCluster {
  /** The cluster's name; every endpoint found through it carries it. */
  name: string;
  /** The cluster's region (`""` when unknown). */
  region: string;
  /** The zone of endpoints whose EndpointSlice names none; default `""`. */
  zone?: string;
  /** The API server URL, e.g. `https://10.0.0.1:6443` (a path prefix is kept). */
  server?: string;
  /** A bearer token (its text). */
  token?: string;
  /** A file holding the bearer token, re-read on every request (rotation). */
  tokenFile?: string;
  /** The CA bundle that signs the API server's certificate (PEM text); default the system CAs. */
  ca?: string;
  /** A file holding the CA bundle. */
  caFile?: string;
  /** A client certificate (PEM text), with `key`/`keyFile`. */
  cert?: string;
  /** A file holding the client certificate. */
  certFile?: string;
  /** The client certificate's private key (PEM text). */
  key?: string;
  /** A file holding the client key. */
  keyFile?: string;
  /** Do not verify the API server's certificate (`insecure-skip-tls-verify`); for tests only. */
  insecureSkipTlsVerify?: boolean;
  /** The name to verify the server's certificate against, when it differs from the URL's host. */
  tlsServerName?: string;
  /**
   * A kubeconfig path, or several joined by `:` (merged as kubectl merges
   * `KUBECONFIG`); `~` is the home directory. Default with `context`:
   * `KUBECONFIG`, then `~/.kube/config`.
   */
  kubeconfig?: string;
  /** The kubeconfig context to use; default its `current-context`. */
  context?: string;
  /**
   * Use the pod's own cluster: `KUBERNETES_SERVICE_HOST`/`_PORT` and the
   * service account's token (re-read as it rotates) and CA.
   */
  inCluster?: boolean;
}

/** Options of `kubernetesDiscovery`. Durations are in milliseconds unless named otherwise. */
export interface KubernetesDiscoveryOptions {
  /** Instance name shown in `describe()`, errors and `endpoint.backend`; default `kubernetes`. */
  name?: string;
  /**
   * The clusters to watch. Default: the pod's own cluster (in-cluster),
   * named `local`, in region `MESHLINK_REGION`.
   */
  clusters?: KubernetesCluster[];
  /** A watch's `timeoutSeconds`: the server ends it after this long and it resumes; default 300 (s). */
  timeoutSeconds?: number;
  /** A watch that sends nothing (not even a bookmark) for this long is restarted; default 120 000. */
  idleTimeout?: number;
  /** Time for a list or get to answer, and for a watch to start; default 10 000. */
  requestTimeout?: number;
  /** Jittered exponential back-off after a failure: first delay and ceiling; default 500 and 30 000. */
  backoff?: {
    /** The first delay; default 500. */
    base?: number;
    /** The longest delay; default 30 000. */
    max?: number;
  };
  /** Kill an exec credential plugin after this long; default 30 000. */
  execTimeout?: number;
  /** Items per page of a list (`limit`); default 500. */
  pageSize?: number;
  /**
   * Honour EndpointSlice topology hints (`hints.forZones`): when every ready
   * endpoint of a service in a cluster has hints, an endpoint counts as being
   * in the zone it is hinted for (kube-proxy's rule); default true.
   */
  topologyHints?: boolean;
  /** Set each endpoint's sub-zone to its `nodeName`, so that `failoverPriority: [..., "subzone"]` prefers the caller's node; default false. */
  nodeSubzone?: boolean;
}

/** Defaults of {@link KubernetesDiscoveryOptions}. */
export const DEFAULTS = {
  name: "kubernetes",
  timeoutSeconds: 300,
  idleTimeout: 120_000,
  requestTimeout: 10_000,
  backoffBase: 500,
  backoffMax: 30_000,
  execTimeout: 30_000,
  pageSize: 500,
} as const;

const nonEmpty = (what: string) => z.string().min(1, `${what} must not be empty`);

const clusterSchema = z
  .strictObject({
    name: nonEmpty("cluster name"),
    region: z.string(),
    zone: z.string().optional(),
    server: z
      .string()
      .refine((s) => {
        try {
          const u = new URL(s);
          return u.protocol === "https:" || u.protocol === "http:";
        } catch {
          return false;
        }
      }, "expected an http(s) URL such as https://10.0.0.1:6443")
      .optional(),
    token: nonEmpty("token").optional(),
    tokenFile: nonEmpty("tokenFile").optional(),
    ca: nonEmpty("ca").optional(),
    caFile: nonEmpty("caFile").optional(),
    cert: nonEmpty("cert").optional(),
    certFile: nonEmpty("certFile").optional(),
    key: nonEmpty("key").optional(),
    keyFile: nonEmpty("keyFile").optional(),
    insecureSkipTlsVerify: z.boolean().optional(),
    tlsServerName: nonEmpty("tlsServerName").optional(),
    kubeconfig: nonEmpty("kubeconfig").optional(),
    context: nonEmpty("context").optional(),
    inCluster: z.boolean().optional(),
  })
  .superRefine((c, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: "custom", message, path: [path] });
    const direct = ["token", "tokenFile", "ca", "caFile", "cert", "certFile", "key", "keyFile"] as const;
    const sources = [
      c.server !== undefined,
      c.kubeconfig !== undefined || c.context !== undefined,
      c.inCluster === true,
    ];
    if (sources.filter(Boolean).length > 1) {
      issue(
        c.inCluster ? "inCluster" : "server",
        "give one of: server (with its credentials), kubeconfig/context, or inCluster",
      );
    } else if (!sources.some(Boolean)) {
      issue("server", "give one of: server (with its credentials), kubeconfig/context, or inCluster: true");
    }
    if (c.server === undefined) {
      for (const f of [...direct, "insecureSkipTlsVerify", "tlsServerName"] as const) {
        if (c[f] !== undefined)
          issue(f, "only with server (a kubeconfig or in-cluster config brings its own)");
      }
    }
    const pairs = [
      ["token", "tokenFile"],
      ["ca", "caFile"],
      ["cert", "certFile"],
      ["key", "keyFile"],
    ] as const;
    for (const [a, b] of pairs)
      if (c[a] !== undefined && c[b] !== undefined) issue(b, `give ${a} or ${b}, not both`);
    const hasCert = c.cert !== undefined || c.certFile !== undefined;
    const hasKey = c.key !== undefined || c.keyFile !== undefined;
    if (hasCert !== hasKey)
      issue(hasCert ? "key" : "cert", "a client certificate needs its key, and a key its certificate");
  });

/** @internal The zod schema of {@link KubernetesDiscoveryOptions}, shared with the config loader. */
export const kubernetesDiscoverySchema = z
  .strictObject({
    name: nonEmpty("name").optional(),
    clusters: z.array(clusterSchema).min(1).optional(),
    timeoutSeconds: z.number().int().min(1).max(3600).optional(),
    idleTimeout: z.number().int().min(10).max(3_600_000).optional(),
    requestTimeout: z.number().int().min(10).max(600_000).optional(),
    backoff: z
      .strictObject({
        base: z.number().int().min(1).max(600_000).optional(),
        max: z.number().int().min(1).max(3_600_000).optional(),
      })
      .optional(),
    execTimeout: z.number().int().min(10).max(600_000).optional(),
    pageSize: z.number().int().min(1).max(10_000).optional(),
    topologyHints: z.boolean().optional(),
    nodeSubzone: z.boolean().optional(),
  })
  .superRefine((o, ctx) => {
    const seen = new Set<string>();
    o.clusters?.forEach((c, i) => {
      if (seen.has(c.name)) {
        ctx.addIssue({ code: "custom", message: "cluster name listed twice", path: ["clusters", i, "name"] });
      }
      seen.add(c.name);
    });
    if ((o.backoff?.base ?? DEFAULTS.backoffBase) > (o.backoff?.max ?? DEFAULTS.backoffMax)) {
      ctx.addIssue({
        code: "custom",
        message: "backoff.base must not exceed backoff.max",
        path: ["backoff", "base"],
      });
    }
  });

/** The parsed options. */
export type ParsedKubernetesOptions = z.output<typeof kubernetesDiscoverySchema>;
/** One parsed cluster. */
export type ParsedKubernetesCluster = z.output<typeof clusterSchema>;

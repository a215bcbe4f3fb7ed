/**
 * Exec credential plugins (`client.authentication.k8s.io/v1` ExecCredential),
 * the way EKS (`aws eks get-token`), GKE (`gke-gcloud-auth-plugin`) and AKS
 * (`kubelogin`) kubeconfigs authenticate: the command runs with
 * `KUBERNETES_EXEC_INFO` describing the request, prints an ExecCredential on
 * stdout, and its token (or client certificate) is used until its
 * `expirationTimestamp`, or until the server answers 401.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { z } from "zod";
import { describeIssue } from "../../config/validate.js";
import { KubernetesError } from "../../errors.js";
import { excerpt } from "./client.js";
import type { Credential, CredentialSource } from "./credentials.js";
import type { ExecConfig } from "./kubeconfig.js";

/** What the plugin may need to know about the cluster (`provideClusterInfo`). */
export interface ExecClusterInfo {
  /** The API server URL. */
  readonly server: string;
  /** The CA bundle (PEM). */
  readonly ca: string | undefined;
  /** `insecure-skip-tls-verify`. */
  readonly insecure: boolean;
  /** `tls-server-name`. */
  readonly servername: string | undefined;
  /** The cluster's `client.authentication.k8s.io/exec` extension. */
  readonly config: unknown;
}

/** Options of {@link execCredentials}. */
export interface ExecOptions {
  /** The cluster's name, for errors. */
  readonly cluster: string;
  /** The cluster, passed to the plugin when the kubeconfig asks for it. */
  readonly clusterInfo: ExecClusterInfo;
  /** Kill the plugin after this many ms. */
  readonly timeout: number;
  /** The environment the plugin inherits. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Clock, ms. */
  readonly now: () => number;
}

const execCredentialSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.literal("ExecCredential"),
  status: z
    .looseObject({
      token: z.string().optional(),
      clientCertificateData: z.string().optional(),
      clientKeyData: z.string().optional(),
      expirationTimestamp: z.string().optional(),
    })
    .nullish(),
});

/** The most a plugin may print; real credentials are a few KiB. */
const MAX_OUTPUT = 1 << 20;

interface Cached {
  readonly credential: Credential;
  /** Epoch ms; undefined: until a 401. */
  readonly expiresAt: number | undefined;
}

/**
 * A credential source that runs an exec plugin and caches its credential
 * until it expires (or a 401 invalidates it). Concurrent requests share one run.
 */
export function execCredentials(config: ExecConfig, options: ExecOptions): CredentialSource {
  let cached: Cached | undefined;
  let running: Promise<Credential> | undefined;
  const fail = (message: string, cause?: unknown): never => {
    throw new KubernetesError(options.cluster, "credentials", `exec plugin ${config.command}: ${message}`, {
      cause,
    });
  };

  const run = async (): Promise<Credential> => {
    if (config.interactiveMode === "Always") {
      fail("interactiveMode Always needs a terminal; meshlink runs plugins non-interactively");
    }
    const spec: Record<string, unknown> = { interactive: false };
    if (config.provideClusterInfo) {
      const info = options.clusterInfo;
      spec.cluster = {
        server: info.server,
        ...(info.servername ? { "tls-server-name": info.servername } : {}),
        ...(info.insecure ? { "insecure-skip-tls-verify": true } : {}),
        ...(info.ca ? { "certificate-authority-data": Buffer.from(info.ca).toString("base64") } : {}),
        ...(info.config !== undefined ? { config: info.config } : {}),
      };
    }
    const execInfo = JSON.stringify({ apiVersion: config.apiVersion, kind: "ExecCredential", spec });
    const env: Record<string, string | undefined> = { ...options.env };
    for (const { name, value } of config.env) env[name] = value;
    env.KUBERNETES_EXEC_INFO = execInfo;

    const { stdout, stderr, code } = await new Promise<{
      stdout: string;
      stderr: string;
      code: number | null;
    }>((resolve, reject) => {
      let out = "";
      let err = "";
      let settled = false;
      let child: ReturnType<typeof spawn>;
      try {
        child = spawn(config.command, [...config.args], {
          env,
          stdio: ["ignore", "pipe", "pipe"],
          windowsHide: true,
        });
      } catch (e) {
        // A command or argument that spawn refuses outright (a NUL byte in it).
        reject(
          new KubernetesError(
            options.cluster,
            "credentials",
            `exec plugin ${config.command}: cannot run it (${(e as Error).message})`,
            { cause: e },
          ),
        );
        return;
      }
      const timer = setTimeout(() => {
        settled = true;
        child.kill("SIGKILL");
        reject(
          new KubernetesError(
            options.cluster,
            "credentials",
            `exec plugin ${config.command}: no answer within ${options.timeout} ms`,
          ),
        );
      }, options.timeout);
      child.stdout!.setEncoding("utf8");
      child.stderr!.setEncoding("utf8");
      child.stdout!.on("data", (chunk: string) => {
        out += chunk;
        if (out.length > MAX_OUTPUT && !settled) {
          settled = true;
          clearTimeout(timer);
          child.kill("SIGKILL");
          reject(
            new KubernetesError(
              options.cluster,
              "credentials",
              `exec plugin ${config.command}: output too large`,
            ),
          );
        }
      });
      child.stderr!.on("data", (chunk: string) => {
        if (err.length < 4096) err += chunk;
      });
      child.on("error", (e: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const hint = e.code === "ENOENT" && config.installHint ? `; ${excerpt(config.installHint, 300)}` : "";
        reject(
          new KubernetesError(
            options.cluster,
            "credentials",
            `exec plugin ${config.command}: cannot run it (${e.code ?? e.message})${hint}`,
            { cause: e },
          ),
        );
      });
      child.on("close", (exitCode) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ stdout: out, stderr: err, code: exitCode });
      });
    });
    if (code !== 0)
      fail(`exited with ${code ?? "a signal"}${stderr.trim() ? `: ${excerpt(stderr, 300)}` : ""}`);
    let data: unknown;
    try {
      data = JSON.parse(stdout);
    } catch (err) {
      return fail("printed no JSON ExecCredential", err);
    }
    const parsed = execCredentialSchema.safeParse(data);
    if (!parsed.success) return fail(`printed a malformed ExecCredential (${describeIssue(parsed.error)})`);
    const credential = parsed.data;
    if (credential.apiVersion !== config.apiVersion) {
      fail(`answered apiVersion ${credential.apiVersion}, but ${config.apiVersion} was asked for`);
    }
    const status = credential.status ?? {};
    const cert = status.clientCertificateData;
    const key = status.clientKeyData;
    if (status.token === undefined && (cert === undefined || key === undefined)) {
      fail("the ExecCredential has neither a token nor a client certificate and key");
    }
    if ((cert === undefined) !== (key === undefined)) {
      fail("the ExecCredential has a client certificate without its key, or a key without its certificate");
    }
    let expiresAt: number | undefined;
    if (status.expirationTimestamp !== undefined) {
      expiresAt = Date.parse(status.expirationTimestamp);
      if (Number.isNaN(expiresAt))
        fail(`invalid expirationTimestamp ${JSON.stringify(status.expirationTimestamp)}`);
    }
    const result: Credential = Object.freeze({ token: status.token, cert, key });
    cached = { credential: result, expiresAt };
    return result;
  };

  return {
    get() {
      if (cached !== undefined && (cached.expiresAt === undefined || options.now() < cached.expiresAt)) {
        return Promise.resolve(cached.credential);
      }
      cached = undefined;
      running ??= run().finally(() => {
        running = undefined;
      });
      return running;
    },
    invalidate() {
      cached = undefined;
    },
  };
}

/**
 * Kubeconfig files: parsed with `yaml`, merged as kubectl merges the files
 * of `KUBECONFIG` (for each named cluster, user and context the first file
 * that defines it wins; `current-context` comes from the first file that
 * sets one), one context selected. Relative paths inside a file are relative
 * to that file; `~` is the home directory.
 *
 * @module
 */

import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ConfigError } from "../../errors.js";

/** File access, replaceable in tests. */
export interface FileAccess {
  /** Reads a file as UTF-8; throws like `readFileSync`. */
  readFile(path: string): string;
  /** The home directory, for `~`. */
  readonly home: string;
}

/** An exec credential plugin, as a kubeconfig user's `exec` section describes it. */
export interface ExecConfig {
  /** `client.authentication.k8s.io/v1` (or `v1beta1`). */
  readonly apiVersion: string;
  /** The command; a path with a separator is relative to the kubeconfig file. */
  readonly command: string;
  /** Its arguments. */
  readonly args: readonly string[];
  /** Extra environment variables. */
  readonly env: readonly { readonly name: string; readonly value: string }[];
  /** `Never`, `IfAvailable` or `Always`. */
  readonly interactiveMode: string;
  /** Pass the cluster (server, CA, extensions) to the plugin in `KUBERNETES_EXEC_INFO`. */
  readonly provideClusterInfo: boolean;
  /** Shown when the command is missing. */
  readonly installHint: string | undefined;
}

/** What a selected context says about how to reach and authenticate to its cluster. */
export interface KubeconfigContext {
  /** The context's name. */
  readonly name: string;
  /** The API server URL. */
  readonly server: string;
  /** The CA bundle (PEM), from `certificate-authority` or `certificate-authority-data`. */
  readonly ca: string | undefined;
  /** `insecure-skip-tls-verify`. */
  readonly insecure: boolean;
  /** `tls-server-name`. */
  readonly servername: string | undefined;
  /** A bearer token given inline. */
  readonly token: string | undefined;
  /** A file holding the bearer token (re-read as it rotates). */
  readonly tokenFile: string | undefined;
  /** The client certificate (PEM). */
  readonly cert: string | undefined;
  /** The client key (PEM). */
  readonly key: string | undefined;
  /** An exec credential plugin. */
  readonly exec: ExecConfig | undefined;
  /** The cluster's `extensions[client.authentication.k8s.io/exec]`, for `provideClusterInfo`. */
  readonly execClusterConfig: unknown;
}

const clusterSchema = z.looseObject({
  server: z.string().optional(),
  "certificate-authority": z.string().optional(),
  "certificate-authority-data": z.string().optional(),
  "insecure-skip-tls-verify": z.boolean().optional(),
  "tls-server-name": z.string().optional(),
  "proxy-url": z.string().optional(),
  extensions: z.array(z.looseObject({ name: z.string(), extension: z.unknown() })).nullish(),
});

const execSchema = z.looseObject({
  apiVersion: z.string().optional(),
  command: z.string().min(1),
  args: z.array(z.string()).nullish(),
  env: z.array(z.looseObject({ name: z.string().min(1), value: z.string() })).nullish(),
  interactiveMode: z.string().optional(),
  provideClusterInfo: z.boolean().optional(),
  installHint: z.string().optional(),
});

const userSchema = z.looseObject({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  "client-certificate": z.string().optional(),
  "client-certificate-data": z.string().optional(),
  "client-key": z.string().optional(),
  "client-key-data": z.string().optional(),
  username: z.string().optional(),
  "auth-provider": z.unknown().optional(),
  exec: execSchema.nullish(),
});

const contextSchema = z.looseObject({
  cluster: z.string().min(1),
  user: z.string().optional(),
  namespace: z.string().optional(),
});

const fileSchema = z.looseObject({
  "current-context": z.string().optional(),
  clusters: z.array(z.looseObject({ name: z.string().min(1), cluster: clusterSchema.nullish() })).nullish(),
  users: z.array(z.looseObject({ name: z.string().min(1), user: userSchema.nullish() })).nullish(),
  contexts: z.array(z.looseObject({ name: z.string().min(1), context: contextSchema.nullish() })).nullish(),
});

type ParsedCluster = z.output<typeof clusterSchema>;
type ParsedUser = z.output<typeof userSchema>;
type ParsedContext = z.output<typeof contextSchema>;

/** A merged entry and the directory of the file that defined it. */
interface From<T> {
  readonly value: T;
  readonly dir: string;
}

/** Expands a leading `~` to the home directory. */
export function expandHome(path: string, home: string): string {
  if (path === "~") return home;
  if (path.startsWith("~/")) return join(home, path.slice(2));
  return path;
}

/** Splits a `KUBECONFIG`-style list (`a:b:c`) and expands `~` in each entry. */
export function splitPathList(list: string, home: string): string[] {
  return list
    .split(":")
    .filter((p) => p !== "")
    .map((p) => expandHome(p, home));
}

const decode = (b64: string) => Buffer.from(b64, "base64").toString("utf8");

/**
 * Loads the files, merges them, and selects `context` (default: the
 * current context).
 *
 * @param required When true, a missing file is an error; else missing files
 *   are skipped as kubectl skips them in `KUBECONFIG`, and only "none found" is an error.
 * @param source The option path for errors, e.g. `clusters[1]`.
 * @throws {@link ConfigError} naming `source` and the path or context (never file contents).
 */
export function loadKubeconfig(
  paths: readonly string[],
  context: string | undefined,
  required: boolean,
  source: string,
  io: FileAccess,
): KubeconfigContext {
  const clusters = new Map<string, From<ParsedCluster>>();
  const users = new Map<string, From<ParsedUser>>();
  const contexts = new Map<string, From<ParsedContext>>();
  let current: string | undefined;
  let found = 0;
  for (const raw of paths) {
    const path = resolve(expandHome(raw, io.home));
    let text: string;
    try {
      text = io.readFile(path);
    } catch (err) {
      if (!required && (err as NodeJS.ErrnoException)?.code === "ENOENT") continue;
      throw new ConfigError(
        `${source}.kubeconfig`,
        raw,
        `cannot read kubeconfig: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    found++;
    let data: unknown;
    try {
      data = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(
        `${source}.kubeconfig`,
        raw,
        `kubeconfig is not valid YAML: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    const parsed = fileSchema.safeParse(data);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new ConfigError(
        `${source}.kubeconfig`,
        raw,
        `malformed kubeconfig at ${issue.path.join(".")}: ${issue.message}`,
        { cause: parsed.error },
      );
    }
    const file = parsed.data;
    const dir = dirname(path);
    for (const c of file.clusters ?? [])
      if (!clusters.has(c.name) && c.cluster) clusters.set(c.name, { value: c.cluster, dir });
    for (const u of file.users ?? []) if (!users.has(u.name)) users.set(u.name, { value: u.user ?? {}, dir });
    for (const c of file.contexts ?? [])
      if (!contexts.has(c.name) && c.context) contexts.set(c.name, { value: c.context, dir });
    if (current === undefined && file["current-context"]) current = file["current-context"];
  }
  if (found === 0) {
    throw new ConfigError(`${source}.kubeconfig`, paths.join(":"), "no kubeconfig file found");
  }
  const name = context ?? current;
  if (name === undefined) {
    throw new ConfigError(`${source}.context`, context, "the kubeconfig sets no current-context: name one");
  }
  const ctx = contexts.get(name);
  if (ctx === undefined) {
    throw new ConfigError(
      `${source}.context`,
      name,
      `no such context in the kubeconfig (contexts: ${[...contexts.keys()].join(", ") || "none"})`,
    );
  }
  const cluster = clusters.get(ctx.value.cluster);
  if (cluster === undefined) {
    throw new ConfigError(
      `${source}.context`,
      name,
      `context names cluster ${JSON.stringify(ctx.value.cluster)}, which the kubeconfig does not define`,
    );
  }
  const userName = ctx.value.user;
  const user = userName === undefined ? { value: {} as ParsedUser, dir: ctx.dir } : users.get(userName);
  if (user === undefined) {
    throw new ConfigError(
      `${source}.context`,
      name,
      `context names user ${JSON.stringify(userName)}, which the kubeconfig does not define`,
    );
  }
  return selectContext(name, cluster, user, source, io);
}

function selectContext(
  name: string,
  cluster: From<ParsedCluster>,
  user: From<ParsedUser>,
  source: string,
  io: FileAccess,
): KubeconfigContext {
  const where = `${source}.context`;
  const c = cluster.value;
  const u = user.value;
  const fail = (problem: string): never => {
    throw new ConfigError(where, name, problem);
  };
  if (!c.server) fail("the context's cluster has no server");
  if (c["proxy-url"]) fail("proxy-url is not supported: reach the API server directly");
  if (u["auth-provider"] !== undefined)
    fail("auth-provider plugins are not supported (kubectl removed them in 1.26): use an exec plugin");
  if (u.username !== undefined) fail("basic authentication (username/password) is not supported");
  const path = (p: string, dir: string) => {
    const expanded = expandHome(p, io.home);
    return isAbsolute(expanded) ? expanded : join(dir, expanded);
  };
  const read = (p: string, dir: string, field: string) => {
    try {
      return io.readFile(path(p, dir));
    } catch (err) {
      return fail(
        `cannot read ${field} ${JSON.stringify(p)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  };
  const ca = c["certificate-authority-data"]
    ? decode(c["certificate-authority-data"])
    : c["certificate-authority"]
      ? read(c["certificate-authority"], cluster.dir, "certificate-authority")
      : undefined;
  const cert = u["client-certificate-data"]
    ? decode(u["client-certificate-data"])
    : u["client-certificate"]
      ? read(u["client-certificate"], user.dir, "client-certificate")
      : undefined;
  const key = u["client-key-data"]
    ? decode(u["client-key-data"])
    : u["client-key"]
      ? read(u["client-key"], user.dir, "client-key")
      : undefined;
  if ((cert === undefined) !== (key === undefined))
    fail("a client certificate needs its key, and a key its certificate");
  let exec: ExecConfig | undefined;
  if (u.exec) {
    const e = u.exec;
    const apiVersion = e.apiVersion ?? "";
    if (
      apiVersion !== "client.authentication.k8s.io/v1" &&
      apiVersion !== "client.authentication.k8s.io/v1beta1"
    ) {
      fail(
        `exec apiVersion ${JSON.stringify(apiVersion)} is not supported: use client.authentication.k8s.io/v1`,
      );
    }
    // kubectl: a command with a path separator is relative to the kubeconfig; a bare name is looked up in PATH.
    const command = e.command.includes("/") ? path(e.command, user.dir) : e.command;
    exec = {
      apiVersion,
      command,
      args: e.args ?? [],
      env: (e.env ?? []).map(({ name, value }) => ({ name, value })),
      interactiveMode: e.interactiveMode ?? "IfAvailable",
      provideClusterInfo: e.provideClusterInfo ?? false,
      installHint: e.installHint,
    };
  }
  return {
    name,
    server: c.server!,
    ca,
    insecure: c["insecure-skip-tls-verify"] ?? false,
    servername: c["tls-server-name"],
    token: u.token,
    tokenFile: u.tokenFile === undefined ? undefined : path(u.tokenFile, user.dir),
    cert,
    key,
    exec,
    execClusterConfig: c.extensions?.find((x) => x.name === "client.authentication.k8s.io/exec")?.extension,
  };
}

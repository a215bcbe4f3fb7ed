/**
 * The file-watching certificate source: reloads the material when
 * cert-manager, SPIRE or a Kubernetes secret volume rotates it, and pushes
 * each accepted version to subscribers.
 *
 * It watches the directories that hold the files, not the files: a
 * Kubernetes secret volume rotates by writing a new timestamped directory
 * and renaming a `..data` symlink over the old one, which a watch on the
 * file itself (an inode that is then deleted) would never report. A
 * symlink's target directory is watched too. File events are debounced,
 * because writers touch the certificate, the key and the bundle one after
 * the other. Polling at a slower interval catches what events miss
 * (network file systems, a watch that failed); it compares the files'
 * content, which is a few kilobytes, so that no rotation hides behind an
 * unchanged size or a coarse modification time.
 *
 * A new set is checked whole (see material.ts) before it replaces the
 * current one: a pair caught between two writes is refused, the previous
 * material stays in use, and the error is kept for `describe()` until a
 * later read succeeds.
 *
 * @module
 */

import { type FSWatcher, realpathSync, watch } from "node:fs";
import { dirname } from "node:path";
import { TlsMaterialError } from "../errors.js";
import type { Subscription } from "../subscription.js";
import { buildMaterial, type MaterialSpecs, type MaterialTexts, readTexts, sameTexts } from "./material.js";
import type { CertificateSource, TlsMaterial } from "./tls.js";

/** How rotated files are picked up. */
export interface ReloadOptions {
  /** Quiet time after a file event before reloading, ms; default 200. */
  debounce?: number | undefined;
  /** Polling interval, ms, for changes that file events miss; default 10 000. */
  interval?: number | undefined;
}

/** Options of {@link createCertificateSource}. */
export interface CertificateSourceOptions {
  /** Where the material comes from. */
  readonly specs: MaterialSpecs;
  /** The material already read and checked (version ≥ 1), or undefined when there is none. */
  readonly initial: TlsMaterial | undefined;
  /** Reload settings, or false to never reload. */
  readonly reload: Required<ReloadOptions> | false;
  /** Watch directories for file events; default true. Polling runs either way. */
  readonly watch?: boolean | undefined;
}

/** Material of version 0: nothing configured. */
export const EMPTY_MATERIAL: TlsMaterial = Object.freeze({
  version: 0,
  loadedAt: 0,
  ca: undefined,
  cert: undefined,
  key: undefined,
  clusters: new Map<string, string>(),
  contexts: new Map(),
  certificates: Object.freeze([]),
});

/**
 * Calls every listener with `value`; one that throws is reported as a
 * process warning and does not stop the others or reach a timer.
 *
 * @internal
 */
export function notify<T>(listeners: ReadonlySet<(value: T) => void>, value: T, what: string): void {
  for (const listener of [...listeners]) {
    try {
      listener(value);
    } catch (err) {
      process.emitWarning(`meshlink: a ${what} listener threw: ${(err as Error)?.message ?? String(err)}`);
    }
  }
}

function subscribe<T>(set: Set<T>, listener: T): Subscription {
  set.add(listener);
  return { dispose: () => void set.delete(listener) };
}

function textsOf(m: TlsMaterial): MaterialTexts {
  return { ca: m.ca, cert: m.cert, key: m.key, clusters: m.clusters };
}

class FileCertificateSource implements CertificateSource {
  readonly files: readonly string[];
  readonly #specs: MaterialSpecs;
  readonly #reload: Required<ReloadOptions> | false;
  readonly #useWatch: boolean;
  readonly #updates = new Set<(m: TlsMaterial) => void>();
  readonly #errors = new Set<(e: Error) => void>();
  readonly #watchers = new Map<string, FSWatcher>();
  #current: TlsMaterial;
  #attempted: MaterialTexts | undefined;
  #lastError: { error: Error; at: number } | undefined;
  #stale = false;
  #debounce: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #running = false;
  #again = false;
  #closed = false;

  constructor(options: CertificateSourceOptions) {
    this.#specs = options.specs;
    this.#reload = options.reload;
    this.#useWatch = options.watch !== false;
    this.#current = options.initial ?? EMPTY_MATERIAL;
    this.#attempted = options.initial && textsOf(options.initial);
    const s = options.specs;
    this.files = Object.freeze(
      [s.ca, s.cert, s.key, ...s.clusters.values()]
        .map((x) => x?.path)
        .filter((p, i, all): p is string => p !== undefined && all.indexOf(p) === i),
    );
    if (this.#reload !== false && this.files.length > 0 && options.initial !== undefined) {
      this.#arm();
      this.#poll = setInterval(() => {
        this.#arm();
        void this.#check();
      }, this.#reload.interval);
      this.#poll.unref();
    }
  }

  get lastError() {
    return this.#lastError;
  }

  get stale() {
    return this.#stale;
  }

  current(): TlsMaterial {
    return this.#current;
  }

  onUpdate(listener: (material: TlsMaterial) => void): Subscription {
    return subscribe(this.#updates, listener);
  }

  onError(listener: (error: Error) => void): Subscription {
    return subscribe(this.#errors, listener);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    this.#updates.clear();
    this.#errors.clear();
  }

  /** Watches every directory that holds a file or a symlink's target; drops watches no longer needed. */
  #arm(): void {
    if (!this.#useWatch || this.#closed) return;
    const dirs = new Set<string>();
    for (const f of this.files) {
      dirs.add(dirname(f));
      try {
        dirs.add(dirname(realpathSync(f)));
      } catch {
        // Missing right now (mid-swap, or deleted): the directory watch and polling will see it come back.
      }
    }
    for (const [dir, w] of this.#watchers) {
      if (!dirs.has(dir)) {
        w.close();
        this.#watchers.delete(dir);
      }
    }
    for (const dir of dirs) {
      if (this.#watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.#schedule());
        w.on("error", () => {
          w.close();
          if (this.#watchers.get(dir) === w) this.#watchers.delete(dir);
        });
        this.#watchers.set(dir, w);
      } catch {
        // Cannot watch (no such directory, no inotify slots): polling covers it.
      }
    }
  }

  #schedule(): void {
    if (this.#closed || this.#reload === false) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.#check(), this.#reload.debounce);
    this.#debounce.unref();
  }

  /** Reads the files; when they changed, checks and installs the new material. Never throws. */
  async #check(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      await this.#reloadOnce();
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.#running = false;
    }
    if (this.#again && !this.#closed) {
      this.#again = false;
      await this.#check();
    }
  }

  async #reloadOnce(): Promise<void> {
    let texts: MaterialTexts;
    try {
      texts = await readTexts(this.#specs);
    } catch (err) {
      if (this.#closed) return;
      this.#attempted = undefined;
      return this.#fail(err as Error);
    }
    if (this.#closed) return;
    if (this.#attempted !== undefined && sameTexts(texts, this.#attempted)) return;
    this.#attempted = texts;
    if (sameTexts(texts, textsOf(this.#current))) {
      this.#stale = false;
      return;
    }
    let next: TlsMaterial;
    try {
      next = buildMaterial(this.#specs, texts, this.#current.version + 1);
    } catch (err) {
      return this.#fail(err as Error);
    }
    this.#current = next;
    this.#stale = false;
    this.#arm();
    notify(this.#updates, next, "certificate update");
  }

  #fail(error: Error): void {
    const err =
      error instanceof TlsMaterialError
        ? error
        : new TlsMaterialError("tls", error.message, { cause: error });
    // The same failure seen again by the next poll is not news.
    if (this.#stale && this.#lastError?.error.message === err.message) return;
    this.#lastError = { error: err, at: Date.now() };
    this.#stale = true;
    notify(this.#errors, err as Error, "certificate error");
  }
}

/**
 * A certificate source over files and inline PEM. Inline material never
 * changes; files are watched and polled (unless `reload` is false) and each
 * accepted version is pushed to `onUpdate` listeners.
 *
 * @example
 * ```ts
 * const source = createCertificateSource({ specs, initial: resolved.material, reload: resolved.reload });
 * source.onUpdate((m) => console.log("rotated to version", m.version));
 * ```
 */
export function createCertificateSource(options: CertificateSourceOptions): CertificateSource {
  return new FileCertificateSource(options);
}

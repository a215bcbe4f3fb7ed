import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { ErrorCodes } from "../../src/errors.js";
import { resolveTlsOptions, type TlsOptions } from "../../src/tls/options.js";
import { createCertificateSource } from "../../src/tls/source.js";
import type { CertificateSource, TlsMaterial } from "../../src/tls/tls.js";
import {
  createSecretVolume,
  createTestCa,
  type Pem,
  type SecretVolume,
  type TestCa,
} from "../helpers/certs.js";

let ca: TestCa;
let first: Pem;
let second: Pem;
let third: Pem;
let dir: string;
const sources: CertificateSource[] = [];
const volumes: SecretVolume[] = [];

beforeAll(() => {
  ca = createTestCa("source CA");
  first = ca.issue({ cn: "client-1" });
  second = ca.issue({ cn: "client-2" });
  third = ca.issue({ cn: "client-3" });
});

afterAll(() => ca.dispose());

afterEach(() => {
  for (const s of sources.splice(0)) s.close();
  for (const v of volumes.splice(0)) v.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
  vi.useRealTimers();
});

function files(pem: Pem) {
  dir = mkdtempSync(join(tmpdir(), "meshlink-source-"));
  const p = { ca: join(dir, "ca.crt"), cert: join(dir, "tls.crt"), key: join(dir, "tls.key") };
  writeFileSync(p.ca, ca.cert);
  writeFileSync(p.cert, pem.cert);
  writeFileSync(p.key, pem.key);
  return p;
}

function source(p: { ca: string; cert: string; key: string }, options: TlsOptions = {}, watch = true) {
  const resolved = resolveTlsOptions(
    { mode: "strict", ...p, reload: { debounce: 50, interval: 60_000 }, ...options },
    {},
    undefined,
    "config",
  );
  const s = createCertificateSource({
    specs: resolved.specs,
    initial: resolved.material,
    reload: resolved.reload,
    watch,
  });
  sources.push(s);
  return s;
}

const nextUpdate = (s: CertificateSource) =>
  new Promise<TlsMaterial>((resolve) => {
    const sub = s.onUpdate((m) => {
      sub.dispose();
      resolve(m);
    });
  });
const nextError = (s: CertificateSource) =>
  new Promise<Error>((resolve) => {
    const sub = s.onError((e) => {
      sub.dispose();
      resolve(e);
    });
  });
const leafSubject = (m: TlsMaterial) => m.certificates.find((c) => c.role === "cert")?.subject;

describe("createCertificateSource", () => {
  it("pushes a new version when the certificate and key are rewritten in place", async () => {
    const p = files(first);
    const s = source(p);
    expect(s.files).toEqual([p.ca, p.cert, p.key]);
    const errors: Error[] = [];
    s.onError((e) => errors.push(e));
    const update = nextUpdate(s);
    writeFileSync(p.cert, second.cert);
    writeFileSync(p.key, second.key);
    const m = await update;
    expect(m.version).toBe(2);
    expect(leafSubject(m)).toBe("CN=client-2");
    expect(s.current()).toBe(m);
    // Both writes fell inside one debounce window: no half-rotated pair was ever tried.
    expect(errors).toEqual([]);
  });

  it("refuses a pair caught mid-write and keeps the previous material until the pair is whole", async () => {
    const p = files(first);
    const s = source(p);
    const refused = nextError(s);
    writeFileSync(p.cert, second.cert);
    const err = await refused;
    expect(err).toMatchObject({ code: ErrorCodes.TLS_MATERIAL });
    expect(err.message).toContain("does not match");
    expect(s.current().version).toBe(1);
    expect(leafSubject(s.current())).toBe("CN=client-1");
    expect(s.stale).toBe(true);
    expect(s.lastError?.error).toBe(err);

    const update = nextUpdate(s);
    writeFileSync(p.key, second.key);
    const m = await update;
    expect(leafSubject(m)).toBe("CN=client-2");
    expect(s.stale).toBe(false);
    expect(s.lastError?.error).toBe(err); // kept for describe(), with its time
  });

  it("refuses a half-written certificate", async () => {
    const p = files(first);
    const s = source(p);
    const refused = nextError(s);
    writeFileSync(p.cert, second.cert.slice(0, 200));
    expect((await refused).message).toContain("truncated");
    expect(s.current().version).toBe(1);
  });

  it("follows a Kubernetes secret volume's ..data symlink swap", async () => {
    const volume = createSecretVolume({ "ca.crt": ca.cert, "tls.crt": first.cert, "tls.key": first.key });
    volumes.push(volume);
    const s = source({
      ca: volume.path("ca.crt"),
      cert: volume.path("tls.crt"),
      key: volume.path("tls.key"),
    });
    const update = nextUpdate(s);
    volume.swap({ "ca.crt": ca.cert, "tls.crt": second.cert, "tls.key": second.key });
    expect(leafSubject(await update)).toBe("CN=client-2");
    // And again: the watch survives the old timestamped directory being deleted.
    const again = nextUpdate(s);
    volume.swap({ "ca.crt": ca.cert, "tls.crt": third.cert, "tls.key": third.key });
    const m = await again;
    expect(leafSubject(m)).toBe("CN=client-3");
    expect(m.version).toBe(3);
  });

  it("picks up a rotation by polling when file events are not available", async () => {
    const p = files(first);
    const s = source(p, { reload: { debounce: 0, interval: 100 } }, false);
    const update = nextUpdate(s);
    writeFileSync(p.cert, second.cert);
    writeFileSync(p.key, second.key);
    expect(leafSubject(await update)).toBe("CN=client-2");
  });

  it("makes no new version when a file comes back with the same content", async () => {
    const p = files(first);
    const s = source(p, { reload: { debounce: 20, interval: 100 } });
    const updates: TlsMaterial[] = [];
    s.onUpdate((m) => updates.push(m));
    const refused = nextError(s);
    rmSync(p.ca);
    await refused;
    expect(s.stale).toBe(true);
    writeFileSync(p.ca, ca.cert);
    await vi.waitFor(() => expect(s.stale).toBe(false));
    expect(updates).toEqual([]);
    expect(s.current().version).toBe(1);
    const update = nextUpdate(s);
    writeFileSync(p.cert, second.cert);
    writeFileSync(p.key, second.key);
    expect((await update).version).toBe(2);
  });

  it("keeps the material and reports once when a file disappears, then recovers", async () => {
    const p = files(first);
    const s = source(p, { reload: { debounce: 20, interval: 100 } });
    const errors: Error[] = [];
    s.onError((e) => errors.push(e));
    const refused = nextError(s);
    rmSync(p.key);
    expect((await refused).message).toContain("ENOENT");
    const update = nextUpdate(s);
    writeFileSync(p.key, second.key);
    writeFileSync(p.cert, second.cert);
    expect(leafSubject(await update)).toBe("CN=client-2");
    // Polls in between saw the same missing file: one report, not one per poll.
    expect(errors.filter((e) => e.message.includes("ENOENT"))).toHaveLength(1);
  });

  it("keeps calling the other listeners when one throws", async () => {
    const p = files(first);
    const s = source(p);
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => undefined);
    s.onUpdate(() => {
      throw new Error("listener bug");
    });
    const update = nextUpdate(s);
    writeFileSync(p.cert, second.cert);
    writeFileSync(p.key, second.key);
    expect((await update).version).toBe(2);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining("listener bug"));
    warn.mockRestore();
  });

  it("never reloads inline material and stops its timers on close", () => {
    vi.useFakeTimers();
    const inline = source({ ca: ca.cert, cert: first.cert, key: first.key });
    expect(inline.files).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    const p = files(first);
    const watched = source(p);
    expect(vi.getTimerCount()).toBe(1);
    watched.close();
    watched.close();
    expect(vi.getTimerCount()).toBe(0);
  });
});

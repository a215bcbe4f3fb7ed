import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_CHANNEL, type InternalErrorMessage } from "../../src/diagnostics.js";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { staticDiscovery } from "../../src/discovery/static.js";
import { DiscoveryError, ErrorCodes } from "../../src/errors.js";
import { createMesh, type Mesh } from "../../src/mesh.js";
import { EventChannels } from "../../src/telemetry/events.js";
import { scriptedBackend } from "../helpers/backend.js";
import { startServer, type TestServer } from "../helpers/servers.js";

// Events through diagnostics_channel subscribers and the mesh's onX subscriptions, from real failures.
let zone: TestServer;
let west: TestServer;

beforeAll(async () => {
  zone = await startServer("zone", { address: "127.0.100.71" });
  west = await startServer("west", { address: "127.0.100.72" });
});

afterAll(async () => {
  if (zone.listening) await zone.stop();
  await west.stop();
});

/** Collects what a diagnostics channel publishes until `stop()`. */
function channelLog(name: string): { messages: unknown[]; stop(): void } {
  const messages: unknown[] = [];
  const fn = (m: unknown) => messages.push(m);
  subscribe(name, fn);
  return { messages, stop: () => unsubscribe(name, fn) };
}

/** The next event of an onX subscription. */
function next<T>(on: (listener: (event: T) => void) => { dispose(): void }): Promise<T> {
  return new Promise((resolve) => {
    const sub = on((event) => {
      sub.dispose();
      resolve(event);
    });
  });
}

describe("endpoint and failover events", () => {
  let mesh: Mesh;
  beforeAll(() => {
    mesh = createMesh({
      env: {},
      region: "us-east-1",
      zone: "us-east-1a",
      failover: ["us-west-2"],
      outlierDetection: { consecutiveFailures: 1, baseEjectionTime: 300, ejectionJitter: 0 },
      discovery: [
        staticDiscovery({
          services: {
            "api.default": [
              {
                address: zone.address,
                port: zone.port,
                cluster: "east",
                region: "us-east-1",
                zone: "us-east-1a",
              },
              {
                address: west.address,
                port: west.port,
                cluster: "west",
                region: "us-west-2",
                zone: "us-west-2a",
              },
            ],
          },
        }),
      ],
    });
  });
  afterAll(() => mesh.close());

  it("reports an ejection and the failover it starts, then the failover's end and the endpoint's restoration", async () => {
    const ejectedLog = channelLog(EventChannels.ENDPOINT_EJECTED);
    const startedLog = channelLog(EventChannels.FAILOVER_STARTED);
    const endedLog = channelLog(EventChannels.FAILOVER_ENDED);
    const restoredLog = channelLog(EventChannels.ENDPOINT_RESTORED);
    try {
      const ejected = next(mesh.onEndpointEjected);
      const started = next(mesh.onFailoverStarted);
      await zone.stop();
      const before = Date.now();
      await (await mesh.fetch("http://api.default.svc.cluster.local/down")).arrayBuffer();
      const e = await ejected;
      expect(e).toMatchObject({
        endpoint: `east/127.0.100.71:${zone.port}`,
        cluster: "east",
        region: "us-east-1",
        zone: "us-east-1a",
        services: ["api.default:80"],
        reason: "ECONNREFUSED",
        ejections: 1,
      });
      const until = Date.parse(e.until);
      expect(until).toBeGreaterThanOrEqual(before + 250);
      expect(until).toBeLessThan(before + 5_000);
      expect(await started).toEqual({
        service: "api.default:80",
        from: "zone",
        to: ["failover:us-west-2"],
        loads: { zone: 0, "failover:us-west-2": 1 },
        reason: "ejected",
      });
      expect(ejectedLog.messages).toEqual([e]);
      expect(startedLog.messages).toHaveLength(1);

      // The ejection time passes: the router takes the endpoint back, the failover ends.
      const ending = next(mesh.onFailoverEnded);
      await zone.start();
      const ended = await ending;
      expect(ended).toMatchObject({ service: "api.default:80", tier: "zone" });
      expect(ended.durationMs).toBeGreaterThan(0);
      expect(endedLog.messages).toEqual([ended]);
      // Its next call is the probe; its success restores it.
      const restored = next(mesh.onEndpointRestored);
      const res = await mesh.fetch("http://api.default.svc.cluster.local/probe");
      expect(await res.text()).toContain('"server":"zone"');
      expect(await restored).toEqual({
        endpoint: `east/127.0.100.71:${zone.port}`,
        cluster: "east",
        services: ["api.default:80"],
        ejections: 1,
      });
      expect(restoredLog.messages).toHaveLength(1);
    } finally {
      for (const log of [ejectedLog, startedLog, endedLog, restoredLog]) log.stop();
    }
  });
});

describe("discovery events", () => {
  it("reports a backend that starts failing, keeping its endpoints, and its recovery", async () => {
    const backend = scriptedBackend("scripted");
    const mesh = createMesh({ env: {}, discovery: [backend] });
    const errorLog = channelLog(EventChannels.DISCOVERY_ERROR);
    const recoveredLog = channelLog(EventChannels.DISCOVERY_RECOVERED);
    try {
      const resolving = mesh.resolve("svc.default");
      backend.push({
        kind: "bound",
        endpoints: [createEndpoint({ address: "127.0.100.73", port: 80, cluster: "c", backend: "scripted" })],
      });
      await resolving;
      const failed = next(mesh.onDiscoveryError);
      backend.push({ kind: "failed", error: new DiscoveryError("scripted", "svc.default", "server down") });
      const error = await failed;
      expect(error).toMatchObject({ service: "svc.default", backend: "scripted", stale: true, endpoints: 1 });
      expect(error.error.code).toBe(ErrorCodes.DISCOVERY);
      // A second failure while failing is the same outage: no new event.
      backend.push({ kind: "failed", error: new DiscoveryError("scripted", "svc.default", "still down") });
      const recovered = next(mesh.onDiscoveryRecovered);
      backend.push({
        kind: "bound",
        endpoints: [createEndpoint({ address: "127.0.100.73", port: 80, cluster: "c", backend: "scripted" })],
      });
      const r = await recovered;
      expect(r).toMatchObject({ service: "svc.default", backend: "scripted" });
      expect(r.downMs).toBeGreaterThanOrEqual(0);
      expect(errorLog.messages).toHaveLength(1);
      expect(recoveredLog.messages).toEqual([r]);
    } finally {
      errorLog.stop();
      recoveredLog.stop();
      await mesh.close();
    }
  });

  it("contains a listener that throws: the others still run and the error goes to meshlink:error", async () => {
    const backend = scriptedBackend("scripted");
    const mesh = createMesh({ env: {}, discovery: [backend] });
    const errors = channelLog(ERROR_CHANNEL);
    const disposed: unknown[] = [];
    try {
      mesh.onDiscoveryError(() => {
        throw new Error("listener bug");
      });
      mesh.onDiscoveryError((e) => disposed.push(e)).dispose();
      const heard = next(mesh.onDiscoveryError);
      const resolving = mesh.resolve("svc.default").catch((err: unknown) => err);
      backend.push({ kind: "failed", error: new DiscoveryError("scripted", "svc.default", "no answer") });
      expect((await heard).backend).toBe("scripted");
      expect(await resolving).toBeInstanceOf(DiscoveryError);
      expect(errors.messages).toHaveLength(1);
      expect((errors.messages[0] as InternalErrorMessage).where).toBe("meshlink:discovery:error listener");
      expect(disposed).toEqual([]);
    } finally {
      errors.stop();
      await mesh.close();
    }
  });
});

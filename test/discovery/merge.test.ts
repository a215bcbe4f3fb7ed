import { describe, expect, it } from "vitest";
import { createEndpoint } from "../../src/discovery/endpoint.js";
import { ClusterAnnouncer, Wakeup } from "../../src/discovery/merge.js";
import { parseServiceName } from "../../src/discovery/names.js";

const api = parseServiceName("api.default");
const ep = (address: string) => createEndpoint({ address, port: 80, cluster: "east", backend: "t" });
const round = (addresses: string[], failure = "", pending = false) => {
  const endpoints = addresses.map(ep);
  return { endpoints, key: addresses.join(","), failure, cause: undefined, clusters: [], pending };
};
const kinds = (updates: { kind: string }[]) => updates.map((u) => u.kind);

describe("ClusterAnnouncer", () => {
  it("says nothing for a first answer that is empty because a cluster failed or has not answered", () => {
    const a = new ClusterAnnouncer<string>("t", api);
    expect(kinds(a.updates(round([], "", true)))).toEqual([]);
    expect(kinds(a.updates(round([], "east: SERVFAIL")))).toEqual(["failed"]);
    expect(a.announced).toBe(false);
    expect(kinds(a.updates(round([])))).toEqual(["not-found"]);
  });

  it("sends a set when it changes or when the failure clears, a failure when it starts or changes", () => {
    const a = new ClusterAnnouncer<string>("t", api);
    expect(kinds(a.updates(round(["10.0.0.1"])))).toEqual(["bound"]);
    expect(kinds(a.updates(round(["10.0.0.1"])))).toEqual([]);
    expect(kinds(a.updates(round(["10.0.0.1"], "west: timeout")))).toEqual(["failed"]);
    expect(kinds(a.updates(round(["10.0.0.1"], "west: timeout")))).toEqual([]);
    expect(kinds(a.updates(round(["10.0.0.2"], "west: timeout")))).toEqual(["bound", "failed"]);
    expect(kinds(a.updates(round(["10.0.0.2"])))).toEqual(["bound"]);
  });

  it("names the backend and the service in a failure, with the cause", () => {
    const a = new ClusterAnnouncer<string>("dns", api);
    const cause = new Error("SERVFAIL");
    const [failed] = a.updates({ ...round([], "east: SERVFAIL"), cause });
    expect(failed).toMatchObject({
      kind: "failed",
      error: { code: "MESHLINK_ERR_DISCOVERY", backend: "dns", cause },
    });
  });
});

describe("Wakeup", () => {
  it("returns at once when notified since it last returned, else waits for a notify", async () => {
    const w = new Wakeup();
    await w.changed(); // dirty from the start
    let woke = false;
    const waiting = w.changed().then(() => (woke = true));
    await Promise.resolve();
    expect(woke).toBe(false);
    w.notify();
    await waiting;
    expect(woke).toBe(true);
  });
});

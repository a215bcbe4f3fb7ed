import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  choosePort,
  type MappingContext,
  mapEndpoints,
  type ServiceKnowledge,
} from "../../src/discovery/kubernetes/mapping.js";
import {
  type EndpointSlice,
  endpointSliceSchema,
  listSchema,
  type Service,
  serviceSchema,
  statusSchema,
  watchEventSchema,
} from "../../src/discovery/kubernetes/schemas.js";
import { endpointSliceObject, type SliceSpec, serviceObject } from "../fixtures/kubernetes/objects.js";

const fixtures = join(import.meta.dirname, "..", "fixtures", "kubernetes");
const readJson = (name: string): unknown => JSON.parse(readFileSync(join(fixtures, name), "utf8"));

const ctx: MappingContext = {
  cluster: "east",
  region: "us-east-1",
  zone: "",
  backend: "kubernetes",
  topologyHints: true,
  nodeSubzone: false,
};

const slice = (spec: Partial<SliceSpec> & Pick<SliceSpec, "endpoints">): EndpointSlice =>
  endpointSliceSchema.parse(
    endpointSliceObject(
      "default",
      { name: "web-1", service: "web", ports: [{ name: "http", port: 8080 }], ...spec },
      "1",
    ),
  );
const known = (ports: { name?: string; port: number; targetPort: number | string }[]): ServiceKnowledge => ({
  state: "known",
  service: serviceSchema.parse(serviceObject("default", { name: "web", ports }, "1")) as Service,
});
const UNKNOWN: ServiceKnowledge = { state: "unknown" };
const ABSENT: ServiceKnowledge = { state: "absent" };
const port = (choice: ReturnType<typeof choosePort>) => ("port" in choice ? choice.port : choice);

describe("EndpointSlice payloads", () => {
  it("parse as the API returns them: list items without kind, null endpoints and ports", () => {
    const list = listSchema.parse(readJson("endpointslice-list.json"));
    expect(list.kind).toBe("EndpointSliceList");
    const items = list.items!.map((i) => endpointSliceSchema.parse(i));
    expect(items[0]!.kind).toBeUndefined();
    expect(items[0]!.endpoints![0]!.hints!.forZones![0]!.name).toBe("us-east-1a");
    expect(items[1]!.endpoints).toBeNull();
    expect(items[1]!.ports).toBeNull();
    expect(serviceSchema.parse(readJson("service.json")).spec!.ports![0]!.targetPort).toBe("http");
  });

  it("parse every line of a watch stream, bookmark and 410 Status included", () => {
    const lines = readFileSync(join(fixtures, "watch-events.jsonl"), "utf8").trim().split("\n");
    const events = lines.map((l) => watchEventSchema.parse(JSON.parse(l)));
    expect(events.map((e) => e.type)).toEqual(["ADDED", "BOOKMARK", "DELETED", "ERROR"]);
    expect(statusSchema.parse(events[3]!.object).code).toBe(410);
    expect(endpointSliceSchema.safeParse(events[2]!.object).success).toBe(true);
  });
});

describe("choosePort", () => {
  const two = slice({
    endpoints: [{ address: "10.0.0.1" }],
    ports: [
      { name: "http", port: 8080 },
      { name: "metrics", port: 9102 },
    ],
  });
  const service = known([
    { name: "http", port: 80, targetPort: "http" },
    { name: "metrics", port: 9100, targetPort: 9102 },
  ]);

  it("maps the URL's Service port to the target port through the port's name", () => {
    expect(port(choosePort(two, service, { port: 80, portName: undefined }))).toBe(8080);
    expect(port(choosePort(two, service, { port: 9100, portName: undefined }))).toBe(9102);
  });

  it("looks a named port up in the slice", () => {
    expect(port(choosePort(two, UNKNOWN, { port: undefined, portName: "metrics" }))).toBe(9102);
    expect(choosePort(two, UNKNOWN, { port: undefined, portName: "grpc" })).toHaveProperty("problem");
  });

  it("uses the only port whatever the URL names", () => {
    const one = slice({ endpoints: [{ address: "10.0.0.1" }], ports: [{ name: "", port: 8080 }] });
    expect(port(choosePort(one, UNKNOWN, { port: 80, portName: undefined }))).toBe(8080);
    expect(
      port(choosePort(one, known([{ port: 443, targetPort: 8443 }]), { port: 80, portName: undefined })),
    ).toBe(8080);
    expect(port(choosePort(one, ABSENT, { port: undefined, portName: undefined }))).toBe(8080);
  });

  it("waits for the Service when several ports could be meant", () => {
    expect(choosePort(two, UNKNOWN, { port: 80, portName: undefined })).toEqual({ waiting: true });
  });

  it("refuses a port the Service does not have, and a missing port among several", () => {
    expect(choosePort(two, service, { port: 8443, portName: undefined })).toHaveProperty("problem");
    expect(choosePort(two, service, { port: undefined, portName: undefined })).toHaveProperty("problem");
  });

  it("matches the number itself when no Service exists", () => {
    expect(port(choosePort(two, ABSENT, { port: 9102, portName: undefined }))).toBe(9102);
    expect(choosePort(two, ABSENT, { port: 80, portName: undefined })).toHaveProperty("problem");
  });

  it("uses the URL's port for a slice without ports", () => {
    const none = slice({ endpoints: [{ address: "10.0.0.1" }], ports: null });
    expect(port(choosePort(none, UNKNOWN, { port: 5432, portName: undefined }))).toBe(5432);
    expect(choosePort(none, UNKNOWN, { port: undefined, portName: undefined })).toHaveProperty("problem");
  });
});

describe("mapEndpoints", () => {
  const request = { port: 80, portName: undefined };

  it("keeps ready, serving and terminating as the API says, nil ready meaning ready", () => {
    const s = slice({
      endpoints: [
        { address: "10.0.0.1", ready: null, serving: null, terminating: null },
        { address: "10.0.0.2", ready: false, serving: true, terminating: true },
        { address: "10.0.0.3", ready: false, serving: false, terminating: false },
      ],
    });
    const { endpoints } = mapEndpoints(ctx, [s], UNKNOWN, request);
    expect(endpoints.map((e) => [e.address, e.ready, e.serving, e.terminating])).toEqual([
      ["10.0.0.1", true, true, false],
      ["10.0.0.2", false, true, true],
      ["10.0.0.3", false, false, false],
    ]);
    expect(endpoints[0]!.id).toBe("east/10.0.0.1:8080");
    expect(endpoints[0]!.backend).toBe("kubernetes");
  });

  it("takes each endpoint's zone, the cluster's region, and the cluster's zone when the slice names none", () => {
    const s = slice({ endpoints: [{ address: "10.0.0.1", zone: "us-east-1a" }, { address: "10.0.0.2" }] });
    const { endpoints } = mapEndpoints({ ...ctx, zone: "us-east-1c" }, [s], UNKNOWN, request);
    expect(endpoints.map((e) => e.locality)).toEqual([
      { region: "us-east-1", zone: "us-east-1a", subzone: "" },
      { region: "us-east-1", zone: "us-east-1c", subzone: "" },
    ]);
  });

  it("places endpoints in their hinted zones only when every ready endpoint has hints", () => {
    const hinted = slice({
      endpoints: [
        { address: "10.0.0.1", zone: "a", hints: ["a"] },
        { address: "10.0.0.2", zone: "a", hints: ["b"] },
        { address: "10.0.0.3", zone: "c", ready: false, serving: false },
      ],
    });
    expect(mapEndpoints(ctx, [hinted], UNKNOWN, request).endpoints.map((e) => e.locality.zone)).toEqual([
      "a",
      "b",
      "c",
    ]);
    expect(
      mapEndpoints({ ...ctx, topologyHints: false }, [hinted], UNKNOWN, request).endpoints.map(
        (e) => e.locality.zone,
      ),
    ).toEqual(["a", "a", "c"]);
    const partly = slice({
      endpoints: [
        { address: "10.0.0.1", zone: "a", hints: ["a"] },
        { address: "10.0.0.2", zone: "a" },
      ],
    });
    expect(mapEndpoints(ctx, [partly], UNKNOWN, request).endpoints.map((e) => e.locality.zone)).toEqual([
      "a",
      "a",
    ]);
  });

  it("sets the sub-zone to the node name when asked", () => {
    const s = slice({ endpoints: [{ address: "10.0.0.1", nodeName: "node-7" }] });
    expect(
      mapEndpoints({ ...ctx, nodeSubzone: true }, [s], UNKNOWN, request).endpoints[0]!.locality.subzone,
    ).toBe("node-7");
  });

  it("maps IPv4, IPv6 and FQDN slices and skips unknown address types", () => {
    const v4 = slice({ name: "a", endpoints: [{ address: "10.0.0.1" }] });
    const v6 = slice({ name: "b", addressType: "IPv6", endpoints: [{ address: "fd00::1" }] });
    const fqdn = slice({ name: "c", addressType: "FQDN", endpoints: [{ address: "DB.Example.com." }] });
    const other = { ...v4, addressType: "Carrier-Pigeon" };
    const { endpoints } = mapEndpoints(ctx, [v4, v6, fqdn, other], UNKNOWN, request);
    expect(endpoints.map((e) => e.id)).toEqual([
      "east/10.0.0.1:8080",
      "east/db.example.com:8080",
      "east/[fd00::1]:8080",
    ]);
  });

  it("merges slices, keeping the readier copy of an address listed twice", () => {
    const a = slice({
      name: "a",
      endpoints: [{ address: "10.0.0.1", ready: false, serving: false }, { address: "10.0.0.2" }],
    });
    const b = slice({ name: "b", endpoints: [{ address: "10.0.0.1" }] });
    const { endpoints } = mapEndpoints(ctx, [a, b], UNKNOWN, request);
    expect(endpoints.map((e) => [e.address, e.ready])).toEqual([
      ["10.0.0.1", true],
      ["10.0.0.2", true],
    ]);
  });

  it("uses each slice's own target port for one port name", () => {
    const a = slice({
      name: "a",
      endpoints: [{ address: "10.0.0.1" }],
      ports: [
        { name: "http", port: 8080 },
        { name: "m", port: 9 },
      ],
    });
    const b = slice({
      name: "b",
      endpoints: [{ address: "10.0.0.2" }],
      ports: [
        { name: "http", port: 8081 },
        { name: "m", port: 9 },
      ],
    });
    const service = known([
      { name: "http", port: 80, targetPort: "http" },
      { name: "m", port: 9, targetPort: 9 },
    ]);
    expect(mapEndpoints(ctx, [a, b], service, request).endpoints.map((e) => e.id)).toEqual([
      "east/10.0.0.1:8080",
      "east/10.0.0.2:8081",
    ]);
  });

  it("reports a port problem and keeps mapping the slices it can", () => {
    const s = slice({
      endpoints: [{ address: "10.0.0.1" }],
      ports: [
        { name: "http", port: 8080 },
        { name: "m", port: 9 },
      ],
    });
    const result = mapEndpoints(ctx, [s], known([{ name: "http", port: 80, targetPort: "http" }]), {
      port: 81,
      portName: undefined,
    });
    expect(result.endpoints).toEqual([]);
    expect(result.problem).toContain("no port 81");
    expect(mapEndpoints(ctx, [s], UNKNOWN, request).waiting).toBe(true);
  });

  it("keeps the objects of unchanged endpoints", () => {
    const s = slice({ endpoints: [{ address: "10.0.0.1" }, { address: "10.0.0.2" }] });
    const first = mapEndpoints(ctx, [s], UNKNOWN, request).endpoints;
    const changed = slice({ endpoints: [{ address: "10.0.0.1" }, { address: "10.0.0.2", ready: false }] });
    const second = mapEndpoints(ctx, [changed], UNKNOWN, request, first).endpoints;
    expect(second[0]).toBe(first[0]);
    expect(second[1]).not.toBe(first[1]);
    expect(second[1]!.ready).toBe(false);
  });
});

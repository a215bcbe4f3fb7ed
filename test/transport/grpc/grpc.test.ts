import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { afterEach, describe, expect, it } from "vitest";
import { staticDiscovery } from "../../../src/discovery/static.js";
import { ErrorCodes } from "../../../src/errors.js";
import { createMesh, type Mesh } from "../../../src/mesh.js";
import type { GrpcTransport } from "../../../src/transport/grpc/grpc.js";
import { installOn } from "../../../src/transport/grpc/kit.js";
import { serviceOfPath } from "../../../src/transport/grpc/target.js";

const meshes: Mesh[] = [];
function mesh(): Mesh {
  const m = createMesh({
    env: {},
    discovery: [
      staticDiscovery({ services: { "echo.default": [{ address: "127.0.120.90", port: 1, cluster: "c" }] } }),
    ],
  });
  meshes.push(m);
  return m;
}
afterEach(async () => {
  for (const m of meshes.splice(0)) await m.close();
});

/** A stand-in for a grpc-js module that counts what is registered on it. */
function fakeGrpc(overrides: { ready?: number } = {}) {
  const registered = { resolvers: 0, balancers: 0 };
  const module = {
    experimental: {
      registerResolver: () => void registered.resolvers++,
      registerLoadBalancerType: () => void registered.balancers++,
      PickResultType: { COMPLETE: 0, QUEUE: 1, TRANSIENT_FAILURE: 2, DROP: 3 },
      UnavailablePicker: class {},
    },
    connectivityState: {
      IDLE: 0,
      CONNECTING: 1,
      READY: overrides.ready ?? 2,
      TRANSIENT_FAILURE: 3,
      SHUTDOWN: 4,
    },
    Metadata: class {},
    ChannelCredentials: class {},
  };
  return { module, registered };
}

describe("MeshGrpc.target", () => {
  it("names the mesh and the service with its port", () => {
    const m = mesh();
    expect(m.grpc.target("echo.default", 50051)).toBe(`meshlink://${m.grpc.id}/echo.default:50051`);
    expect(m.grpc.target("Echo.Default.svc.cluster.local", "grpc")).toBe(
      `meshlink://${m.grpc.id}/echo.default.svc.cluster.local:grpc`,
    );
  });

  it("gives every mesh of the process its own id", () => {
    expect(mesh().grpc.id).not.toBe(mesh().grpc.id);
  });

  it("refuses a malformed name or port with a ServiceNameError", () => {
    const m = mesh();
    expect(() => m.grpc.target("not a name", 50051)).toThrow(
      expect.objectContaining({ code: ErrorCodes.SERVICE_NAME }),
    );
    expect(() => m.grpc.target("echo.default", 70000)).toThrow(
      expect.objectContaining({ code: ErrorCodes.SERVICE_NAME }),
    );
  });
});

describe("serviceOfPath", () => {
  it("reads the service and port of a target's path", () => {
    expect(serviceOfPath("echo.default:50051")).toMatchObject({ key: "echo.default", port: 50051 });
    expect(serviceOfPath("echo.default:grpc")).toMatchObject({ key: "echo.default", portName: "grpc" });
    expect(serviceOfPath("echo.default")).toBeUndefined();
    expect(serviceOfPath("bad host:1")).toBeUndefined();
  });
});

describe("MeshGrpc.register", () => {
  it("installs the resolver and the load balancer once per grpc-js module", () => {
    const { module, registered } = fakeGrpc();
    installOn(module);
    installOn(module);
    mesh().grpc.register(module as never);
    expect(registered).toEqual({ resolvers: 1, balancers: 1 });
  });

  it("refuses what is not a grpc-js module", () => {
    expect(() => mesh().grpc.register({} as never)).toThrow(
      expect.objectContaining({ code: ErrorCodes.CONFIG }),
    );
  });

  it("refuses a grpc-js whose enums differ from the ones it was written for", () => {
    expect(() => installOn(fakeGrpc({ ready: 7 }).module)).toThrow(
      expect.objectContaining({ code: ErrorCodes.CONFIG }),
    );
  });

  it("imports @grpc/grpc-js itself when given no module", async () => {
    const m = mesh();
    await m.grpc.register();
    expect(m.grpc.interceptors).toHaveLength(1);
  });

  it("accepts the module as a default export (an ESM namespace of CommonJS)", () => {
    const { module, registered } = fakeGrpc();
    mesh().grpc.register({ default: module } as never);
    expect(registered.resolvers).toBe(1);
  });

  it("makes interceptors and credentials unavailable until then", () => {
    const m = mesh();
    expect(() => m.grpc.interceptors).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    expect(() => m.grpc.credentials()).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    m.grpc.register(grpc);
    expect(m.grpc.credentials()._isSecure()).toBe(false);
    expect(m.grpc.credentials()).toBe(m.grpc.credentials());
  });
});

describe("MeshGrpc.idempotent", () => {
  it("marks method paths", () => {
    const t = mesh().grpc as GrpcTransport;
    t.idempotent("/pkg.Svc/Get", "pkg.Svc/List");
    expect(t.isIdempotent("/pkg.Svc/Get")).toBe(true);
    expect(t.isIdempotent("/pkg.Svc/List")).toBe(true);
    expect(t.isIdempotent("/pkg.Svc/Put")).toBe(false);
  });

  it("marks the methods a .proto declares idempotent or free of side effects", () => {
    const dir = mkdtempSync(join(tmpdir(), "meshlink-proto-"));
    try {
      const file = join(dir, "svc.proto");
      writeFileSync(
        file,
        `syntax = "proto3";
package pkg;
message M {}
service Svc {
  rpc Get (M) returns (M) { option idempotency_level = NO_SIDE_EFFECTS; }
  rpc Put (M) returns (M) { option idempotency_level = IDEMPOTENT; }
  rpc Post (M) returns (M);
}`,
      );
      const definition = loadSync(file);
      const t = mesh().grpc as GrpcTransport;
      t.idempotent(definition);
      expect(t.isIdempotent("/pkg.Svc/Get")).toBe(true);
      expect(t.isIdempotent("/pkg.Svc/Put")).toBe(true);
      expect(t.isIdempotent("/pkg.Svc/Post")).toBe(false);
      // A client constructor carries the same definitions.
      const t2 = mesh().grpc as GrpcTransport;
      const Client = grpc.makeGenericClientConstructor(
        definition["pkg.Svc"] as grpc.ServiceDefinition,
        "Svc",
      );
      t2.idempotent(Client);
      expect(t2.isIdempotent("/pkg.Svc/Put")).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("MeshGrpc after close", () => {
  it("no longer resolves the mesh's targets", async () => {
    const m = mesh();
    m.grpc.register(grpc);
    const target = m.grpc.target("echo.default", 50051);
    await m.close();
    const client = new grpc.Client(target, grpc.credentials.createInsecure());
    try {
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = client.makeUnaryRequest(
          "/pkg.Svc/Get",
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.alloc(0),
          { deadline: Date.now() + 5000 },
          () => {},
        );
        call.on("status", resolve);
      });
      expect(status.code).toBe(grpc.status.UNAVAILABLE);
      expect(status.details).toContain("closed");
    } finally {
      client.close();
    }
  });
});

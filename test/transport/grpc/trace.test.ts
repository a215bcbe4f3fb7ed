import { Metadata } from "@grpc/grpc-js";
import { context, propagation, ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { afterEach, describe, expect, it } from "vitest";
import { injectMetadata, rpcAttributes, rpcSpanName, setFields } from "../../../src/transport/grpc/trace.js";
import { installTracing } from "../../helpers/otel.js";

const spanContext = {
  traceId: "0af7651916cd43dd8448eb211c80319c",
  spanId: "b7ad6b7169203331",
  traceFlags: 1,
};

let uninstall: (() => void) | undefined;
afterEach(() => {
  uninstall?.();
  uninstall = undefined;
});

describe("injectMetadata", () => {
  it("writes the registered propagator's fields into the metadata", () => {
    uninstall = installTracing().uninstall;
    const md = new Metadata();
    injectMetadata(trace.setSpanContext(context.active(), spanContext), md);
    expect(md.get("traceparent")).toEqual([`00-${spanContext.traceId}-${spanContext.spanId}-01`]);
  });

  it("writes the W3C traceparent itself when no propagator is registered", () => {
    expect(propagation.fields()).toEqual([]);
    const md = new Metadata();
    injectMetadata(trace.setSpanContext(ROOT_CONTEXT, spanContext), md);
    expect(md.get("traceparent")).toEqual([`00-${spanContext.traceId}-${spanContext.spanId}-01`]);
  });

  it("writes nothing for a context without a span", () => {
    const md = new Metadata();
    injectMetadata(ROOT_CONTEXT, md);
    expect(md.getMap()).toEqual({});
  });
});

describe("setFields", () => {
  it("sets one value per key, replacing an earlier one", () => {
    const md = new Metadata();
    setFields(md, ["tracestate", "a=1", "tracestate", "b=2"]);
    expect(md.get("tracestate")).toEqual(["b=2"]);
  });
});

describe("rpcAttributes", () => {
  it("splits a method path into the rpc semantic attributes", () => {
    expect(rpcAttributes("/pkg.v1.Greeter/SayHello")).toEqual({
      "rpc.system": "grpc",
      "rpc.service": "pkg.v1.Greeter",
      "rpc.method": "SayHello",
    });
    expect(rpcSpanName("/pkg.v1.Greeter/SayHello")).toBe("pkg.v1.Greeter/SayHello");
  });
});

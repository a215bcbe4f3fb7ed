import { type InterceptorOptions, Metadata, propagate } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { attemptOptions, readControls } from "../../../src/transport/grpc/controls.js";

const INF = Number.POSITIVE_INFINITY;
const opts = (o: Partial<InterceptorOptions> = {}) => ({ method_definition: {}, ...o }) as InterceptorOptions;
const md = (entries: Record<string, string> = {}) => {
  const m = new Metadata();
  for (const [k, v] of Object.entries(entries)) m.set(k, v);
  return m;
};

describe("readControls", () => {
  it("reads x-meshlink-retryable and x-meshlink-hedge and removes them from the call", () => {
    const m = md({ "x-meshlink-retryable": "false", "x-meshlink-hedge": "50", other: "kept" });
    const c = readControls(m, {}, opts(), true, INF);
    expect(c).toMatchObject({ retry: false, hedge: "50", idempotent: false });
    expect(m.getMap()).toEqual({ other: "kept" });
  });

  it("strips and ignores the control keys when metadata controls are off", () => {
    const m = md({ "x-meshlink-retryable": "true", "x-meshlink-hedge": "10" });
    const c = readControls(m, {}, opts(), false, INF, false);
    expect(c).toMatchObject({ retry: undefined, hedge: undefined, idempotent: false });
    expect(m.getMap()).toEqual({});
  });

  it("takes a retryable value that is neither true nor false as absent", () => {
    expect(
      readControls(md({ "x-meshlink-retryable": "maybe" }), {}, opts(), false, INF).retry,
    ).toBeUndefined();
  });

  it("finds a call idempotent by its method, its metadata options or its retryable flag", () => {
    expect(readControls(md(), {}, opts(), true, INF).idempotent).toBe(true);
    expect(readControls(md(), { idempotentRequest: true }, opts(), false, INF).idempotent).toBe(true);
    expect(readControls(md({ "x-meshlink-retryable": "true" }), {}, opts(), false, INF).idempotent).toBe(
      true,
    );
    expect(readControls(md(), {}, opts(), false, INF).idempotent).toBe(false);
  });

  it("keeps the caller's options when its deadline is the call's", () => {
    const o = opts({ deadline: Date.now() + 1000 });
    const c = readControls(md(), {}, o, false, INF);
    expect(attemptOptions(o, c)).toBe(o);
    expect(c.deadline).toBe(o.deadline);
  });

  it("takes the shortest of the caller's, the parent call's and the policy's deadlines, and sends it", () => {
    const now = Date.now();
    const parent = { getDeadline: () => new Date(now + 500) } as unknown as InterceptorOptions["parent"];
    const o = opts({ deadline: now + 2000, parent });
    const c = readControls(md(), {}, o, false, 10_000);
    expect(c.deadline).toBe(now + 500);
    expect(attemptOptions(o, c).deadline).toBe(now + 500);
    const policy = readControls(md(), {}, opts(), false, 300);
    expect(policy.deadline).toBeGreaterThanOrEqual(now + 300);
    expect(policy.deadline).toBeLessThan(now + 2000);
  });

  it("ignores the parent's deadline when the call does not propagate it", () => {
    const parent = { getDeadline: () => Date.now() + 100 } as unknown as InterceptorOptions["parent"];
    const c = readControls(md(), {}, opts({ parent, propagate_flags: propagate.CANCELLATION }), false, INF);
    expect(c.deadline).toBe(INF);
  });
});

import { describe, expect, it } from "vitest";
import { leaveReason, passedOver } from "../../src/telemetry/reasons.js";

const tier = (label: string, rank: number, total: number, healthy: number, load: number, panic = false) => ({
  tier: { label, rank },
  total,
  healthy,
  load,
  panic,
});

describe("leaveReason", () => {
  it("names why an attempt's endpoint was left", () => {
    expect(leaveReason("connect", "ECONNREFUSED", 0)).toBe("refused");
    expect(leaveReason("connect", "MESHLINK_ATTEMPT_TIMEOUT", 0)).toBe("connect_timeout");
    expect(leaveReason("connect", "UND_ERR_CONNECT_TIMEOUT", 0)).toBe("connect_timeout");
    expect(leaveReason("connect", "MESHLINK_ERR_EGRESS_DENIED", 0)).toBe("egress_denied");
    expect(leaveReason("connect", "EHOSTUNREACH", 0)).toBe("connect_failed");
    expect(leaveReason("timeout", "MESHLINK_ATTEMPT_TIMEOUT", 0)).toBe("timed_out");
    expect(leaveReason("reset", "ECONNRESET", 0)).toBe("reset");
    expect(leaveReason("stale", "UND_ERR_SOCKET", 0)).toBe("stale_connection");
    expect(leaveReason("protocol", "HPE_INVALID_CONSTANT", 0)).toBe("protocol_error");
    expect(leaveReason("status", "status 503", 503)).toBe("status_503");
    expect(leaveReason("success", "status 429", 429)).toBe("rate_limited");
    expect(leaveReason("other", "", 0)).toBe("other");
  });
});

describe("passedOver", () => {
  it("says why better tiers were passed over: ejected, spill-over, panic, not ready, or the call's own retry", () => {
    expect(passedOver([tier("zone", 0, 2, 0, 0)])).toBe("ejected");
    expect(passedOver([tier("zone", 0, 3, 1, 0.47)])).toBe("spillover");
    expect(passedOver([tier("zone", 0, 3, 1, 0.47)], "retried")).toBe("retried");
    expect(passedOver([tier("zone", 0, 2, 0, 0)], "retried")).toBe("ejected");
    expect(passedOver([tier("zone", 0, 4, 1, 0.5, true)])).toBe("panic");
    expect(passedOver([])).toBe("not_ready");
  });
});

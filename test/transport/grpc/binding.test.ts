import { describe, expect, it, vi } from "vitest";
import type { Endpoint } from "../../../src/discovery/endpoint.js";
import { parseServiceName } from "../../../src/discovery/names.js";
import { CallPolicy } from "../../../src/resilience/policy.js";
import { TimerWheel } from "../../../src/resilience/timer.js";
import { HealthTracker } from "../../../src/routing/health.js";
import { Balancer, TierMap } from "../../../src/routing/router.js";
import {
  type ConnectivityView,
  type GrpcMeshHost,
  ServiceBinding,
} from "../../../src/transport/grpc/binding.js";
import { CONNECTING, IDLE, READY, TRANSIENT_FAILURE } from "../../../src/transport/grpc/kit.js";
import { endpoints, fixedWatch, seededRandom } from "../../helpers/routing.js";

const home = endpoints(3, { cluster: "home", region: "us-east-1", zone: "us-east-1a" }, 1);
const west = endpoints(2, { cluster: "west", region: "us-west-2", zone: "us-west-2a" }, 2);

function setup(states: Map<string, number> | undefined) {
  const balancer = new Balancer(
    fixedWatch([...home, ...west]),
    new TierMap({ region: "us-east-1", zone: "us-east-1a", failover: ["us-west-2"] }),
    new HealthTracker(),
    { random: seededRandom(7) },
  );
  const host: GrpcMeshHost = {
    id: "mesh-test",
    policy: new CallPolicy(),
    closed: false,
    timers: new TimerWheel(),
    egress: undefined,
    balancerFor: () => balancer,
  };
  const binding = new ServiceBinding(host, parseServiceName("api.default", 50051));
  const connect = vi.fn<(e: Endpoint) => void>();
  if (states !== undefined) {
    const view: ConnectivityView = { stateOf: (e) => states.get(e.id), connect, repick: () => {} };
    binding.view = view;
  }
  return { binding, connect };
}

const ids = (list: readonly Endpoint[]) => list.map((e) => e.id);

describe("ServiceBinding.pickReady", () => {
  it("takes the router's pick as it is when no load balancer lends connectivity", () => {
    const { binding } = setup(undefined);
    const picked = new Set(Array.from({ length: 50 }, () => binding.pickReady()!.id));
    expect([...picked].every((id) => ids(home).includes(id))).toBe(true);
  });

  it("prefers a READY subchannel of the same tier over a connecting or failed one", () => {
    const states = new Map([
      [home[0]!.id, CONNECTING],
      [home[1]!.id, TRANSIENT_FAILURE],
      [home[2]!.id, READY],
      ...west.map((e) => [e.id, READY] as [string, number]),
    ]);
    const { binding } = setup(states);
    for (let i = 0; i < 100; i++) expect(binding.pickReady()!.id).toBe(home[2]!.id);
  });

  it("never leaves the tier for a READY endpoint elsewhere: the call waits for its own tier", () => {
    const states = new Map([
      ...home.map((e) => [e.id, CONNECTING] as [string, number]),
      ...west.map((e) => [e.id, READY] as [string, number]),
    ]);
    const { binding } = setup(states);
    for (let i = 0; i < 100; i++) expect(ids(home)).toContain(binding.pickReady()!.id);
  });

  it("starts connecting the idle subchannels it meets", () => {
    const states = new Map([...home, ...west].map((e) => [e.id, IDLE] as [string, number]));
    const { binding, connect } = setup(states);
    binding.pickReady();
    expect(connect).toHaveBeenCalled();
    expect(connect.mock.calls.every(([e]) => ids(home).includes(e.id))).toBe(true);
  });

  it("keeps a retry's constraints while it looks for a READY endpoint", () => {
    const states = new Map([
      [home[0]!.id, READY],
      [home[1]!.id, CONNECTING],
      [home[2]!.id, READY],
    ]);
    const { binding } = setup(states);
    for (let i = 0; i < 50; i++) {
      expect(binding.pickReady({ exclude: [home[0]!.id] })!.id).toBe(home[2]!.id);
    }
  });
});

/**
 * One attempt of a call, as the call engine sees it: one request to one
 * endpoint, with its per-try timer on the shared wheel, and the errors an
 * attempt is given up with. A transport subclasses {@link EngineAttempt} and
 * bridges its protocol's callbacks to the `attempt*` methods of its call
 * (`resilience/engine.ts`).
 *
 * @module
 */

import type { Endpoint } from "../discovery/endpoint.js";
import type { EndpointHealth } from "../routing/health.js";
import type { EngineCall } from "./engine.js";
import type { FailureKind } from "./policy.js";
import { TimerEntry } from "./timer.js";

/** An attempt's per-try timeout passed: before it could start writing (`connect`), or before its response. */
export class PerTryTimeoutError extends Error {
  /** `MESHLINK_ATTEMPT_TIMEOUT`. */
  readonly code = "MESHLINK_ATTEMPT_TIMEOUT";
  /** True when the request had started; false when it was still connecting. */
  readonly started: boolean;

  /** @internal */
  constructor(ms: number, started: boolean) {
    super(
      started
        ? `no response within the per-try timeout of ${ms} ms`
        : `could not connect within the per-try timeout of ${ms} ms`,
    );
    this.name = "PerTryTimeoutError";
    this.started = started;
  }
}

/** The reason a hedge race's loser is cancelled with. */
export class HedgeLostError extends Error {
  /** @internal */
  constructor() {
    super("another attempt of this call answered first");
    this.name = "HedgeLostError";
  }
}

/**
 * How an attempt's outcome is accounted to its endpoint's health: a
 * failure kind (`other`: said nothing of the endpoint, as a cancelled or
 * abandoned attempt), a failure status, or a success.
 */
export type AttemptOutcome = FailureKind | "status" | "success";

/**
 * One attempt: one request to one endpoint, with its per-try timer on the
 * shared wheel. A transport subclass bridges its protocol's callbacks to
 * the `attempt*` methods of its call.
 */
export abstract class EngineAttempt extends TimerEntry {
  /** The transport began sending the request: from here its bytes may be on the wire. */
  started = false;
  /** Response headers (or an upgrade) arrived. */
  responded = false;
  /** Its outcome was reported to health (or released). */
  settled = false;
  /** Still waiting for its response (counted among the call's attempts in flight). */
  live = true;
  /** The engine gave up on it; the transport cancels it (at once, or when it starts) and ignores its callbacks. */
  abandoned: Error | null = null;
  /** A retryable response being drained before the next attempt. */
  draining = false;
  /** Its per-try timeout was cut short by the call's deadline. */
  deadlineBound = false;
  /** The per-try timeout in force, ms. */
  timeoutMs = 0;
  /** Milliseconds to response headers, once known. */
  latency = -1;
  /** The response status, once headers arrived; 0 before. */
  status = 0;
  /** What telemetry keeps for the attempt (its span), set and read by the transport only. */
  trace: unknown = undefined;

  constructor(
    /** The call. */
    readonly call: EngineCall,
    /** The endpoint it goes to. */
    readonly endpoint: Endpoint,
    /** The endpoint's health record. */
    readonly health: EndpointHealth,
    /** When it was launched (engine clock). */
    readonly startedAt: number,
  ) {
    super();
  }

  /**
   * Cancels the request: aborts it when it has started; otherwise the
   * transport aborts it as soon as it starts (it checks {@link abandoned}).
   */
  abstract cancel(reason: Error): void;

  /** @internal The per-try timeout passed. */
  onTimer(): void {
    this.call.attemptTimedOut(this);
  }
}

/**
 * The rules of passive outlier detection as a cockatiel breaker: when an
 * endpoint's failures should open its circuit (eject it).
 *
 * @module
 */

import { type CircuitState, ConsecutiveBreaker, CountBreaker, type IBreaker } from "cockatiel";

/** The failure-rate rule of outlier detection (Envoy's `failure_percentage`, counted over calls). */
export interface FailureRateOptions {
  /** Share of failed calls, in (0, 1), above which the endpoint is ejected; default 0.85 (Envoy's 85 %). */
  threshold?: number;
  /** How many of the latest calls are counted; default 100. */
  window?: number;
  /** Calls needed in the window before the rule applies; default 50 (Envoy's request volume). */
  minimumRequests?: number;
}

/**
 * A cockatiel breaker that opens on either rule of outlier detection:
 * `consecutive` failures in a row, or a failure rate over the last calls.
 */
export class OutlierBreaker implements IBreaker {
  readonly #consecutive: ConsecutiveBreaker;
  readonly #rate: CountBreaker | undefined;

  constructor(consecutive: number, rate: FailureRateOptions | false = {}) {
    this.#consecutive = new ConsecutiveBreaker(consecutive);
    if (rate !== false) {
      const window = rate.window ?? 100;
      this.#rate = new CountBreaker({
        threshold: rate.threshold ?? 0.85,
        size: window,
        minimumNumberOfCalls: Math.min(rate.minimumRequests ?? 50, window),
      });
    }
  }

  /** Both rules' state, for cockatiel's serialization. */
  get state(): unknown {
    return { consecutive: this.#consecutive.state, rate: this.#rate?.state };
  }

  /** Restores both rules' state. */
  set state(value: unknown) {
    const v = value as { consecutive: unknown; rate: unknown };
    this.#consecutive.state = v.consecutive as number;
    if (this.#rate !== undefined) this.#rate.state = v.rate;
  }

  /** A call succeeded. */
  success(state: CircuitState): void {
    this.#consecutive.success();
    this.#rate?.success(state);
  }

  /** A call failed; true when either rule says to open. */
  failure(state: CircuitState): boolean {
    const a = this.#consecutive.failure();
    const b = this.#rate?.failure(state) ?? false;
    return a || b;
  }
}

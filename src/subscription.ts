/**
 * The handle every `onX` event of meshlink returns (cockatiel's style).
 *
 * @module
 */

/** A subscription to events; `dispose()` ends it. */
export interface Subscription {
  /** Ends the subscription. Idempotent. */
  dispose(): void;
}

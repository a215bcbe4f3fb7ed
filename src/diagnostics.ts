/**
 * Where meshlink reports what it cannot hand to anyone: an exception thrown
 * by a user's listener or callback inside a timer or a discovery update.
 * undici turns a handler's exception into a request error; a listener has no
 * request, so its exception goes out on the `meshlink:error`
 * `node:diagnostics_channel` channel instead of escaping into the process
 * (where it would be an uncaught exception). meshlink never writes to the
 * console.
 *
 * @module
 */

import { channel } from "node:diagnostics_channel";

/** The channel name. Subscribe with `diagnostics_channel.subscribe("meshlink:error", fn)`. */
export const ERROR_CHANNEL = "meshlink:error";

/** What is published on {@link ERROR_CHANNEL}. */
export interface InternalErrorMessage {
  /** Where it happened, e.g. `registry listener` or `timer callback`. */
  readonly where: string;
  /** What was thrown. */
  readonly error: unknown;
}

const errors = channel(ERROR_CHANNEL);

/** @internal Reports an exception that must not escape into the process. */
export function reportInternalError(where: string, error: unknown): void {
  if (errors.hasSubscribers) errors.publish({ where, error } satisfies InternalErrorMessage);
}

/** An error as meshlink's callers see it: a code, and for fetch, meshlink's error as the `cause`. */
export type CaughtError = Error & { code?: string; cause?: Error & { code?: string } };

/** Awaits a promise that must reject, and returns what it rejected with. */
export async function rejection(p: Promise<unknown>): Promise<CaughtError> {
  try {
    await p;
  } catch (err) {
    return err as CaughtError;
  }
  throw new Error("expected a rejection");
}

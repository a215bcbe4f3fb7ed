/**
 * Request bodies across attempts: which bodies a retry may send again and
 * which two attempts may send at once (hedging), and an iterable wrapper
 * that remembers what it sent so that a retry can replay it.
 *
 * @module
 */

/** The most body bytes kept so that an iterable body can be sent again. */
export const MAX_REPLAY_BYTES = 1 << 20;

/**
 * An iterable request body (what `fetch` sends) that remembers its chunks
 * as they go out, so that a retry can send it again once the first attempt
 * read it to the end — up to {@link MAX_REPLAY_BYTES}.
 */
export class ReplayableIterable {
  started = false;
  #complete = false;
  #chunks: unknown[] | undefined = [];
  #bytes = 0;
  readonly #source: AsyncIterable<unknown> | Iterable<unknown>;
  constructor(source: AsyncIterable<unknown> | Iterable<unknown>) {
    this.#source = source;
  }
  /** True when it can be sent (again): not started, or read to the end and remembered. */
  get replayable(): boolean {
    return !this.started || (this.#complete && this.#chunks !== undefined);
  }
  async *[Symbol.asyncIterator]() {
    if (this.started) {
      if (!this.replayable) throw new Error("request body already sent");
      yield* this.#chunks!;
      return;
    }
    this.started = true;
    for await (const chunk of this.#source as AsyncIterable<unknown>) {
      if (this.#chunks !== undefined) {
        const size = (chunk as { byteLength?: number; length?: number }).byteLength ?? String(chunk).length;
        this.#bytes += size;
        if (this.#bytes <= MAX_REPLAY_BYTES) this.#chunks.push(chunk);
        else this.#chunks = undefined;
      }
      yield chunk;
    }
    this.#complete = true;
  }
}

/**
 * The body an attempt sends: an iterable wrapped so that it can be sent
 * again; everything undici sends as it is (strings, bytes, Node streams,
 * and the kinds undici serialises itself: FormData, Blob, URLSearchParams)
 * untouched.
 */
export function wrapBody(body: unknown): unknown {
  if (body == null || typeof body === "string" || ArrayBuffer.isView(body)) return body;
  if (typeof (body as { pipe?: unknown }).pipe === "function") return body; // a Node stream: readableDidRead tells
  // undici would send URLSearchParams as its pairs: send what fetch sends.
  if (body instanceof URLSearchParams) return body.toString();
  if (selfContained(body)) return body;
  if (
    typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function" ||
    typeof (body as Iterable<unknown>)[Symbol.iterator] === "function"
  ) {
    return new ReplayableIterable(body as AsyncIterable<unknown>);
  }
  return body;
}

/** True when the body was (partly) consumed and cannot be sent again. */
export function bodySent(body: unknown): boolean {
  if (body == null || typeof body === "string" || ArrayBuffer.isView(body)) return false;
  if (selfContained(body)) return false;
  if (body instanceof ReplayableIterable) return !body.replayable;
  const stream = body as { readableDidRead?: boolean; destroyed?: boolean };
  if (typeof stream.readableDidRead === "boolean") return stream.readableDidRead || stream.destroyed === true;
  return true; // unknown body kinds (FormData, Blob streams): assume consumed
}

/** A body that two attempts can send at once (hedging): none, a string or bytes. */
export function bodyReusable(body: unknown): boolean {
  return body == null || typeof body === "string" || ArrayBuffer.isView(body) || selfContained(body);
}

/**
 * A body that holds its whole content and that undici serialises on each
 * send: FormData, a Blob (or File). Wrapping one as a plain
 * iterable would send its `[name, value]` pairs instead.
 */
function selfContained(body: unknown): boolean {
  const tag = (body as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag];
  return (
    tag === "FormData" ||
    tag === "Blob" ||
    tag === "File" ||
    (typeof Blob === "function" && body instanceof Blob)
  );
}

/**
 * One attempt of an HTTP call, as undici sees it: the handler of one
 * dispatch to one endpoint, in the caller's handler API. It bridges
 * undici's callbacks to the call engine's attempt reports (started,
 * response, data, end, failed) and delivers what the engine lets through
 * to the caller via its {@link MeshCall}.
 *
 * @module
 */

import type { Dispatcher } from "undici";
import { EngineAttempt } from "../../resilience/attempt.js";
import { parseRetryAfter } from "../../resilience/policy.js";
import type { MeshCall } from "./call.js";
import { headerValue, type ResponseHeaders } from "./headers.js";

/** The socket an upgraded response hands over. */
export type Socket = Parameters<NonNullable<Dispatcher.DispatchHandler["onRequestUpgrade"]>>[3];

/** The attempt's share of both handler APIs. */
export abstract class HttpAttempt extends EngineAttempt {
  declare readonly call: MeshCall;

  /** Stops reading the response (new API only: a legacy caller pauses through return values). */
  abstract pause(): void;
  /** Reads the response again. */
  abstract resume(): void;

  /** The request is about to be written. */
  protected begin(): void {
    this.call.attemptStarted(this);
  }

  /** Response headers arrived; returns false to pause the connection (legacy). */
  protected response(
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage: string | undefined,
    resume: (() => void) | undefined,
  ): boolean {
    const call = this.call;
    if (statusCode < 200) {
      // 1xx (103 Early Hints): the final response follows on the same attempt.
      if (!call.attemptInformational(this)) return true;
      return call.emitResponse(statusCode, headers, statusMessage, resume);
    }
    const retryAfter =
      (statusCode === 429 || statusCode === 503) && call.retriesStatus(statusCode)
        ? parseRetryAfter(headerValue(headers, "retry-after"))
        : undefined;
    if (!call.attemptResponse(this, statusCode, retryAfter)) return true;
    return call.emitResponse(statusCode, headers, statusMessage, resume);
  }

  protected data(chunk: Buffer): boolean {
    if (this.abandoned !== null || this.draining || this !== this.call.winnerAttempt) return true;
    return this.call.emitData(chunk);
  }

  protected end(trailers: ResponseHeaders): void {
    if (this.call.attemptEnded(this)) this.call.emitEnd(trailers);
  }

  protected upgrade(statusCode: number, headers: ResponseHeaders, socket: Socket): void {
    if (this.call.attemptUpgraded(this)) this.call.emitUpgrade(statusCode, headers, socket);
  }

  /** The attempt failed (also when its dispatch threw). */
  error(err: Error): void {
    if (this.abandoned !== null) return;
    this.call.attemptFailed(this, err, this.call.classify(this, err));
  }
}

/** An attempt in undici's new handler API, for a caller of that API. */
export class Attempt extends HttpAttempt implements Dispatcher.DispatchHandler {
  /** undici's controller of this attempt, once started. */
  controller: Dispatcher.DispatchController | null = null;

  cancel(reason: Error): void {
    this.controller?.abort(reason);
  }

  pause(): void {
    this.controller?.pause();
  }

  resume(): void {
    this.controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController, _context: unknown): void {
    this.controller = controller;
    this.begin();
  }

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: ResponseHeaders,
    socket: Socket,
  ): void {
    this.upgrade(statusCode, headers, socket);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: ResponseHeaders,
    statusMessage?: string,
  ): void {
    this.response(statusCode, headers, statusMessage, undefined);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.data(chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: ResponseHeaders): void {
    this.end(trailers);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.error(err);
  }
}

/**
 * An attempt in undici's legacy handler API, for a caller of that API. It
 * has no `onRequestStart`, so undici's `DispatcherBase` passes it to the
 * connection as it is: no `UnwrapHandler`, no header parsing. Back-pressure
 * is the caller's own: its `onHeaders`/`onData` return values and the
 * connection's `resume` pass straight through. `onResponseStarted` (fetch's
 * timing) and `onBodySent` are passed on; `onRequestSent`, which undici
 * would call on every request and no caller of undici's own implements, is
 * not.
 */
export class LegacyAttempt extends HttpAttempt {
  #abort: ((reason?: Error) => void) | null = null;

  cancel(reason: Error): void {
    this.#abort?.(reason);
  }

  pause(): void {}

  resume(): void {}

  onConnect(abort: (reason?: Error) => void, _context?: unknown): void {
    this.#abort = abort;
    this.begin();
  }

  onResponseStarted(): void {
    if (this.abandoned === null && !this.draining) this.call.emitResponseStarted();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText?: string): boolean {
    return this.response(statusCode, rawHeaders, statusText, resume);
  }

  onData(chunk: Buffer): boolean {
    return this.data(chunk);
  }

  onComplete(rawTrailers: Buffer[] | string[] | null): void {
    this.end(rawTrailers);
  }

  onError(err: Error): void {
    this.error(err);
  }

  onUpgrade(statusCode: number, rawHeaders: Buffer[] | string[] | null, socket: Socket): void {
    this.upgrade(statusCode, rawHeaders, socket);
  }

  onBodySent(chunk: unknown): void {
    if (this.abandoned === null) this.call.emitBodySent(chunk);
  }
}

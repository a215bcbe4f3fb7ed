/**
 * A leg: one attempt's grpc-js call below the interceptor. It is its
 * metadata's options object (grpc-js carries that object by reference down
 * to the picker, which finds the leg under {@link kLeg}) and the listener
 * of the call it opened, and it writes a request stream one message at a
 * time when it must replay one.
 *
 * @module
 */

import type { Endpoint } from "../../discovery/endpoint.js";
import type { ServiceBinding } from "./binding.js";
import type { GrpcAttempt } from "./call.js";
import type { MeshClientCall } from "./interceptor.js";
import { kLeg, type PickedLeg } from "./picker.js";
import { Status } from "./status.js";
import type {
  GrpcCallBelow,
  GrpcMetadata as Metadata,
  GrpcMetadataOptions as MetadataOptions,
  GrpcStatusObject as StatusObject,
} from "./types.js";

/** A message waiting for the one before it to be taken. */
interface Queued {
  readonly message: unknown;
  readonly flags: number | undefined;
  readonly callback: (() => void) | undefined;
}

/** One attempt's grpc-js call. */
export class Leg implements PickedLeg, MetadataOptions {
  readonly [kLeg]: Leg;
  idempotentRequest?: boolean;
  waitForReady?: boolean;
  cacheableRequest?: boolean;
  corked?: boolean;
  /** The interceptor's call this leg belongs to. */
  readonly client: MeshClientCall;
  /** The grpc-js call below the interceptor. */
  underlying: GrpcCallBelow | undefined = undefined;
  /** The engine's attempt it carries, once the engine dispatched one to it. */
  attempt: GrpcAttempt | undefined = undefined;
  failure: Error | undefined = undefined;
  /** Its status arrived. */
  ended = false;
  #queue: Queued[] | undefined;
  #writing = false;
  #halfClose = false;

  constructor(client: MeshClientCall, options: MetadataOptions) {
    this[kLeg] = this;
    this.client = client;
    this.idempotentRequest = options.idempotentRequest;
    this.waitForReady = options.waitForReady;
    this.cacheableRequest = options.cacheableRequest;
    this.corked = options.corked;
  }

  target(binding: ServiceBinding): Endpoint | undefined | Error {
    return this.client.legTarget(this, binding);
  }

  started(metadata: Metadata): boolean {
    const a = this.attempt;
    if (a === undefined || a.abandoned !== null || !a.call.attemptStarted(a)) return false;
    this.client.attemptStarted();
    if (a.trace !== undefined) this.client.injectAttempt(a, metadata);
    return true;
  }

  /** meshlink gives the leg up (a per-try timeout, a lost hedge, the caller's cancel). */
  cancel(reason: Error): void {
    if (!this.ended) this.underlying?.cancelWithStatus(Status.CANCELLED, `meshlink: ${reason.message}`);
  }

  /**
   * Writes a message of a request stream. grpc-js holds one message per call
   * until the call below exists (its caller, a Writable, never sends the
   * next before the last one's callback): messages go one at a time, each
   * after the callback of the one before.
   */
  write(message: unknown, flags: number | undefined, callback: (() => void) | undefined): void {
    (this.#queue ??= []).push({ message, flags, callback });
    this.#next();
  }

  /** Half-closes once every message written is taken. */
  halfClose(): void {
    this.#halfClose = true;
    this.#next();
  }

  #next(): void {
    if (this.#writing || this.ended) return;
    const q = this.#queue?.shift();
    if (q === undefined) {
      if (this.#halfClose) {
        this.#halfClose = false;
        this.underlying?.halfClose();
      }
      return;
    }
    this.#writing = true;
    this.underlying!.sendMessageWithContext(
      {
        flags: q.flags,
        callback: () => {
          this.#writing = false;
          q.callback?.();
          this.#next();
        },
      },
      q.message,
    );
  }

  onReceiveMetadata(metadata: Metadata): void {
    this.client.legMetadata(this, metadata);
  }

  onReceiveMessage(message: unknown): void {
    this.client.legMessage(this, message);
  }

  onReceiveStatus(status: StatusObject): void {
    this.ended = true;
    this.client.legStatus(this, status);
  }
}

/**
 * `mesh.grpc.interceptors`: the client side of a gRPC call through the mesh.
 *
 * grpc-js gives an interceptor the call's options and a `nextCall` to open
 * the call below — not the channel or its target. So the interceptor's
 * {@link MeshClientCall} opens its first grpc-js call (a {@link Leg}) at
 * once, with the leg in its metadata's options; when the `meshlink`
 * picker meets the leg it binds the call to the channel's service, the
 * call engine starts, and every further attempt (a retry, a hedge) is one
 * more leg through `nextCall`, pinned to the endpoint the engine chose. On
 * any other channel no picker ever binds the call, and it passes through
 * with only its client span and trace context.
 *
 * Per call, on top of the span and propagation, the controls of
 * `controls.ts`: the deadline, which every attempt carries as
 * `grpc-timeout`, idempotency and hedging.
 *
 * @module
 */

import { type Context, ROOT_CONTEXT, type Span } from "@opentelemetry/api";
import type { Endpoint } from "../../discovery/endpoint.js";
import type { CallPolicy } from "../../resilience/policy.js";
import { CallObserver } from "../../telemetry/call.js";
import { type MeshInstruments, meshInstruments } from "../../telemetry/metrics.js";
import {
  activeContext,
  contextWithSpan,
  endSpanWithError,
  type HeaderList,
  NOOP_SPAN,
  otelRegistered,
  startCallSpan,
  tracerRegistered,
} from "../../telemetry/tracing.js";
import type { ServiceBinding } from "./binding.js";
import { type GrpcAttempt, GrpcCall } from "./call.js";
import { attemptOptions, type CallControls, readControls } from "./controls.js";
import type { GrpcKit } from "./kit.js";
import { Leg } from "./leg.js";
import { CallerCancelledError, GrpcStatusError, Status, statusOf } from "./status.js";
import { injectMetadata, rpcAttributes, rpcProtocol, rpcSpanName, setFields } from "./trace.js";
import type {
  GrpcMessageContext,
  GrpcListener as InterceptingListener,
  GrpcInterceptorOptions as InterceptorOptions,
  GrpcMetadata as Metadata,
  GrpcNextCall as NextCall,
  GrpcStatusObject as StatusObject,
} from "./types.js";

/** What the interceptor needs from its transport. */
export interface InterceptorHost {
  /** The application's grpc-js. */
  readonly kit: GrpcKit;
  /** The mesh's call policy (its deadline applies from the start). */
  readonly policy: CallPolicy;
  /** True when a method (`/pkg.Service/Method`) was marked idempotent. */
  isIdempotent(path: string): boolean;
  /** False when the `x-meshlink-*` control metadata is to be stripped and ignored (`policy.headerControls: false`). */
  readonly metadataControls: boolean;
}

/** The interceptor of a mesh: one {@link MeshClientCall} per call. */
export function meshInterceptor(
  host: InterceptorHost,
): (options: InterceptorOptions, nextCall: NextCall) => MeshClientCall {
  return (options, nextCall) => new MeshClientCall(host, options, nextCall);
}

/** A leg that can still be written to. */
function isOpen(leg: Leg): boolean {
  return !leg.ended && leg.underlying !== undefined;
}

/** The most messages of a request stream kept for a resend before any attempt started. */
const MAX_KEPT_MESSAGES = 64;

const UNBOUND = 0;
const BOUND = 1;
const PASSTHROUGH = 2;
const ENDED = 3;

/** The interceptor's side of one call: towards the caller one grpc-js call, below it one leg per attempt. */
export class MeshClientCall {
  readonly #host: InterceptorHost;
  readonly #next: NextCall;
  /** The options each leg is opened with: the caller's, with the effective deadline. */
  #options: InterceptorOptions;
  /** The method path. */
  readonly path: string;
  /** The response is one message (held until the status), not a stream. */
  readonly unary: boolean;
  readonly #requestStream: boolean;
  #mode = UNBOUND;
  #listener: Partial<InterceptingListener> = {};
  #base: Metadata | undefined;
  #span: Span = NOOP_SPAN;
  /** The caller's context when the call started (the parent of its span). */
  #parent: Context | undefined;
  #first: Leg | undefined;
  #legs: Leg[] | undefined;
  #engine: GrpcCall | undefined;
  #binding: ServiceBinding | undefined;
  #request: unknown;
  #hasRequest = false;
  /** A request stream's messages, kept while no attempt has started. */
  #stream: { message: unknown; flags: number | undefined }[] | undefined;
  #replayable = true;
  #halfClosed = false;
  #readPending = false;
  #controls: CallControls | undefined;
  /** Inside a pick: what reaches the caller waits for the next tick. */
  #picking = false;

  constructor(host: InterceptorHost, options: InterceptorOptions, next: NextCall) {
    this.#host = host;
    this.#options = options;
    this.#next = next;
    const def = options.method_definition;
    this.path = def.path;
    this.unary = !def.responseStream;
    this.#requestStream = def.requestStream;
  }

  /** The call's span (a no-op span while no SDK is registered). */
  get span(): Span {
    return this.#span;
  }

  /** The request is one message (unary or server-streaming methods). */
  get unaryRequest(): boolean {
    return !this.#requestStream;
  }

  /** True while the request can be sent again: a unary request, or a stream before any attempt started. */
  get replayable(): boolean {
    return this.#replayable;
  }

  // The caller's side (grpc-js's InterceptingCallInterface).

  start(metadata: Metadata, listener?: Partial<InterceptingListener>): void {
    this.#listener = listener ?? {};
    const md = metadata.clone();
    const callerOptions = metadata.getOptions();
    const c = readControls(
      md,
      callerOptions,
      this.#options,
      this.#host.isIdempotent(this.path),
      this.#host.policy.deadline,
      this.#host.metadataControls,
    );
    this.#controls = c;
    this.#options = attemptOptions(this.#options, c);

    // One check answers every OpenTelemetry question of a call's start without an SDK (as for HTTP).
    const otel = otelRegistered();
    const parent = otel ? activeContext() : ROOT_CONTEXT;
    this.#parent = parent;
    // With no SDK registered there is nothing to record; the caller's own context still propagates.
    if (otel && tracerRegistered()) {
      this.#span = startCallSpan(rpcSpanName(this.path), parent, rpcAttributes(this.path));
    }
    // The call's context for every leg; a traced attempt's own replaces it when it is picked.
    if (otel) injectMetadata(contextWithSpan(parent, this.#span), md);
    this.#base = md;
    const leg = new Leg(this, callerOptions);
    md.setOptions(leg);
    this.#first = leg;
    leg.underlying = this.#next(this.#options);
    leg.underlying.start(md, leg);
  }

  sendMessageWithContext(context: GrpcMessageContext, message: unknown): void {
    if (!this.#requestStream) {
      this.#request = message;
      this.#hasRequest = true;
      // Loops, not #each: no closure per call on the unary path.
      const first = this.#first;
      if (first !== undefined && isOpen(first)) first.underlying!.sendMessageWithContext(context, message);
      if (this.#legs !== undefined) {
        for (const leg of this.#legs)
          if (isOpen(leg)) leg.underlying!.sendMessageWithContext(context, message);
      }
      return;
    }
    let callback = context.callback;
    if (this.#replayable) {
      // Until an attempt starts, nothing of a request stream has left the
      // process: it is kept for a resend, and taken at once (as grpc-js's
      // retry buffer takes it) — a leg that dies would never call back.
      const kept = (this.#stream ??= []);
      if (kept.length < MAX_KEPT_MESSAGES) {
        kept.push({ message, flags: context.flags });
        if (callback !== undefined) process.nextTick(callback);
        callback = undefined;
      } else {
        this.#dropStream();
      }
    }
    this.#each((leg) => leg.write(message, context.flags, callback));
  }

  sendMessage(message: unknown): void {
    this.sendMessageWithContext({}, message);
  }

  startRead(): void {
    this.#readPending = true;
    const winner = this.#engine?.winnerAttempt?.leg;
    if (winner !== undefined) winner.underlying!.startRead();
    else {
      const first = this.#first;
      if (first !== undefined && isOpen(first)) first.underlying!.startRead();
      if (this.#legs !== undefined)
        for (const leg of this.#legs) if (isOpen(leg)) leg.underlying!.startRead();
    }
  }

  halfClose(): void {
    this.#halfClosed = true;
    if (this.#requestStream) {
      this.#each((leg) => leg.halfClose());
      return;
    }
    const first = this.#first;
    if (first !== undefined && isOpen(first)) first.underlying!.halfClose();
    if (this.#legs !== undefined) for (const leg of this.#legs) if (isOpen(leg)) leg.underlying!.halfClose();
  }

  cancelWithStatus(code: number, details: string): void {
    if (this.#mode === BOUND) this.#engine!.abort(new CallerCancelledError(code, details));
    else if (this.#mode !== ENDED) this.#first?.underlying?.cancelWithStatus(code, details);
  }

  getPeer(): string {
    return this.#shown()?.underlying?.getPeer() ?? "";
  }

  getAuthContext(): unknown {
    return this.#shown()?.underlying?.getAuthContext() ?? null;
  }

  // The picker's side.

  /** @internal Where a leg goes (see {@link PickedLeg.target}); the first pick of the first leg binds the call. */
  legTarget(leg: Leg, binding: ServiceBinding): Endpoint | undefined | Error {
    const a = leg.attempt;
    if (a !== undefined) return a.endpoint;
    if (leg.failure !== undefined) return leg.failure;
    if (leg !== this.#first || this.#mode !== UNBOUND) return undefined;
    this.#bind(binding);
    return leg.attempt?.endpoint ?? leg.failure;
  }

  #bind(binding: ServiceBinding): void {
    this.#mode = BOUND;
    this.#binding = binding;
    const span = this.#span;
    if (span.isRecording()) {
      span.setAttributes({
        "meshlink.service": binding.name.key,
        "server.address": binding.name.host,
        "server.port": binding.name.port ?? binding.name.portName ?? "",
      });
    }
    let instruments: MeshInstruments | undefined;
    if (otelRegistered()) instruments = meshInstruments();
    const observer =
      instruments !== undefined || span.isRecording()
        ? new CallObserver(binding, span, this.#parent!, instruments, rpcProtocol(this.path, binding.name))
        : undefined;
    const c = this.#controls!;
    const engine = new GrpcCall(this, binding, {
      idempotent: c.idempotent,
      neverResend: c.retry === false,
      hedge: c.hedge,
      deadline: c.deadline,
      observer,
    });
    this.#engine = engine;
    this.#picking = true;
    try {
      engine.start();
    } finally {
      this.#picking = false;
    }
  }

  /** @internal An attempt's pick completed: a request stream may now be on the wire, and is resent no more. */
  attemptStarted(): void {
    if (this.#requestStream && this.#replayable) this.#dropStream();
  }

  #dropStream(): void {
    this.#replayable = false;
    this.#stream = undefined;
  }

  // The engine's side.

  /** @internal Sends an attempt: on the first leg while it waits unassigned, else on a new leg. */
  dispatch(a: GrpcAttempt): void {
    const first = this.#first!;
    if (first.attempt === undefined && !first.ended && first.failure === undefined) {
      first.attempt = a;
      a.leg = first;
      // It waits in grpc-js's queue since its first pick: have it picked again.
      if (!this.#picking) this.#binding?.view?.repick();
      return;
    }
    const leg = new Leg(this, first);
    leg.attempt = a;
    a.leg = leg;
    (this.#legs ??= []).push(leg);
    const md = this.#base!.clone();
    md.setOptions(leg);
    try {
      leg.underlying = this.#next(this.#options);
      leg.underlying.start(md, leg);
    } catch (err) {
      leg.ended = true;
      a.call.attemptFailed(a, err instanceof Error ? err : new Error(String(err)), "other");
      return;
    }
    const call = leg.underlying;
    if (this.#requestStream) {
      for (const m of this.#stream ?? []) leg.write(m.message, m.flags, undefined);
      if (this.#halfClosed) leg.halfClose();
    } else {
      if (this.#hasRequest) call.sendMessage(this.#request);
      if (this.#halfClosed) call.halfClose();
    }
    if (this.#readPending) call.startRead();
  }

  /** @internal The call failed: the caller gets the error's status; legs still open are cancelled. */
  fail(err: Error): void {
    if (this.#mode === ENDED) return;
    this.#mode = ENDED;
    const status = statusOf(err, this.#host.kit.metadata);
    // A leg that has no attempt yet fails at its next pick.
    this.#each((leg) => {
      if (leg.attempt === undefined) leg.failure ??= err;
    });
    if (this.#picking) process.nextTick(() => this.#failed(status, err));
    else this.#failed(status, err);
  }

  #failed(status: StatusObject, err: Error): void {
    // The span ended with the engine's call (its noteEnd).
    this.#each((leg) => leg.cancel(err));
    this.#listener.onReceiveStatus?.(status);
  }

  /** @internal A unary response won: its held headers and message go to the caller. */
  emitHeld(a: GrpcAttempt): void {
    if (a.heldMetadata !== undefined) this.#listener.onReceiveMetadata?.(a.heldMetadata);
    if (a.hasMessage) this.#listener.onReceiveMessage?.(a.message);
  }

  /** @internal The winning attempt's status ends the call. */
  emitStatus(status: StatusObject): void {
    this.#mode = ENDED;
    this.#listener.onReceiveStatus?.(status);
  }

  /** @internal A traced attempt was picked: its metadata carries its own span's context, the server's parent. */
  injectAttempt(a: GrpcAttempt, metadata: Metadata): void {
    const obs = this.#engine?.observer;
    if (obs === undefined) return;
    const fields: HeaderList = [];
    obs.inject(a, fields);
    setFields(metadata, fields);
  }

  // The legs' side.

  /** @internal */
  legMetadata(leg: Leg, metadata: Metadata): void {
    if (this.#mode === BOUND) {
      const a = leg.attempt;
      if (a === undefined || a.abandoned !== null) return;
      if (this.unary) a.heldMetadata = metadata;
      else if (this.#engine!.commit(a)) this.#listener.onReceiveMetadata?.(metadata);
      return;
    }
    if (this.#passes(leg)) this.#listener.onReceiveMetadata?.(metadata);
  }

  /** @internal */
  legMessage(leg: Leg, message: unknown): void {
    if (this.#mode === BOUND) {
      const a = leg.attempt;
      if (a === undefined || a.abandoned !== null) return;
      if (this.unary) {
        // grpc-js's unary call reports "no message" as null just before the status.
        if (message === null) return;
        a.message = message;
        a.hasMessage = true;
        this.#engine!.messageReceived();
      } else if (a === this.#engine!.winnerAttempt) {
        this.#readPending = false;
        this.#listener.onReceiveMessage?.(message);
      }
      return;
    }
    if (this.#passes(leg)) this.#listener.onReceiveMessage?.(message);
  }

  /** @internal */
  legStatus(leg: Leg, status: StatusObject): void {
    if (this.#mode === BOUND) {
      if (leg.attempt !== undefined) this.#engine!.attemptStatus(leg.attempt, status);
      return;
    }
    if (this.#passes(leg)) {
      this.#mode = ENDED;
      this.#end(status);
      this.#listener.onReceiveStatus?.(status);
    }
  }

  /** An unbound call's events pass through (no meshlink picker saw it: not a mesh channel). */
  #passes(leg: Leg): boolean {
    if (leg !== this.#first || this.#mode === ENDED) return false;
    this.#mode = PASSTHROUGH;
    return true;
  }

  /** Ends the span of a call that passed through (no engine call ends it). */
  #end(status: StatusObject): void {
    const span = this.#span;
    if (span === NOOP_SPAN) return;
    span.setAttribute("rpc.grpc.status_code", status.code);
    if (status.code === Status.OK) span.end();
    else endSpanWithError(span, new GrpcStatusError(status));
  }

  /** The leg whose peer the caller sees: the winner's, else the first. */
  #shown(): Leg | undefined {
    return this.#engine?.winnerAttempt?.leg ?? this.#first;
  }

  /** Runs `fn` on every leg still open. */
  #each(fn: (leg: Leg) => void): void {
    const first = this.#first;
    if (first !== undefined && isOpen(first)) fn(first);
    const legs = this.#legs;
    if (legs === undefined) return;
    for (const leg of legs) if (isOpen(leg)) fn(leg);
  }
}

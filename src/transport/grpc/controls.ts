/**
 * What a gRPC call asks of the mesh, read once when it starts: its
 * deadline (the caller's, its parent call's when propagated, the
 * policy's — the shortest), whether it may be resent, and whether it
 * hedges. Per call, `x-meshlink-retryable: true|false` metadata marks it
 * idempotent or never to be resent and `x-meshlink-hedge` asks for or
 * refuses hedging, as the same headers do for HTTP; both are removed
 * before the call is sent, and ignored when the policy turns header
 * controls off (`policy.headerControls: false`: a service that forwards its
 * incoming metadata must not let its callers force resends).
 *
 * @module
 */

import { HEDGE_HEADER, parseFlag, RETRYABLE_HEADER } from "../http/headers.js";
import type {
  GrpcInterceptorOptions as InterceptorOptions,
  GrpcMetadata as Metadata,
  GrpcMetadataOptions as MetadataOptions,
} from "./types.js";

/** `grpc.propagate.DEADLINE`: the parent call's deadline applies to this call. */
const PROPAGATE_DEADLINE = 1;
/** grpc-js's default propagation flags. */
const PROPAGATE_DEFAULTS = 0xffff;

/** A call's controls. */
export interface CallControls {
  /** `x-meshlink-retryable`, when the call carried it. */
  readonly retry: boolean | undefined;
  /** `x-meshlink-hedge`, when the call carried it. */
  readonly hedge: string | undefined;
  /** The call may be sent twice: the metadata says so, or its method was marked idempotent. */
  readonly idempotent: boolean;
  /** The call's deadline, epoch ms (`Infinity`: none). */
  readonly deadline: number;
}

const PLAIN: CallControls = Object.freeze({
  retry: undefined,
  hedge: undefined,
  idempotent: false,
  deadline: Number.POSITIVE_INFINITY,
});
const IDEMPOTENT: CallControls = Object.freeze({ ...PLAIN, idempotent: true });

function epochOf(deadline: Date | number | undefined): number {
  if (deadline === undefined) return Number.POSITIVE_INFINITY;
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

/** A tri-state flag: undefined when the value is neither true nor false. */
function flag(value: unknown): boolean | undefined {
  const s = String(value);
  const yes = parseFlag(s, true);
  return yes === parseFlag(s, false) ? yes : undefined;
}

/**
 * Reads a call's controls and removes the control keys from `metadata`
 * (the call's own copy). `idempotentMethod` says whether its method was
 * marked idempotent; `policyDeadline` is the policy's deadline in ms;
 * `metadataControls` false ignores the control keys.
 */
export function readControls(
  metadata: Metadata,
  callerOptions: MetadataOptions,
  options: InterceptorOptions,
  idempotentMethod: boolean,
  policyDeadline: number,
  metadataControls = true,
): CallControls {
  let retry: boolean | undefined;
  let hedge: string | undefined;
  const r = metadata.get(RETRYABLE_HEADER);
  if (r.length > 0) {
    if (metadataControls) retry = flag(r[0]);
    metadata.remove(RETRYABLE_HEADER);
  }
  const h = metadata.get(HEDGE_HEADER);
  if (h.length > 0) {
    if (metadataControls) hedge = String(h[0]);
    metadata.remove(HEDGE_HEADER);
  }
  let deadline = epochOf(options.deadline);
  const parent = options.parent;
  if (parent != null && ((options.propagate_flags ?? PROPAGATE_DEFAULTS) & PROPAGATE_DEADLINE) !== 0) {
    deadline = Math.min(deadline, epochOf(parent.getDeadline()));
  }
  if (policyDeadline !== Number.POSITIVE_INFINITY) deadline = Math.min(deadline, Date.now() + policyDeadline);
  const idempotent = retry ?? (idempotentMethod || callerOptions.idempotentRequest === true);
  // Most calls carry no controls and no deadline: one shared answer each, nothing allocated.
  if (retry === undefined && hedge === undefined && deadline === Number.POSITIVE_INFINITY) {
    return idempotent ? IDEMPOTENT : PLAIN;
  }
  return { retry, hedge, idempotent, deadline };
}

/** The options every attempt is opened with: the caller's, with the call's deadline (grpc-js sends it as `grpc-timeout`). */
export function attemptOptions(options: InterceptorOptions, controls: CallControls): InterceptorOptions {
  return controls.deadline === epochOf(options.deadline)
    ? options
    : { ...options, deadline: controls.deadline };
}

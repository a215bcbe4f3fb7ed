/**
 * The parts of `@grpc/grpc-js` (1.14) that the gRPC transport uses, declared
 * here structurally. grpc-js is an optional peer dependency: meshlink's
 * declarations must type-check where it is not installed, so no file of
 * meshlink names it; the application's module, given to
 * `mesh.grpc.register(grpc)`, is read through these shapes.
 *
 * @module
 */

import type { Socket } from "node:net";

/** grpc-js's `Metadata` (an instance), as meshlink uses it. */
export interface GrpcMetadata {
  get(key: string): unknown[];
  set(key: string, value: string): void;
  remove(key: string): void;
  clone(): GrpcMetadata;
  getMap(): Record<string, unknown>;
  getOptions(): GrpcMetadataOptions;
  setOptions(options: GrpcMetadataOptions): void;
}

/** grpc-js's `MetadataOptions`. */
export interface GrpcMetadataOptions {
  idempotentRequest?: boolean;
  waitForReady?: boolean;
  cacheableRequest?: boolean;
  corked?: boolean;
}

/** grpc-js's `StatusObject`: a call's final status. */
export interface GrpcStatusObject {
  code: number;
  details: string;
  metadata: GrpcMetadata;
}

/** grpc-js's `InterceptingListener`: what the call below reports to an interceptor. */
export interface GrpcListener {
  onReceiveMetadata(metadata: GrpcMetadata): void;
  onReceiveMessage(message: unknown): void;
  onReceiveStatus(status: GrpcStatusObject): void;
}

/** grpc-js's `MessageContext`. */
export interface GrpcMessageContext {
  callback?: (error?: Error | null) => void;
  flags?: number;
}

/** grpc-js's `InterceptingCallInterface`: a call an interceptor drives. */
export interface GrpcCallBelow {
  start(metadata: GrpcMetadata, listener?: Partial<GrpcListener>): void;
  sendMessageWithContext(context: GrpcMessageContext, message: unknown): void;
  sendMessage(message: unknown): void;
  startRead(): void;
  halfClose(): void;
  cancelWithStatus(status: number, details: string): void;
  getPeer(): string;
  getAuthContext(): unknown;
}

/** grpc-js's `InterceptorOptions`, the fields meshlink reads. */
export interface GrpcInterceptorOptions {
  method_definition: { path: string; requestStream: boolean; responseStream: boolean };
  deadline?: Date | number | undefined;
  parent?: { getDeadline(): Date | number } | null | undefined;
  propagate_flags?: number | undefined;
}

/** grpc-js's `NextCall`. */
export type GrpcNextCall = (options: GrpcInterceptorOptions) => GrpcCallBelow;

/** grpc-js's `GrpcUri`. */
export interface GrpcUri {
  scheme?: string;
  authority?: string;
  path: string;
}

/** grpc-js's `ChannelOptions`. */
export type GrpcChannelOptions = Record<string, unknown>;

/** grpc-js's `StatusOr<T>`. */
export type GrpcStatusOr<T> = { ok: true; value: T } | { ok: false; error: GrpcStatusObject };

/** grpc-js's resolver `Endpoint`: the addresses of one backend. */
export interface GrpcAddressList {
  addresses: { host: string; port: number }[];
}

/** grpc-js's `ResolverListener`. */
export type GrpcResolverListener = (
  endpointList: GrpcStatusOr<GrpcAddressList[]>,
  attributes: Record<string, unknown>,
  serviceConfig: GrpcStatusOr<{ loadBalancingConfig: object[]; methodConfig: object[] }> | null,
  resolutionNote: string,
) => boolean;

/** grpc-js's `Resolver`. */
export interface GrpcResolver {
  updateResolution(): void;
  destroy(): void;
}

/** grpc-js's `SubchannelInterface`, the methods meshlink calls. */
export interface GrpcSubchannel {
  getConnectivityState(): number;
  addConnectivityStateListener(listener: GrpcConnectivityListener): void;
  removeConnectivityStateListener(listener: GrpcConnectivityListener): void;
  startConnecting(): void;
  ref(): void;
  unref(): void;
}

/** grpc-js's `ConnectivityStateListener`. */
export type GrpcConnectivityListener = (
  subchannel: unknown,
  previousState: number,
  newState: number,
  keepaliveTime: number,
  errorMessage?: string,
) => void;

/** grpc-js's `PickArgs`. */
export interface GrpcPickArgs {
  metadata: GrpcMetadata;
}

/** grpc-js's `PickResult`. */
export interface GrpcPickResult {
  pickResultType: number;
  subchannel: GrpcSubchannel | null;
  status: GrpcStatusObject | null;
  onCallStarted: (() => void) | null;
  onCallEnded: ((statusCode: number, details: string, metadata: GrpcMetadata) => void) | null;
}

/** grpc-js's `Picker`. */
export interface GrpcPicker {
  pick(args: GrpcPickArgs): GrpcPickResult;
}

/** grpc-js's `ChannelControlHelper`, the methods meshlink calls. */
export interface GrpcChannelControlHelper {
  createSubchannel(address: { host: string; port: number }, options: GrpcChannelOptions): GrpcSubchannel;
  updateState(state: number, picker: GrpcPicker, errorMessage: string | null): void;
  requestReresolution(): void;
}

/** grpc-js's `LoadBalancer`. */
export interface GrpcLoadBalancer {
  updateAddressList(
    endpoints: GrpcStatusOr<GrpcAddressList[]>,
    config: unknown,
    options: GrpcChannelOptions,
    note: string,
  ): boolean;
  exitIdle(): void;
  resetBackoff(): void;
  destroy(): void;
  getTypeName(): string;
}

/** grpc-js's `SecureConnector`. */
export interface GrpcSecureConnector {
  connect(socket: Socket): Promise<{ socket: Socket; secure: boolean }>;
  waitForReady(): Promise<void>;
  getCallCredentials(): unknown;
  destroy(): void;
}

/** grpc-js's `ChannelCredentials` (an instance): the members meshlink's own credentials implement. */
export interface GrpcChannelCredentialsBase {
  compose(callCredentials: unknown): unknown;
  _isSecure(): boolean;
  _equals(other: unknown): boolean;
  _createSecureConnector(
    target: GrpcUri,
    options: GrpcChannelOptions,
    callCredentials?: unknown,
  ): GrpcSecureConnector;
}

/** What meshlink uses of the application's `@grpc/grpc-js` module. */
export interface GrpcModuleShape {
  readonly Metadata: new () => GrpcMetadata;
  readonly ChannelCredentials: abstract new () => GrpcChannelCredentialsBase;
  readonly credentials: { createEmpty(): unknown };
  readonly connectivityState: Readonly<Record<string, string | number>>;
  readonly experimental: {
    registerResolver(scheme: string, resolverClass: unknown): void;
    registerLoadBalancerType(name: string, loadBalancer: unknown, config: unknown): void;
    readonly PickResultType: Readonly<Record<string, string | number>>;
    readonly UnavailablePicker: new (status?: Partial<GrpcStatusObject>) => GrpcPicker;
  };
}

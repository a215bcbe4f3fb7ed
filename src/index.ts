/**
 * meshlink: an in-process service mesh for Node.js. Resolve a logical
 * service name through pluggable discovery backends, pick an endpoint in the
 * best cluster by zone and region, fail over across clusters with circuit
 * breakers, and make the call with trace context.
 *
 * What is exported is what an application and a discovery-backend author
 * need; the router, health, timer and policy machinery stays inside.
 *
 * @packageDocumentation
 */

// Creating and using a mesh.
export {
  type AdminAddress,
  type AdminOption,
  type BackendSpec,
  type ConfigWarning,
  ENV,
  type MeshOptions,
  type OutlierConfig,
  type PolicyConfig,
  type ResolvedConfig,
  type RoutingConfig,
} from "./config/config.js";
export { ERROR_CHANNEL, type InternalErrorMessage } from "./diagnostics.js";
// Discovery: the built-in backends, and what a backend author implements.
export {
  type ConsulDatacenter,
  type ConsulDiscoveryOptions,
  type ConsulTlsOptions,
  consulDiscovery,
} from "./discovery/consul/consul.js";
export type {
  BoundUpdate,
  ClusterStatus,
  DiscoveryBackend,
  DiscoveryUpdate,
  FailedUpdate,
  NotFoundUpdate,
  PendingUpdate,
  WatchOptions,
} from "./discovery/discovery.js";
export { type DnsCluster, type DnsDiscoveryOptions, dnsDiscovery } from "./discovery/dns.js";
export { createEndpoint, type Endpoint, type EndpointInit, type Locality } from "./discovery/endpoint.js";
export { type DiscoveryKindFactory, discoveryKinds, registerDiscoveryKind } from "./discovery/kinds.js";
export {
  type KubernetesCluster,
  type KubernetesClusterStatus,
  type KubernetesDiscoveryOptions,
  kubernetesDiscovery,
} from "./discovery/kubernetes/kubernetes.js";
export {
  parseServiceName,
  SERVICE_NAME_FORMS,
  type ServiceName,
  type ServiceNameKind,
} from "./discovery/names.js";
export type { ServiceState } from "./discovery/registry.js";
export {
  type StaticBackend,
  type StaticDiscoveryOptions,
  type StaticEndpoint,
  staticDiscovery,
} from "./discovery/static.js";
// Errors.
export {
  type AttemptRecord,
  BulkheadFullError,
  ConfigError,
  DeadlineExceededError,
  DiscoveryError,
  EgressDeniedError,
  type ErrorCode,
  ErrorCodes,
  InvalidEndpointError,
  isMeshError,
  KubernetesError,
  type KubernetesErrorReason,
  MeshClosedError,
  MeshError,
  type MeshErrorByCode,
  NoHealthyEndpointError,
  type NotRetriedReason,
  RequestFailedError,
  ServiceNameError,
  ServiceNotFoundError,
  TlsIdentityError,
  TlsMaterialError,
} from "./errors.js";
export {
  createMesh,
  getGlobalDispatcher,
  type Mesh,
  type ResolvedEndpoint,
  setGlobalDispatcher,
} from "./mesh.js";
// Deadlines on the server side: read what the caller has left.
export {
  type Deadline,
  GRPC_TIMEOUT_HEADER,
  type HeaderSource,
  readDeadline,
  TIMEOUT_HEADER,
} from "./resilience/deadline.js";
export type { BackoffOptions, BulkheadOptions, HedgingOptions } from "./resilience/policy.js";
export type { FailureRateOptions, HealthState, HealthView } from "./routing/health.js";
export type { BalancerPolicy, DistributeRule, PriorityLabel, SlowStartOptions } from "./routing/router.js";
export type { Subscription } from "./subscription.js";
// Observability: span attributes, metrics, events and describe() parts.
export type {
  ClusterDescription,
  EndpointDescription,
  MeshDescription,
  ServiceDescription,
  SourceDescription,
  TierDescription,
} from "./telemetry/describe.js";
export {
  type DiscoveryErrorEvent,
  type DiscoveryRecoveredEvent,
  type EndpointEjectedEvent,
  type EndpointRestoredEvent,
  EventChannels,
  type FailoverEndedEvent,
  type FailoverStartedEvent,
} from "./telemetry/events.js";
export { METER_NAME, Metric } from "./telemetry/metrics.js";
export { Attr, TRACER_NAME } from "./telemetry/tracing.js";
export type { MaterialSpec, MaterialSpecs } from "./tls/material.js";
// Mutual TLS and the egress guard.
export type { ResolvedTls, TlsOptions } from "./tls/options.js";
export type { ReloadOptions } from "./tls/source.js";
export type {
  CertificateInfo,
  DescribedError,
  ExpiryEvent,
  IdentityMatch,
  IdentitySettings,
  RotationEvent,
  TlsDescription,
  TlsMaterial,
  TlsMode,
} from "./tls/tls.js";
export { DEFAULT_EGRESS_DENY, type EgressOptions } from "./transport/egress.js";
// gRPC (`mesh.grpc`): its types, and the trailer that carries a meshlink error's code.
export {
  GRPC_ERROR_METADATA,
  type GrpcChannelCredentials,
  type GrpcInterceptor,
  type GrpcModule,
  type GrpcTlsConnectOptions,
  type GrpcTlsMaterial,
  type GrpcTlsPolicy,
  type GrpcTlsSource,
  type GrpcTlsTarget,
  type IdempotentMethods,
  type MeshGrpc,
  type SecureContextProvider,
} from "./transport/grpc/grpc.js";
export {
  HEDGE_HEADER,
  type MeshCallOptions,
  type MeshDispatchOptions,
  type MeshFetchInit,
  RETRYABLE_HEADER,
} from "./transport/http/headers.js";

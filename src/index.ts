/**
 * meshlink: an in-process service mesh for Node.js. Resolve a logical
 * service name through pluggable discovery backends, pick an endpoint in the
 * best cluster by zone and region, fail over across clusters with circuit
 * breakers, and make the call with trace context.
 *
 * @packageDocumentation
 */

export {
  type BackendSpec,
  ENV,
  type MeshOptions,
  type OutlierConfig,
  type PolicyConfig,
  parseFailoverList,
  type ResolvedConfig,
  type RoutingConfig,
} from "./config/config.js";
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
export {
  createEndpoint,
  type Endpoint,
  type EndpointInit,
  hostPort,
  type Locality,
} from "./discovery/endpoint.js";
export { type DiscoveryKindFactory, discoveryKinds, registerDiscoveryKind } from "./discovery/kinds.js";
export {
  parseServiceName,
  SERVICE_NAME_FORMS,
  type ServiceName,
  type ServiceNameKind,
  tryParseServiceName,
} from "./discovery/names.js";
export {
  Registry,
  type RegistryOptions,
  type ServiceSnapshot,
  type ServiceState,
  ServiceWatch,
  type SnapshotListener,
  type SourceState,
} from "./discovery/registry.js";
export {
  type StaticBackend,
  type StaticDiscoveryOptions,
  type StaticEndpoint,
  staticDiscovery,
} from "./discovery/static.js";
export {
  type AttemptRecord,
  BulkheadFullError,
  ConfigError,
  DeadlineExceededError,
  DiscoveryError,
  type ErrorCode,
  ErrorCodes,
  isMeshError,
  MeshClosedError,
  MeshError,
  NoHealthyEndpointError,
  RequestFailedError,
  ServiceNameError,
  ServiceNotFoundError,
} from "./errors.js";
export {
  createMesh,
  type EndpointDescription,
  type Mesh,
  type MeshDescription,
  type ResolvedEndpoint,
  type ServiceDescription,
  type SourceDescription,
} from "./mesh.js";
export { RetryBudget, type RetryBudgetOptions } from "./resilience/budget.js";
export {
  type Deadline,
  formatGrpcTimeout,
  GRPC_TIMEOUT_HEADER,
  type HeaderSource,
  parseGrpcTimeout,
  parseTimeoutHeader,
  readDeadline,
  TIMEOUT_HEADER,
} from "./resilience/deadline.js";
export { LatencyHistogram, type LatencyHistogramOptions } from "./resilience/latency.js";
export {
  type BackoffOptions,
  type BulkheadOptions,
  CallPolicy,
  type CallPolicyOptions,
  classifyError,
  type FailureKind,
  type HedgingOptions,
  isIdempotent,
  parseRetryAfter,
  ServiceCallState,
} from "./resilience/policy.js";
export { sharedTimerWheel, TimerEntry, TimerWheel, type TimerWheelOptions } from "./resilience/timer.js";
export {
  EndpointHealth,
  type FailureRateOptions,
  type HealthOptions,
  type HealthState,
  HealthTracker,
  type HealthView,
  OutlierBreaker,
} from "./routing/health.js";
export {
  Balancer,
  type BalancerOptions,
  type BalancerPolicy,
  type DistributeRule,
  type LocalityGroup,
  matchLocality,
  type PickConstraints,
  type PriorityLabel,
  type PriorityLoad,
  priorityLoad,
  type RoutedEndpoint,
  type RouterOptions,
  type SlowStartOptions,
  type TierHealth,
  type TierInfo,
  TierMap,
  type TierState,
} from "./routing/router.js";
export type { Subscription } from "./subscription.js";
export { Attr, TRACER_NAME } from "./telemetry/tracing.js";
export { MeshDispatcher, type MeshDispatcherOptions } from "./transport/http/dispatcher.js";
export {
  HEDGE_HEADER,
  type HttpRoutes,
  type MeshInterceptorOptions,
  meshInterceptor,
  RETRYABLE_HEADER,
} from "./transport/http/interceptor.js";

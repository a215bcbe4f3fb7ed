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
} from "./config/config.js";
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
  ConfigError,
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
  type Mesh,
  type MeshDescription,
  type ResolvedEndpoint,
  type ServiceDescription,
  type SourceDescription,
} from "./mesh.js";
export {
  EndpointHealth,
  type HealthOptions,
  type HealthState,
  HealthTracker,
  type HealthView,
} from "./resilience/health.js";
export {
  CallPolicy,
  type CallPolicyOptions,
  classifyError,
  type FailureKind,
  isIdempotent,
} from "./resilience/policy.js";
export {
  Balancer,
  type PickConstraints,
  type RoutedEndpoint,
  type RouterOptions,
  type TierInfo,
  TierMap,
} from "./routing/router.js";
export { Attr, TRACER_NAME } from "./telemetry/tracing.js";
export {
  type HttpRoutes,
  type MeshInterceptorOptions,
  meshInterceptor,
} from "./transport/http/interceptor.js";

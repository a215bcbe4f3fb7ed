/**
 * The Kubernetes API payloads the backend reads, as the API server sends
 * them in JSON: `discovery.k8s.io/v1` EndpointSlice and its list, core `v1`
 * Service and its list, `meta/v1` Status, and watch events. Objects are
 * parsed loosely (the server adds fields as it evolves); only what the
 * backend uses is checked.
 *
 * Two details of the real wire format matter here: items of a list carry no
 * `kind`/`apiVersion` (the list does), and Go serialises nil slices as
 * `null` (`"endpoints": null` for a slice with no endpoints, `"ports": null`).
 *
 * @module
 */

import { z } from "zod";

const nullishString = z.string().nullish();
const nullishBool = z.boolean().nullish();

/** `meta/v1` ObjectMeta: the fields the backend reads. */
const objectMetaSchema = z.looseObject({
  name: z.string().optional(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  labels: z.record(z.string(), z.string()).nullish(),
});

/** `meta/v1` ListMeta. */
const listMetaSchema = z.looseObject({
  resourceVersion: z.string().optional(),
  continue: z.string().optional(),
});

const endpointConditionsSchema = z.looseObject({
  ready: nullishBool,
  serving: nullishBool,
  terminating: nullishBool,
});

const forNameSchema = z.looseObject({ name: z.string() });

const endpointSchema = z.looseObject({
  addresses: z.array(z.string()).nullish(),
  conditions: endpointConditionsSchema.nullish(),
  hostname: nullishString,
  targetRef: z.looseObject({}).nullish(),
  nodeName: nullishString,
  zone: nullishString,
  hints: z
    .looseObject({
      forZones: z.array(forNameSchema).nullish(),
      forNodes: z.array(forNameSchema).nullish(),
    })
    .nullish(),
});

const endpointPortSchema = z.looseObject({
  name: nullishString,
  protocol: nullishString,
  port: z.number().int().min(0).max(65535).nullish(),
  appProtocol: nullishString,
});

/** `discovery.k8s.io/v1` EndpointSlice (without `kind` inside a list). */
export const endpointSliceSchema = z.looseObject({
  kind: z.string().optional(),
  apiVersion: z.string().optional(),
  metadata: objectMetaSchema,
  // IPv4, IPv6 or FQDN; other values are skipped when mapping (forward compatibility).
  addressType: z.string(),
  endpoints: z.array(endpointSchema).nullish(),
  ports: z.array(endpointPortSchema).nullish(),
});

/** An EndpointSlice as parsed. */
export type EndpointSlice = z.output<typeof endpointSliceSchema>;

const servicePortSchema = z.looseObject({
  name: nullishString,
  protocol: nullishString,
  appProtocol: nullishString,
  port: z.number().int().min(1).max(65535),
  targetPort: z.union([z.number().int(), z.string()]).nullish(),
  nodePort: z.number().int().nullish(),
});

/** Core `v1` Service (without `kind` inside a list). */
export const serviceSchema = z.looseObject({
  kind: z.string().optional(),
  apiVersion: z.string().optional(),
  metadata: objectMetaSchema,
  spec: z
    .looseObject({
      ports: z.array(servicePortSchema).nullish(),
      type: z.string().optional(),
      clusterIP: z.string().optional(),
    })
    .optional(),
});

/** A Service as parsed. */
export type Service = z.output<typeof serviceSchema>;

/** `meta/v1` Status: what the API server answers instead of an object when a call fails. */
export const statusSchema = z.looseObject({
  kind: z.literal("Status"),
  apiVersion: z.string().optional(),
  status: z.string().optional(),
  message: z.string().optional(),
  reason: z.string().optional(),
  code: z.number().int().optional(),
});

/** A Status as parsed. */
export type Status = z.output<typeof statusSchema>;

/** A list response (`<Kind>List`): its items are checked one by one with the item schema. */
export const listSchema = z.looseObject({
  kind: z.string().optional(),
  apiVersion: z.string().optional(),
  metadata: listMetaSchema.optional(),
  items: z.array(z.unknown()).nullable(),
});

/** The event types of a watch stream. */
export const WATCH_EVENT_TYPES = ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"] as const;

/** One line of a watch stream. */
export const watchEventSchema = z.looseObject({
  type: z.enum(WATCH_EVENT_TYPES),
  object: z.looseObject({}),
});

/** A watch event as parsed; `object` is checked by the reflector, which knows its kind. */
export type WatchEvent = z.output<typeof watchEventSchema>;

/** What a reflector needs to know about the resource it lists and watches. */
export interface ResourceKind<T> {
  /** The object kind, e.g. `EndpointSlice`. */
  readonly kind: string;
  /** The list kind, e.g. `EndpointSliceList`. */
  readonly listKind: string;
  /** The group/version, e.g. `discovery.k8s.io/v1`. */
  readonly apiVersion: string;
  /** The object schema. */
  readonly schema: z.ZodType<T>;
}

/** EndpointSlices. */
export const ENDPOINT_SLICES: ResourceKind<EndpointSlice> = {
  kind: "EndpointSlice",
  listKind: "EndpointSliceList",
  apiVersion: "discovery.k8s.io/v1",
  schema: endpointSliceSchema,
};

/** Services. */
export const SERVICES: ResourceKind<Service> = {
  kind: "Service",
  listKind: "ServiceList",
  apiVersion: "v1",
  schema: serviceSchema,
};

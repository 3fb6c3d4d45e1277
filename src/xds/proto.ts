// Loads nodemesh's .proto files (src/xds/proto/) once and exposes typed encode/decode helpers
// and the gRPC service definitions built from them.
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { XdsError } from '../errors.js';

import type { Action, AppProtocol, Scope, TunnelProtocol, WorkloadStatus, WorkloadType } from '../state/index.js';
import type { PbHttpAttributes, PbRequestAuthentication, PbServiceRoutes } from './proto-l7.js';

export const TYPE_ADDRESS = 'type.googleapis.com/istio.workload.Address';
export const TYPE_AUTHORIZATION = 'type.googleapis.com/istio.security.Authorization';
/** nodemesh's own: a Service's L7 routes, named `ns/hostname` (nodemesh/v1/routes.proto). */
export const TYPE_SERVICE_ROUTES = 'type.googleapis.com/nodemesh.v1.ServiceRoutes';
/** nodemesh's own: a RequestAuthentication, named `ns/name` (nodemesh/v1/requestauthn.proto). */
export const TYPE_REQUEST_AUTHN = 'type.googleapis.com/nodemesh.v1.RequestAuthentication';

/**
 * The .proto files live in the source tree and are read at run time, so no build step has to
 * copy them: from src/xds/proto.ts (vitest) they are at ./proto/, from dist/xds/proto.js at
 * ../../src/xds/proto/.
 */
function protoDir(): string {
  const candidates = [new URL('./proto/', import.meta.url), new URL('../../src/xds/proto/', import.meta.url)];
  for (const c of candidates) {
    const p = fileURLToPath(c);
    if (existsSync(join(p, 'istio/workload/workload.proto'))) return p;
  }
  throw new XdsError('NM_ERR_XDS_RESOURCE', `cannot find the .proto files; looked in ${candidates.map((c) => fileURLToPath(c)).join(', ')}. The src/xds/proto directory must ship next to dist/`,
  );
}

const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'istio/workload/workload.proto',
  'istio/security/authorization.proto',
  'istio/v1/auth/ca.proto',
  'nodemesh/v1/podstatus.proto',
  'nodemesh/v1/routes.proto',
  'nodemesh/v1/requestauthn.proto',
];

let root: protobuf.Root | undefined;

/** The protobufjs root holding every nodemesh message type (camelCase field names). */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const dir = protoDir();
  const r = new protobuf.Root();
  r.resolvePath = (_origin: string, target: string) => (isAbsolute(target) ? target : join(dir, target));
  r.loadSync(FILES, { keepCase: false });
  r.resolveAll();
  root = r;
  return r;
}

/** Options used for every decode: enums as names, 64-bit ints as numbers, defaults filled. */
const TO_OBJECT: protobuf.IConversionOptions = { enums: String, longs: Number, defaults: true, arrays: true, objects: true, oneofs: true };

export interface Codec<T> {
  readonly type: protobuf.Type;
  encode(value: T): Buffer;
  decode(bytes: Uint8Array): T;
}

function codec<T>(name: string): Codec<T> {
  let t: protobuf.Type | undefined;
  const type = (): protobuf.Type => (t ??= protoRoot().lookupType(name));
  return {
    get type() {
      return type();
    },
    encode(value: T): Buffer {
      const ty = type();
      const msg = ty.fromObject(value as Record<string, unknown>);
      return Buffer.from(ty.encode(msg).finish());
    },
    decode(bytes: Uint8Array): T {
      const ty = type();
      return ty.toObject(ty.decode(bytes), TO_OBJECT) as T;
    },
  };
}

// ---- message shapes (camelCase, as protobufjs presents them) -------------------------------

/** google.protobuf.Any; protobufjs's bundled definition keeps the snake_case name. */
export interface PbAny {
  type_url: string;
  value: Uint8Array;
}

export interface PbStatus {
  code: number;
  message: string;
  details?: PbAny[];
}

/** google.protobuf.Struct / Value, as protobufjs presents them. */
export interface PbValue {
  nullValue?: string | number;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: PbStruct;
  listValue?: { values: PbValue[] };
  kind?: string;
}
export interface PbStruct {
  fields: Record<string, PbValue>;
}

export interface PbNode {
  id: string;
  cluster?: string;
  metadata?: PbStruct | null;
  userAgentName?: string;
}

export interface PbDeltaRequest {
  node?: PbNode | null;
  typeUrl: string;
  resourceNamesSubscribe?: string[];
  resourceNamesUnsubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
  errorDetail?: PbStatus | null;
}

export interface PbResource {
  version: string;
  resource?: PbAny | null;
  name: string;
  aliases?: string[];
}

export interface PbDeltaResponse {
  systemVersionInfo?: string;
  resources: PbResource[];
  typeUrl: string;
  nonce: string;
  removedResources: string[];
}

export type PbTunnelProtocol = TunnelProtocol;
export type PbWorkloadStatus = WorkloadStatus;
export type PbWorkloadType = WorkloadType;
export type PbAppProtocol = AppProtocol;

export interface PbPort {
  servicePort: number;
  targetPort: number;
  appProtocol?: PbAppProtocol;
}

export interface PbNetworkAddress {
  network: string;
  address: Uint8Array;
}

export interface PbWorkload {
  uid: string;
  name: string;
  namespace: string;
  addresses: Uint8Array[];
  network?: string;
  tunnelProtocol: PbTunnelProtocol;
  trustDomain: string;
  serviceAccount: string;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: PbWorkloadType;
  workloadName: string;
  authorizationPolicies: string[];
  status: PbWorkloadStatus;
  clusterId: string;
  hostname?: string;
  services: Record<string, { ports: PbPort[] }>;
  /** nodemesh extension (field 1000): the pod's labels. */
  labels?: Record<string, string>;
}

export interface PbService {
  name: string;
  namespace: string;
  hostname: string;
  addresses: PbNetworkAddress[];
  ports: PbPort[];
  subjectAltNames: string[];
}

export interface PbAddress {
  workload?: PbWorkload | null;
  service?: PbService | null;
  /** The oneof's set member, on decode. */
  type?: 'workload' | 'service';
}

export type PbScope = Scope;
export type PbAction = Action;

export interface PbStringMatch {
  exact?: string;
  prefix?: string;
  suffix?: string;
  presence?: Record<string, never>;
  matchType?: 'exact' | 'prefix' | 'suffix' | 'presence';
}

export interface PbCidr {
  address: Uint8Array;
  length: number;
}

export interface PbServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

export interface PbMatch {
  namespaces?: PbStringMatch[];
  notNamespaces?: PbStringMatch[];
  principals?: PbStringMatch[];
  notPrincipals?: PbStringMatch[];
  sourceIps?: PbCidr[];
  notSourceIps?: PbCidr[];
  destinationIps?: PbCidr[];
  notDestinationIps?: PbCidr[];
  destinationPorts?: number[];
  notDestinationPorts?: number[];
  serviceAccounts?: PbServiceAccountMatch[];
  notServiceAccounts?: PbServiceAccountMatch[];
  /** nodemesh extension (field 1000), only in Authorization.l7_rules. */
  http?: PbHttpAttributes | null;
}

export interface PbRule {
  clauses: { matches: PbMatch[] }[];
}

export interface PbAuthorization {
  name: string;
  namespace: string;
  scope: PbScope;
  action: PbAction;
  rules: PbRule[];
  dryRun: boolean;
  /** nodemesh extension (field 1000): the rules with their HTTP attributes; empty: none. */
  l7Rules?: PbRule[];
}

export interface PbCertificateRequest {
  csr: string;
  validityDuration: number;
  metadata?: PbStruct | null;
}

export interface PbCertificateResponse {
  certChain: string[];
}

export interface PbPodStatus {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  phase: string;
}

export interface PbPodStatusReport {
  node: string;
  pods: PbPodStatus[];
}

export interface PbPodStatusReply {
  accepted: number;
  unknown: string[];
  /** `<namespace>/<name>: <reason>` of entries the control plane refused (field 3). */
  refused?: string[];
}

export const codecs = {
  deltaRequest: codec<PbDeltaRequest>('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
  deltaResponse: codec<PbDeltaResponse>('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  address: codec<PbAddress>('istio.workload.Address'),
  authorization: codec<PbAuthorization>('istio.security.Authorization'),
  serviceRoutes: codec<PbServiceRoutes>('nodemesh.v1.ServiceRoutes'),
  requestAuthn: codec<PbRequestAuthentication>('nodemesh.v1.RequestAuthentication'),
  certRequest: codec<PbCertificateRequest>('istio.v1.auth.IstioCertificateRequest'),
  certResponse: codec<PbCertificateResponse>('istio.v1.auth.IstioCertificateResponse'),
  podStatusReport: codec<PbPodStatusReport>('nodemesh.v1.PodStatusReport'),
  podStatusReply: codec<PbPodStatusReply>('nodemesh.v1.PodStatusReply'),
};

// ---- google.protobuf.Struct <-> plain JSON ------------------------------------------------

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };

export function toStruct(obj: Record<string, JsonValue>): PbStruct {
  const val = (v: JsonValue): PbValue => {
    if (v === null) return { nullValue: 0 };
    if (typeof v === 'boolean') return { boolValue: v };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'string') return { stringValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(val) } };
    return { structValue: toStruct(v) };
  };
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, val(v)])) };
}

export function fromStruct(s: PbStruct | null | undefined): Record<string, JsonValue> {
  const val = (v: PbValue): JsonValue => {
    switch (v.kind) {
      case 'boolValue':
        return v.boolValue ?? false;
      case 'numberValue':
        return v.numberValue ?? 0;
      case 'stringValue':
        return v.stringValue ?? '';
      case 'listValue':
        return (v.listValue?.values ?? []).map(val);
      case 'structValue':
        return fromStruct(v.structValue);
      default:
        return null;
    }
  };
  return Object.fromEntries(Object.entries(s?.fields ?? {}).map(([k, v]) => [k, val(v)]));
}

// ---- gRPC service definitions -------------------------------------------------------------

function method<Req, Res>(path: string, req: Codec<Req>, res: Codec<Res>, requestStream: boolean, responseStream: boolean) {
  return {
    path,
    requestStream,
    responseStream,
    originalName: path.slice(path.lastIndexOf('/') + 1),
    requestSerialize: (v: Req) => req.encode(v),
    requestDeserialize: (b: Buffer) => req.decode(b),
    responseSerialize: (v: Res) => res.encode(v),
    responseDeserialize: (b: Buffer) => res.decode(b),
  };
}

export const adsService = {
  DeltaAggregatedResources: method(
    '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
    codecs.deltaRequest,
    codecs.deltaResponse,
    true,
    true,
  ),
} satisfies ServiceDefinition;

export const caService = {
  CreateCertificate: method('/istio.v1.auth.IstioCertificateService/CreateCertificate', codecs.certRequest, codecs.certResponse, false, false),
} satisfies ServiceDefinition;

export const podStatusService = {
  Report: method('/nodemesh.v1.PodStatusService/Report', codecs.podStatusReport, codecs.podStatusReply, false, false),
} satisfies ServiceDefinition;

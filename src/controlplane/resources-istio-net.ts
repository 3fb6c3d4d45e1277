// Typed views of the networking.istio.io resources the route compiler reads: VirtualService and
// DestinationRule (v1, v1beta1 and v1alpha3 have the same shape), as validate-istio-net.ts builds them.
import type { FieldPath, K8sObject } from '../k8s/index.js';
import type { HeaderModifier, LbAlgorithm } from '../state/index.js';
import type { RouteNote } from './resources.js';

export const NETWORKING_GROUP = 'networking.istio.io';
/** The gateway name that stands for every sidecar or node proxy of the mesh. */
export const MESH_GATEWAY = 'mesh';

/** Istio's StringMatch; `Present` is a header or query parameter given as `{}`. */
export interface VsStringMatch {
  type: 'Exact' | 'Prefix' | 'RegularExpression' | 'Present';
  value: string;
}

export interface VsMatch {
  name?: string;
  uri?: VsStringMatch;
  /** An exact method (upper case); other method forms are refused by the validator. */
  method?: string;
  headers: Array<{ name: string; match: VsStringMatch }>;
  withoutHeaders: Array<{ name: string; match: VsStringMatch }>;
  queryParams: Array<{ name: string; match: VsStringMatch }>;
  /** Restricts the match to one port of the destination Service. */
  port?: number;
  /** `gateways`; empty: whatever the VirtualService is bound to. */
  gateways: string[];
  /** Why the mesh cannot evaluate this match (a note says so); the compiler drops it. */
  unsupported?: string;
  line: number;
}

export interface VsDestination {
  host: string;
  subset?: string;
  port?: number;
}

export interface VsHeaders {
  request?: HeaderModifier;
  response?: HeaderModifier;
}

export interface VsRouteDestination {
  destination: VsDestination;
  weight?: number;
  headers: VsHeaders;
  line: number;
}

export interface VsRetries {
  attempts: number;
  perTryTimeoutMs?: number;
  backoffMs?: number;
  /** `retryOn` split at commas; undefined when unset (Istio's default conditions apply). */
  retryOn?: string[];
  line: number;
}

/** `percent` 0-100; unset in the resource is 0 (Istio: "if left unspecified, no request will be" affected). */
export interface VsFault {
  delay?: { ms: number; percent: number };
  abort?: { httpStatus?: number; grpcStatus?: number; percent: number };
}

export interface VsHttpRoute {
  name?: string;
  match: VsMatch[];
  route: VsRouteDestination[];
  redirect?: { uri?: string; authority?: string; port?: number; scheme?: string; redirectCode: number; prefixRewrite?: string };
  rewrite?: { uri?: string; authority?: string };
  timeoutMs?: number;
  retries?: VsRetries;
  fault?: VsFault;
  /** `mirror` (with `mirrorPercentage`) and `mirrors`, in that order. */
  mirrors: Array<{ destination: VsDestination; percent: number; line: number; path: FieldPath }>;
  headers: VsHeaders;
  /** An action the mesh cannot take (directResponse, delegate): matching requests get 500. */
  unsupportedAction?: string;
  line: number;
}

export interface VirtualService extends K8sObject {
  kind: 'VirtualService';
  vs: {
    hosts: string[];
    /** The line of each host, for messages. */
    hostLines: number[];
    /** Empty: bound to the mesh only (Istio's default). */
    gateways: string[];
    http: VsHttpRoute[];
    exportTo: string[];
    createdAt?: string;
    notes: RouteNote[];
  };
}

export interface DrTrafficPolicy {
  /** The sections given: a subset's section replaces the whole section of the rule's policy, as in Istio. */
  set: Array<'loadBalancer' | 'connectionPool' | 'outlierDetection'>;
  loadBalancer?: LbAlgorithm;
  connectionPool?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number; maxRequestsPerConnection?: number };
  outlierDetection?: { consecutive5xxErrors: number; intervalMs: number; baseEjectionTimeMs: number; maxEjectionPercent: number };
}

export interface DestinationRule extends K8sObject {
  kind: 'DestinationRule';
  dr: {
    host: string;
    trafficPolicy?: DrTrafficPolicy;
    subsets: Array<{ name: string; labels: Record<string, string>; trafficPolicy?: DrTrafficPolicy; line: number }>;
    exportTo: string[];
    /** `workloadSelector` is set: the rule is for some clients only, which the mesh cannot tell apart. */
    workloadSelector: boolean;
    createdAt?: string;
    notes: RouteNote[];
    line: number;
  };
}

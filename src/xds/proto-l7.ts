// The shapes of nodemesh's L7 messages as protobufjs presents them (camelCase): ServiceRoutes
// (nodemesh/v1/routes.proto), RequestAuthentication (nodemesh/v1/requestauthn.proto) and the
// HTTP attributes of Authorization.l7_rules (istio/security/authorization.proto extensions).
// Decoded, an enum is its name, or its number when this build does not know it.
import type { PbCidr, PbStringMatch } from './proto.js';

export type PbPathMatchType = 'TYPE_UNSPECIFIED' | 'EXACT' | 'PATH_PREFIX' | 'PREFIX' | 'REGULAR_EXPRESSION';
export type PbValueMatchType = 'TYPE_UNSPECIFIED' | 'EXACT' | 'PREFIX' | 'REGULAR_EXPRESSION' | 'PRESENT';
export type PbPathModifierType = 'TYPE_UNSPECIFIED' | 'REPLACE_FULL_PATH' | 'REPLACE_PREFIX_MATCH';
export type PbLoadBalancer = 'LOAD_BALANCER_UNSPECIFIED' | 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';

export interface PbPathMatch {
  type: PbPathMatchType;
  value: string;
}

export interface PbValueMatch {
  name: string;
  type: PbValueMatchType;
  value: string;
  invert?: boolean;
}

export interface PbHttpMatch {
  path?: PbPathMatch | null;
  method?: string;
  headers?: PbValueMatch[];
  queryParams?: PbValueMatch[];
}

export interface PbHeader {
  name: string;
  value: string;
}

export interface PbHeaderModifier {
  set?: PbHeader[];
  add?: PbHeader[];
  remove?: string[];
}

export interface PbPathModifier {
  type: PbPathModifierType;
  value: string;
}

export interface PbRouteFilter {
  requestHeaderModifier?: PbHeaderModifier | null;
  responseHeaderModifier?: PbHeaderModifier | null;
  urlRewrite?: { hostname?: string; path?: PbPathModifier | null } | null;
  requestRedirect?: { scheme?: string; hostname?: string; port?: number; path?: PbPathModifier | null; statusCode: number } | null;
  requestMirror?: { backend?: PbBackendRef | null; percent: number } | null;
  /** The oneof's set member, on decode. */
  filter?: 'requestHeaderModifier' | 'responseHeaderModifier' | 'urlRewrite' | 'requestRedirect' | 'requestMirror';
}

export interface PbBackendRef {
  service: string;
  port: number;
  weight: number;
  subset?: { name: string; labels?: Record<string, string> } | null;
  filters?: PbRouteFilter[];
}

export interface PbRetryPolicy {
  attempts: number;
  backoffMs: number;
  codes?: number[];
  onConnectFailure: boolean;
  perTryTimeoutMs?: number;
}

export interface PbFaultPolicy {
  delay?: { ms: number; percent: number } | null;
  abort?: { status: number; percent: number; grpcStatus?: number } | null;
}

export interface PbRouteRule {
  source: string;
  matches?: PbHttpMatch[];
  filters?: PbRouteFilter[];
  backends?: PbBackendRef[];
  timeoutMs?: number;
  backendTimeoutMs?: number;
  retry?: PbRetryPolicy | null;
  fault?: PbFaultPolicy | null;
}

export interface PbRouteEntry {
  match?: PbHttpMatch | null;
  rule: number;
  hostnames?: string[];
}

export interface PbRouteTable {
  port: number;
  consumerNamespace?: string;
  entries?: PbRouteEntry[];
}

export interface PbTrafficPolicy {
  loadBalancer?: PbLoadBalancer;
  connectionPool?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number; maxRequestsPerConnection?: number } | null;
  /** protobufjs camel-cases `consecutive_5xx_errors` only after the letter: `consecutive_5xxErrors`. */
  outlierDetection?: { consecutive_5xxErrors: number; intervalMs: number; baseEjectionTimeMs: number; maxEjectionPercent: number } | null;
}

export interface PbSubset {
  name: string;
  labels?: Record<string, string>;
  trafficPolicy?: PbTrafficPolicy | null;
}

export interface PbServiceRoutes {
  service: string;
  rules?: PbRouteRule[];
  tables?: PbRouteTable[];
  trafficPolicy?: PbTrafficPolicy | null;
  subsets?: PbSubset[];
}

export interface PbJwtRule {
  issuer: string;
  audiences?: string[];
  jwks: string;
  fromHeaders?: { name: string; prefix: string }[];
  fromParams?: string[];
  forwardOriginalToken: boolean;
}

export interface PbRequestAuthentication {
  name: string;
  namespace: string;
  scope: 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR';
  selector?: Record<string, string>;
  jwtRules?: PbJwtRule[];
}

export interface PbValueCondition {
  key: string;
  values?: PbStringMatch[];
  notValues?: PbStringMatch[];
}

export interface PbHttpAttributes {
  methods?: PbStringMatch[];
  notMethods?: PbStringMatch[];
  paths?: PbStringMatch[];
  notPaths?: PbStringMatch[];
  hosts?: PbStringMatch[];
  notHosts?: PbStringMatch[];
  requestPrincipals?: PbStringMatch[];
  notRequestPrincipals?: PbStringMatch[];
  remoteIps?: PbCidr[];
  notRemoteIps?: PbCidr[];
  headers?: PbValueCondition[];
  claims?: PbValueCondition[];
}

// Typed views of the policy and routing resources the control plane reads besides the core
// ones: security.istio.io AuthorizationPolicy and PeerAuthentication, Gateway API HTTPRoute
// (networking.istio.io VirtualService and DestinationRule are in resources-istio-net.ts).
import type { FieldPath, K8sObject } from '../k8s/index.js';
import type { HeaderModifier, PathModifier } from '../state/index.js';

/** The AuthorizationPolicy CRD's own actions (wider than the xDS ALLOW/DENY in state/). */
export const AP_ACTIONS = ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'] as const;
export type ApAction = (typeof AP_ACTIONS)[number];

export interface ApSource {
  principals: string[];
  notPrincipals: string[];
  requestPrincipals: string[];
  notRequestPrincipals: string[];
  namespaces: string[];
  notNamespaces: string[];
  serviceAccounts: string[];
  notServiceAccounts: string[];
  ipBlocks: string[];
  notIpBlocks: string[];
  remoteIpBlocks: string[];
  notRemoteIpBlocks: string[];
}

export interface ApOperation {
  hosts: string[];
  notHosts: string[];
  ports: string[];
  notPorts: string[];
  methods: string[];
  notMethods: string[];
  paths: string[];
  notPaths: string[];
}

export interface ApCondition {
  key: string;
  values: string[];
  notValues: string[];
}

export interface ApRule {
  from: ApSource[];
  to: ApOperation[];
  when: ApCondition[];
  /** 1-based line of the rule in its file, for messages. */
  line: number;
}

export interface AuthorizationPolicy extends K8sObject {
  kind: 'AuthorizationPolicy';
  policy: {
    /** matchLabels; undefined when the policy has no selector (namespace- or mesh-wide). */
    selector?: Record<string, string>;
    action: ApAction;
    rules: ApRule[];
    /** The `istio.io/dry-run: "true"` annotation. */
    dryRun: boolean;
    /** targetRef/targetRefs: the policy is for waypoints and gateways, not L4 enforcement. */
    targetRefs: boolean;
    provider?: string;
  };
}

/** PeerAuthentication's mTLS modes. */
export const MTLS_MODES = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'] as const;
export type MtlsMode = (typeof MTLS_MODES)[number];

export interface PeerAuthentication extends K8sObject {
  kind: 'PeerAuthentication';
  peer: {
    selector?: Record<string, string>;
    mode: MtlsMode;
    /** Port number → mode. */
    portLevelMtls: Record<number, MtlsMode>;
    /** metadata.creationTimestamp, when given: the oldest policy wins a conflict. */
    createdAt?: string;
  };
}

export interface HttpRouteMatch {
  path?: { type: 'Exact' | 'PathPrefix' | 'RegularExpression'; value: string };
  method?: string;
  headers: { name: string; value: string; type: 'Exact' | 'RegularExpression' }[];
  queryParams: { name: string; value: string; type: 'Exact' | 'RegularExpression' }[];
}

/** A reference to an object without a weight: a RequestMirror's backendRef. */
export interface HttpBackendObjectRef {
  name: string;
  namespace?: string;
  kind?: string;
  group?: string;
  port?: number;
}

export interface HttpBackendRef extends HttpBackendObjectRef {
  weight: number;
  /** Filters for requests sent to this backend only. */
  filters: HttpRouteFilter[];
  /** 1-based line of the backendRef in its file, for messages. */
  line: number;
}

/**
 * A validated HTTPRoute filter. CORS, ExtensionRef and ExternalAuth are kept by name only: the
 * route compiler refuses or ignores them with a problem (routes.ts says which and why).
 */
export type HttpRouteFilter =
  | { type: 'RequestHeaderModifier' | 'ResponseHeaderModifier'; modifier: HeaderModifier }
  | { type: 'URLRewrite'; hostname?: string; path?: PathModifier }
  | { type: 'RequestRedirect'; scheme?: 'http' | 'https'; hostname?: string; port?: number; path?: PathModifier; statusCode: number }
  /** `percent` 0-100, from `percent` or `fraction` (100 when neither is set). */
  | { type: 'RequestMirror'; backendRef: HttpBackendObjectRef; percent: number; line: number }
  | { type: 'CORS' | 'ExtensionRef' | 'ExternalAuth'; line: number };

export interface HttpRouteRule {
  name?: string;
  matches: HttpRouteMatch[];
  backendRefs: HttpBackendRef[];
  filters: HttpRouteFilter[];
  /** Milliseconds; 0 (`0s`) means no timeout. */
  timeouts?: { request?: number; backendRequest?: number };
  /** `retry` (Gateway API v1.2+); unset fields are the implementation's to choose. */
  retry?: { attempts?: number; backoffMs?: number; codes: number[] };
  line: number;
}

/** A field the validator accepted but the mesh does not implement, found while typing a resource. */
export interface RouteNote {
  path: FieldPath;
  line: number;
  message: string;
  /** `error` when requests the field concerns get an error status instead (fail closed). */
  severity?: 'error';
}

export interface HttpRoute extends K8sObject {
  kind: 'HTTPRoute';
  route: {
    parentRefs: { name: string; namespace?: string; kind?: string; group?: string; port?: number; sectionName?: string; line?: number }[];
    hostnames: string[];
    rules: HttpRouteRule[];
    /** metadata.creationTimestamp, when given: route precedence breaks ties by age. */
    createdAt?: string;
    notes: RouteNote[];
  };
}

export const POLICY_GROUP = 'security.istio.io';
export const GATEWAY_GROUP = 'gateway.networking.k8s.io';

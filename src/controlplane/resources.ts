// Typed views of the policy and routing resources the control plane reads besides the core
// ones: security.istio.io AuthorizationPolicy and PeerAuthentication, Gateway API HTTPRoute.
import type { K8sObject } from '../k8s/index.js';

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

export interface HttpBackendRef {
  name: string;
  namespace?: string;
  kind?: string;
  group?: string;
  port?: number;
  weight: number;
}

export interface HttpRoute extends K8sObject {
  kind: 'HTTPRoute';
  route: {
    parentRefs: { name: string; namespace?: string; kind?: string; group?: string; port?: number; sectionName?: string }[];
    hostnames: string[];
    rules: { matches: HttpRouteMatch[]; backendRefs: HttpBackendRef[]; filters: Record<string, unknown>[]; timeouts?: Record<string, string> }[];
  };
}

export const POLICY_GROUP = 'security.istio.io';
export const GATEWAY_GROUP = 'gateway.networking.k8s.io';

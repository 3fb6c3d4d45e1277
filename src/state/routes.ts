// The L7 route model the source node's proxy follows (docs/l7.md): Gateway API HTTPRoute (GAMMA)
// and Istio VirtualService/DestinationRule compile into it in the control plane, it travels
// over xDS as nodemesh.v1.ServiceRoutes (docs/xds.md), and the proxy matches requests against
// it. One ServiceRoutes per Service that has routes or a traffic policy.

/** How a request path is compared. `PathPrefix` is Gateway API's (whole segments); `Prefix` is VirtualService's (plain string). */
export type PathMatchType = 'Exact' | 'PathPrefix' | 'Prefix' | 'RegularExpression';

export interface PathMatch {
  type: PathMatchType;
  value: string;
}

/** Header and query parameter values; `Present` ignores `value`. */
export type ValueMatchType = 'Exact' | 'Prefix' | 'RegularExpression' | 'Present';

export interface ValueMatch {
  /** Header names are compared case-insensitively, query parameter names exactly. */
  name: string;
  type: ValueMatchType;
  value: string;
  /** VirtualService `withoutHeaders`: the request matches when this one does not. */
  invert?: boolean;
}

/** Every field set must match (AND). A match with nothing set matches every request. */
export interface HttpMatch {
  path?: PathMatch;
  /** Upper case, e.g. `GET`. */
  method?: string;
  headers: ValueMatch[];
  queryParams: ValueMatch[];
}

export interface HeaderModifier {
  /** Replaces the field (or adds it); names as given. */
  set: Array<[string, string]>;
  /** Appends a value (a new field line). */
  add: Array<[string, string]>;
  /** Field names to remove, case-insensitively. */
  remove: string[];
}

/** URLRewrite and RequestRedirect path changes. */
export type PathModifier = { type: 'ReplaceFullPath'; value: string } | { type: 'ReplacePrefixMatch'; value: string };

export type RouteFilter =
  | { type: 'RequestHeaderModifier'; modifier: HeaderModifier }
  | { type: 'ResponseHeaderModifier'; modifier: HeaderModifier }
  | { type: 'URLRewrite'; hostname?: string; path?: PathModifier }
  | { type: 'RequestRedirect'; scheme?: string; hostname?: string; port?: number; path?: PathModifier; statusCode: number }
  /** A copy of each request goes to `backend` (the response is discarded); `percent` 0-100. */
  | { type: 'RequestMirror'; backend: BackendRef; percent: number };

export interface BackendRef {
  /** The Service's key, `ns/hostname`. */
  service: string;
  /** The backend Service's port; 0: the port the request arrived on. */
  port: number;
  /** Relative weight; 0 gets nothing. */
  weight: number;
  /** A DestinationRule subset: only endpoints whose labels include all of these. */
  subset?: { name: string; labels: Record<string, string> };
  /** Filters of this backendRef only, after the rule's. */
  filters: RouteFilter[];
}

export interface RetryPolicy {
  /** Retries after the first try (Gateway API `attempts` counts them the same way). */
  attempts: number;
  backoffMs: number;
  /** Response statuses that are retried, e.g. [500, 502, 503]. */
  codes: number[];
  /** Retry when the upstream could not be connected or reset before a response (Envoy's connect-failure, reset). */
  onConnectFailure: boolean;
  /** Each try's own timeout; undefined: only the request timeout applies. */
  perTryTimeoutMs?: number;
}

/** VirtualService fault injection; `percent` 0-100 of requests. */
export interface FaultPolicy {
  delay?: { ms: number; percent: number };
  abort?: { status: number; percent: number; grpcStatus?: number };
}

export interface RouteRule {
  /** Where it came from, for logs and the admin dump: `HTTPRoute ns/name rule 2`. */
  source: string;
  /** OR-ed; the compiled table lists each (match, rule) pair in precedence order. */
  matches: HttpMatch[];
  filters: RouteFilter[];
  /** Weighted; empty (or all weights 0): the request gets 500, as Gateway API says. */
  backends: BackendRef[];
  /** `timeouts.request`: from the request's start to the end of its response, retries included. */
  timeoutMs?: number;
  /** `timeouts.backendRequest`: each try. */
  backendTimeoutMs?: number;
  retry?: RetryPolicy;
  fault?: FaultPolicy;
}

/** One (match, rule) pair in a table: `rule` indexes ServiceRoutes.rules. */
export interface RouteEntry {
  match: HttpMatch;
  rule: number;
  /** Hostnames the route named (`hostnames`, VirtualService `hosts`); empty: any. */
  hostnames: string[];
}

/**
 * The rules that apply to requests for one port of the Service, in precedence order (first
 * match wins). A producer table (no consumerNamespace) applies to every client; a consumer
 * table only to clients in its namespace, and for them it replaces the producer table.
 */
export interface RouteTable {
  port: number;
  consumerNamespace?: string;
  entries: RouteEntry[];
}

export type LbAlgorithm = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';

/** DestinationRule trafficPolicy, as the proxy applies it per (Service, subset). */
export interface TrafficPolicy {
  loadBalancer?: LbAlgorithm;
  connectionPool?: {
    /** tcp.maxConnections: upstream connections per endpoint. */
    maxConnections?: number;
    /** http.http1MaxPendingRequests: requests waiting for a connection; more get 503 UO. */
    maxPendingRequests?: number;
    /** http.http2MaxRequests: requests in flight to the Service; more get 503 UO. */
    maxRequests?: number;
    /** http.maxRequestsPerConnection; 0: unlimited. */
    maxRequestsPerConnection?: number;
  };
  outlierDetection?: {
    /** consecutive5xxErrors (default 5 in Istio); 0 disables. */
    consecutive5xxErrors: number;
    intervalMs: number;
    baseEjectionTimeMs: number;
    /** 0-100 (default 10 in Istio, but never fewer than one endpoint ejectable). */
    maxEjectionPercent: number;
  };
}

export interface ServiceRoutes {
  /** The Service's key, `ns/hostname`: the resource name. */
  service: string;
  rules: RouteRule[];
  tables: RouteTable[];
  /** DestinationRule for the Service: the default policy and each subset's own. */
  trafficPolicy?: TrafficPolicy;
  subsets: Array<{ name: string; labels: Record<string, string>; trafficPolicy?: TrafficPolicy }>;
}

// The authorization model the proxy enforces (the decoded form of istio.security.Authorization),
// and which policies apply to a workload.
import type { Cidr } from '../net/index.js';

export type { Cidr };

export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: true };

export interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/**
 * One match: every non-empty positive field must match (its values are OR-ed), and no value of
 * a not_* field may match. A match with no field set matches nothing (as in ztunnel).
 */
export interface Match {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  /** Compared with the peer's SPIFFE ID without the `spiffe://` prefix. */
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  sourceIps: Cidr[];
  notSourceIps: Cidr[];
  destinationIps: Cidr[];
  notDestinationIps: Cidr[];
  destinationPorts: number[];
  notDestinationPorts: number[];
  /**
   * nodemesh's extension: the HTTP attributes of the match (`to.operation`, `from.source`
   * requestPrincipals, `when` on request headers and JWT claims). Present only in
   * Authorization.l7Rules, which the proxy evaluates on HTTP ports per request.
   */
  http?: HttpAttributes;
}

/** A request header or JWT claim condition (`when`): some value matches, and no notValue. */
export interface ValueCondition {
  /** A header name (lower case) or a claim path, e.g. `groups` or `nested.claim` (a `.` or `\` inside a claim name escaped with `\`: rbac's claimKey). */
  key: string;
  values: StringMatch[];
  notValues: StringMatch[];
}

/** The HTTP side of a match: every non-empty positive list must match, and no not_* value. */
export interface HttpAttributes {
  methods: StringMatch[];
  notMethods: StringMatch[];
  paths: StringMatch[];
  notPaths: StringMatch[];
  /** Compared with the request's Host / :authority, case-insensitively, port included when sent. */
  hosts: StringMatch[];
  notHosts: StringMatch[];
  /** `<iss>/<sub>` of a validated JWT (RequestAuthentication). */
  requestPrincipals: StringMatch[];
  notRequestPrincipals: StringMatch[];
  /** Original client addresses (X-Forwarded-For's first hop, else the peer). */
  remoteIps: Cidr[];
  notRemoteIps: Cidr[];
  headers: ValueCondition[];
  claims: ValueCondition[];
}

/** Matches are OR-ed. A clause with no match matches every connection. */
export interface Clause {
  matches: Match[];
}

/** Clauses are AND-ed. A rule with no clause matches every connection. */
export interface Rule {
  clauses: Clause[];
}

/** The enum values, written once (istio.security.Scope and Action). */
export const SCOPES = ['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR'] as const;
export const ACTIONS = ['ALLOW', 'DENY'] as const;
export type Scope = (typeof SCOPES)[number];
export type Action = (typeof ACTIONS)[number];

export interface Authorization {
  name: string;
  namespace: string;
  scope: Scope;
  action: Action;
  /** Rules are OR-ed; no rule matches nothing (so an ALLOW without rules allows nothing). */
  rules: Rule[];
  /**
   * nodemesh's extension: the rules with their HTTP attributes, for HTTP ports. Absent when no
   * rule has one (then `rules` serve both). `rules` stay the conservative L4 form Istio sends
   * ztunnel (an ALLOW rule with HTTP fields left out, a DENY rule without them), so a consumer
   * that ignores the extension is never more permissive.
   */
  l7Rules?: Rule[];
  dryRun: boolean;
}

/** A JWT issuer RequestAuthentication accepts. */
export interface JwtRule {
  issuer: string;
  /** Accepted `aud` values; empty: any. */
  audiences: string[];
  /** The inline JWKS, as JSON text (`jwks`); a JWKS URI is not fetched by the proxy. */
  jwks: string;
  /** Where the token is; default `Authorization: Bearer <token>`. */
  fromHeaders: Array<{ name: string; prefix: string }>;
  fromParams: string[];
  /** Keep the token on the forwarded request (default: removed). */
  forwardOriginalToken: boolean;
}

/** security.istio.io RequestAuthentication, as the proxy applies it to HTTP requests. */
export interface RequestAuthentication {
  name: string;
  namespace: string;
  /** GLOBAL: a policy of the root namespace (see selector). */
  scope: Scope;
  /**
   * matchLabels, matched against the workload's labels: WORKLOAD_SELECTOR in the policy's
   * namespace, or GLOBAL (a root-namespace policy with a selector) in every namespace.
   */
  selector?: Record<string, string>;
  jwtRules: JwtRule[];
}

/** What the proxy knows about a connection when it authorizes it. */
export interface Connection {
  /** The peer's authenticated SPIFFE ID (with or without `spiffe://`); absent for plaintext. */
  srcPrincipal?: string;
  /**
   * The peer's namespace. Only ever taken from an authenticated identity; defaults to the
   * namespace in srcPrincipal.
   */
  srcNamespace?: string;
  srcIp: string;
  dstIp: string;
  dstPort: number;
  /** The request, on HTTP ports: its HTTP attributes are matched (l7Rules). */
  http?: HttpRequestFacts;
}

/** What a request shows to L7 authorization. */
export interface HttpRequestFacts {
  method: string;
  /** The path without the query string. */
  path: string;
  host: string;
  /** A request header's first value, by lower-case name. */
  header(name: string): string | undefined;
  /** `<iss>/<sub>` of the validated JWT, if the request carried one. */
  requestPrincipal?: string;
  /** The validated JWT's claims. */
  claims?: Record<string, unknown>;
  /** The original client address (X-Forwarded-For's first hop, else srcIp). */
  remoteIp?: string;
}

export interface DryRunHit {
  policy: string;
  action: Action;
}

export interface Decision {
  allowed: boolean;
  /** `ns/name` of the policy that decided: the matching DENY or ALLOW. */
  policy?: string;
  reason: 'denied-by-policy' | 'allowed-by-policy' | 'no-allow-policy' | 'no-allow-match';
  /** Dry-run policies that matched: logged, never enforced. */
  dryRun: DryRunHit[];
}

/** The identity of a workload as policy selection needs it. */
export interface PolicyTarget {
  namespace: string;
  /** `ns/name` of the WORKLOAD_SELECTOR policies that select the workload. */
  authorizationPolicies: readonly string[];
}

/**
 * A resource the control plane sent and this agent rejected (NACKed). Its last good version,
 * if any, stays in the store, but nothing it could bear on is decided on that version alone.
 */
export interface RejectedResource {
  kind: 'address' | 'authorization' | 'routes' | 'requestAuthentication';
  /**
   * The resource name: a workload uid or `ns/hostname` (address), an authorization's or a
   * RequestAuthentication's `ns/name`, a Service's `ns/hostname` (routes).
   */
  name: string;
  reason: string;
  /**
   * An authorization's or RequestAuthentication's scope and namespace, when the rejected
   * message still decoded that far. Absent, the policy may be anything, GLOBAL included.
   */
  scope?: Scope;
  namespace?: string;
}

/**
 * Whether a rejected resource may bear on connections to `target`: its own workload's
 * resource, a policy it names, and a rejected policy whose scope reaches it (a policy of
 * unknown scope reaches every workload). A rejected RequestAuthentication reaches the
 * workloads of its scope's namespace (its selector is not known here): the JWTs its last good
 * version accepts may no longer be valid. Rejected routes never do: they only steer traffic,
 * which keeps following their last good version.
 */
export function rejectionApplies(r: RejectedResource, target: PolicyTarget & { uid: string }): boolean {
  if (r.kind === 'address') return r.name === target.uid;
  if (r.kind === 'routes') return false;
  if (r.kind === 'requestAuthentication') return r.scope === undefined || r.scope === 'GLOBAL' || r.namespace === target.namespace;
  if (target.authorizationPolicies.includes(r.name)) return true;
  if (r.scope === undefined || r.scope === 'GLOBAL') return true;
  return r.scope === 'NAMESPACE' && r.namespace === target.namespace;
}

export function policyKey(p: { namespace: string; name: string }): string {
  return `${p.namespace}/${p.name}`;
}

/**
 * The policies that apply to a destination workload: every GLOBAL policy, the NAMESPACE
 * policies of its namespace, and the WORKLOAD_SELECTOR policies the workload names. A named
 * policy that is not in `all` is simply not selected: missingPolicies says which those are,
 * and an authorizer must not decide while any is missing (fail closed).
 */
export function selectPolicies(all: Iterable<Authorization>, target: PolicyTarget): Authorization[] {
  const named = new Set(target.authorizationPolicies);
  const out: Authorization[] = [];
  for (const p of all) {
    if (
      p.scope === 'GLOBAL' ||
      (p.scope === 'NAMESPACE' && p.namespace === target.namespace) ||
      (p.scope === 'WORKLOAD_SELECTOR' && named.has(policyKey(p)))
    ) {
      out.push(p);
    }
  }
  return out;
}

/** The policies `target` names that `has` does not know (not arrived yet, or removed). */
export function missingPolicies(has: (key: string) => boolean, target: PolicyTarget): string[] {
  return target.authorizationPolicies.filter((k) => !has(k));
}

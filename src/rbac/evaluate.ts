// Pure authorization: whether a connection (or, on HTTP ports, a request) is allowed by the
// policies that apply to its destination (state/ selects them). Semantics follow Istio's
// AuthorizationPolicy as ztunnel enforces it at L4 and Envoy's RBAC filter per request
// (https://istio.io/latest/docs/reference/config/security/authorization-policy/).
import { cidrContains, normalizedIpBytes, type Cidr } from '../net/index.js';
import { policyKey, type Authorization, type Clause, type Connection, type Decision, type DryRunHit, type Match, type Rule } from '../state/index.js';
import { httpFacts, httpMatches, isEmptyHttp, type HttpFacts } from './http-match.js';
import { stringMatches } from './string-match.js';

const SPIFFE = 'spiffe://';

interface Facts {
  /** Principal without `spiffe://`, or undefined when the peer is not authenticated. */
  principal: string | undefined;
  namespace: string;
  serviceAccount: string | undefined;
  src: Buffer;
  dst: Buffer;
  port: number;
  /** The request, when the connection carries one (Connection.http). */
  http?: HttpFacts;
}

function facts(c: Connection): Facts {
  let principal: string | undefined;
  let ns = '';
  let sa: string | undefined;
  if (c.srcPrincipal) {
    // Istio's principals assume the spiffe:// prefix; an identity without it is compared bare.
    principal = c.srcPrincipal.startsWith(SPIFFE) ? c.srcPrincipal.slice(SPIFFE.length) : c.srcPrincipal;
    const m = /^[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(principal);
    if (m) {
      ns = m[1]!;
      sa = m[2]!;
    }
  }
  if (c.srcNamespace !== undefined) ns = c.srcNamespace;
  const f: Facts = { principal, namespace: ns, serviceAccount: sa, src: normalizedIpBytes(c.srcIp), dst: normalizedIpBytes(c.dstIp), port: c.dstPort };
  if (c.http) f.http = httpFacts(c.http, c.srcIp);
  return f;
}

/** Positive values OR-ed (empty = no constraint), negative values none may match. */
function field<T>(pos: readonly T[], neg: readonly T[], pred: (v: T) => boolean): boolean {
  if (pos.length > 0 && !pos.some(pred)) return false;
  if (neg.length > 0 && neg.some(pred)) return false;
  return true;
}

function isEmptyMatch(m: Match): boolean {
  return (
    m.namespaces.length + m.notNamespaces.length + m.principals.length + m.notPrincipals.length +
      m.serviceAccounts.length + m.notServiceAccounts.length + m.sourceIps.length + m.notSourceIps.length +
      m.destinationIps.length + m.notDestinationIps.length + m.destinationPorts.length + m.notDestinationPorts.length ===
    0
  );
}

/**
 * `l7`: the match is one of l7Rules, evaluated for a request, so its HTTP attributes count. At
 * L4 they are never looked at (l7Rules are not evaluated there; `rules` carry none).
 */
function matchMatches(m: Match, f: Facts, l7: boolean): boolean {
  const http = l7 && m.http && !isEmptyHttp(m.http) ? m.http : undefined;
  // An empty match never matches (ztunnel skips it); translation never emits one.
  if (isEmptyMatch(m) && !http) return false;
  if (http && !httpMatches(http, f.http!)) return false;
  const inCidr = (ip: Buffer) => (c: Cidr) => cidrContains(c, ip);
  return (
    field(m.destinationIps, m.notDestinationIps, inCidr(f.dst)) &&
    field(m.sourceIps, m.notSourceIps, inCidr(f.src)) &&
    field(m.destinationPorts, m.notDestinationPorts, (p) => p === f.port) &&
    field(m.serviceAccounts, m.notServiceAccounts, (s) => f.serviceAccount !== undefined && s.namespace === f.namespace && s.serviceAccount === f.serviceAccount) &&
    // Without an identity a principal is "" so that presence does not match it.
    field(m.principals, m.notPrincipals, (s) => stringMatches(s, f.principal ?? '')) &&
    field(m.namespaces, m.notNamespaces, (s) => stringMatches(s, f.namespace))
  );
}

function clauseMatches(c: Clause, f: Facts, l7: boolean): boolean {
  return c.matches.length === 0 || c.matches.some((m) => matchMatches(m, f, l7));
}

function ruleMatches(r: Rule, f: Facts, l7: boolean): boolean {
  return r.clauses.every((c) => clauseMatches(c, f, l7));
}

/**
 * Whether any rule of the policy matches the connection. A policy without rules matches
 * nothing. A request (Connection.http) is matched against the policy's l7Rules when it has
 * them; a bare connection always against the conservative `rules`.
 */
export function policyMatches(p: Authorization, conn: Connection | Facts): boolean {
  const f = 'srcIp' in conn ? facts(conn) : conn;
  if (f.http && p.l7Rules) return p.l7Rules.some((r) => ruleMatches(r, f, true));
  return p.rules.some((r) => ruleMatches(r, f, false));
}

/**
 * Decides a connection against the policies that apply to its destination (see
 * selectPolicies): dry-run policies are only reported; any matching DENY denies; with no ALLOW
 * policy the connection is allowed; a matching ALLOW allows; otherwise it is denied. With
 * `conn.http` it decides that request, in the same order, on the policies' l7Rules. On an HTTP
 * port the proxy decides each request this way and not the bare connection too: the
 * conservative `rules` of an HTTP-only DENY would deny every request.
 */
export function evaluate(policies: readonly Authorization[], conn: Connection): Decision {
  const f = facts(conn);
  const dryRun: DryRunHit[] = [];
  const enforced: Authorization[] = [];
  for (const p of policies) {
    if (!p.dryRun) enforced.push(p);
    else if (policyMatches(p, f)) dryRun.push({ policy: policyKey(p), action: p.action });
  }
  for (const p of enforced) {
    if (p.action === 'DENY' && policyMatches(p, f)) return { allowed: false, policy: policyKey(p), reason: 'denied-by-policy', dryRun };
  }
  const allows = enforced.filter((p) => p.action === 'ALLOW');
  if (allows.length === 0) return { allowed: true, reason: 'no-allow-policy', dryRun };
  for (const p of allows) {
    if (policyMatches(p, f)) return { allowed: true, policy: policyKey(p), reason: 'allowed-by-policy', dryRun };
  }
  return { allowed: false, reason: 'no-allow-match', dryRun };
}

// The L7 form of an AuthorizationPolicy (Authorization.l7Rules): every rule with its HTTP
// attributes, for the proxy to match per request on HTTP ports.
import { parseCidr, type Cidr } from '../net/index.js';
import { claimKey } from '../rbac/index.js';
import type { Clause, HttpAttributes, Match, Rule, StringMatch, ValueCondition } from '../state/index.js';
import type { ApCondition, ApOperation, ApRule, ApSource, AuthorizationPolicy } from './resources.js';

const L7_SOURCE = ['requestPrincipals', 'notRequestPrincipals', 'remoteIpBlocks', 'notRemoteIpBlocks'] as const;
const L7_OPERATION = ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;
export const L4_CONDITIONS: ReadonlySet<string> = new Set(['source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port']);

/** The HTTP attributes a rule uses, sorted: `from.source.requestPrincipals`, `when request.headers[x]`. */
export function httpAttributesOf(r: ApRule): string[] {
  const l7 = new Set<string>();
  for (const s of r.from) for (const f of L7_SOURCE) if (s[f].length > 0) l7.add(`from.source.${f}`);
  for (const o of r.to) for (const f of L7_OPERATION) if (o[f].length > 0) l7.add(`to.operation.${f}`);
  for (const c of r.when) if (!L4_CONDITIONS.has(c.key)) l7.add(`when ${c.key}`);
  return [...l7].sort();
}

/** Istio's string forms: `*` any non-empty, `*x` suffix, `x*` prefix, else exact. */
function sm(v: string): StringMatch {
  if (v === '*') return { presence: true };
  if (v.startsWith('*')) return { suffix: v.slice(1) };
  if (v.endsWith('*')) return { prefix: v.slice(0, -1) };
  return { exact: v };
}

const cidrs = (l: readonly string[]): Cidr[] => l.map(parseCidr);
const ports = (l: readonly string[]): number[] => l.map(Number);

function emptyHttp(): HttpAttributes {
  return {
    methods: [], notMethods: [], paths: [], notPaths: [], hosts: [], notHosts: [], requestPrincipals: [], notRequestPrincipals: [],
    remoteIps: [], notRemoteIps: [], headers: [], claims: [],
  };
}

function match(l4: Partial<Omit<Match, 'http'>>, http?: Partial<HttpAttributes>): Match {
  const m: Match = {
    namespaces: [], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [],
    sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [],
    ...l4,
  };
  const h = { ...emptyHttp(), ...http };
  if (Object.values(h).some((v) => v.length > 0)) m.http = h;
  return m;
}

function isEmpty(m: Match): boolean {
  return !m.http && Object.values(m).every((v) => !Array.isArray(v) || v.length === 0);
}

/** Istio's `{*}` / `{**}` path templates (Envoy URI templates), which StringMatch cannot express. */
const isTemplate = (p: string): boolean => /\{\*\*?\}/.test(p);

function sourceMatch(s: ApSource, ns: string): Match {
  const sa = (l: string[]) =>
    l.map((v) => {
      const [a, b] = v.includes('/') ? (v.split('/', 2) as [string, string]) : [ns, v];
      return { namespace: a, serviceAccount: b };
    });
  return match(
    {
      principals: s.principals.map(sm), notPrincipals: s.notPrincipals.map(sm), namespaces: s.namespaces.map(sm), notNamespaces: s.notNamespaces.map(sm),
      serviceAccounts: sa(s.serviceAccounts), notServiceAccounts: sa(s.notServiceAccounts), sourceIps: cidrs(s.ipBlocks), notSourceIps: cidrs(s.notIpBlocks),
    },
    {
      requestPrincipals: s.requestPrincipals.map(sm), notRequestPrincipals: s.notRequestPrincipals.map(sm),
      remoteIps: cidrs(s.remoteIpBlocks), notRemoteIps: cidrs(s.notRemoteIpBlocks),
    },
  );
}

/** A field with a path template is left out (only a DENY gets here with one: it denies more). */
function operationMatch(o: ApOperation): Match {
  const paths = (l: string[]) => (l.some(isTemplate) ? [] : l.map(sm));
  return match(
    { destinationPorts: ports(o.ports), notDestinationPorts: ports(o.notPorts) },
    {
      methods: o.methods.map(sm), notMethods: o.notMethods.map(sm), hosts: o.hosts.map(sm), notHosts: o.notHosts.map(sm),
      paths: paths(o.paths), notPaths: paths(o.notPaths),
    },
  );
}

// An HTTP token (RFC 9110): a pseudo-header or a name with spaces can never be sent or matched.
const HEADER_KEY = /^request\.headers\[([!#$%&'*+.^_`|~0-9A-Za-z-]+)\]$/;
const CLAIMS_KEY = /^request\.auth\.claims((?:\[[^[\]]+\])+)$/;

/** The condition as a match; undefined for a key the proxy cannot evaluate. */
function conditionMatch(c: ApCondition): Match | undefined {
  const pos = c.values;
  const neg = c.notValues;
  const cond = (key: string): ValueCondition => ({ key, values: pos.map(sm), notValues: neg.map(sm) });
  switch (c.key) {
    case 'source.ip':
      return match({ sourceIps: cidrs(pos), notSourceIps: cidrs(neg) });
    case 'destination.ip':
      return match({ destinationIps: cidrs(pos), notDestinationIps: cidrs(neg) });
    case 'destination.port':
      return match({ destinationPorts: ports(pos), notDestinationPorts: ports(neg) });
    case 'source.namespace':
      return match({ namespaces: pos.map(sm), notNamespaces: neg.map(sm) });
    case 'source.principal':
      return match({ principals: pos.map(sm), notPrincipals: neg.map(sm) });
    case 'remote.ip':
      return match({}, { remoteIps: cidrs(pos), notRemoteIps: cidrs(neg) });
    case 'request.auth.principal':
      return match({}, { requestPrincipals: pos.map(sm), notRequestPrincipals: neg.map(sm) });
    case 'request.auth.audiences':
      return match({}, { claims: [cond('aud')] });
    case 'request.auth.presenter':
      return match({}, { claims: [cond('azp')] });
  }
  const h = HEADER_KEY.exec(c.key);
  if (h) return match({}, { headers: [cond(h[1]!.toLowerCase())] });
  const cl = CLAIMS_KEY.exec(c.key);
  if (cl) return match({}, { claims: [cond(claimKey([...cl[1]!.matchAll(/\[([^[\]]+)\]/g)].map((x) => x[1]!)))] });
  return undefined;
}

/** What of a rule the proxy cannot evaluate even per request, as messages name it. */
export function unsupportedOf(r: ApRule): string[] {
  const out = new Set<string>();
  for (const w of r.when) if (!conditionMatch(w)) out.add(`when key ${JSON.stringify(w.key)}`);
  for (const o of r.to) {
    for (const f of ['paths', 'notPaths'] as const) {
      const t = o[f].find(isTemplate);
      if (t !== undefined) out.add(`to.operation.${f} template ${JSON.stringify(t)}`);
    }
  }
  return [...out];
}

/** Entries OR-ed; one that lost every field (a DENY's unsupported attribute) matches anything. */
function clauseOf(matches: Match[]): Clause | undefined {
  if (matches.length === 0 || matches.some(isEmpty)) return undefined;
  return { matches };
}

function ruleOf(r: ApRule, ns: string): Rule {
  const clauses: Clause[] = [];
  const push = (c: Clause | undefined) => c && clauses.push(c);
  if (r.from.length > 0) push(clauseOf(r.from.map((s) => sourceMatch(s, ns))));
  if (r.to.length > 0) push(clauseOf(r.to.map(operationMatch)));
  for (const w of r.when) {
    const m = conditionMatch(w);
    if (m) clauses.push({ matches: [m] });
  }
  return { clauses };
}

/** A rule the proxy cannot fully evaluate: which one (0-based), its line, and what. */
export interface UnsupportedRule {
  index: number;
  line: number;
  attributes: string[];
}

/**
 * The policy's rules with their HTTP attributes, or undefined when no rule has one (its L4
 * `rules` then serve HTTP ports as well). What even the HTTP proxy cannot evaluate (an unknown
 * `when` key, a path template) is handled as at L4, never allowing more: an ALLOW rule with it
 * is left out, a DENY rule is kept without it. Each such rule is passed to `onUnsupported`.
 */
export function l7RulesOf(ap: AuthorizationPolicy, onUnsupported?: (u: UnsupportedRule) => void): Rule[] | undefined {
  const { policy } = ap;
  if (!policy.rules.some((r) => httpAttributesOf(r).length > 0)) return undefined;
  const rules: Rule[] = [];
  policy.rules.forEach((r, index) => {
    const attributes = unsupportedOf(r);
    if (attributes.length > 0) {
      onUnsupported?.({ index, line: r.line, attributes });
      if (policy.action === 'ALLOW') return;
    }
    rules.push(ruleOf(r, ap.metadata.namespace));
  });
  return rules;
}

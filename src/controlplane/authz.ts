// Pure translation of AuthorizationPolicy and PeerAuthentication into Authorizations: the L4
// rules the way Istio converts them for ztunnel (HTTP-only attributes never widen what is
// allowed), and beside them the rules with HTTP attributes for HTTP ports (authz-l7.ts).
import type { Pod } from '../k8s/index.js';
import { parseCidr } from '../net/index.js';
import type { Rule as L7Rule } from '../state/index.js';
import type { PbAuthorization, PbCidr, PbMatch, PbStringMatch } from '../xds/index.js';
import { httpAttributesOf, L4_CONDITIONS, l7RulesOf } from './authz-l7.js';
import type { ApCondition, ApOperation, ApSource, AuthorizationPolicy, MtlsMode, PeerAuthentication } from './resources.js';
import { selects, type MeshSettings } from './translate.js';
import { describe, type ConfigProblem } from './validate.js';

/** The DENY-plaintext policy workloads under STRICT mTLS reference (Istio's name). */
export const STATIC_STRICT_NAME = 'istio_converted_static_strict';
/** Prefix of the policy converted from a workload PeerAuthentication with port exceptions. */
export const CONVERTED_PEER_AUTHN_PREFIX = 'converted_peer_authentication_';

type Clause = { matches: PbMatch[] };
type Rule = { clauses: Clause[] };

/** Istio's string forms: `*` any non-empty, `*x` suffix, `x*` prefix, else exact. */
export function stringMatch(v: string): PbStringMatch {
  if (v === '*') return { presence: {} };
  if (v.startsWith('*')) return { suffix: v.slice(1) };
  if (v.endsWith('*')) return { prefix: v.slice(0, -1) };
  return { exact: v };
}

function cidrs(list: string[]): PbCidr[] {
  return list.map((s) => {
    const c = parseCidr(s);
    return { address: c.bytes, length: c.prefixLen };
  });
}

const ports = (list: string[]) => list.map(Number);

function isEmpty(m: PbMatch): boolean {
  return Object.values(m).every((v) => !Array.isArray(v) || v.length === 0);
}

function compact(m: PbMatch): PbMatch {
  return Object.fromEntries(Object.entries(m).filter(([, v]) => Array.isArray(v) && v.length > 0)) as PbMatch;
}

function sourceMatch(s: ApSource, ns: string): PbMatch {
  const sa = (l: string[]) =>
    l.map((v) => {
      const [a, b] = v.includes('/') ? (v.split('/', 2) as [string, string]) : [ns, v];
      return { namespace: a, serviceAccount: b };
    });
  return compact({
    principals: s.principals.map(stringMatch),
    notPrincipals: s.notPrincipals.map(stringMatch),
    namespaces: s.namespaces.map(stringMatch),
    notNamespaces: s.notNamespaces.map(stringMatch),
    serviceAccounts: sa(s.serviceAccounts),
    notServiceAccounts: sa(s.notServiceAccounts),
    sourceIps: cidrs(s.ipBlocks),
    notSourceIps: cidrs(s.notIpBlocks),
  });
}

function operationMatch(o: ApOperation): PbMatch {
  return compact({ destinationPorts: ports(o.ports), notDestinationPorts: ports(o.notPorts) });
}

function conditionMatch(c: ApCondition): PbMatch {
  const pos = c.values;
  const neg = c.notValues;
  switch (c.key) {
    case 'source.ip':
      return compact({ sourceIps: cidrs(pos), notSourceIps: cidrs(neg) });
    case 'destination.ip':
      return compact({ destinationIps: cidrs(pos), notDestinationIps: cidrs(neg) });
    case 'destination.port':
      return compact({ destinationPorts: ports(pos), notDestinationPorts: ports(neg) });
    case 'source.namespace':
      return compact({ namespaces: pos.map(stringMatch), notNamespaces: neg.map(stringMatch) });
    default: // source.principal
      return compact({ principals: pos.map(stringMatch), notPrincipals: neg.map(stringMatch) });
  }
}

/**
 * One clause from a from/to list: its entries' L4 matches OR-ed. An entry with no L4 field
 * left (only HTTP attributes, in a DENY) matches any connection, and so does the clause: it is
 * omitted (undefined).
 */
function clauseOf(matches: PbMatch[]): Clause | undefined {
  if (matches.length === 0 || matches.some(isEmpty)) return undefined;
  return { matches };
}

export interface AuthorizationTranslation {
  authorization?: PbAuthorization;
  /** The rules with their HTTP attributes (state form), when any rule has one. */
  l7Rules?: L7Rule[];
  problems: ConfigProblem[];
}

/** Where HTTP attributes are enforced, for the warnings. */
const HTTP_PORTS = 'on HTTP ports (a Service port with appProtocol http, http2 or grpc, or a port name starting with one of those)';

/** Translates one AuthorizationPolicy. Problems carry the file and line of the policy or rule. */
export function translateAuthorizationPolicy(ap: AuthorizationPolicy, mesh: MeshSettings): AuthorizationTranslation {
  const { policy } = ap;
  const name = describe(ap);
  const at = (line: number, severity: ConfigProblem['severity'], message: string): ConfigProblem => ({
    code: 'NM_ERR_POLICY',
    severity,
    file: ap.source.file,
    line,
    message: `${name}: ${message}`,
    resource: name,
  });
  if (policy.targetRefs) {
    return { problems: [at(ap.source.line, 'warning', 'targetRef(s) attach the policy to a waypoint or gateway; node agents do not enforce it')] };
  }
  if (policy.action === 'AUDIT' || policy.action === 'CUSTOM') {
    return {
      problems: [at(ap.source.line, 'error', `action ${policy.action} cannot be enforced by the L4 node proxy; use ALLOW or DENY (or a waypoint for ${policy.action})`)],
    };
  }
  const action = policy.action;
  const problems: ConfigProblem[] = [];
  const rules: Rule[] = [];
  policy.rules.forEach((r, i) => {
    const l7 = httpAttributesOf(r);
    if (l7.length > 0) {
      const attrs = l7.join(', ');
      if (action === 'ALLOW') {
        // An HTTP attribute can never match at L4: the rule is left out, so less is allowed.
        problems.push(at(r.line, 'warning', `rule ${i} uses HTTP attributes (${attrs}): they are enforced ${HTTP_PORTS}; on L4 ports the ALLOW rule is left out, so it allows nothing there`));
        return;
      }
      // In a DENY the HTTP attributes are dropped and the rest kept: it denies more, never less.
      problems.push(at(r.line, 'warning', `rule ${i} uses HTTP attributes (${attrs}): they are enforced ${HTTP_PORTS}; on L4 ports the DENY rule is enforced without them, so it denies more broadly there`));
    }
    const clauses: Clause[] = [];
    if (r.from.length > 0) {
      const c = clauseOf(r.from.map((s) => sourceMatch(s, ap.metadata.namespace)));
      if (c) clauses.push(c);
    }
    if (r.to.length > 0) {
      const c = clauseOf(r.to.map(operationMatch));
      if (c) clauses.push(c);
    }
    for (const w of r.when) if (L4_CONDITIONS.has(w.key)) clauses.push({ matches: [conditionMatch(w)] });
    rules.push({ clauses });
  });
  const l7Rules = l7RulesOf(ap, (u) => {
    const what = action === 'ALLOW' ? 'the ALLOW rule is left out on HTTP ports too' : 'the DENY rule is enforced without it on HTTP ports too, so it denies more broadly';
    problems.push(at(u.line, 'error', `rule ${u.index} uses ${u.attributes.join(', ')}, which the node proxy cannot evaluate; ${what}`));
  });
  const scope = policy.selector ? 'WORKLOAD_SELECTOR' : ap.metadata.namespace === mesh.rootNamespace ? 'GLOBAL' : 'NAMESPACE';
  return {
    authorization: { name: ap.metadata.name, namespace: ap.metadata.namespace, scope, action, rules, dryRun: policy.dryRun },
    ...(l7Rules ? { l7Rules } : {}),
    problems,
  };
}

/** DENY any connection without a peer identity: what STRICT mTLS means at L4. */
export function staticStrictPolicy(mesh: MeshSettings): PbAuthorization {
  return {
    name: STATIC_STRICT_NAME,
    namespace: mesh.rootNamespace,
    scope: 'WORKLOAD_SELECTOR',
    action: 'DENY',
    rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }] }],
    dryRun: false,
  };
}

export type EffectiveMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

/** The mTLS mode in force for a workload, and where it comes from. */
export interface EffectiveMtls {
  mode: EffectiveMode;
  /** Ports whose mode differs from `mode`. */
  ports: Record<number, EffectiveMode>;
  /** `ns/name` of the PeerAuthentications that decided, mesh first. */
  from: string[];
  /** The authorizations the workload must reference to enforce it. */
  policies: string[];
}

const older = (a: PeerAuthentication, b: PeerAuthentication): number =>
  (a.peer.createdAt ?? '').localeCompare(b.peer.createdAt ?? '') || `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);

function namespaceMode(ns: string, sorted: readonly PeerAuthentication[], mesh: MeshSettings): { mode: EffectiveMode; from: string[] } {
  const meshPa = sorted.find((p) => p.metadata.namespace === mesh.rootNamespace && !p.peer.selector);
  const nsPa = sorted.find((p) => p.metadata.namespace === ns && ns !== mesh.rootNamespace && !p.peer.selector);
  let mode: EffectiveMode = 'PERMISSIVE';
  const from: string[] = [];
  for (const p of [meshPa, nsPa]) {
    if (!p) continue;
    from.push(`${p.metadata.namespace}/${p.metadata.name}`);
    if (p.peer.mode !== 'UNSET') mode = p.peer.mode;
  }
  return { mode, from };
}

function withWorkloadPolicy(base: { mode: EffectiveMode; from: string[] }, wlPa: PeerAuthentication | undefined, mesh: MeshSettings): EffectiveMtls {
  let mode = base.mode;
  const from = [...base.from];
  const ports: Record<number, EffectiveMode> = {};
  if (wlPa) {
    from.push(`${wlPa.metadata.namespace}/${wlPa.metadata.name}`);
    if (wlPa.peer.mode !== 'UNSET') mode = wlPa.peer.mode;
    for (const [port, m] of Object.entries(wlPa.peer.portLevelMtls) as [string, MtlsMode][]) {
      if (m !== 'UNSET' && (m === 'STRICT') !== (mode === 'STRICT')) ports[Number(port)] = m;
    }
  }
  let policies: string[] = [];
  if (Object.keys(ports).length > 0) policies = [`${wlPa!.metadata.namespace}/${CONVERTED_PEER_AUTHN_PREFIX}${wlPa!.metadata.name}`];
  else if (mode === 'STRICT') policies = [`${mesh.rootNamespace}/${STATIC_STRICT_NAME}`];
  return { mode, ports, from, policies };
}

/**
 * Mesh (root namespace, no selector) → namespace → workload (selector) PeerAuthentication; the
 * oldest wins a tie, as in Istio. UNSET inherits; DISABLE is treated like PERMISSIVE at L4.
 */
export function effectiveMtls(pod: Pod, pas: readonly PeerAuthentication[], mesh: MeshSettings): EffectiveMtls {
  const sorted = [...pas].sort(older);
  const wlPa = sorted.find(
    (p) => p.metadata.namespace === pod.metadata.namespace && p.metadata.namespace !== mesh.rootNamespace && p.peer.selector && selects(p.peer.selector, pod.metadata.labels),
  );
  return withWorkloadPolicy(namespaceMode(pod.metadata.namespace, sorted, mesh), wlPa, mesh);
}

/**
 * The DENY policy for a workload PeerAuthentication with port-level exceptions: deny plaintext
 * on the ports that are STRICT (all but the exceptions when the workload is STRICT).
 */
export function convertedPeerAuthentication(pa: PeerAuthentication, eff: EffectiveMtls): PbAuthorization {
  const exceptions = Object.keys(eff.ports).map(Number).sort((a, b) => a - b);
  const portMatch: PbMatch = eff.mode === 'STRICT' ? { notDestinationPorts: exceptions } : { destinationPorts: exceptions };
  return {
    name: `${CONVERTED_PEER_AUTHN_PREFIX}${pa.metadata.name}`,
    namespace: pa.metadata.namespace,
    scope: 'WORKLOAD_SELECTOR',
    action: 'DENY',
    rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }] }] }, { matches: [portMatch] }] }],
    dryRun: false,
  };
}

export interface PolicySet {
  /** Every Authorization to serve, the static STRICT policy included. */
  authorizations: PbAuthorization[];
  /** `ns/name` → the l7Rules of that authorization (state form), for those that have them. */
  l7Rules: Map<string, L7Rule[]>;
  problems: ConfigProblem[];
  /** WORKLOAD_SELECTOR policies (`ns/name`) a pod must list, sorted. */
  policiesFor(pod: Pod): string[];
  mtlsFor(pod: Pod): EffectiveMtls;
}

/** Translates all policies of a config and answers which ones select each pod. */
export function buildPolicySet(aps: readonly AuthorizationPolicy[], pas: readonly PeerAuthentication[], mesh: MeshSettings): PolicySet {
  const problems: ConfigProblem[] = [];
  const translated: { ap: AuthorizationPolicy; auth: PbAuthorization }[] = [];
  const l7Rules = new Map<string, L7Rule[]>();
  for (const ap of aps) {
    const t = translateAuthorizationPolicy(ap, mesh);
    problems.push(...t.problems);
    if (t.authorization) translated.push({ ap, auth: t.authorization });
    if (t.authorization && t.l7Rules) l7Rules.set(`${t.authorization.namespace}/${t.authorization.name}`, t.l7Rules);
  }
  for (const pa of pas) {
    if (pa.metadata.namespace === mesh.rootNamespace && pa.peer.selector) {
      problems.push({
        code: 'NM_ERR_POLICY',
        severity: 'warning',
        file: pa.source.file,
        line: pa.source.line,
        message: `${describe(pa)}: a PeerAuthentication with a selector in the root namespace ${mesh.rootNamespace} is ignored; put it in the workload's namespace`,
        resource: describe(pa),
      });
    }
  }
  const authorizations = new Map<string, PbAuthorization>();
  for (const { auth } of translated) authorizations.set(`${auth.namespace}/${auth.name}`, auth);
  const strict = staticStrictPolicy(mesh);
  authorizations.set(`${strict.namespace}/${strict.name}`, strict);
  l7Rules.delete(`${strict.namespace}/${strict.name}`);
  // Workload PeerAuthentications with port exceptions become their own DENY policy.
  const sorted = [...pas].sort(older);
  for (const pa of sorted) {
    if (!pa.peer.selector || pa.metadata.namespace === mesh.rootNamespace) continue;
    const eff = withWorkloadPolicy(namespaceMode(pa.metadata.namespace, sorted, mesh), pa, mesh);
    if (Object.keys(eff.ports).length === 0) continue;
    const conv = convertedPeerAuthentication(pa, eff);
    authorizations.set(`${conv.namespace}/${conv.name}`, conv);
    l7Rules.delete(`${conv.namespace}/${conv.name}`);
  }
  const selectorPolicies = translated.filter(({ ap }) => ap.policy.selector);
  const mtlsFor = (pod: Pod): EffectiveMtls => effectiveMtls(pod, pas, mesh);
  const policiesFor = (pod: Pod): string[] => {
    const names = selectorPolicies
      .filter(({ ap }) => (ap.metadata.namespace === pod.metadata.namespace || ap.metadata.namespace === mesh.rootNamespace) && selects(ap.policy.selector!, pod.metadata.labels))
      .map(({ auth }) => `${auth.namespace}/${auth.name}`);
    names.push(...mtlsFor(pod).policies);
    return [...new Set(names)].sort();
  };
  return {
    authorizations: [...authorizations.values()],
    l7Rules,
    problems,
    policiesFor,
    mtlsFor,
  };
}

// Validates security.istio.io RequestAuthentication and translates it into the state form the
// proxy verifies JWTs with; every error names the offending field's path.
import { fieldError, fieldPathOf, formatPath, isRecord, list, map, onlyKeys, str, strList, strMap, type FieldPath, type K8sObject } from '../k8s/index.js';
import type { JwtRule, RequestAuthentication } from '../state/index.js';
import { POLICY_GROUP } from './resources.js';
import type { MeshSettings } from './translate.js';
import { describe, type ConfigProblem, type ProblemCode } from './validate.js';

const API_VERSIONS = [`${POLICY_GROUP}/v1`, `${POLICY_GROUP}/v1beta1`];
const JWT_RULE_FIELDS = [
  'issuer', 'audiences', 'jwks', 'jwksUri', 'fromHeaders', 'fromParams', 'forwardOriginalToken',
  'outputPayloadToHeader', 'outputClaimToHeaders', 'fromCookies', 'timeout',
];
/** Istio fields the proxy does not implement: refused rather than silently ignored. */
const UNSUPPORTED = ['outputPayloadToHeader', 'outputClaimToHeaders', 'fromCookies', 'timeout'];

/** A problem that is not a reason to refuse the resource. */
export interface RequestAuthnWarning {
  path: FieldPath;
  message: string;
}

function jwks(text: string, p: FieldPath): string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw fieldError(`${formatPath(p)} is not JSON: ${(e as Error).message}`, p);
  }
  if (!isRecord(v) || !Array.isArray(v.keys)) throw fieldError(`${formatPath(p)} must be a JWKS, a JSON object with a "keys" list`, p);
  v.keys.forEach((k, i) => {
    if (!isRecord(k) || typeof k.kty !== 'string') throw fieldError(`${formatPath(p)}: keys[${i}] must be a JWK with a string "kty"`, p);
  });
  return text;
}

function jwtRule(v: unknown, p: FieldPath, warn: (w: RequestAuthnWarning) => void): JwtRule {
  const m = map(v, p, true)!;
  onlyKeys(m, p, JWT_RULE_FIELDS);
  for (const f of UNSUPPORTED) {
    if (m[f] !== undefined) throw fieldError(`${formatPath([...p, f])} is not supported by the nodemesh proxy; remove it`, [...p, f], 'NM_ERR_POLICY');
  }
  const issuer = str(m.issuer, [...p, 'issuer'], true)!;
  if (issuer === '') throw fieldError(`${formatPath([...p, 'issuer'])} must not be empty`, [...p, 'issuer']);
  const uri = str(m.jwksUri, [...p, 'jwksUri']);
  const inline = str(m.jwks, [...p, 'jwks']);
  if (inline === undefined) {
    if (uri !== undefined) {
      throw fieldError(`${formatPath([...p, 'jwksUri'])}: only inline jwks is supported, the proxy never fetches keys; put the JWKS JSON in ${formatPath([...p, 'jwks'])}`, [...p, 'jwksUri'], 'NM_ERR_POLICY');
    }
    throw fieldError(`${formatPath([...p, 'jwks'])} is required (the inline JWKS JSON)`, [...p, 'jwks']);
  }
  // Istio's own precedence: with both, the inline keys are used.
  if (uri !== undefined) warn({ path: [...p, 'jwksUri'], message: `${formatPath([...p, 'jwksUri'])} is ignored: ${formatPath([...p, 'jwks'])} is used` });
  const fromHeaders = list(m.fromHeaders, [...p, 'fromHeaders']).map((h, i) => {
    const hp: FieldPath = [...p, 'fromHeaders', i];
    const hm = map(h, hp, true)!;
    onlyKeys(hm, hp, ['name', 'prefix']);
    const name = str(hm.name, [...hp, 'name'], true)!;
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) throw fieldError(`${formatPath([...hp, 'name'])}: ${JSON.stringify(name)} is not an HTTP header name`, [...hp, 'name']);
    return { name: name.toLowerCase(), prefix: str(hm.prefix, [...hp, 'prefix']) ?? '' };
  });
  const fromParams = strList(m.fromParams, [...p, 'fromParams']);
  fromParams.forEach((s, i) => {
    if (s === '') throw fieldError(`${formatPath([...p, 'fromParams', i])} must not be empty`, [...p, 'fromParams', i]);
  });
  const fwd = m.forwardOriginalToken;
  if (fwd !== undefined && fwd !== null && typeof fwd !== 'boolean') {
    throw fieldError(`${formatPath([...p, 'forwardOriginalToken'])} must be true or false, got ${JSON.stringify(fwd)}`, [...p, 'forwardOriginalToken']);
  }
  return {
    issuer,
    audiences: strList(m.audiences, [...p, 'audiences']),
    jwks: jwks(inline, [...p, 'jwks']),
    fromHeaders,
    fromParams,
    forwardOriginalToken: fwd === true,
  };
}

/**
 * One RequestAuthentication, validated (throws a field error, fieldPathOf). Scope: GLOBAL in the
 * root namespace, NAMESPACE without a selector, else WORKLOAD_SELECTOR; a selector in the root
 * namespace is GLOBAL with the selector, as it selects in every namespace. Undefined for a
 * waypoint policy (targetRef), which no node proxy enforces.
 */
export function toRequestAuthentication(o: K8sObject, mesh: MeshSettings, warn: (w: RequestAuthnWarning) => void = () => {}): RequestAuthentication | undefined {
  if (!API_VERSIONS.includes(o.apiVersion)) throw fieldError(`apiVersion ${o.apiVersion} is not ${API_VERSIONS.join(' or ')}`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec']) ?? {};
  onlyKeys(spec, ['spec'], ['selector', 'jwtRules', 'targetRef', 'targetRefs']);
  let selector: Record<string, string> | undefined;
  const sel = map(spec.selector, ['spec', 'selector']);
  if (sel) {
    onlyKeys(sel, ['spec', 'selector'], ['matchLabels']);
    const labels = strMap(sel.matchLabels, ['spec', 'selector', 'matchLabels']);
    // An empty selector selects every workload of the namespace: the same as none.
    if (Object.keys(labels).length > 0) selector = labels;
  }
  const jwtRules = list(spec.jwtRules, ['spec', 'jwtRules']).map((r, i) => jwtRule(r, ['spec', 'jwtRules', i], warn));
  if (spec.targetRef !== undefined || spec.targetRefs !== undefined) {
    warn({ path: ['spec', spec.targetRef !== undefined ? 'targetRef' : 'targetRefs'], message: 'targetRef(s) attach the policy to a waypoint or gateway; node agents do not enforce it' });
    return undefined;
  }
  const root = o.metadata.namespace === mesh.rootNamespace;
  const scope = root ? 'GLOBAL' : selector ? 'WORKLOAD_SELECTOR' : 'NAMESPACE';
  return { name: o.metadata.name, namespace: o.metadata.namespace, scope, ...(selector ? { selector } : {}), jwtRules };
}

/** Translates the config's RequestAuthentications; an invalid one is left out with an error. */
export function translateRequestAuthentications(objs: readonly K8sObject[], mesh: MeshSettings): { authns: RequestAuthentication[]; problems: ConfigProblem[] } {
  const authns: RequestAuthentication[] = [];
  const problems: ConfigProblem[] = [];
  for (const o of objs) {
    const name = describe(o);
    const problem = (code: ProblemCode, severity: ConfigProblem['severity'], message: string): ConfigProblem => ({
      code, severity, file: o.source.file, line: o.source.line, message: `${name}: ${message}`, resource: name,
    });
    try {
      const a = toRequestAuthentication(o, mesh, (w) => problems.push(problem('NM_ERR_POLICY', 'warning', w.message)));
      if (a) authns.push(a);
    } catch (e) {
      if (!fieldPathOf(e)) throw e;
      const err = e as Error & { code: ProblemCode };
      problems.push(problem(err.code, 'error', err.message));
    }
  }
  return { authns, problems };
}

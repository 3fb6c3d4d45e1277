// nodemesh.v1.RequestAuthentication both ways: the control plane encodes with
// requestAuthnToProto; the agent validates with requestAuthnFromProto (NM_ERR_XDS_RESOURCE
// naming the field), so the proxy never holds an issuer it could not check tokens against.
import { SCOPES, type JwtRule, type RequestAuthentication, type Scope } from '../state/index.js';
import { bad, enumValue, headerName, labelsFromProto, nonEmpty } from './convert-common.js';
import type { PbJwtRule, PbRequestAuthentication } from './proto-l7.js';

const SCOPE: ReadonlySet<string> = new Set(SCOPES);

/** The message for a RequestAuthentication (resource name `namespace/name`). */
export function requestAuthnToProto(r: RequestAuthentication): PbRequestAuthentication {
  return {
    name: r.name,
    namespace: r.namespace,
    scope: r.scope,
    ...(r.selector ? { selector: { ...r.selector } } : {}),
    jwtRules: r.jwtRules.map((j) => ({
      issuer: j.issuer,
      audiences: [...j.audiences],
      jwks: j.jwks,
      fromHeaders: j.fromHeaders.map((h) => ({ ...h })),
      fromParams: [...j.fromParams],
      forwardOriginalToken: j.forwardOriginalToken,
    })),
  };
}

/** Empty (no keys: every token of the issuer fails), or a JSON object with a `keys` array. */
function jwks(text: string, f: string): string {
  if (text === '') return text;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    bad(f, 'is not JSON');
  }
  if (typeof v !== 'object' || v === null || !Array.isArray((v as { keys?: unknown }).keys)) bad(f, 'is not a JSON Web Key Set (an object with a "keys" array)');
  return text;
}

function jwtRule(j: PbJwtRule, f: string): JwtRule {
  return {
    issuer: nonEmpty(j.issuer, `${f}.issuer`),
    audiences: (j.audiences ?? []).map((a, i) => nonEmpty(a, `${f}.audiences[${i}]`)),
    jwks: jwks(j.jwks ?? '', `${f}.jwks`),
    fromHeaders: (j.fromHeaders ?? []).map((h, i) => ({ name: headerName(h.name, `${f}.from_headers[${i}].name`), prefix: h.prefix ?? '' })),
    fromParams: (j.fromParams ?? []).map((p, i) => nonEmpty(p, `${f}.from_params[${i}]`)),
    forwardOriginalToken: j.forwardOriginalToken === true,
  };
}

/** Validates a decoded RequestAuthentication named `name` (`namespace/name`). */
export function requestAuthnFromProto(pb: PbRequestAuthentication, name: string): RequestAuthentication {
  const n = nonEmpty(pb.name, 'name');
  const ns = nonEmpty(pb.namespace, 'namespace');
  if (`${ns}/${n}` !== name) bad('name', `${ns}/${n} differs from the resource name`);
  const scope = enumValue<Scope>(SCOPE, pb.scope, 'scope');
  // The map cannot say "unset": empty is none, as an empty matchLabels selects everything.
  // WORKLOAD_SELECTOR needs one; GLOBAL may have one (a root-namespace policy with a selector
  // selects in every namespace); NAMESPACE has none.
  const selector = labelsFromProto(pb.selector, 'selector');
  const has = Object.keys(selector).length > 0;
  if (scope === 'WORKLOAD_SELECTOR' && !has) bad('selector', 'is required for scope WORKLOAD_SELECTOR');
  if (scope === 'NAMESPACE' && has) bad('selector', 'is set, but scope is NAMESPACE');
  return {
    name: n,
    namespace: ns,
    scope,
    ...(has ? { selector } : {}),
    jwtRules: (pb.jwtRules ?? []).map((j, i) => jwtRule(j, `jwt_rules[${i}]`)),
  };
}

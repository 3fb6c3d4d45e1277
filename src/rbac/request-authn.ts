// Which RequestAuthentications apply to a workload: the JWT issuers its HTTP ports accept.
import type { JwtRule, RequestAuthentication } from '../state/index.js';

export interface AuthnTarget {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

const selects = (sel: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>): boolean => Object.entries(sel).every(([k, v]) => labels[k] === v);

/**
 * GLOBAL policies (the root namespace's; with a selector, only the workloads it selects, in
 * every namespace), the NAMESPACE policies of the workload's namespace, and the
 * WORKLOAD_SELECTOR policies of its namespace whose selector matches its labels. Istio applies
 * the union of their JWT rules.
 */
export function requestAuthnFor(all: Iterable<RequestAuthentication>, target: AuthnTarget): RequestAuthentication[] {
  const out: RequestAuthentication[] = [];
  for (const a of all) {
    if (a.selector && !selects(a.selector, target.labels)) continue;
    if (a.scope === 'GLOBAL' || (a.namespace === target.namespace && (a.scope === 'NAMESPACE' || a.selector))) out.push(a);
  }
  return out;
}

/** The JWT rules of the policies, in order: what JwtVerifier.verify takes. */
export function jwtRulesOf(authns: readonly RequestAuthentication[]): JwtRule[] {
  return authns.flatMap((a) => a.jwtRules);
}

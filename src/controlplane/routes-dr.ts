// DestinationRules → each Service's traffic policy and subsets. Which rule applies follows
// istiod for a client outside the Service's namespace: the Service's namespace first, then the
// root namespace; rules of one namespace merge (the oldest policy wins, subsets are added).
import type { Service } from '../k8s/index.js';
import type { TrafficPolicy } from '../state/index.js';
import type { DestinationRule, DrTrafficPolicy } from './resources-istio-net.js';
import { byAge, type CompileContext, type ResolvedSubsets } from './routes-context.js';

/** A model policy from a typed one; `base` is the rule's own, which a subset's sections replace. */
function policyOf(p: DrTrafficPolicy | undefined, base?: DrTrafficPolicy): TrafficPolicy | undefined {
  const pick = <K extends 'loadBalancer' | 'connectionPool' | 'outlierDetection'>(k: K): DrTrafficPolicy[K] => (p?.set.includes(k) ? p[k] : base?.[k]);
  const lb = pick('loadBalancer');
  const pool = pick('connectionPool');
  const od = pick('outlierDetection');
  const out: TrafficPolicy = { ...(lb ? { loadBalancer: lb } : {}), ...(pool && Object.keys(pool).length > 0 ? { connectionPool: { ...pool } } : {}), ...(od ? { outlierDetection: { ...od } } : {}) };
  return Object.keys(out).length > 0 ? out : undefined;
}

export function compileDestinationRules(ctx: CompileContext, rules: readonly DestinationRule[]): void {
  // Per Service: the rules that may apply, best tier first (0: the Service's namespace, 1: root).
  const candidates = new Map<Service, Array<{ dr: DestinationRule; tier: number }>>();
  for (const dr of byAge(rules, (d) => d.dr.createdAt)) {
    const ns = dr.metadata.namespace;
    ctx.reportNotes(dr, dr.dr.notes);
    const at = dr.dr.line;
    if (dr.dr.workloadSelector) continue; // noted by the validator
    const svc = ctx.serviceForHost(dr.dr.host, ns);
    if (!svc) {
      const why = dr.dr.host.includes('*') ? 'wildcard hosts are not supported' : 'no Service in the mesh has this host';
      ctx.report(dr, 'warning', 'NM_ERR_POLICY', at, `${JSON.stringify(dr.dr.host)}: ${why}; the rule is not applied`, ['spec', 'host']);
      continue;
    }
    const tier = ns === svc.metadata.namespace ? 0 : ns === ctx.mesh.rootNamespace ? 1 : -1;
    if (tier < 0) {
      ctx.report(dr, 'warning', 'NM_ERR_POLICY', at, `a DestinationRule outside the Service's namespace (${svc.metadata.namespace}) or the root namespace (${ctx.mesh.rootNamespace}) is a client-side override, which is not supported; the rule is not applied`, ['spec', 'host']);
      continue;
    }
    const list = candidates.get(svc) ?? [];
    list.push({ dr, tier });
    candidates.set(svc, list);
  }
  for (const [svc, list] of candidates) {
    const best = Math.min(...list.map((c) => c.tier));
    for (const { dr, tier } of list) {
      if (tier !== best) ctx.report(dr, 'warning', 'NM_ERR_CONFIG_CONFLICT', dr.dr.line, `the Service's namespace has a DestinationRule for ${dr.dr.host} too, which takes precedence; this one is not applied`, ['spec', 'host']);
    }
    const applied = list.filter((c) => c.tier === best).map((c) => c.dr);
    // Istio's merge: the oldest rule with a trafficPolicy gives it; every rule adds its subsets.
    const owner = applied.find((d) => d.dr.trafficPolicy);
    const base = owner?.dr.trafficPolicy;
    const merged: ResolvedSubsets = { subsets: [] };
    const tp = policyOf(base);
    if (tp) merged.trafficPolicy = tp;
    for (const dr of applied) {
      if (dr !== owner && dr.dr.trafficPolicy) {
        ctx.report(dr, 'warning', 'NM_ERR_CONFIG_CONFLICT', dr.dr.line, `DestinationRule ${owner!.metadata.namespace}/${owner!.metadata.name} (older) already sets the trafficPolicy of ${dr.dr.host}; this one's is ignored, its subsets are added`, ['spec', 'trafficPolicy']);
      }
      for (const s of dr.dr.subsets) {
        if (merged.subsets.some((x) => x.name === s.name)) {
          ctx.report(dr, 'warning', 'NM_ERR_CONFIG_CONFLICT', s.line, `subset ${JSON.stringify(s.name)} of ${dr.dr.host} is already defined by an older DestinationRule; ignored`, ['spec', 'subsets', dr.dr.subsets.indexOf(s), 'name']);
          continue;
        }
        const stp = s.trafficPolicy ? policyOf(s.trafficPolicy, base) : undefined;
        merged.subsets.push({ name: s.name, labels: { ...s.labels }, ...(stp ? { trafficPolicy: stp } : {}) });
      }
    }
    ctx.builder(svc).policy = merged;
  }
}

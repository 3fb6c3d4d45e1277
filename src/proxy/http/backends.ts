// Which backend of a rule a request goes to (weighted), and the DestinationRule policy that
// applies to a (Service, subset).
import type { DirectResponse } from '../../l7/index.js';
import type { BackendRef, RouteRule, ServiceRoutes, TrafficPolicy } from '../../state/index.js';

/**
 * A backend of `rule` by weight: each gets weight/total of the requests; weight 0 gets none.
 * Undefined when the rule has no backend with weight (the caller answers 500, Gateway API).
 * `rand` returns [0, 1) like Math.random.
 */
export function pickBackend(rule: RouteRule, rand: () => number): BackendRef | undefined {
  const bs = rule.backends;
  if (bs.length === 1) return bs[0]!.weight > 0 ? bs[0] : undefined;
  let total = 0;
  for (const b of bs) if (b.weight > 0) total += b.weight;
  if (total === 0) return undefined;
  let r = rand() * total;
  let last: BackendRef | undefined;
  for (const b of bs) {
    if (b.weight <= 0) continue;
    if (r < b.weight) return b;
    r -= b.weight;
    last = b;
  }
  return last; // rounding at the top end of [0, total)
}

/** The answer for a matched rule with nothing to send to (flag NC: Envoy's "no cluster"). */
export function noBackendResponse(): DirectResponse {
  return { respond: { status: 500, responseFlags: 'NC' } };
}

const merged = new WeakMap<ServiceRoutes, Map<string, TrafficPolicy | undefined>>();

/**
 * The DestinationRule policy for requests to `subset` (or the Service as a whole): the subset's
 * own settings replace the Service's field by field (loadBalancer, connectionPool,
 * outlierDetection each as a whole), as Istio merges them. Computed once per ServiceRoutes and
 * subset.
 */
export function trafficPolicyFor(sr: ServiceRoutes | undefined, subset?: string): TrafficPolicy | undefined {
  if (!sr) return undefined;
  const top = sr.trafficPolicy;
  if (subset === undefined) return top;
  let bySubset = merged.get(sr);
  if (!bySubset) {
    bySubset = new Map();
    merged.set(sr, bySubset);
  }
  if (bySubset.has(subset)) return bySubset.get(subset);
  const own = sr.subsets.find((s) => s.name === subset)?.trafficPolicy;
  let p: TrafficPolicy | undefined;
  if (!own) p = top;
  else if (!top) p = own;
  else {
    p = {};
    const lb = own.loadBalancer ?? top.loadBalancer;
    const pool = own.connectionPool ?? top.connectionPool;
    const od = own.outlierDetection ?? top.outlierDetection;
    if (lb) p.loadBalancer = lb;
    if (pool) p.connectionPool = pool;
    if (od) p.outlierDetection = od;
  }
  bySubset.set(subset, p);
  return p;
}

// The L7 route compiler: HTTPRoutes attached to Services (GAMMA), VirtualServices and
// DestinationRules → one ServiceRoutes (src/state/routes.ts) per Service that has routes or a
// traffic policy, plus the problems found. Pure: the same snapshot gives the same routes.
import type { ServiceRoutes } from '../state/index.js';
import { CompileContext, type CompileOptions } from './routes-context.js';
import { compileDestinationRules } from './routes-dr.js';
import { compileHttpRoutes } from './routes-gamma.js';
import { compileVirtualServices } from './routes-istio.js';
import type { ConfigSnapshot } from './sources.js';
import type { MeshSettings } from './translate.js';
import type { ConfigProblem } from './validate.js';

export { UNKNOWN_SUBSET_LABEL, UNRESOLVED_SUFFIX, unresolvedKey, type CompileOptions } from './routes-context.js';
export { DEFAULT_RETRY_BACKOFF_MS, GAMMA_DEFAULT_RETRY_ATTEMPTS } from './routes-gamma.js';
export { ISTIO_DEFAULT_RETRY } from './routes-istio.js';

export type RouteInputs = Pick<ConfigSnapshot, 'services' | 'httpRoutes' | 'virtualServices' | 'destinationRules' | 'namespaces'>;

/**
 * Compiles the routing resources of a snapshot.
 *
 * - DestinationRules first: their subsets are what VirtualService destinations name.
 * - HTTPRoutes next; a VirtualService then fills only the (port, consumer namespace) tables no
 *   HTTPRoute holds. Istio documents no rule for an HTTPRoute and a VirtualService on one
 *   Service (istiod orders both by age within each visibility group); the standard API wins
 *   here, and the VirtualService gets a warning naming the ports it lost.
 * - A consumer table (a route in another namespace than its Service) is for that namespace's
 *   clients and replaces the producer table for them, whichever API each came from.
 * - Hostnames never select routes: the destination Service does (GEP-1294 for HTTPRoute, and
 *   ambient Istio for VirtualService hosts), so every entry's `hostnames` is empty.
 *
 * Output is sorted by Service key, tables by port with the producer table first.
 */
export function compileRoutes(snap: RouteInputs, mesh: MeshSettings, options: CompileOptions = {}): { routes: ServiceRoutes[]; problems: ConfigProblem[] } {
  const ctx = new CompileContext(mesh, snap.services, options);
  compileDestinationRules(ctx, snap.destinationRules);
  compileHttpRoutes(ctx, snap.httpRoutes);
  compileVirtualServices(ctx, snap.virtualServices);
  const routes: ServiceRoutes[] = [];
  for (const b of ctx.builders()) {
    if (b.tables.size === 0 && !b.policy) continue;
    const tables = [...b.tables.values()]
      .map((t) => t.table)
      .sort((x, y) => x.port - y.port || (x.consumerNamespace ?? '').localeCompare(y.consumerNamespace ?? ''));
    routes.push({
      service: b.key,
      rules: b.rules,
      tables,
      ...(b.policy?.trafficPolicy ? { trafficPolicy: b.policy.trafficPolicy } : {}),
      subsets: b.policy?.subsets ?? [],
    });
  }
  routes.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
  return { routes, problems: ctx.problems };
}

// Gateway API HTTPRoutes attached to Services (GAMMA, GEP-1294) → rules and route tables: one
// table per Service port and consumer namespace, its (match, rule) pairs in the precedence order
// the HTTPRoute spec prescribes across every route attached to that port.
import type { FieldPath } from '../k8s/index.js';
import type { BackendRef, HttpMatch, RouteFilter, RouteRule } from '../state/index.js';
import type { HttpBackendObjectRef, HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRule } from './resources.js';
import { byAge, tcpPorts, unresolvedKey, type CompileContext, type ServiceBuilder } from './routes-context.js';
import { serviceKey } from './translate.js';

/** Retries a `retry` stanza gets when it names no attempts: istiod's choice (its mesh default). */
export const GAMMA_DEFAULT_RETRY_ATTEMPTS = 2;
/** The first retry's wait when `backoff` is unset: Envoy's (and Istio's) 25ms base interval. */
export const DEFAULT_RETRY_BACKOFF_MS = 25;

/** The parentRef test kube-status.ts uses for Accepted, so the status and the routes agree. */
const isServiceParent = (r: { kind?: string; group?: string }) => r.kind === 'Service' && (r.group === undefined || r.group === '' || r.group === 'core');

/** Gateway API leaves regex precedence to implementations; this is istiod's: Exact > prefix > regex. */
const RANK: Readonly<Record<string, number>> = { Exact: 3, PathPrefix: 2, Prefix: 2, RegularExpression: 1 };

interface Candidate {
  match: HttpMatch;
  rule: RouteRule;
  /** The route's place in age order, the rule's in the route, the match's in the rule. */
  order: [number, number, number];
}

/**
 * The HTTPRoute precedence: Exact path, then the longest prefix (characters), a method, the most
 * headers, the most query parameters; then the oldest route, `ns/name`, rule and match order.
 */
function precedence(a: Candidate, b: Candidate): number {
  const pa = a.match.path!;
  const pb = b.match.path!;
  return (
    RANK[pb.type]! - RANK[pa.type]! ||
    pb.value.length - pa.value.length ||
    Number(b.match.method !== undefined) - Number(a.match.method !== undefined) ||
    b.match.headers.length - a.match.headers.length ||
    b.match.queryParams.length - a.match.queryParams.length ||
    a.order[0] - b.order[0] ||
    a.order[1] - b.order[1] ||
    a.order[2] - b.order[2]
  );
}

/** A match without a path is PathPrefix `/`; of repeated header (query) names only the first counts. */
export function gammaMatch(m: HttpRouteMatch): HttpMatch {
  const first = <T extends { name: string }>(xs: T[], key: (n: string) => string) => xs.filter((x, i) => xs.findIndex((y) => key(y.name) === key(x.name)) === i);
  return {
    path: m.path ? { ...m.path } : { type: 'PathPrefix', value: '/' },
    ...(m.method ? { method: m.method } : {}),
    headers: first(m.headers, (n) => n.toLowerCase()).map((h) => ({ name: h.name, type: h.type, value: h.value })),
    queryParams: first(m.queryParams, (n) => n).map((q) => ({ name: q.name, type: q.type, value: q.value })),
  };
}

/** A Service backend's key and port; a reference that resolves to no Service port gets a key that names none. */
function resolveBackend(ctx: CompileContext, route: HttpRoute, ref: HttpBackendObjectRef, path: FieldPath, line: number, outcome: string): { key: string; port: number; ok: boolean } {
  const ns = ref.namespace ?? route.metadata.namespace;
  const kind = ref.kind ?? 'Service';
  const group = ref.group ?? '';
  const bad = (why: string) => {
    ctx.report(route, 'error', 'NM_ERR_POLICY', line, `${why}; ${outcome}`, path);
    return { key: unresolvedKey(ns, ref.name), port: ref.port ?? 0, ok: false };
  };
  if (kind !== 'Service' || group !== '') return bad(`backend kind ${group ? `${group}/` : ''}${kind} is not supported, only Service`);
  if (ns !== route.metadata.namespace && ctx.options.crossNamespaceBackends === 'refuse') {
    return bad(`Service ${ns}/${ref.name} is in another namespace, which needs a ReferenceGrant, and ReferenceGrants are not read`);
  }
  const svc = ctx.service(ns, ref.name);
  if (!svc) return bad(`backend Service ${ns}/${ref.name} does not exist`);
  if (!tcpPorts(svc).some((p) => p.port === ref.port)) return bad(`backend Service ${ns}/${ref.name} has no TCP port ${ref.port}`);
  return { key: serviceKey(ctx.mesh, svc), port: ref.port!, ok: true };
}

/** The model's filters; `failClosed` when one cannot be honoured and the spec wants an error instead. */
function compileFilters(ctx: CompileContext, route: HttpRoute, filters: HttpRouteFilter[], base: FieldPath, scope: string): { filters: RouteFilter[]; failClosed: boolean } {
  const out: RouteFilter[] = [];
  let failClosed = false;
  filters.forEach((f, i) => {
    const fp: FieldPath = [...base, i];
    switch (f.type) {
      case 'RequestHeaderModifier':
      case 'ResponseHeaderModifier':
      case 'URLRewrite':
      case 'RequestRedirect':
        out.push({ ...f });
        break;
      case 'RequestMirror': {
        const r = resolveBackend(ctx, route, f.backendRef, [...fp, 'requestMirror', 'backendRef'], f.line, 'nothing is mirrored');
        if (r.ok) out.push({ type: 'RequestMirror', backend: { service: r.key, port: r.port, weight: 1, filters: [] }, percent: f.percent });
        break;
      }
      case 'CORS':
        ctx.report(route, 'warning', 'NM_ERR_POLICY', f.line, 'the CORS filter is not supported; responses carry no CORS headers (browsers refuse cross-origin reads)', fp);
        break;
      default:
        // "If a reference to a custom filter type cannot be resolved, the filter MUST NOT be
        // skipped": requests it would have processed get an error. ExternalAuth must fail closed.
        ctx.report(route, 'error', 'NM_ERR_POLICY', f.line, `the ${f.type} filter is not supported; requests ${scope} get 500`, fp);
        failClosed = true;
    }
  });
  return { filters: out, failClosed };
}

function compileRule(ctx: CompileContext, route: HttpRoute, rule: HttpRouteRule, i: number): RouteRule {
  const p: FieldPath = ['spec', 'rules', i];
  const rf = compileFilters(ctx, route, rule.filters, [...p, 'filters'], 'matching this rule');
  const backends = rule.backendRefs.map((b, j): BackendRef => {
    const bp: FieldPath = [...p, 'backendRefs', j];
    const r = resolveBackend(ctx, route, b, bp, b.line, 'requests sent to it get 500');
    const bf = compileFilters(ctx, route, b.filters, [...bp, 'filters'], 'sent to this backend');
    return { service: bf.failClosed ? unresolvedKey(b.namespace ?? route.metadata.namespace, b.name) : r.key, port: r.port, weight: b.weight, filters: bf.filters };
  });
  const t = rule.timeouts;
  const attempts = rule.retry ? (rule.retry.attempts ?? GAMMA_DEFAULT_RETRY_ATTEMPTS) : 0;
  return {
    source: `HTTPRoute ${route.metadata.namespace}/${route.metadata.name} rule ${i}${rule.name ? ` (${rule.name})` : ''}`,
    matches: rule.matches.length > 0 ? rule.matches.map(gammaMatch) : [gammaMatch({ headers: [], queryParams: [] })],
    filters: rf.failClosed ? [] : rf.filters,
    backends: rf.failClosed ? [] : backends,
    ...(t?.request ? { timeoutMs: t.request } : {}),
    ...(t?.backendRequest ? { backendTimeoutMs: t.backendRequest } : {}),
    // "Implementations SHOULD retry on connection errors ... if a retry stanza is configured."
    ...(rule.retry && attempts > 0
      ? { retry: { attempts, backoffMs: rule.retry.backoffMs ?? DEFAULT_RETRY_BACKOFF_MS, codes: [...rule.retry.codes].sort((a, b) => a - b), onConnectFailure: true } }
      : {}),
  };
}

/** The Service ports a parentRef attaches to: `port`, `sectionName` (a port name), else all. */
function parentPorts(ref: HttpRoute['route']['parentRefs'][number], ports: ReturnType<typeof tcpPorts>): number[] {
  return ports.filter((sp) => (ref.port === undefined || sp.port === ref.port) && (ref.sectionName === undefined || sp.name === ref.sectionName)).map((sp) => sp.port);
}

export function compileHttpRoutes(ctx: CompileContext, routes: readonly HttpRoute[]): void {
  const pending = new Map<ServiceBuilder, Map<string, { port: number; consumer?: string; candidates: Candidate[] }>>();
  byAge(routes, (r) => r.route.createdAt).forEach((route, order) => {
    const ns = route.metadata.namespace;
    const parents = route.route.parentRefs.map((ref, i) => ({ ref, i })).filter((x) => isServiceParent(x.ref));
    if (parents.length === 0) return; // a Gateway's route: another controller's
    ctx.reportNotes(route, route.route.notes);
    if (route.route.hostnames.length > 0) {
      ctx.report(route, 'warning', 'NM_ERR_POLICY', route.source.line, 'hostnames are ignored for Service parents (GEP-1294: "GAMMA implementations SHOULD NOT infer any functionality from the hostnames field"); match the Host header instead', ['spec', 'hostnames']);
    }
    let rules: RouteRule[] | undefined;
    const attached = new Set<string>();
    for (const { ref, i } of parents) {
      const at = ref.line ?? route.source.line;
      const path: FieldPath = ['spec', 'parentRefs', i];
      const svcNs = ref.namespace ?? ns;
      const svc = ctx.service(svcNs, ref.name);
      if (!svc) {
        ctx.report(route, 'error', 'NM_ERR_POLICY', at, `Service ${svcNs}/${ref.name} does not exist; the route is not attached to it`, path);
        continue;
      }
      if (svc.spec.clusterIP === 'None') {
        ctx.report(route, 'warning', 'NM_ERR_POLICY', at, `Service ${svcNs}/${ref.name} is headless (no cluster IP), which cannot be a route parent (GEP-1294); the route is not attached to it`, path);
        continue;
      }
      const ports = parentPorts(ref, tcpPorts(svc));
      if (ports.length === 0) {
        const want = [ref.port !== undefined ? `port ${ref.port}` : '', ref.sectionName !== undefined ? `a port named ${JSON.stringify(ref.sectionName)}` : ''].filter(Boolean).join(' and ');
        ctx.report(route, 'error', 'NM_ERR_POLICY', at, `Service ${svcNs}/${ref.name} has no TCP ${want || 'port'}; the route is not attached to it`, path);
        continue;
      }
      rules ??= route.route.rules.map((r, k) => compileRule(ctx, route, r, k));
      // A route in the Service's namespace is its producer's, for every client; any other is
      // its own namespace's consumer route.
      const consumer = svcNs === ns ? undefined : ns;
      const builder = ctx.builder(svc);
      const tables = pending.get(builder) ?? new Map();
      pending.set(builder, tables);
      for (const port of ports) {
        const key = `${port}|${consumer ?? ''}`;
        if (attached.has(`${svcNs}/${ref.name}|${key}`)) continue;
        attached.add(`${svcNs}/${ref.name}|${key}`);
        const t = tables.get(key) ?? { port, ...(consumer ? { consumer } : {}), candidates: [] };
        tables.set(key, t);
        rules.forEach((rule, k) => rule.matches.forEach((match, mi) => t.candidates.push({ match, rule, order: [order, k, mi] })));
      }
    }
  });
  for (const [builder, tables] of pending) {
    for (const t of tables.values()) {
      const entries = t.candidates.sort(precedence).map((c) => ({ match: c.match, rule: builder.ruleIndex(c.rule), hostnames: [] }));
      builder.setTable(t.port, t.consumer, entries, 'HTTPRoute');
    }
  }
}

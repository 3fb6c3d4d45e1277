// VirtualServices bound to the mesh → rules and route tables. Their http routes keep their order
// (first match wins, no sorting); one VirtualService per host and scope applies (the oldest), as
// istiod does for sidecars, and HTTPRoutes attached to the same Service port take precedence.
import type { FieldPath } from '../k8s/index.js';
import type { BackendRef, FaultPolicy, HttpMatch, RetryPolicy, RouteEntry, RouteFilter, RouteRule, ValueMatch } from '../state/index.js';
import { MESH_GATEWAY, type VirtualService, type VsDestination, type VsHeaders, type VsHttpRoute, type VsMatch, type VsRetries } from './resources-istio-net.js';
import { byAge, tcpPorts, UNKNOWN_SUBSET_LABEL, unresolvedKey, type CompileContext } from './routes-context.js';
import { DEFAULT_RETRY_BACKOFF_MS } from './routes-gamma.js';
import { serviceKey } from './translate.js';

/** What a route without `retries` gets: Istio's mesh default (2 retries on connect failure, refused stream). */
export const ISTIO_DEFAULT_RETRY: Readonly<RetryPolicy> = { attempts: 2, backoffMs: DEFAULT_RETRY_BACKOFF_MS, codes: [], onConnectFailure: true };
/** Istio's default `retryOn` when `retries` is given without one. */
const DEFAULT_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'];
const QUIETLY_IGNORED = new Set(['unavailable', 'cancelled', 'retriable-status-codes']);

type Report = (severity: 'error' | 'warning', line: number, message: string, path: FieldPath) => void;

function valueMatch(x: { name: string; match: { type: ValueMatch['type']; value: string } }, invert: boolean): ValueMatch {
  return { name: x.name, type: x.match.type, value: x.match.value, ...(invert ? { invert: true } : {}) };
}

export function vsMatch(m: VsMatch): HttpMatch {
  const uri = m.uri;
  return {
    ...(uri && uri.type !== 'Present' ? { path: { type: uri.type, value: uri.value } } : {}),
    ...(m.method ? { method: m.method } : {}),
    headers: [...m.headers.map((h) => valueMatch(h, false)), ...m.withoutHeaders.map((h) => valueMatch(h, true))],
    queryParams: m.queryParams.map((q) => valueMatch(q, false)),
  };
}

/** Envoy's retry conditions as the model has them: status codes, and connect failures or resets. */
export function retryPolicy(r: VsRetries | undefined, report: Report, line: number, path: FieldPath): RetryPolicy | undefined {
  if (!r) return { ...ISTIO_DEFAULT_RETRY, codes: [] };
  if (r.attempts <= 0) return undefined;
  const codes = new Set<number>();
  let onConnectFailure = false;
  const ignored: string[] = [];
  for (const c of r.retryOn ?? DEFAULT_RETRY_ON) {
    if (/^\d+$/.test(c)) codes.add(Number(c));
    else if (c === '5xx') {
      for (let s = 500; s <= 599; s++) codes.add(s);
      onConnectFailure = true;
    } else if (c === 'gateway-error') {
      [502, 503, 504].forEach((s) => codes.add(s));
      onConnectFailure = true; // Envoy retries resets under gateway-error as it does under 5xx
    } else if (c === 'connect-failure' || c === 'reset' || c === 'reset-before-request' || c === 'refused-stream') onConnectFailure = true;
    else if (c === 'retriable-4xx') codes.add(409);
    else if (!(r.retryOn === undefined && QUIETLY_IGNORED.has(c)) && c !== 'retriable-status-codes') ignored.push(c);
  }
  if (ignored.length > 0) report('warning', line, `retryOn ${ignored.join(', ')} ${ignored.length > 1 ? 'are' : 'is'} not supported (gRPC and header conditions); ignored`, [...path, 'retryOn']);
  return {
    attempts: r.attempts,
    backoffMs: r.backoffMs ?? DEFAULT_RETRY_BACKOFF_MS,
    codes: [...codes].sort((a, b) => a - b),
    onConnectFailure,
    ...(r.perTryTimeoutMs !== undefined ? { perTryTimeoutMs: r.perTryTimeoutMs } : {}),
  };
}

function faultPolicy(h: VsHttpRoute): FaultPolicy | undefined {
  const f = h.fault;
  if (!f) return undefined;
  return {
    ...(f.delay ? { delay: { ms: f.delay.ms, percent: f.delay.percent } } : {}),
    // A gRPC abort is an HTTP 200 whose grpc-status says the error, as Envoy sends it.
    ...(f.abort ? { abort: { status: f.abort.httpStatus ?? 200, percent: f.abort.percent, ...(f.abort.grpcStatus !== undefined ? { grpcStatus: f.abort.grpcStatus } : {}) } } : {}),
  };
}

/**
 * A destination as a backend. A host that is no Service gets a key naming none (500); a port the
 * Service lacks likewise; an unknown subset keeps its name with a label no endpoint has, so no
 * endpoint is chosen, as Istio's missing subset cluster chooses none.
 */
function destination(ctx: CompileContext, vs: VirtualService, d: VsDestination, report: Report, line: number, path: FieldPath, outcome: string): Omit<BackendRef, 'weight' | 'filters'> & { ok: boolean } {
  const ns = vs.metadata.namespace;
  const svc = ctx.serviceForHost(d.host, ns);
  if (!svc) {
    report('error', line, `destination host ${JSON.stringify(d.host)} is not a Service in the mesh; ${outcome}`, [...path, 'host']);
    return { service: unresolvedKey(ns, d.host), port: d.port ?? 0, ok: false };
  }
  const ports = tcpPorts(svc);
  if (d.port !== undefined && !ports.some((p) => p.port === d.port)) {
    report('error', line, `Service ${svc.metadata.namespace}/${svc.metadata.name} has no TCP port ${d.port}; ${outcome}`, [...path, 'port', 'number']);
    return { service: unresolvedKey(svc.metadata.namespace, svc.metadata.name), port: d.port, ok: false };
  }
  // Istio: "If a service exposes only a single port it is not required to explicitly select the port."
  const port = d.port ?? (ports.length === 1 ? ports[0]!.port : 0);
  const out = { service: serviceKey(ctx.mesh, svc), port, ok: true };
  if (d.subset === undefined) return out;
  const known = ctx.builder(svc).policy?.subsets.find((s) => s.name === d.subset);
  if (!known) {
    report('error', line, `subset ${JSON.stringify(d.subset)} is not defined by a DestinationRule for ${svc.metadata.name}.${svc.metadata.namespace}; no endpoint is chosen for it (503)`, [...path, 'subset']);
    return { ...out, subset: { name: d.subset, labels: { [UNKNOWN_SUBSET_LABEL]: d.subset } } };
  }
  return { ...out, subset: { name: known.name, labels: { ...known.labels } } };
}

function headerFilters(h: VsHeaders): RouteFilter[] {
  return [
    ...(h.request ? [{ type: 'RequestHeaderModifier' as const, modifier: h.request }] : []),
    ...(h.response ? [{ type: 'ResponseHeaderModifier' as const, modifier: h.response }] : []),
  ];
}

interface CompiledHttp {
  /** Per match (in order), the rule it belongs to; one match-all pair when the route has no match. */
  pairs: Array<{ m?: VsMatch; match: HttpMatch; rule: RouteRule }>;
}

/**
 * One http route → its rule(s). A `rewrite.uri` replaces the matched prefix after a prefix match
 * and the whole path after any other: a route mixing both is split into two rules.
 */
function compileHttp(ctx: CompileContext, vs: VirtualService, h: VsHttpRoute, j: number): CompiledHttp {
  const p: FieldPath = ['spec', 'http', j];
  const report: Report = (severity, line, message, path) => ctx.report(vs, severity, 'NM_ERR_POLICY', line, message, path);
  const backends: BackendRef[] = h.route.map((r, i) => {
    const { ok: _ok, ...b } = destination(ctx, vs, r.destination, report, r.line, [...p, 'route', i, 'destination'], 'requests sent to it get 500');
    // "If there is only one destination in a rule, it will receive all traffic."
    return { ...b, weight: h.route.length === 1 ? 1 : (r.weight ?? 0), filters: headerFilters(r.headers) };
  });
  const mirrors: RouteFilter[] = [];
  for (const m of h.mirrors) {
    const { ok, ...b } = destination(ctx, vs, m.destination, report, m.line, m.path, 'nothing is mirrored to it');
    if (ok) mirrors.push({ type: 'RequestMirror', backend: { ...b, weight: 1, filters: [] }, percent: m.percent });
  }
  const rd = h.redirect;
  const retry = retryPolicy(h.retries, report, h.retries?.line ?? h.line, [...p, 'retries']);
  const fault = faultPolicy(h);
  const filtersFor = (pathMode: 'prefix' | 'full'): RouteFilter[] => {
    if (h.unsupportedAction) return [];
    const out: RouteFilter[] = [];
    const rw = h.rewrite;
    if (rw && (rw.uri !== undefined || rw.authority !== undefined)) {
      out.push({ type: 'URLRewrite', ...(rw.authority ? { hostname: rw.authority } : {}), ...(rw.uri !== undefined ? { path: { type: pathMode === 'prefix' ? 'ReplacePrefixMatch' : 'ReplaceFullPath', value: rw.uri } } : {}) });
    }
    if (rd) {
      // redirect.uri replaces the whole path "irrespective of the request URI being matched as an exact path or prefix".
      const path = rd.uri ? { type: 'ReplaceFullPath' as const, value: rd.uri } : rd.prefixRewrite !== undefined ? { type: 'ReplacePrefixMatch' as const, value: rd.prefixRewrite } : undefined;
      out.push({ type: 'RequestRedirect', ...(rd.scheme ? { scheme: rd.scheme } : {}), ...(rd.authority ? { hostname: rd.authority } : {}), ...(rd.port ? { port: rd.port } : {}), ...(path ? { path } : {}), statusCode: rd.redirectCode });
    }
    return [...out, ...headerFilters(h.headers), ...mirrors];
  };
  const matches: Array<VsMatch | undefined> = h.match.length > 0 ? h.match : [undefined];
  const isPrefix = (m: VsMatch | undefined) => m?.uri?.type === 'Prefix';
  const split = h.rewrite?.uri !== undefined && matches.some(isPrefix) && !matches.every(isPrefix);
  const source = `VirtualService ${vs.metadata.namespace}/${vs.metadata.name} http ${j}${h.name ? ` (${h.name})` : ''}`;
  const rules = new Map<string, RouteRule>();
  const pairs: CompiledHttp['pairs'] = [];
  for (const m of matches) {
    const mode = split ? (isPrefix(m) ? 'prefix' : 'full') : matches.every(isPrefix) ? 'prefix' : 'full';
    let rule = rules.get(mode);
    if (!rule) {
      rule = {
        source: split ? `${source}, ${mode === 'prefix' ? 'prefix' : 'other'} matches` : source,
        matches: [],
        filters: filtersFor(mode),
        backends: h.unsupportedAction || rd ? [] : backends,
        ...(h.timeoutMs !== undefined ? { timeoutMs: h.timeoutMs } : {}),
        ...(retry ? { retry } : {}),
        ...(fault ? { fault } : {}),
      };
      rules.set(mode, rule);
    }
    const match = m ? vsMatch(m) : { headers: [], queryParams: [] };
    rule.matches.push(match);
    pairs.push({ ...(m ? { m } : {}), match, rule });
  }
  return { pairs };
}

/** Whether a match can apply on a port of the mesh (not another gateway's, not another port's, evaluable). */
function appliesOn(m: VsMatch | undefined, port: number): boolean {
  if (!m) return true;
  return !m.unsupported && (m.gateways.length === 0 || m.gateways.includes(MESH_GATEWAY)) && (m.port === undefined || m.port === port);
}

export function compileVirtualServices(ctx: CompileContext, list: readonly VirtualService[]): void {
  const claimed = new Map<string, VirtualService>();
  for (const vs of byAge(list, (v) => v.vs.createdAt)) {
    // Bound to gateways and not to the mesh: the gateways' business.
    if (vs.vs.gateways.length > 0 && !vs.vs.gateways.includes(MESH_GATEWAY)) continue;
    ctx.reportNotes(vs, vs.vs.notes);
    const ns = vs.metadata.namespace;
    let compiled: CompiledHttp[] | undefined;
    vs.vs.hosts.forEach((host, hi) => {
      const at = vs.vs.hostLines[hi] ?? vs.source.line;
      const hp: FieldPath = ['spec', 'hosts', hi];
      const svc = ctx.serviceForHost(host, ns);
      if (!svc) {
        const why = host.includes('*') ? 'wildcard hosts are not supported' : 'no Service in the mesh has this host';
        ctx.report(vs, 'warning', 'NM_ERR_POLICY', at, `${JSON.stringify(host)}: ${why}; ignored`, hp);
        return;
      }
      const svcId = `${svc.metadata.namespace}/${svc.metadata.name}`;
      // In the Service's namespace: the producer's routes, for every client; elsewhere: for
      // clients in the VirtualService's own namespace only.
      const consumer = svc.metadata.namespace === ns ? undefined : ns;
      const claim = `${svcId}|${consumer ?? ''}`;
      const owner = claimed.get(claim);
      if (owner && owner !== vs) {
        ctx.report(vs, 'warning', 'NM_ERR_CONFIG_CONFLICT', at, `VirtualService ${owner.metadata.namespace}/${owner.metadata.name} (older) already routes Service ${svcId}${consumer ? ` for clients in ${consumer}` : ''}; Istio applies one VirtualService per host to mesh traffic, so this one is ignored for it`, hp);
        return;
      }
      claimed.set(claim, vs);
      compiled ??= vs.vs.http.map((h, j) => compileHttp(ctx, vs, h, j));
      const builder = ctx.builder(svc);
      const shadowed: number[] = [];
      for (const { port } of tcpPorts(svc)) {
        if (builder.table(port, consumer)?.origin === 'HTTPRoute') {
          shadowed.push(port);
          continue;
        }
        const entries: RouteEntry[] = [];
        for (const c of compiled) for (const pair of c.pairs) if (appliesOn(pair.m, port)) entries.push({ match: pair.match, rule: builder.ruleIndex(pair.rule), hostnames: [] });
        // No route for this port: the port keeps the Service's default behaviour, as in Istio.
        if (entries.length > 0) builder.setTable(port, consumer, entries, 'VirtualService');
      }
      if (shadowed.length > 0) {
        ctx.report(vs, 'warning', 'NM_ERR_CONFIG_CONFLICT', at, `HTTPRoutes are attached to Service ${svcId} port ${shadowed.join(', ')}${consumer ? ` for clients in ${consumer}` : ''} and take precedence; this VirtualService is not applied there`, hp);
      }
    });
  }
}

// nodemesh.v1.ServiceRoutes both ways: the control plane encodes its compiled routes with
// serviceRoutesToProto; the agent validates what arrives with serviceRoutesFromProto, which
// rejects (NM_ERR_XDS_RESOURCE, naming the field) anything the proxy could not follow as sent.
import type {
  BackendRef,
  FaultPolicy,
  HeaderModifier,
  HttpMatch,
  LbAlgorithm,
  PathMatchType,
  PathModifier,
  RetryPolicy,
  RouteFilter,
  RouteRule,
  RouteTable,
  ServiceRoutes,
  TrafficPolicy,
  ValueMatch,
  ValueMatchType,
} from '../state/index.js';
import { bad, EnumMap, headerName, headerValue, int, labelsFromProto, methodName, namespacedName, nonEmpty, percent, regex } from './convert-common.js';
import type {
  PbBackendRef,
  PbFaultPolicy,
  PbHeaderModifier,
  PbHttpMatch,
  PbLoadBalancer,
  PbPathMatchType,
  PbPathModifier,
  PbPathModifierType,
  PbRetryPolicy,
  PbRouteFilter,
  PbRouteRule,
  PbRouteTable,
  PbServiceRoutes,
  PbTrafficPolicy,
  PbValueMatch,
  PbValueMatchType,
} from './proto-l7.js';

const PATH_TYPES = new EnumMap<PathMatchType, PbPathMatchType>({ Exact: 'EXACT', PathPrefix: 'PATH_PREFIX', Prefix: 'PREFIX', RegularExpression: 'REGULAR_EXPRESSION' });
const VALUE_TYPES = new EnumMap<ValueMatchType, PbValueMatchType>({ Exact: 'EXACT', Prefix: 'PREFIX', RegularExpression: 'REGULAR_EXPRESSION', Present: 'PRESENT' });
const MODIFIER_TYPES = new EnumMap<PathModifier['type'], PbPathModifierType>({ ReplaceFullPath: 'REPLACE_FULL_PATH', ReplacePrefixMatch: 'REPLACE_PREFIX_MATCH' });
const LB = new EnumMap<LbAlgorithm, PbLoadBalancer>({ ROUND_ROBIN: 'ROUND_ROBIN', LEAST_REQUEST: 'LEAST_REQUEST', RANDOM: 'RANDOM' });

const U32 = 0xffff_ffff;
/** Gateway API's bound on a backendRef weight. */
const MAX_WEIGHT = 1_000_000;
const ms = (v: unknown, f: string) => int(v, f, 0, Number.MAX_SAFE_INTEGER);
const opt = <K extends string, V>(k: K, v: V | undefined): { [P in K]?: V } => (v === undefined ? {} : ({ [k]: v } as { [P in K]: V }));

// ---- to proto ---------------------------------------------------------------------------

function httpMatchToProto(m: HttpMatch): PbHttpMatch {
  const vm = (v: ValueMatch): PbValueMatch => ({ name: v.name, type: VALUE_TYPES.toProto[v.type], value: v.value, ...opt('invert', v.invert) });
  return {
    ...(m.path ? { path: { type: PATH_TYPES.toProto[m.path.type], value: m.path.value } } : {}),
    ...opt('method', m.method),
    headers: m.headers.map(vm),
    queryParams: m.queryParams.map(vm),
  };
}

const pathModToProto = (p: PathModifier): PbPathModifier => ({ type: MODIFIER_TYPES.toProto[p.type], value: p.value });
const modToProto = (m: HeaderModifier): PbHeaderModifier => ({
  set: m.set.map(([name, value]) => ({ name, value })),
  add: m.add.map(([name, value]) => ({ name, value })),
  remove: [...m.remove],
});

function filterToProto(f: RouteFilter): PbRouteFilter {
  switch (f.type) {
    case 'RequestHeaderModifier':
      return { requestHeaderModifier: modToProto(f.modifier) };
    case 'ResponseHeaderModifier':
      return { responseHeaderModifier: modToProto(f.modifier) };
    case 'URLRewrite':
      return { urlRewrite: { ...opt('hostname', f.hostname), ...(f.path ? { path: pathModToProto(f.path) } : {}) } };
    case 'RequestRedirect':
      return {
        requestRedirect: { ...opt('scheme', f.scheme), ...opt('hostname', f.hostname), ...opt('port', f.port), ...(f.path ? { path: pathModToProto(f.path) } : {}), statusCode: f.statusCode },
      };
    case 'RequestMirror':
      return { requestMirror: { backend: backendToProto(f.backend), percent: f.percent } };
  }
}

function backendToProto(b: BackendRef): PbBackendRef {
  return {
    service: b.service,
    port: b.port,
    weight: b.weight,
    ...(b.subset ? { subset: { name: b.subset.name, labels: { ...b.subset.labels } } } : {}),
    filters: b.filters.map(filterToProto),
  };
}

function trafficPolicyToProto(t: TrafficPolicy): PbTrafficPolicy {
  const o = t.outlierDetection;
  return {
    ...(t.loadBalancer ? { loadBalancer: LB.toProto[t.loadBalancer] } : {}),
    ...(t.connectionPool ? { connectionPool: { ...t.connectionPool } } : {}),
    ...(o ? { outlierDetection: { consecutive_5xxErrors: o.consecutive5xxErrors, intervalMs: o.intervalMs, baseEjectionTimeMs: o.baseEjectionTimeMs, maxEjectionPercent: o.maxEjectionPercent } } : {}),
  };
}

function ruleToProto(r: RouteRule): PbRouteRule {
  return {
    source: r.source,
    matches: r.matches.map(httpMatchToProto),
    filters: r.filters.map(filterToProto),
    backends: r.backends.map(backendToProto),
    ...opt('timeoutMs', r.timeoutMs),
    ...opt('backendTimeoutMs', r.backendTimeoutMs),
    ...(r.retry ? { retry: { ...r.retry, codes: [...r.retry.codes] } } : {}),
    ...(r.fault ? { fault: { ...(r.fault.delay ? { delay: { ...r.fault.delay } } : {}), ...(r.fault.abort ? { abort: { ...r.fault.abort } } : {}) } } : {}),
  };
}

/** The nodemesh.v1.ServiceRoutes message for a Service's routes (resource name: `s.service`). */
export function serviceRoutesToProto(s: ServiceRoutes): PbServiceRoutes {
  return {
    service: s.service,
    rules: s.rules.map(ruleToProto),
    tables: s.tables.map(
      (t): PbRouteTable => ({
        port: t.port,
        ...opt('consumerNamespace', t.consumerNamespace),
        entries: t.entries.map((e) => ({ match: httpMatchToProto(e.match), rule: e.rule, hostnames: [...e.hostnames] })),
      }),
    ),
    ...(s.trafficPolicy ? { trafficPolicy: trafficPolicyToProto(s.trafficPolicy) } : {}),
    subsets: s.subsets.map((x) => ({ name: x.name, labels: { ...x.labels }, ...(x.trafficPolicy ? { trafficPolicy: trafficPolicyToProto(x.trafficPolicy) } : {}) })),
  };
}

// ---- from proto -------------------------------------------------------------------------

function valueMatch(v: PbValueMatch, f: string, isHeader: boolean): ValueMatch {
  const type = VALUE_TYPES.fromProto(v.type, `${f}.type`);
  const name = isHeader ? headerName(v.name, `${f}.name`) : nonEmpty(v.name, `${f}.name`);
  if (type === 'RegularExpression') regex(v.value, `${f}.value`);
  return { name, type, value: v.value ?? '', ...(v.invert !== undefined ? { invert: v.invert } : {}) };
}

function httpMatch(m: PbHttpMatch, f: string): HttpMatch {
  const out: HttpMatch = {
    headers: (m.headers ?? []).map((v, i) => valueMatch(v, `${f}.headers[${i}]`, true)),
    queryParams: (m.queryParams ?? []).map((v, i) => valueMatch(v, `${f}.query_params[${i}]`, false)),
  };
  if (m.path) {
    const type = PATH_TYPES.fromProto(m.path.type, `${f}.path.type`);
    if (type === 'RegularExpression') regex(m.path.value, `${f}.path.value`);
    out.path = { type, value: m.path.value ?? '' };
  }
  if (m.method !== undefined) out.method = methodName(m.method, `${f}.method`);
  return out;
}

function pathModifier(p: PbPathModifier, f: string): PathModifier {
  return { type: MODIFIER_TYPES.fromProto(p.type, `${f}.type`), value: p.value ?? '' };
}

function headerModifier(m: PbHeaderModifier, f: string): HeaderModifier {
  const pairs = (l: { name: string; value: string }[] | undefined, n: string): Array<[string, string]> =>
    (l ?? []).map((h, i) => [headerName(h.name, `${f}.${n}[${i}].name`), headerValue(h.value ?? '', `${f}.${n}[${i}].value`)]);
  return { set: pairs(m.set, 'set'), add: pairs(m.add, 'add'), remove: (m.remove ?? []).map((n, i) => headerName(n, `${f}.remove[${i}]`)) };
}

function filter(x: PbRouteFilter, f: string): RouteFilter {
  if (x.requestHeaderModifier) return { type: 'RequestHeaderModifier', modifier: headerModifier(x.requestHeaderModifier, `${f}.request_header_modifier`) };
  if (x.responseHeaderModifier) return { type: 'ResponseHeaderModifier', modifier: headerModifier(x.responseHeaderModifier, `${f}.response_header_modifier`) };
  if (x.urlRewrite) {
    const u = x.urlRewrite;
    return { type: 'URLRewrite', ...(u.hostname !== undefined ? { hostname: nonEmpty(u.hostname, `${f}.url_rewrite.hostname`) } : {}), ...(u.path ? { path: pathModifier(u.path, `${f}.url_rewrite.path`) } : {}) };
  }
  if (x.requestRedirect) {
    const r = x.requestRedirect;
    const g = `${f}.request_redirect`;
    if (r.scheme !== undefined && !/^[a-z][a-z0-9+.-]*$/i.test(r.scheme)) bad(`${g}.scheme`, `${JSON.stringify(r.scheme)} is not a URL scheme`);
    return {
      type: 'RequestRedirect',
      ...(r.scheme !== undefined ? { scheme: r.scheme } : {}),
      ...(r.hostname !== undefined ? { hostname: nonEmpty(r.hostname, `${g}.hostname`) } : {}),
      ...(r.port !== undefined ? { port: int(r.port, `${g}.port`, 1, 65535) } : {}),
      ...(r.path ? { path: pathModifier(r.path, `${g}.path`) } : {}),
      statusCode: int(r.statusCode, `${g}.status_code`, 300, 399),
    };
  }
  if (x.requestMirror) {
    const m = x.requestMirror;
    if (!m.backend) bad(`${f}.request_mirror.backend`, 'is required');
    return { type: 'RequestMirror', backend: backend(m.backend, `${f}.request_mirror.backend`), percent: percent(m.percent, `${f}.request_mirror.percent`) };
  }
  bad(f, 'RouteFilter has no filter set');
}

function backend(b: PbBackendRef, f: string): BackendRef {
  const out: BackendRef = {
    service: namespacedName(b.service, `${f}.service`),
    port: int(b.port, `${f}.port`, 0, 65535),
    weight: int(b.weight, `${f}.weight`, 0, MAX_WEIGHT),
    filters: (b.filters ?? []).map((x, i) => filter(x, `${f}.filters[${i}]`)),
  };
  if (b.subset) out.subset = { name: nonEmpty(b.subset.name, `${f}.subset.name`), labels: labelsFromProto(b.subset.labels, `${f}.subset.labels`) };
  return out;
}

function retry(r: PbRetryPolicy, f: string): RetryPolicy {
  return {
    attempts: int(r.attempts, `${f}.attempts`, 0, U32),
    backoffMs: ms(r.backoffMs, `${f}.backoff_ms`),
    codes: (r.codes ?? []).map((c, i) => int(c, `${f}.codes[${i}]`, 100, 599)),
    onConnectFailure: r.onConnectFailure === true,
    ...(r.perTryTimeoutMs !== undefined ? { perTryTimeoutMs: ms(r.perTryTimeoutMs, `${f}.per_try_timeout_ms`) } : {}),
  };
}

function fault(x: PbFaultPolicy, f: string): FaultPolicy {
  const out: FaultPolicy = {};
  if (x.delay) out.delay = { ms: ms(x.delay.ms, `${f}.delay.ms`), percent: percent(x.delay.percent, `${f}.delay.percent`) };
  if (x.abort) {
    const a = x.abort;
    out.abort = {
      status: int(a.status, `${f}.abort.status`, 200, 599),
      percent: percent(a.percent, `${f}.abort.percent`),
      ...(a.grpcStatus !== undefined ? { grpcStatus: int(a.grpcStatus, `${f}.abort.grpc_status`, 0, 16) } : {}),
    };
  }
  return out;
}

function rule(r: PbRouteRule, f: string): RouteRule {
  const out: RouteRule = {
    source: r.source ?? '',
    matches: (r.matches ?? []).map((m, i) => httpMatch(m, `${f}.matches[${i}]`)),
    filters: (r.filters ?? []).map((x, i) => filter(x, `${f}.filters[${i}]`)),
    backends: (r.backends ?? []).map((b, i) => backend(b, `${f}.backends[${i}]`)),
  };
  if (r.timeoutMs !== undefined) out.timeoutMs = ms(r.timeoutMs, `${f}.timeout_ms`);
  if (r.backendTimeoutMs !== undefined) out.backendTimeoutMs = ms(r.backendTimeoutMs, `${f}.backend_timeout_ms`);
  if (r.retry) out.retry = retry(r.retry, `${f}.retry`);
  if (r.fault) out.fault = fault(r.fault, `${f}.fault`);
  return out;
}

function trafficPolicy(t: PbTrafficPolicy, f: string): TrafficPolicy {
  const out: TrafficPolicy = {};
  if (t.loadBalancer !== undefined && t.loadBalancer !== 'LOAD_BALANCER_UNSPECIFIED') out.loadBalancer = LB.fromProto(t.loadBalancer, `${f}.load_balancer`);
  if (t.connectionPool) {
    const c = t.connectionPool;
    const g = `${f}.connection_pool`;
    out.connectionPool = {
      ...(c.maxConnections !== undefined ? { maxConnections: int(c.maxConnections, `${g}.max_connections`, 0, U32) } : {}),
      ...(c.maxPendingRequests !== undefined ? { maxPendingRequests: int(c.maxPendingRequests, `${g}.max_pending_requests`, 0, U32) } : {}),
      ...(c.maxRequests !== undefined ? { maxRequests: int(c.maxRequests, `${g}.max_requests`, 0, U32) } : {}),
      ...(c.maxRequestsPerConnection !== undefined ? { maxRequestsPerConnection: int(c.maxRequestsPerConnection, `${g}.max_requests_per_connection`, 0, U32) } : {}),
    };
  }
  if (t.outlierDetection) {
    const o = t.outlierDetection;
    const g = `${f}.outlier_detection`;
    out.outlierDetection = {
      consecutive5xxErrors: int(o.consecutive_5xxErrors, `${g}.consecutive_5xx_errors`, 0, U32),
      intervalMs: ms(o.intervalMs, `${g}.interval_ms`),
      baseEjectionTimeMs: ms(o.baseEjectionTimeMs, `${g}.base_ejection_time_ms`),
      maxEjectionPercent: int(o.maxEjectionPercent, `${g}.max_ejection_percent`, 0, 100),
    };
  }
  return out;
}

function table(t: PbRouteTable, f: string, rules: number): RouteTable {
  const out: RouteTable = {
    port: int(t.port, `${f}.port`, 1, 65535),
    entries: (t.entries ?? []).map((e, i) => {
      const g = `${f}.entries[${i}]`;
      if (!e.match) bad(`${g}.match`, 'is required');
      if (!Number.isInteger(e.rule) || e.rule < 0 || e.rule >= rules) bad(`${g}.rule`, `${e.rule} names no rule (there are ${rules})`);
      return { match: httpMatch(e.match, `${g}.match`), rule: e.rule, hostnames: (e.hostnames ?? []).map((h, j) => nonEmpty(h, `${g}.hostnames[${j}]`)) };
    }),
  };
  if (t.consumerNamespace !== undefined) out.consumerNamespace = nonEmpty(t.consumerNamespace, `${f}.consumer_namespace`);
  return out;
}

/** Validates a decoded ServiceRoutes named `name` (the Service's key) and returns the state's form. */
export function serviceRoutesFromProto(pb: PbServiceRoutes, name: string): ServiceRoutes {
  const service = namespacedName(pb.service, 'service');
  if (service !== name) bad('service', `${JSON.stringify(service)} differs from the resource name`);
  const rules = (pb.rules ?? []).map((r, i) => rule(r, `rules[${i}]`));
  const seen = new Set<string>();
  const tables = (pb.tables ?? []).map((t, i) => {
    const out = table(t, `tables[${i}]`, rules.length);
    const key = `${out.port}/${out.consumerNamespace ?? ''}`;
    if (seen.has(key)) bad(`tables[${i}]`, `a second table for port ${out.port}${out.consumerNamespace ? ` and consumer namespace ${out.consumerNamespace}` : ''}`);
    seen.add(key);
    return out;
  });
  const names = new Set<string>();
  const subsets = (pb.subsets ?? []).map((s, i) => {
    const n = nonEmpty(s.name, `subsets[${i}].name`);
    if (names.has(n)) bad(`subsets[${i}].name`, `a second subset named ${JSON.stringify(n)}`);
    names.add(n);
    return { name: n, labels: labelsFromProto(s.labels, `subsets[${i}].labels`), ...(s.trafficPolicy ? { trafficPolicy: trafficPolicy(s.trafficPolicy, `subsets[${i}].traffic_policy`) } : {}) };
  });
  return { service, rules, tables, ...(pb.trafficPolicy ? { trafficPolicy: trafficPolicy(pb.trafficPolicy, 'traffic_policy') } : {}), subsets };
}

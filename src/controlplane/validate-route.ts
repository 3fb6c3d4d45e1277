// Validates Gateway API HTTPRoute resources of a config file into their typed view; every
// error names the offending field's path. Filters are in validate-route-filters.ts.
import { enumOf, fieldError, formatPath, list, map, onlyKeys, port, str, strList, type FieldPath, type K8sObject } from '../k8s/index.js';
import { gatewayDuration } from './durations.js';
import { GATEWAY_GROUP, type HttpBackendRef, type HttpRoute, type HttpRouteFilter, type HttpRouteMatch, type HttpRouteRule, type RouteNote } from './resources.js';
import { backendObjectRef, filterList, headerName, headerValue, type LineOf } from './validate-route-filters.js';

// ---- HTTPRoute ----------------------------------------------------------------------------

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
/** What Gateway API allows in an Exact or PathPrefix path (RFC 3986 pchar and `/`). */
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;

function nameValue(v: unknown, p: FieldPath): { name: string; value: string; type: 'Exact' | 'RegularExpression' } {
  const m = map(v, p, true)!;
  const value = headerValue(m.value, [...p, 'value']);
  if (value.length === 0) throw fieldError(`${formatPath([...p, 'value'])} must not be empty`, [...p, 'value']);
  return {
    name: headerName(m.name, [...p, 'name']),
    value,
    type: enumOf(m.type, [...p, 'type'], ['Exact', 'RegularExpression'] as const, 'Exact'),
  };
}

/** The CEL checks of HTTPPathMatch for Exact and PathPrefix values. */
function checkPath(value: string, p: FieldPath): void {
  const bad = (why: string) => fieldError(`${formatPath(p)}: ${JSON.stringify(value)} ${why}`, p);
  if (!value.startsWith('/')) throw bad('must be an absolute path starting with /');
  for (const s of ['//', '/./', '/../', '%2f', '%2F', '#']) if (value.includes(s)) throw bad(`must not contain ${s}`);
  if (value.endsWith('/..') || value.endsWith('/.')) throw bad('must not end with /. or /..');
  if (!PATH_CHARS.test(value)) throw bad('has characters not allowed in a path');
}

function match(x: unknown, mp: FieldPath): HttpRouteMatch {
  const mm = map(x, mp) ?? {};
  const path = map(mm.path, [...mp, 'path']);
  const method = str(mm.method, [...mp, 'method']);
  if (method !== undefined && !METHODS.includes(method)) throw fieldError(`${formatPath([...mp, 'method'])}: unknown value ${JSON.stringify(method)}; expected one of ${METHODS.join(', ')}`, [...mp, 'method']);
  let typed: HttpRouteMatch['path'];
  if (path) {
    const type = enumOf(path.type, [...mp, 'path', 'type'], ['Exact', 'PathPrefix', 'RegularExpression'] as const, 'PathPrefix');
    const value = str(path.value, [...mp, 'path', 'value']) ?? '/';
    if (value.length > 1024) throw fieldError(`${formatPath([...mp, 'path', 'value'])} is longer than 1024 characters`, [...mp, 'path', 'value']);
    if (type === 'RegularExpression' && value === '') throw fieldError(`${formatPath([...mp, 'path', 'value'])} must not be empty`, [...mp, 'path', 'value']);
    if (type !== 'RegularExpression') checkPath(value, [...mp, 'path', 'value']);
    typed = { type, value };
  }
  return {
    ...(typed ? { path: typed } : {}),
    ...(method ? { method } : {}),
    headers: list(mm.headers, [...mp, 'headers']).map((h, k) => nameValue(h, [...mp, 'headers', k])),
    queryParams: list(mm.queryParams, [...mp, 'queryParams']).map((h, k) => nameValue(h, [...mp, 'queryParams', k])),
  };
}

function backendRef(b: unknown, bp: FieldPath, lineOf: LineOf): HttpBackendRef {
  const bm = map(b, bp, true)!;
  const weight = bm.weight;
  if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 1_000_000)) {
    throw fieldError(`${formatPath([...bp, 'weight'])} must be an integer 0-1000000, got ${JSON.stringify(weight)}`, [...bp, 'weight']);
  }
  return { ...backendObjectRef(bm, bp), weight: (weight as number | undefined) ?? 1, filters: filterList(bm.filters, [...bp, 'filters'], lineOf), line: lineOf(bp) };
}

function timeouts(v: unknown, p: FieldPath): HttpRouteRule['timeouts'] {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['request', 'backendRequest']);
  const request = gatewayDuration(m.request, [...p, 'request']);
  const backendRequest = gatewayDuration(m.backendRequest, [...p, 'backendRequest']);
  if (request !== undefined && request !== 0 && backendRequest !== undefined && backendRequest > request) {
    throw fieldError(`${formatPath([...p, 'backendRequest'])}: backendRequest timeout cannot be longer than request timeout`, [...p, 'backendRequest']);
  }
  return { ...(request !== undefined ? { request } : {}), ...(backendRequest !== undefined ? { backendRequest } : {}) };
}

function retry(v: unknown, p: FieldPath): HttpRouteRule['retry'] {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['attempts', 'backoff', 'codes']);
  const a = m.attempts;
  if (a !== undefined && (typeof a !== 'number' || !Number.isInteger(a) || a < 0 || a > 1000)) throw fieldError(`${formatPath([...p, 'attempts'])} must be an integer 0-1000, got ${JSON.stringify(a)}`, [...p, 'attempts']);
  const codes = list(m.codes, [...p, 'codes']).map((c, i) => {
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 400 || c > 599) throw fieldError(`${formatPath([...p, 'codes', i])} must be an HTTP status 400-599, got ${JSON.stringify(c)}`, [...p, 'codes', i]);
    return c;
  });
  const dup = codes.findIndex((c, i) => codes.indexOf(c) !== i);
  if (dup >= 0) throw fieldError(`${formatPath([...p, 'codes', dup])}: ${codes[dup]} is listed twice`, [...p, 'codes', dup]);
  const backoffMs = gatewayDuration(m.backoff, [...p, 'backoff']);
  return { ...(a !== undefined ? { attempts: a as number } : {}), ...(backoffMs !== undefined ? { backoffMs } : {}), codes };
}

/** ReplacePrefixMatch needs exactly one PathPrefix match (a match without a path is PathPrefix `/`). */
function checkPrefixRewrite(filters: HttpRouteFilter[], matches: HttpRouteMatch[], p: FieldPath): void {
  const prefix = filters.some((f) => (f.type === 'URLRewrite' || f.type === 'RequestRedirect') && f.path?.type === 'ReplacePrefixMatch');
  if (!prefix) return;
  if (matches.length > 1 || (matches[0]?.path && matches[0].path.type !== 'PathPrefix')) {
    throw fieldError(`${formatPath(p)}: a path.replacePrefixMatch filter needs exactly one match, of type PathPrefix`, p);
  }
}

function rule(r: unknown, p: FieldPath, lineOf: LineOf, notes: RouteNote[]): HttpRouteRule {
  const m = map(r, p) ?? {};
  const name = str(m.name, [...p, 'name']);
  const matches = list(m.matches, [...p, 'matches']).map((x, j) => match(x, [...p, 'matches', j]));
  const backendRefs = list(m.backendRefs, [...p, 'backendRefs']).map((b, j) => backendRef(b, [...p, 'backendRefs', j], lineOf));
  const filters = filterList(m.filters, [...p, 'filters'], lineOf);
  if (backendRefs.length > 0 && filters.some((f) => f.type === 'RequestRedirect')) {
    throw fieldError(`${formatPath([...p, 'filters'])}: a RequestRedirect filter must not be used together with backendRefs`, [...p, 'filters']);
  }
  checkPrefixRewrite(filters, matches, [...p, 'filters']);
  backendRefs.forEach((b, j) => checkPrefixRewrite(b.filters, matches, [...p, 'backendRefs', j, 'filters']));
  if (m.sessionPersistence !== undefined) {
    notes.push({ path: [...p, 'sessionPersistence'], line: lineOf([...p, 'sessionPersistence']), message: 'sessionPersistence is not supported; requests are balanced without affinity' });
  }
  const t = timeouts(m.timeouts, [...p, 'timeouts']);
  const rt = retry(m.retry, [...p, 'retry']);
  return { ...(name ? { name } : {}), matches, backendRefs, filters, ...(t ? { timeouts: t } : {}), ...(rt ? { retry: rt } : {}), line: lineOf(p) };
}

export function toHttpRoute(o: K8sObject, lineOf: LineOf = () => o.source.line): HttpRoute {
  if (!o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) throw fieldError(`apiVersion ${o.apiVersion} is not ${GATEWAY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec'], true)!;
  const parentRefs = list(spec.parentRefs, ['spec', 'parentRefs']).map((r, i) => {
    const p: FieldPath = ['spec', 'parentRefs', i];
    const m = map(r, p, true)!;
    const opt = (k: string) => str(m[k], [...p, k]);
    const portNo = port(m.port, [...p, 'port']);
    return {
      name: str(m.name, [...p, 'name'], true)!,
      ...(opt('namespace') ? { namespace: opt('namespace')! } : {}),
      ...(opt('kind') ? { kind: opt('kind')! } : {}),
      ...(opt('group') !== undefined ? { group: opt('group')! } : {}),
      ...(opt('sectionName') ? { sectionName: opt('sectionName')! } : {}),
      ...(portNo ? { port: portNo } : {}),
      line: lineOf(p),
    };
  });
  if (parentRefs.length === 0) throw fieldError('spec.parentRefs must name the Service (or Gateway) the route attaches to', ['spec']);
  const hostnames = strList(spec.hostnames, ['spec', 'hostnames']);
  const notes: RouteNote[] = [];
  // The CRD's default for no rules: one rule matching every request (with no backend: 500).
  const rawRules = spec.rules === undefined || spec.rules === null ? [{}] : list(spec.rules, ['spec', 'rules']);
  const rules = rawRules.map((r, i) => rule(r, ['spec', 'rules', i], lineOf, notes));
  const meta = map(o.raw.metadata, ['metadata']) ?? {};
  const createdAt = str(meta.creationTimestamp, ['metadata', 'creationTimestamp']);
  return { ...o, kind: 'HTTPRoute', route: { parentRefs, hostnames, rules, ...(createdAt ? { createdAt } : {}), notes } };
}

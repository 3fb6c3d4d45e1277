// Validates networking.istio.io VirtualService resources into their typed view, with Istio's own
// checks (istiod's validation webhook); fields the mesh does not implement become notes.
import { fieldError, formatPath, isRecord, list, map, onlyKeys, port, str, strList, type FieldPath, type K8sObject } from '../k8s/index.js';
import type { HeaderModifier } from '../state/index.js';
import { istioDuration } from './durations.js';
import type { RouteNote } from './resources.js';
import { MESH_GATEWAY, NETWORKING_GROUP, type VirtualService, type VsDestination, type VsFault, type VsHeaders, type VsHttpRoute, type VsMatch, type VsRetries, type VsStringMatch } from './resources-istio-net.js';
import { headerName, headerValue, type LineOf } from './validate-route-filters.js';

/** What `retryOn` may list besides status codes (Envoy's x-envoy-retry-on and -grpc-on values). */
export const RETRY_ON = [
  '5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes',
  'retriable-headers', 'envoy-ratelimited', 'http3-post-connect-failure', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
];

/** gRPC status names (grpc/doc/statuscodes.md), which `fault.abort.grpcStatus` gives. */
export const GRPC_STATUS: Readonly<Record<string, number>> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

type Note = (p: FieldPath, message: string, severity?: 'error') => void;

function int(v: unknown, p: FieldPath, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw fieldError(`${formatPath(p)} must be an integer ${min}-${max}, got ${JSON.stringify(v)}`, p);
  return v;
}

/** Istio's Percent, `{value: 0-100}` (a double). */
export function percentValue(v: unknown, p: FieldPath): number | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['value']);
  const x = m.value ?? 0;
  if (typeof x !== 'number' || !(x >= 0 && x <= 100)) throw fieldError(`${formatPath([...p, 'value'])} must be a number 0-100, got ${JSON.stringify(x)}`, [...p, 'value']);
  return x;
}

/** Istio's StringMatch: one of exact, prefix, regex; `{}` (allowed for headers) is presence. */
function stringMatch(v: unknown, p: FieldPath, allowEmpty: boolean): VsStringMatch | undefined {
  if (v === null) throw fieldError(`${formatPath(p)} cannot be null`, p);
  const m = map(v, p, true)!;
  onlyKeys(m, p, ['exact', 'prefix', 'regex']);
  const keys = Object.keys(m);
  if (keys.length > 1) throw fieldError(`${formatPath(p)}: only one of exact, prefix or regex may be set`, p);
  if (keys.length === 0) return allowEmpty ? { type: 'Present', value: '' } : undefined;
  const k = keys[0]!;
  const value = str(m[k], [...p, k], true)!;
  if (k === 'regex' && value === '') throw fieldError(`${formatPath([...p, k])} must not be empty`, [...p, k]);
  return { type: k === 'exact' ? 'Exact' : k === 'prefix' ? 'Prefix' : 'RegularExpression', value };
}

/** Header (query) name → StringMatch; Envoy's pseudo-headers (`:authority`) pass here, vsMatch refuses them. */
function namedMatches(v: unknown, p: FieldPath): Array<{ name: string; match: VsStringMatch }> {
  const m = map(v, p) ?? {};
  return Object.entries(m).map(([name, sm]) => {
    if (!name.startsWith(':')) headerName(name, [...p, name]);
    else headerName(name.slice(1), [...p, name]);
    return { name, match: stringMatch(sm, [...p, name], true)! };
  });
}

const MATCH_FIELDS = ['name', 'uri', 'scheme', 'method', 'authority', 'headers', 'port', 'sourceLabels', 'gateways', 'queryParams', 'ignoreUriCase', 'withoutHeaders', 'sourceNamespace', 'statPrefix'];

function vsMatch(v: unknown, p: FieldPath, lineOf: LineOf, note: Note): VsMatch {
  const m = map(v, p) ?? {};
  onlyKeys(m, p, MATCH_FIELDS);
  const name = str(m.name, [...p, 'name']);
  const uri = m.uri === undefined ? undefined : stringMatch(m.uri, [...p, 'uri'], false);
  const method = m.method === undefined ? undefined : stringMatch(m.method, [...p, 'method'], false);
  const portNo = port(m.port, [...p, 'port']);
  str(m.statPrefix, [...p, 'statPrefix']);
  const gateways = strList(m.gateways, [...p, 'gateways']);
  // A match for other gateways only is theirs: what the mesh cannot evaluate in it is no concern here.
  const forMesh = gateways.length === 0 || gateways.includes(MESH_GATEWAY);
  let unsupported: string | undefined;
  const refuse = (k: string, why: string) => {
    unsupported ??= why;
    if (forMesh) note([...p, k], `${why}; this match is ignored (it never matches)`);
  };
  if (method && method.type !== 'Exact') refuse('method', `method ${method.type === 'Prefix' ? 'prefix' : 'regex'} matching is not supported, only exact`);
  if (m.scheme !== undefined) refuse('scheme', 'scheme matching is not supported');
  if (m.authority !== undefined) refuse('authority', 'authority matching is not supported (the destination Service selects the routes)');
  if (m.sourceLabels !== undefined) refuse('sourceLabels', 'sourceLabels matching is not supported');
  if (m.sourceNamespace !== undefined) refuse('sourceNamespace', 'sourceNamespace matching is not supported');
  if (m.ignoreUriCase !== undefined && m.ignoreUriCase !== false) refuse('ignoreUriCase', 'ignoreUriCase is not supported');
  const headers = namedMatches(m.headers, [...p, 'headers']);
  const withoutHeaders = namedMatches(m.withoutHeaders, [...p, 'withoutHeaders']);
  for (const [k, list] of [['headers', headers], ['withoutHeaders', withoutHeaders]] as const) {
    const pseudo = list.find((h) => h.name.startsWith(':'));
    if (pseudo) refuse(k, `matching the pseudo-header ${pseudo.name} is not supported`);
  }
  return {
    ...(name ? { name } : {}),
    ...(uri ? { uri } : {}),
    ...(method ? { method: method.value } : {}),
    headers,
    withoutHeaders,
    queryParams: namedMatches(m.queryParams, [...p, 'queryParams']),
    ...(portNo ? { port: portNo } : {}),
    gateways,
    ...(unsupported ? { unsupported } : {}),
    line: lineOf(p),
  };
}

export function vsDestination(v: unknown, p: FieldPath): VsDestination {
  const m = map(v, p, true)!;
  onlyKeys(m, p, ['host', 'subset', 'port']);
  const host = str(m.host, [...p, 'host'], true)!;
  if (host === '') throw fieldError(`${formatPath([...p, 'host'])} must not be empty`, [...p, 'host']);
  const subset = str(m.subset, [...p, 'subset']);
  const pm = map(m.port, [...p, 'port']);
  if (pm) onlyKeys(pm, [...p, 'port'], ['number']);
  const portNo = pm ? port(pm.number, [...p, 'port', 'number']) : undefined;
  return { host, ...(subset ? { subset } : {}), ...(portNo ? { port: portNo } : {}) };
}

/** Istio's header operations: `set` and `add` maps, `remove` a list. */
function headerOps(v: unknown, p: FieldPath): HeaderModifier | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['set', 'add', 'remove']);
  const pairs = (k: 'set' | 'add') => Object.entries(map(m[k], [...p, k]) ?? {}).map(([n, x]): [string, string] => [headerName(n, [...p, k, n]), headerValue(x, [...p, k, n])]);
  return { set: pairs('set'), add: pairs('add'), remove: list(m.remove, [...p, 'remove']).map((n, i) => headerName(n, [...p, 'remove', i])) };
}

function vsHeaders(v: unknown, p: FieldPath): VsHeaders {
  const m = map(v, p);
  if (!m) return {};
  onlyKeys(m, p, ['request', 'response']);
  const request = headerOps(m.request, [...p, 'request']);
  const response = headerOps(m.response, [...p, 'response']);
  return { ...(request ? { request } : {}), ...(response ? { response } : {}) };
}

function retries(v: unknown, p: FieldPath, lineOf: LineOf, note: Note): VsRetries | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['attempts', 'perTryTimeout', 'retryOn', 'retryRemoteLocalities', 'retryIgnorePreviousHosts', 'backoff']);
  const attempts = int(m.attempts, [...p, 'attempts'], 0, 2 ** 31 - 1) ?? 0;
  if (attempts === 0 && (m.perTryTimeout !== undefined || m.retryOn !== undefined || m.retryRemoteLocalities !== undefined)) {
    throw fieldError(`${formatPath(p)}: a retry policy is configured while attempts is 0 (retries disabled)`, [...p, 'attempts']);
  }
  const perTryTimeoutMs = istioDuration(m.perTryTimeout, [...p, 'perTryTimeout']);
  const backoffMs = istioDuration(m.backoff, [...p, 'backoff']);
  const on = str(m.retryOn, [...p, 'retryOn']);
  const retryOn = on?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const c of retryOn ?? []) {
    const code = /^\d{3}$/.test(c) ? Number(c) : NaN;
    if (!(code >= 100 && code <= 599) && !RETRY_ON.includes(c)) throw fieldError(`${formatPath([...p, 'retryOn'])}: ${JSON.stringify(c)} is not a valid retryOn policy`, [...p, 'retryOn']);
  }
  if (m.retryRemoteLocalities === true) note([...p, 'retryRemoteLocalities'], 'retryRemoteLocalities is not supported (the mesh has no localities); ignored');
  if (m.retryIgnorePreviousHosts !== undefined) note([...p, 'retryIgnorePreviousHosts'], 'retryIgnorePreviousHosts is not supported; ignored');
  return { attempts, ...(perTryTimeoutMs !== undefined ? { perTryTimeoutMs } : {}), ...(backoffMs !== undefined ? { backoffMs } : {}), ...(retryOn ? { retryOn } : {}), line: lineOf([...p, 'retryOn']) };
}

function fault(v: unknown, p: FieldPath, note: Note): VsFault | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['delay', 'abort']);
  if (m.delay === undefined && m.abort === undefined) throw fieldError(`${formatPath(p)}: fault injection must have an abort and/or a delay`, p);
  const out: VsFault = {};
  const pct = (x: Record<string, unknown>, q: FieldPath, legacy: boolean): { percent: number } => {
    const value = percentValue(x.percentage, [...q, 'percentage']);
    const old = legacy ? int(x.percent, [...q, 'percent'], 0, 100) : undefined;
    const percent = value ?? old;
    if (percent === undefined) note([...q, 'percentage'], 'percentage is not set, so no request is affected (Istio: "if left unspecified, no request will be" delayed or aborted)');
    return { percent: percent ?? 0 };
  };
  const d = map(m.delay, [...p, 'delay']);
  if (d) {
    const dp: FieldPath = [...p, 'delay'];
    onlyKeys(d, dp, ['fixedDelay', 'exponentialDelay', 'percentage', 'percent']);
    if (d.exponentialDelay !== undefined) throw fieldError(`${formatPath([...dp, 'exponentialDelay'])} is not supported (nor by Istio); use fixedDelay`, [...dp, 'exponentialDelay']);
    const ms = istioDuration(d.fixedDelay, [...dp, 'fixedDelay']);
    if (ms === undefined) throw fieldError(`${formatPath([...dp, 'fixedDelay'])} is required`, [...dp, 'fixedDelay']);
    out.delay = { ms, ...pct(d, dp, true) };
  }
  const a = map(m.abort, [...p, 'abort']);
  if (a) {
    const ap: FieldPath = [...p, 'abort'];
    onlyKeys(a, ap, ['httpStatus', 'grpcStatus', 'http2Error', 'percentage']);
    if (a.http2Error !== undefined) throw fieldError(`${formatPath([...ap, 'http2Error'])}: HTTP/2 abort fault injection is not supported (nor by Istio)`, [...ap, 'http2Error']);
    if (a.httpStatus !== undefined && a.grpcStatus !== undefined) throw fieldError(`${formatPath(ap)}: only one of httpStatus or grpcStatus may be set`, ap);
    const httpStatus = int(a.httpStatus, [...ap, 'httpStatus'], 200, 599);
    const g = str(a.grpcStatus, [...ap, 'grpcStatus']);
    if (g !== undefined && GRPC_STATUS[g] === undefined) throw fieldError(`${formatPath([...ap, 'grpcStatus'])}: ${JSON.stringify(g)} is not a gRPC status name (e.g. UNAVAILABLE, NOT_FOUND)`, [...ap, 'grpcStatus']);
    if (httpStatus === undefined && g === undefined) throw fieldError(`${formatPath(ap)}: httpStatus or grpcStatus is required`, ap);
    out.abort = { ...(httpStatus !== undefined ? { httpStatus } : {}), ...(g !== undefined ? { grpcStatus: GRPC_STATUS[g]! } : {}), ...pct(a, ap, false) };
  }
  return out;
}

function redirect(v: unknown, p: FieldPath, note: Note): VsHttpRoute['redirect'] {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['uri', 'authority', 'port', 'derivePort', 'scheme', 'redirectCode', 'prefixRewrite']);
  if (m.uri !== undefined && m.prefixRewrite !== undefined) throw fieldError(`${formatPath(p)}: only one of uri or prefixRewrite may be set`, [...p, 'prefixRewrite']);
  if (m.port !== undefined && m.derivePort !== undefined) throw fieldError(`${formatPath(p)}: only one of port or derivePort may be set`, [...p, 'derivePort']);
  const code = m.redirectCode ?? 301;
  if (![301, 302, 303, 307, 308].includes(code as number)) throw fieldError(`${formatPath([...p, 'redirectCode'])}: unsupported value ${JSON.stringify(code)}; expected one of 301, 302, 303, 307, 308`, [...p, 'redirectCode']);
  const derive = str(m.derivePort, [...p, 'derivePort']);
  if (derive !== undefined && derive !== 'FROM_PROTOCOL_DEFAULT' && derive !== 'FROM_REQUEST_PORT') throw fieldError(`${formatPath([...p, 'derivePort'])}: unknown value ${JSON.stringify(derive)}; expected one of FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT`, [...p, 'derivePort']);
  if (derive === 'FROM_REQUEST_PORT') note([...p, 'derivePort'], 'derivePort FROM_REQUEST_PORT is not supported; the Location header gets the scheme\'s default port');
  const uri = str(m.uri, [...p, 'uri']);
  const authority = str(m.authority, [...p, 'authority']);
  const scheme = str(m.scheme, [...p, 'scheme']);
  const prefixRewrite = str(m.prefixRewrite, [...p, 'prefixRewrite']);
  const portNo = port(m.port, [...p, 'port']);
  return { ...(uri ? { uri } : {}), ...(authority ? { authority } : {}), ...(portNo ? { port: portNo } : {}), ...(scheme ? { scheme } : {}), redirectCode: code as number, ...(prefixRewrite !== undefined ? { prefixRewrite } : {}) };
}

const HTTP_FIELDS = [
  'name', 'match', 'route', 'redirect', 'directResponse', 'delegate', 'rewrite', 'timeout', 'retries', 'fault', 'mirror', 'mirrors', 'mirrorPercent', 'mirrorPercentage', 'corsPolicy', 'headers',
];

function httpRoute(v: unknown, p: FieldPath, lineOf: LineOf, note: Note): VsHttpRoute {
  const m = map(v, p, true)!;
  onlyKeys(m, p, HTTP_FIELDS);
  const has = (k: string) => m[k] !== undefined && m[k] !== null;
  const both = (a: string, b: string) => {
    if (has(a) && has(b)) throw fieldError(`${formatPath(p)}: an HTTP route cannot have both ${a} and ${b}`, [...p, b]);
  };
  both('route', 'redirect');
  both('fault', 'redirect');
  both('rewrite', 'redirect');
  both('redirect', 'directResponse');
  both('route', 'directResponse');
  both('fault', 'directResponse');
  both('rewrite', 'directResponse');
  both('mirror', 'mirrors');
  if (!has('route') && !has('redirect') && !has('directResponse') && !has('delegate')) throw fieldError(`${formatPath(p)}: route, redirect or directResponse is required`, p);
  const route = list(m.route, [...p, 'route']).map((r, i) => {
    const rp: FieldPath = [...p, 'route', i];
    const rm = map(r, rp, true)!;
    onlyKeys(rm, rp, ['destination', 'weight', 'headers']);
    const weight = int(rm.weight, [...rp, 'weight'], 0, 2 ** 31 - 1);
    return { destination: vsDestination(rm.destination, [...rp, 'destination']), ...(weight !== undefined ? { weight } : {}), headers: vsHeaders(rm.headers, [...rp, 'headers']), line: lineOf(rp) };
  });
  if (route.length > 1 && route.every((r) => !r.weight)) throw fieldError(`${formatPath([...p, 'route'])}: total destination weight is 0`, [...p, 'route']);
  let unsupportedAction: string | undefined;
  if (has('directResponse')) {
    unsupportedAction = 'directResponse is not supported';
    note([...p, 'directResponse'], 'directResponse is not supported; requests matching this route get 500', 'error');
  } else if (has('delegate')) {
    unsupportedAction = 'delegate is not supported';
    note([...p, 'delegate'], 'delegate VirtualServices are not supported; requests matching this route get 500', 'error');
  }
  let rewrite: VsHttpRoute['rewrite'];
  const rw = map(m.rewrite, [...p, 'rewrite']);
  if (rw) {
    onlyKeys(rw, [...p, 'rewrite'], ['uri', 'authority', 'uriRegexRewrite']);
    if (rw.uri !== undefined && rw.uriRegexRewrite !== undefined) throw fieldError(`${formatPath([...p, 'rewrite'])}: only one of uri or uriRegexRewrite may be set`, [...p, 'rewrite', 'uriRegexRewrite']);
    if (rw.uriRegexRewrite !== undefined) {
      unsupportedAction ??= 'rewrite.uriRegexRewrite is not supported';
      note([...p, 'rewrite', 'uriRegexRewrite'], 'uriRegexRewrite is not supported; requests matching this route get 500 rather than go out with the wrong path', 'error');
    }
    const uri = str(rw.uri, [...p, 'rewrite', 'uri']);
    const authority = str(rw.authority, [...p, 'rewrite', 'authority']);
    // An empty uri is proto3's unset: no path rewrite.
    rewrite = { ...(uri ? { uri } : {}), ...(authority ? { authority } : {}) };
  }
  if (has('corsPolicy')) note([...p, 'corsPolicy'], 'corsPolicy is not supported; responses carry no CORS headers (browsers refuse cross-origin reads)');
  const mirrors: VsHttpRoute['mirrors'] = [];
  if (has('mirror')) {
    const legacy = int(m.mirrorPercent, [...p, 'mirrorPercent'], 0, 100);
    mirrors.push({ destination: vsDestination(m.mirror, [...p, 'mirror']), percent: percentValue(m.mirrorPercentage, [...p, 'mirrorPercentage']) ?? legacy ?? 100, line: lineOf([...p, 'mirror']), path: [...p, 'mirror'] });
  }
  list(m.mirrors, [...p, 'mirrors']).forEach((x, i) => {
    const mp: FieldPath = [...p, 'mirrors', i];
    const mm = map(x, mp, true)!;
    onlyKeys(mm, mp, ['destination', 'percentage']);
    mirrors.push({ destination: vsDestination(mm.destination, [...mp, 'destination']), percent: percentValue(mm.percentage, [...mp, 'percentage']) ?? 100, line: lineOf(mp), path: [...mp, 'destination'] });
  });
  const name = str(m.name, [...p, 'name']);
  const timeoutMs = istioDuration(m.timeout, [...p, 'timeout']);
  const rt = retries(m.retries, [...p, 'retries'], lineOf, note);
  const ft = fault(m.fault, [...p, 'fault'], note);
  const rd = redirect(m.redirect, [...p, 'redirect'], note);
  return {
    ...(name ? { name } : {}),
    match: list(m.match, [...p, 'match']).map((x, i) => vsMatch(x, [...p, 'match', i], lineOf, note)),
    route,
    ...(rd ? { redirect: rd } : {}),
    ...(rewrite ? { rewrite } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(rt ? { retries: rt } : {}),
    ...(ft ? { fault: ft } : {}),
    mirrors,
    headers: vsHeaders(m.headers, [...p, 'headers']),
    ...(unsupportedAction ? { unsupportedAction } : {}),
    line: lineOf(p),
  };
}

export function toVirtualService(o: K8sObject, lineOf: LineOf = () => o.source.line): VirtualService {
  if (!o.apiVersion.startsWith(`${NETWORKING_GROUP}/`)) throw fieldError(`apiVersion ${o.apiVersion} is not ${NETWORKING_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec'], true)!;
  onlyKeys(spec, ['spec'], ['hosts', 'gateways', 'http', 'tls', 'tcp', 'exportTo']);
  const notes: RouteNote[] = [];
  const note: Note = (p, message, severity) => notes.push({ path: p, line: lineOf(p), message, ...(severity ? { severity } : {}) });
  const hosts = strList(spec.hosts, ['spec', 'hosts']);
  if (hosts.length === 0) throw fieldError('spec.hosts must name at least one host', ['spec', 'hosts']);
  hosts.forEach((h, i) => {
    if (h === '') throw fieldError(`${formatPath(['spec', 'hosts', i])} must not be empty`, ['spec', 'hosts', i]);
  });
  for (const k of ['tls', 'tcp'] as const) {
    if (list(spec[k], ['spec', k]).length > 0) note(['spec', k], `${k} routes are not supported (the node proxy routes HTTP only); ignored`);
  }
  const http = list(spec.http, ['spec', 'http']).map((h, i) => httpRoute(h, ['spec', 'http', i], lineOf, note));
  const exportTo = strList(spec.exportTo, ['spec', 'exportTo']);
  if (exportTo.length > 0 && !(exportTo.length === 1 && exportTo[0] === '*')) note(['spec', 'exportTo'], 'exportTo is not supported; the VirtualService applies as if exported to every namespace');
  const meta = isRecord(o.raw.metadata) ? o.raw.metadata : {};
  const createdAt = str(meta.creationTimestamp, ['metadata', 'creationTimestamp']);
  return {
    ...o,
    kind: 'VirtualService',
    vs: { hosts, hostLines: hosts.map((_, i) => lineOf(['spec', 'hosts', i])), gateways: strList(spec.gateways, ['spec', 'gateways']), http, exportTo, ...(createdAt ? { createdAt } : {}), notes },
  };
}

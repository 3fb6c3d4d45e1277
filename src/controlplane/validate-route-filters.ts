// Validates the HTTPRoute filters (Gateway API v1 HTTPRouteFilter) into their typed view, with the
// CEL rules the Gateway API CRDs carry, so a file is refused here as the API server would refuse it.
import { enumOf, fieldError, formatPath, list, map, onlyKeys, port, str, type FieldPath } from '../k8s/index.js';
import type { HeaderModifier, PathModifier } from '../state/index.js';
import type { HttpBackendObjectRef, HttpRouteFilter } from './resources.js';

export type LineOf = (p: FieldPath) => number;

/** RFC 9110 token characters: what Gateway API's HTTPHeaderName allows. */
const TOKEN = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
/** Gateway API PreciseHostname (RFC 1123, lower case, no wildcard). */
const PRECISE_HOSTNAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function headerName(v: unknown, p: FieldPath): string {
  const s = str(v, p, true)!;
  if (!TOKEN.test(s)) throw fieldError(`${formatPath(p)}: ${JSON.stringify(s)} is not a valid HTTP header name`, p);
  return s;
}

/** A header value: CR, LF and NUL would split or end the header block (request smuggling). */
export function headerValue(v: unknown, p: FieldPath): string {
  const s = str(v, p, true)!;
  if (/[\r\n\0]/.test(s)) throw fieldError(`${formatPath(p)} must not contain CR, LF or NUL`, p);
  return s;
}

export function preciseHostname(v: unknown, p: FieldPath): string | undefined {
  const s = str(v, p);
  if (s === undefined) return undefined;
  if (s.length > 253 || !PRECISE_HOSTNAME.test(s)) throw fieldError(`${formatPath(p)}: ${JSON.stringify(s)} is not a valid hostname (lower case, no wildcard)`, p);
  return s;
}

/** "Only one action for a given header name is permitted" across set, add and remove. */
export function checkHeaderActions(mod: HeaderModifier, p: FieldPath): void {
  const seen = new Map<string, string>();
  const names: Array<[string, string]> = [...mod.set.map(([n]) => [n, 'set'] as [string, string]), ...mod.add.map(([n]) => [n, 'add'] as [string, string]), ...mod.remove.map((n) => [n, 'remove'] as [string, string])];
  for (const [n, action] of names) {
    const prev = seen.get(n.toLowerCase());
    if (prev) throw fieldError(`${formatPath([...p, action])}: header ${JSON.stringify(n)} already has an action (${prev}); give each header one action`, [...p, action]);
    seen.set(n.toLowerCase(), action);
  }
}

/** Gateway API HTTPHeaderFilter: `set` and `add` lists of {name, value}, `remove` a list of names. */
export function headerModifier(v: unknown, p: FieldPath): HeaderModifier {
  const m = map(v, p, true)!;
  onlyKeys(m, p, ['set', 'add', 'remove']);
  const pairs = (k: 'set' | 'add') =>
    list(m[k], [...p, k]).map((h, i): [string, string] => {
      const hp: FieldPath = [...p, k, i];
      const hm = map(h, hp, true)!;
      onlyKeys(hm, hp, ['name', 'value']);
      return [headerName(hm.name, [...hp, 'name']), headerValue(hm.value, [...hp, 'value'])];
    });
  const mod = { set: pairs('set'), add: pairs('add'), remove: list(m.remove, [...p, 'remove']).map((n, i) => headerName(n, [...p, 'remove', i])) };
  checkHeaderActions(mod, p);
  return mod;
}

function pathModifier(v: unknown, p: FieldPath): PathModifier | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['type', 'replaceFullPath', 'replacePrefixMatch']);
  if (m.type === undefined) throw fieldError(`${formatPath([...p, 'type'])} is required`, [...p, 'type']);
  const type = enumOf(m.type, [...p, 'type'], ['ReplaceFullPath', 'ReplacePrefixMatch'] as const, 'ReplaceFullPath');
  const field = type === 'ReplaceFullPath' ? 'replaceFullPath' : 'replacePrefixMatch';
  const other = type === 'ReplaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (m[other] !== undefined) throw fieldError(`${formatPath([...p, other])} must not be set when type is ${type}`, [...p, other]);
  const value = str(m[field], [...p, field]);
  if (value === undefined) throw fieldError(`${formatPath([...p, field])} must be specified when type is ${type}`, [...p, field]);
  if (value.length > 1024) throw fieldError(`${formatPath([...p, field])} is longer than 1024 characters`, [...p, field]);
  return { type, value };
}

/** A BackendObjectReference; a Service (the default kind, core group) must name its port. */
export function backendObjectRef(m: Record<string, unknown>, p: FieldPath): HttpBackendObjectRef {
  const ns = str(m.namespace, [...p, 'namespace']);
  const kind = str(m.kind, [...p, 'kind']);
  const group = str(m.group, [...p, 'group']);
  const portNo = port(m.port, [...p, 'port']);
  if ((kind ?? 'Service') === 'Service' && (group ?? '') === '' && portNo === undefined) throw fieldError(`${formatPath([...p, 'port'])} is required for a Service backend`, [...p, 'port']);
  return {
    name: str(m.name, [...p, 'name'], true)!,
    ...(ns ? { namespace: ns } : {}),
    ...(kind ? { kind } : {}),
    ...(group !== undefined ? { group } : {}),
    ...(portNo ? { port: portNo } : {}),
  };
}

function int(v: unknown, p: FieldPath, min: number, max: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw fieldError(`${formatPath(p)} must be an integer ${min}-${max}, got ${JSON.stringify(v)}`, p);
  return v;
}

function mirrorPercent(m: Record<string, unknown>, p: FieldPath): number {
  if (m.percent !== undefined && m.fraction !== undefined) throw fieldError(`${formatPath(p)}: only one of percent or fraction may be specified`, [...p, 'fraction']);
  const pct = int(m.percent, [...p, 'percent'], 0, 100);
  if (pct !== undefined) return pct;
  const f = map(m.fraction, [...p, 'fraction']);
  if (!f) return 100;
  onlyKeys(f, [...p, 'fraction'], ['numerator', 'denominator']);
  const num = int(f.numerator, [...p, 'fraction', 'numerator'], 0, 2 ** 31 - 1);
  if (num === undefined) throw fieldError(`${formatPath([...p, 'fraction', 'numerator'])} is required`, [...p, 'fraction', 'numerator']);
  const den = int(f.denominator, [...p, 'fraction', 'denominator'], 1, 2 ** 31 - 1) ?? 100;
  if (num > den) throw fieldError(`${formatPath([...p, 'fraction'])}: numerator must be less than or equal to denominator`, [...p, 'fraction']);
  return (num / den) * 100;
}

const FILTER_TYPES = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror', 'RequestRedirect', 'URLRewrite', 'ExtensionRef', 'CORS', 'ExternalAuth'] as const;
const FIELD_OF: Readonly<Record<(typeof FILTER_TYPES)[number], string>> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestMirror: 'requestMirror',
  RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite',
  ExtensionRef: 'extensionRef',
  CORS: 'cors',
  ExternalAuth: 'externalAuth',
};

export function httpRouteFilter(v: unknown, p: FieldPath, lineOf: LineOf): HttpRouteFilter {
  const m = map(v, p, true)!;
  if (m.type === undefined) throw fieldError(`${formatPath([...p, 'type'])} is required`, [...p, 'type']);
  const type = enumOf(m.type, [...p, 'type'], FILTER_TYPES, 'RequestHeaderModifier');
  const field = FIELD_OF[type];
  for (const k of Object.keys(m)) {
    if (k !== 'type' && k !== field) throw fieldError(`${formatPath([...p, k])} must not be set for a ${type} filter (only ${field})`, [...p, k]);
  }
  const fp: FieldPath = [...p, field];
  if (m[field] === undefined || m[field] === null) throw fieldError(`${formatPath(fp)} must be specified for a ${type} filter`, fp);
  switch (type) {
    case 'RequestHeaderModifier':
    case 'ResponseHeaderModifier':
      return { type, modifier: headerModifier(m[field], fp) };
    case 'URLRewrite': {
      const r = map(m[field], fp, true)!;
      onlyKeys(r, fp, ['hostname', 'path']);
      const hostname = preciseHostname(r.hostname, [...fp, 'hostname']);
      const path = pathModifier(r.path, [...fp, 'path']);
      return { type, ...(hostname ? { hostname } : {}), ...(path ? { path } : {}) };
    }
    case 'RequestRedirect': {
      const r = map(m[field], fp, true)!;
      onlyKeys(r, fp, ['scheme', 'hostname', 'path', 'port', 'statusCode']);
      const scheme = r.scheme === undefined ? undefined : enumOf(r.scheme, [...fp, 'scheme'], ['http', 'https'] as const, 'http');
      const hostname = preciseHostname(r.hostname, [...fp, 'hostname']);
      const path = pathModifier(r.path, [...fp, 'path']);
      const portNo = port(r.port, [...fp, 'port']);
      const statusCode = r.statusCode ?? 302;
      if (![301, 302, 303, 307, 308].includes(statusCode as number)) throw fieldError(`${formatPath([...fp, 'statusCode'])}: unsupported value ${JSON.stringify(statusCode)}; expected one of 301, 302, 303, 307, 308`, [...fp, 'statusCode']);
      return { type, ...(scheme ? { scheme } : {}), ...(hostname ? { hostname } : {}), ...(path ? { path } : {}), ...(portNo ? { port: portNo } : {}), statusCode: statusCode as number };
    }
    case 'RequestMirror': {
      const r = map(m[field], fp, true)!;
      onlyKeys(r, fp, ['backendRef', 'percent', 'fraction']);
      const bp: FieldPath = [...fp, 'backendRef'];
      const backendRef = backendObjectRef(map(r.backendRef, bp, true)!, bp);
      return { type, backendRef, percent: mirrorPercent(r, fp), line: lineOf(p) };
    }
    default:
      map(m[field], fp, true);
      return { type, line: lineOf(p) };
  }
}

/** Filters that may appear once per list (the Gateway API CRD's CEL rules). */
const ONCE = ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'CORS'];

export function filterList(v: unknown, p: FieldPath, lineOf: LineOf): HttpRouteFilter[] {
  const filters = list(v, p).map((f, i) => httpRouteFilter(f, [...p, i], lineOf));
  for (const t of ONCE) {
    const at = filters.map((f, i) => (f.type === t ? i : -1)).filter((i) => i >= 0);
    if (at.length > 1) throw fieldError(`${formatPath([...p, at[1]!])}: ${t} filter cannot be repeated`, [...p, at[1]!]);
  }
  const redirect = filters.findIndex((f) => f.type === 'RequestRedirect');
  if (redirect >= 0 && filters.some((f) => f.type === 'URLRewrite')) {
    throw fieldError(`${formatPath([...p, redirect])}: RequestRedirect and URLRewrite filters cannot be used together`, [...p, redirect]);
  }
  return filters;
}

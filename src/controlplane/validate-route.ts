// Validates Gateway API HTTPRoute resources of a config file into their typed view; every
// error names the offending field's path.
import { enumOf, fieldError, formatPath, list, map, port, str, strList, strMap, type FieldPath, type K8sObject } from '../k8s/index.js';
import { GATEWAY_GROUP, type HttpRoute, type HttpRouteMatch } from './resources.js';

// ---- HTTPRoute ----------------------------------------------------------------------------

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];

function nameValue(v: unknown, p: FieldPath): { name: string; value: string; type: 'Exact' | 'RegularExpression' } {
  const m = map(v, p, true)!;
  return {
    name: str(m.name, [...p, 'name'], true)!,
    value: str(m.value, [...p, 'value'], true)!,
    type: enumOf(m.type, [...p, 'type'], ['Exact', 'RegularExpression'] as const, 'Exact'),
  };
}

export function toHttpRoute(o: K8sObject): HttpRoute {
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
    };
  });
  if (parentRefs.length === 0) throw fieldError('spec.parentRefs must name the Service (or Gateway) the route attaches to', ['spec']);
  const hostnames = strList(spec.hostnames, ['spec', 'hostnames']);
  const rules = list(spec.rules, ['spec', 'rules']).map((r, i) => {
    const p: FieldPath = ['spec', 'rules', i];
    const m = map(r, p) ?? {};
    const matches = list(m.matches, [...p, 'matches']).map((x, j): HttpRouteMatch => {
      const mp: FieldPath = [...p, 'matches', j];
      const mm = map(x, mp) ?? {};
      const path = map(mm.path, [...mp, 'path']);
      const method = str(mm.method, [...mp, 'method']);
      if (method !== undefined && !METHODS.includes(method)) throw fieldError(`${formatPath([...mp, 'method'])}: unknown value ${JSON.stringify(method)}; expected one of ${METHODS.join(', ')}`, [...mp, 'method']);
      return {
        ...(path
          ? {
              path: {
                type: enumOf(path.type, [...mp, 'path', 'type'], ['Exact', 'PathPrefix', 'RegularExpression'] as const, 'PathPrefix'),
                value: str(path.value, [...mp, 'path', 'value']) ?? '/',
              },
            }
          : {}),
        ...(method ? { method } : {}),
        headers: list(mm.headers, [...mp, 'headers']).map((h, k) => nameValue(h, [...mp, 'headers', k])),
        queryParams: list(mm.queryParams, [...mp, 'queryParams']).map((h, k) => nameValue(h, [...mp, 'queryParams', k])),
      };
    });
    const backendRefs = list(m.backendRefs, [...p, 'backendRefs']).map((b, j) => {
      const bp: FieldPath = [...p, 'backendRefs', j];
      const bm = map(b, bp, true)!;
      const weight = bm.weight;
      if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 1_000_000)) {
        throw fieldError(`${formatPath([...bp, 'weight'])} must be an integer 0-1000000, got ${JSON.stringify(weight)}`, [...bp, 'weight']);
      }
      const portNo = port(bm.port, [...bp, 'port']);
      const ns = str(bm.namespace, [...bp, 'namespace']);
      const kind = str(bm.kind, [...bp, 'kind']);
      const group = str(bm.group, [...bp, 'group']);
      return {
        name: str(bm.name, [...bp, 'name'], true)!,
        ...(ns ? { namespace: ns } : {}),
        ...(kind ? { kind } : {}),
        ...(group !== undefined ? { group } : {}),
        ...(portNo ? { port: portNo } : {}),
        weight: (weight as number | undefined) ?? 1,
      };
    });
    const filters = list(m.filters, [...p, 'filters']).map((f, j) => map(f, [...p, 'filters', j], true)!);
    const timeouts = m.timeouts === undefined ? undefined : strMap(m.timeouts, [...p, 'timeouts']);
    return { matches, backendRefs, filters, ...(timeouts ? { timeouts } : {}) };
  });
  return { ...o, kind: 'HTTPRoute', route: { parentRefs, hostnames, rules } };
}

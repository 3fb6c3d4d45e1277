// Parses one config file into typed resources and problems, each with file and line: the
// k8s loader's checks plus the shape of AuthorizationPolicy, PeerAuthentication and HTTPRoute,
// pointing at the line of the offending field.
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { parseConfigText, type K8sObject } from '../k8s/index.js';
import { parseCidr } from '../net/index.js';
import {
  GATEWAY_GROUP,
  POLICY_GROUP,
  type ApAction,
  type ApCondition,
  type ApOperation,
  type ApRule,
  type ApSource,
  type AuthorizationPolicy,
  type HttpRoute,
  type HttpRouteMatch,
  type MtlsMode,
  type PeerAuthentication,
} from './resources.js';

export type ProblemCode = 'NM_ERR_CONFIG_YAML' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CONFIG_CONFLICT' | 'NM_ERR_POLICY';

export interface ConfigProblem {
  code: ProblemCode;
  severity: 'error' | 'warning';
  file: string;
  line: number;
  message: string;
  /** `Kind namespace/name` when the problem concerns one resource. */
  resource?: string;
}

export type ConfigObject = K8sObject | AuthorizationPolicy | PeerAuthentication | HttpRoute;

export interface ParsedFile {
  objects: ConfigObject[];
  problems: ConfigProblem[];
  /** Identities (`Kind/ns/name`) of resources that are in the file but invalid. */
  invalid: Set<string>;
}

export function identityOf(o: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

export function describe(o: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

class Invalid extends Error {
  constructor(
    message: string,
    readonly path: (string | number)[],
    readonly code: ProblemCode = 'NM_ERR_CONFIG_INVALID',
  ) {
    super(message);
  }
}

type Path = (string | number)[];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const fmt = (p: Path) => p.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'map' : typeof v;
}

function map(v: unknown, p: Path, required = false): Record<string, unknown> | undefined {
  if (v === undefined || v === null) {
    if (required) throw new Invalid(`${fmt(p)} is required`, p);
    return undefined;
  }
  if (!isRecord(v)) throw new Invalid(`${fmt(p)} must be a map, got ${typeName(v)}`, p);
  return v;
}

function list(v: unknown, p: Path): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new Invalid(`${fmt(p)} must be a list, got ${typeName(v)}`, p);
  return v;
}

function str(v: unknown, p: Path, required = false): string | undefined {
  if (v === undefined || v === null) {
    if (required) throw new Invalid(`${fmt(p)} is required`, p);
    return undefined;
  }
  if (typeof v !== 'string') throw new Invalid(`${fmt(p)} must be a string, got ${typeName(v)} ${JSON.stringify(v)}`, p);
  return v;
}

function strList(v: unknown, p: Path): string[] {
  return list(v, p).map((x, i) => {
    if (typeof x !== 'string') throw new Invalid(`${fmt([...p, i])} must be a string, got ${typeName(x)} ${JSON.stringify(x)} (quote it)`, [...p, i]);
    return x;
  });
}

function strMap(v: unknown, p: Path): Record<string, string> {
  const m = map(v, p) ?? {};
  for (const [k, x] of Object.entries(m)) if (typeof x !== 'string') throw new Invalid(`${fmt([...p, k])} must be a string, got ${typeName(x)}`, [...p, k]);
  return m as Record<string, string>;
}

function enumOf<T extends string>(v: unknown, p: Path, allowed: readonly T[], dflt: T): T {
  const s = str(v, p);
  if (s === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(s)) throw new Invalid(`${fmt(p)}: unknown value ${JSON.stringify(s)}; expected one of ${allowed.join(', ')}`, p);
  return s as T;
}

function onlyKeys(m: Record<string, unknown>, p: Path, allowed: readonly string[]): void {
  for (const k of Object.keys(m)) {
    if (!allowed.includes(k)) throw new Invalid(`${fmt([...p, k])}: unknown field; expected one of ${allowed.join(', ')}`, [...p, k]);
  }
}

function portString(s: string, p: Path): string {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw new Invalid(`${fmt(p)}: ${JSON.stringify(s)} is not a port number 1-65535`, p);
  return s;
}

function portNumber(v: unknown, p: Path): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new Invalid(`${fmt(p)} must be a port number 1-65535, got ${JSON.stringify(v)}`, p);
  return v;
}

function cidrString(s: string, p: Path): string {
  try {
    parseCidr(s);
  } catch (e) {
    throw new Invalid(`${fmt(p)}: ${(e as Error).message}`, p);
  }
  return s;
}

function selector(spec: Record<string, unknown>): Record<string, string> | undefined {
  const sel = map(spec.selector, ['spec', 'selector']);
  if (!sel) return undefined;
  onlyKeys(sel, ['spec', 'selector'], ['matchLabels']);
  const labels = strMap(sel.matchLabels, ['spec', 'selector', 'matchLabels']);
  // An empty selector selects every workload of the namespace: the same as none.
  return Object.keys(labels).length === 0 ? undefined : labels;
}

// ---- AuthorizationPolicy ------------------------------------------------------------------

const SOURCE_FIELDS = [
  'principals', 'notPrincipals', 'requestPrincipals', 'notRequestPrincipals', 'namespaces', 'notNamespaces',
  'serviceAccounts', 'notServiceAccounts', 'ipBlocks', 'notIpBlocks', 'remoteIpBlocks', 'notRemoteIpBlocks',
] as const;
const OPERATION_FIELDS = ['hosts', 'notHosts', 'ports', 'notPorts', 'methods', 'notMethods', 'paths', 'notPaths'] as const;
/** Condition keys Istio accepts; those ending in `[` take a bracketed name. */
const CONDITION_KEYS = [
  'source.ip', 'source.namespace', 'source.principal', 'destination.ip', 'destination.port', 'remote.ip',
  'connection.sni', 'request.auth.principal', 'request.auth.audiences', 'request.auth.presenter',
];
const CONDITION_PREFIXES = ['request.headers[', 'request.auth.claims[', 'experimental.envoy.filters.'];

function apSource(v: unknown, p: Path): ApSource {
  const m = map(v, p, true)!;
  onlyKeys(m, p, SOURCE_FIELDS);
  const out = Object.fromEntries(SOURCE_FIELDS.map((f) => [f, strList(m[f], [...p, f])])) as unknown as ApSource;
  if (SOURCE_FIELDS.every((f) => out[f].length === 0)) throw new Invalid(`${fmt(p)} must set at least one field`, p);
  out.ipBlocks.forEach((s, i) => cidrString(s, [...p, 'ipBlocks', i]));
  out.notIpBlocks.forEach((s, i) => cidrString(s, [...p, 'notIpBlocks', i]));
  out.remoteIpBlocks.forEach((s, i) => cidrString(s, [...p, 'remoteIpBlocks', i]));
  out.notRemoteIpBlocks.forEach((s, i) => cidrString(s, [...p, 'notRemoteIpBlocks', i]));
  return out;
}

function apOperation(v: unknown, p: Path): ApOperation {
  const m = map(v, p, true)!;
  onlyKeys(m, p, OPERATION_FIELDS);
  const out = Object.fromEntries(OPERATION_FIELDS.map((f) => [f, strList(m[f], [...p, f])])) as unknown as ApOperation;
  if (OPERATION_FIELDS.every((f) => out[f].length === 0)) throw new Invalid(`${fmt(p)} must set at least one field`, p);
  out.ports.forEach((s, i) => portString(s, [...p, 'ports', i]));
  out.notPorts.forEach((s, i) => portString(s, [...p, 'notPorts', i]));
  return out;
}

function apCondition(v: unknown, p: Path): ApCondition {
  const m = map(v, p, true)!;
  onlyKeys(m, p, ['key', 'values', 'notValues']);
  const key = str(m.key, [...p, 'key'], true)!;
  if (!CONDITION_KEYS.includes(key) && !CONDITION_PREFIXES.some((x) => key.startsWith(x))) {
    throw new Invalid(`${fmt([...p, 'key'])}: unknown condition key ${JSON.stringify(key)}`, [...p, 'key']);
  }
  const values = strList(m.values, [...p, 'values']);
  const notValues = strList(m.notValues, [...p, 'notValues']);
  if (values.length + notValues.length === 0) throw new Invalid(`${fmt(p)} must set values or notValues`, p);
  const check = (f: (s: string, q: Path) => string) => {
    values.forEach((s, i) => f(s, [...p, 'values', i]));
    notValues.forEach((s, i) => f(s, [...p, 'notValues', i]));
  };
  if (key === 'source.ip' || key === 'destination.ip' || key === 'remote.ip') check(cidrString);
  if (key === 'destination.port') check(portString);
  return { key, values, notValues };
}

function toAuthorizationPolicy(o: K8sObject, lineOf: (p: Path) => number): AuthorizationPolicy {
  if (!o.apiVersion.startsWith(`${POLICY_GROUP}/`)) throw new Invalid(`apiVersion ${o.apiVersion} is not ${POLICY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec']) ?? {};
  onlyKeys(spec, ['spec'], ['selector', 'action', 'rules', 'provider', 'targetRef', 'targetRefs']);
  const action = enumOf<ApAction>(spec.action, ['spec', 'action'], ['ALLOW', 'DENY', 'AUDIT', 'CUSTOM'], 'ALLOW');
  const rules: ApRule[] = list(spec.rules, ['spec', 'rules']).map((r, i) => {
    const p: Path = ['spec', 'rules', i];
    // `- {}` is a rule that matches everything; null (a bare `-`) is the same.
    const m = map(r, p) ?? {};
    onlyKeys(m, p, ['from', 'to', 'when']);
    return {
      from: list(m.from, [...p, 'from']).map((f, j) => {
        const fp: Path = [...p, 'from', j];
        const fm = map(f, fp, true)!;
        onlyKeys(fm, fp, ['source']);
        return apSource(fm.source, [...fp, 'source']);
      }),
      to: list(m.to, [...p, 'to']).map((t, j) => {
        const tp: Path = [...p, 'to', j];
        const tm = map(t, tp, true)!;
        onlyKeys(tm, tp, ['operation']);
        return apOperation(tm.operation, [...tp, 'operation']);
      }),
      when: list(m.when, [...p, 'when']).map((c, j) => apCondition(c, [...p, 'when', j])),
      line: lineOf(p),
    };
  });
  const provider = isRecord(spec.provider) ? str(spec.provider.name, ['spec', 'provider', 'name']) : undefined;
  if (action === 'CUSTOM' && !provider) throw new Invalid('spec.provider.name is required with action CUSTOM', ['spec', 'action']);
  // Untranslatable is invalid here (not only at translation), so the last good version of the
  // policy stays served. Waypoint policies (targetRefs) are exempt: they are stored, not enforced.
  if ((action === 'AUDIT' || action === 'CUSTOM') && spec.targetRef === undefined && spec.targetRefs === undefined) {
    throw new Invalid(`spec.action ${action} cannot be enforced by the L4 node proxy; use ALLOW or DENY (or a waypoint for ${action})`, ['spec', 'action'], 'NM_ERR_POLICY');
  }
  const dryRunAnn = o.metadata.annotations['istio.io/dry-run'];
  if (dryRunAnn !== undefined && dryRunAnn !== 'true' && dryRunAnn !== 'false') {
    throw new Invalid(`metadata.annotations["istio.io/dry-run"] must be "true" or "false", got ${JSON.stringify(dryRunAnn)}`, ['metadata', 'annotations', 'istio.io/dry-run']);
  }
  return {
    ...o,
    kind: 'AuthorizationPolicy',
    policy: {
      ...(selector(spec) ? { selector: selector(spec)! } : {}),
      action,
      rules,
      dryRun: dryRunAnn === 'true',
      targetRefs: spec.targetRef !== undefined || spec.targetRefs !== undefined,
      ...(provider ? { provider } : {}),
    },
  };
}

// ---- PeerAuthentication -------------------------------------------------------------------

const MODES: readonly MtlsMode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

function toPeerAuthentication(o: K8sObject): PeerAuthentication {
  if (!o.apiVersion.startsWith(`${POLICY_GROUP}/`)) throw new Invalid(`apiVersion ${o.apiVersion} is not ${POLICY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec']) ?? {};
  onlyKeys(spec, ['spec'], ['selector', 'mtls', 'portLevelMtls']);
  const mtls = map(spec.mtls, ['spec', 'mtls']) ?? {};
  onlyKeys(mtls, ['spec', 'mtls'], ['mode']);
  const mode = enumOf(mtls.mode, ['spec', 'mtls', 'mode'], MODES, 'UNSET');
  const sel = selector(spec);
  const portLevelMtls: Record<number, MtlsMode> = {};
  const plm = map(spec.portLevelMtls, ['spec', 'portLevelMtls']) ?? {};
  for (const [k, v] of Object.entries(plm)) {
    const p: Path = ['spec', 'portLevelMtls', k];
    portString(k, p);
    const m = map(v, p, true)!;
    onlyKeys(m, p, ['mode']);
    portLevelMtls[Number(k)] = enumOf(m.mode, [...p, 'mode'], MODES, 'UNSET');
  }
  if (Object.keys(portLevelMtls).length > 0 && !sel) throw new Invalid('spec.portLevelMtls requires spec.selector (port-level mTLS applies to selected workloads only)', ['spec', 'portLevelMtls']);
  const meta = map(o.raw.metadata, ['metadata']) ?? {};
  const createdAt = str(meta.creationTimestamp, ['metadata', 'creationTimestamp']);
  return { ...o, kind: 'PeerAuthentication', peer: { ...(sel ? { selector: sel } : {}), mode, portLevelMtls, ...(createdAt ? { createdAt } : {}) } };
}

// ---- HTTPRoute ----------------------------------------------------------------------------

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];

function nameValue(v: unknown, p: Path): { name: string; value: string; type: 'Exact' | 'RegularExpression' } {
  const m = map(v, p, true)!;
  return {
    name: str(m.name, [...p, 'name'], true)!,
    value: str(m.value, [...p, 'value'], true)!,
    type: enumOf(m.type, [...p, 'type'], ['Exact', 'RegularExpression'] as const, 'Exact'),
  };
}

function toHttpRoute(o: K8sObject): HttpRoute {
  if (!o.apiVersion.startsWith(`${GATEWAY_GROUP}/`)) throw new Invalid(`apiVersion ${o.apiVersion} is not ${GATEWAY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec'], true)!;
  const parentRefs = list(spec.parentRefs, ['spec', 'parentRefs']).map((r, i) => {
    const p: Path = ['spec', 'parentRefs', i];
    const m = map(r, p, true)!;
    const opt = (k: string) => str(m[k], [...p, k]);
    const port = portNumber(m.port, [...p, 'port']);
    return {
      name: str(m.name, [...p, 'name'], true)!,
      ...(opt('namespace') ? { namespace: opt('namespace')! } : {}),
      ...(opt('kind') ? { kind: opt('kind')! } : {}),
      ...(opt('group') !== undefined ? { group: opt('group')! } : {}),
      ...(opt('sectionName') ? { sectionName: opt('sectionName')! } : {}),
      ...(port ? { port } : {}),
    };
  });
  if (parentRefs.length === 0) throw new Invalid('spec.parentRefs must name the Service (or Gateway) the route attaches to', ['spec']);
  const hostnames = strList(spec.hostnames, ['spec', 'hostnames']);
  const rules = list(spec.rules, ['spec', 'rules']).map((r, i) => {
    const p: Path = ['spec', 'rules', i];
    const m = map(r, p) ?? {};
    const matches = list(m.matches, [...p, 'matches']).map((x, j): HttpRouteMatch => {
      const mp: Path = [...p, 'matches', j];
      const mm = map(x, mp) ?? {};
      const path = map(mm.path, [...mp, 'path']);
      const method = str(mm.method, [...mp, 'method']);
      if (method !== undefined && !METHODS.includes(method)) throw new Invalid(`${fmt([...mp, 'method'])}: unknown value ${JSON.stringify(method)}; expected one of ${METHODS.join(', ')}`, [...mp, 'method']);
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
      const bp: Path = [...p, 'backendRefs', j];
      const bm = map(b, bp, true)!;
      const weight = bm.weight;
      if (weight !== undefined && (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 0 || weight > 1_000_000)) {
        throw new Invalid(`${fmt([...bp, 'weight'])} must be an integer 0-1000000, got ${JSON.stringify(weight)}`, [...bp, 'weight']);
      }
      const port = portNumber(bm.port, [...bp, 'port']);
      const ns = str(bm.namespace, [...bp, 'namespace']);
      const kind = str(bm.kind, [...bp, 'kind']);
      const group = str(bm.group, [...bp, 'group']);
      return {
        name: str(bm.name, [...bp, 'name'], true)!,
        ...(ns ? { namespace: ns } : {}),
        ...(kind ? { kind } : {}),
        ...(group !== undefined ? { group } : {}),
        ...(port ? { port } : {}),
        weight: (weight as number | undefined) ?? 1,
      };
    });
    const filters = list(m.filters, [...p, 'filters']).map((f, j) => map(f, [...p, 'filters', j], true)!);
    const timeouts = m.timeouts === undefined ? undefined : strMap(m.timeouts, [...p, 'timeouts']);
    return { matches, backendRefs, filters, ...(timeouts ? { timeouts } : {}) };
  });
  return { ...o, kind: 'HTTPRoute', route: { parentRefs, hostnames, rules } };
}

// ---- files --------------------------------------------------------------------------------

interface DocInfo {
  doc: Document.Parsed;
  raw: unknown;
}

/** Parses and validates one file's text. Never throws for bad content. */
export function parseConfigFile(text: string, file: string): ParsedFile {
  const base = parseConfigText(text, file);
  // YAML syntax errors are located by this module's own parse (below), from their offsets.
  const problems: ConfigProblem[] = base.errors
    .filter((e) => e.code !== 'NM_ERR_CONFIG_YAML')
    .map((e) => ({ code: e.code, severity: 'error', file: e.file, line: e.line, message: e.message }));
  const invalid = new Set<string>();
  // A second, position-keeping parse locates fields: documents keyed by their first content line.
  const lc = new LineCounter();
  const docs = new Map<number, DocInfo>();
  for (const doc of parseAllDocuments(text, { lineCounter: lc, prettyErrors: false }) as Document.Parsed[]) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        problems.push({ code: 'NM_ERR_CONFIG_YAML', severity: 'error', file, line: lc.linePos(e.pos[0]).line, message: e.message.split('\n')[0] ?? e.message });
      }
      continue;
    }
    const start = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0];
    if (start === undefined) continue;
    docs.set(lc.linePos(start).line, { doc, raw: doc.toJS() });
  }
  // Resources the loader rejected: name them when the document says what they are, so the
  // last good version of exactly that resource is kept.
  for (const pr of problems) {
    const d = docs.get(pr.line);
    const raw = d?.raw;
    if (isRecord(raw) && typeof raw.kind === 'string' && isRecord(raw.metadata) && typeof raw.metadata.name === 'string') {
      const ns = raw.kind === 'Namespace' ? '' : typeof raw.metadata.namespace === 'string' ? raw.metadata.namespace : 'default';
      const meta = { kind: raw.kind, metadata: { namespace: ns, name: raw.metadata.name } };
      invalid.add(identityOf(meta));
      pr.resource = describe(meta);
    }
  }
  const objects: ConfigObject[] = [];
  for (const o of base.objects) {
    const d = docs.get(o.source.line);
    const lineOf = (p: Path): number => {
      if (!d) return o.source.line;
      for (let n = p.length; n > 0; n--) {
        const node = d.doc.getIn(p.slice(0, n), true) as { range?: [number, number, number] } | undefined;
        if (node?.range) return lc.linePos(node.range[0]).line;
        // A map key's line, when its value is empty.
        const parent = n > 1 ? (d.doc.getIn(p.slice(0, n - 1), true) as { items?: { key?: { value?: unknown; range?: [number, number, number] } }[] } | undefined) : undefined;
        const key = parent?.items?.find((it) => it.key?.value === p[n - 1])?.key;
        if (key?.range) return lc.linePos(key.range[0]).line;
      }
      return o.source.line;
    };
    try {
      if (o.kind === 'AuthorizationPolicy') objects.push(toAuthorizationPolicy(o, lineOf));
      else if (o.kind === 'PeerAuthentication') objects.push(toPeerAuthentication(o));
      else if (o.kind === 'HTTPRoute') objects.push(toHttpRoute(o));
      else objects.push(o);
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      invalid.add(identityOf(o));
      problems.push({ code: e.code, severity: 'error', file, line: lineOf(e.path), message: `${describe(o)}: ${e.message}`, resource: describe(o) });
    }
  }
  return { objects, problems, invalid };
}

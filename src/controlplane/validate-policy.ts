// Validates the security.istio.io resources of a config file, AuthorizationPolicy and
// PeerAuthentication, into their typed views; every error names the offending field's path.
import {
  cidrString,
  enumOf,
  fieldError,
  formatPath,
  isRecord,
  list,
  map,
  onlyKeys,
  portString,
  str,
  strList,
  strMap,
  type FieldPath,
  type K8sObject,
} from '../k8s/index.js';
import {
  AP_ACTIONS,
  MTLS_MODES,
  POLICY_GROUP,
  type ApAction,
  type ApCondition,
  type ApOperation,
  type ApRule,
  type ApSource,
  type AuthorizationPolicy,
  type MtlsMode,
  type PeerAuthentication,
} from './resources.js';

/** Istio's WorkloadSelector, `spec.selector.matchLabels`; undefined when it selects everything. */
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

function apSource(v: unknown, p: FieldPath): ApSource {
  const m = map(v, p, true)!;
  onlyKeys(m, p, SOURCE_FIELDS);
  const out = Object.fromEntries(SOURCE_FIELDS.map((f) => [f, strList(m[f], [...p, f])])) as unknown as ApSource;
  if (SOURCE_FIELDS.every((f) => out[f].length === 0)) throw fieldError(`${formatPath(p)} must set at least one field`, p);
  out.ipBlocks.forEach((s, i) => cidrString(s, [...p, 'ipBlocks', i]));
  out.notIpBlocks.forEach((s, i) => cidrString(s, [...p, 'notIpBlocks', i]));
  out.remoteIpBlocks.forEach((s, i) => cidrString(s, [...p, 'remoteIpBlocks', i]));
  out.notRemoteIpBlocks.forEach((s, i) => cidrString(s, [...p, 'notRemoteIpBlocks', i]));
  return out;
}

function apOperation(v: unknown, p: FieldPath): ApOperation {
  const m = map(v, p, true)!;
  onlyKeys(m, p, OPERATION_FIELDS);
  const out = Object.fromEntries(OPERATION_FIELDS.map((f) => [f, strList(m[f], [...p, f])])) as unknown as ApOperation;
  if (OPERATION_FIELDS.every((f) => out[f].length === 0)) throw fieldError(`${formatPath(p)} must set at least one field`, p);
  out.ports.forEach((s, i) => portString(s, [...p, 'ports', i]));
  out.notPorts.forEach((s, i) => portString(s, [...p, 'notPorts', i]));
  return out;
}

function apCondition(v: unknown, p: FieldPath): ApCondition {
  const m = map(v, p, true)!;
  onlyKeys(m, p, ['key', 'values', 'notValues']);
  const key = str(m.key, [...p, 'key'], true)!;
  if (!CONDITION_KEYS.includes(key) && !CONDITION_PREFIXES.some((x) => key.startsWith(x))) {
    throw fieldError(`${formatPath([...p, 'key'])}: unknown condition key ${JSON.stringify(key)}`, [...p, 'key']);
  }
  const values = strList(m.values, [...p, 'values']);
  const notValues = strList(m.notValues, [...p, 'notValues']);
  if (values.length + notValues.length === 0) throw fieldError(`${formatPath(p)} must set values or notValues`, p);
  const check = (f: (s: string, q: FieldPath) => string) => {
    values.forEach((s, i) => f(s, [...p, 'values', i]));
    notValues.forEach((s, i) => f(s, [...p, 'notValues', i]));
  };
  if (key === 'source.ip' || key === 'destination.ip' || key === 'remote.ip') check(cidrString);
  if (key === 'destination.port') check(portString);
  return { key, values, notValues };
}

export function toAuthorizationPolicy(o: K8sObject, lineOf: (p: FieldPath) => number): AuthorizationPolicy {
  if (!o.apiVersion.startsWith(`${POLICY_GROUP}/`)) throw fieldError(`apiVersion ${o.apiVersion} is not ${POLICY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec']) ?? {};
  onlyKeys(spec, ['spec'], ['selector', 'action', 'rules', 'provider', 'targetRef', 'targetRefs']);
  const action = enumOf<ApAction>(spec.action, ['spec', 'action'], AP_ACTIONS, 'ALLOW');
  const rules: ApRule[] = list(spec.rules, ['spec', 'rules']).map((r, i) => {
    const p: FieldPath = ['spec', 'rules', i];
    // `- {}` is a rule that matches everything; null (a bare `-`) is the same.
    const m = map(r, p) ?? {};
    onlyKeys(m, p, ['from', 'to', 'when']);
    return {
      from: list(m.from, [...p, 'from']).map((f, j) => {
        const fp: FieldPath = [...p, 'from', j];
        const fm = map(f, fp, true)!;
        onlyKeys(fm, fp, ['source']);
        return apSource(fm.source, [...fp, 'source']);
      }),
      to: list(m.to, [...p, 'to']).map((t, j) => {
        const tp: FieldPath = [...p, 'to', j];
        const tm = map(t, tp, true)!;
        onlyKeys(tm, tp, ['operation']);
        return apOperation(tm.operation, [...tp, 'operation']);
      }),
      when: list(m.when, [...p, 'when']).map((c, j) => apCondition(c, [...p, 'when', j])),
      line: lineOf(p),
    };
  });
  const provider = isRecord(spec.provider) ? str(spec.provider.name, ['spec', 'provider', 'name']) : undefined;
  if (action === 'CUSTOM' && !provider) throw fieldError('spec.provider.name is required with action CUSTOM', ['spec', 'action']);
  // Untranslatable is invalid here (not only at translation), so the last good version of the
  // policy stays served. Waypoint policies (targetRefs) are exempt: they are stored, not enforced.
  if ((action === 'AUDIT' || action === 'CUSTOM') && spec.targetRef === undefined && spec.targetRefs === undefined) {
    throw fieldError(`spec.action ${action} cannot be enforced by the L4 node proxy; use ALLOW or DENY (or a waypoint for ${action})`, ['spec', 'action'], 'NM_ERR_POLICY');
  }
  const dryRunAnn = o.metadata.annotations['istio.io/dry-run'];
  if (dryRunAnn !== undefined && dryRunAnn !== 'true' && dryRunAnn !== 'false') {
    throw fieldError(`metadata.annotations["istio.io/dry-run"] must be "true" or "false", got ${JSON.stringify(dryRunAnn)}`, ['metadata', 'annotations', 'istio.io/dry-run']);
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

export function toPeerAuthentication(o: K8sObject): PeerAuthentication {
  if (!o.apiVersion.startsWith(`${POLICY_GROUP}/`)) throw fieldError(`apiVersion ${o.apiVersion} is not ${POLICY_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec']) ?? {};
  onlyKeys(spec, ['spec'], ['selector', 'mtls', 'portLevelMtls']);
  const mtls = map(spec.mtls, ['spec', 'mtls']) ?? {};
  onlyKeys(mtls, ['spec', 'mtls'], ['mode']);
  const mode = enumOf(mtls.mode, ['spec', 'mtls', 'mode'], MTLS_MODES, 'UNSET');
  const sel = selector(spec);
  const portLevelMtls: Record<number, MtlsMode> = {};
  const plm = map(spec.portLevelMtls, ['spec', 'portLevelMtls']) ?? {};
  for (const [k, v] of Object.entries(plm)) {
    const p: FieldPath = ['spec', 'portLevelMtls', k];
    portString(k, p);
    const m = map(v, p, true)!;
    onlyKeys(m, p, ['mode']);
    portLevelMtls[Number(k)] = enumOf(m.mode, [...p, 'mode'], MTLS_MODES, 'UNSET');
  }
  if (Object.keys(portLevelMtls).length > 0 && !sel) throw fieldError('spec.portLevelMtls requires spec.selector (port-level mTLS applies to selected workloads only)', ['spec', 'portLevelMtls']);
  const meta = map(o.raw.metadata, ['metadata']) ?? {};
  const createdAt = str(meta.creationTimestamp, ['metadata', 'creationTimestamp']);
  return { ...o, kind: 'PeerAuthentication', peer: { ...(sel ? { selector: sel } : {}), mode, portLevelMtls, ...(createdAt ? { createdAt } : {}) } };
}

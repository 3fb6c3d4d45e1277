// Validates networking.istio.io DestinationRule resources into their typed view: the traffic
// policy the node proxy applies (load balancing, connection pool, outlier detection) and subsets;
// everything else Istio offers becomes a note naming the field.
import { enumOf, fieldError, formatPath, isRecord, list, map, onlyKeys, str, strList, strMap, type FieldPath, type K8sObject } from '../k8s/index.js';
import type { LbAlgorithm } from '../state/index.js';
import { istioDuration } from './durations.js';
import type { RouteNote } from './resources.js';
import { NETWORKING_GROUP, type DestinationRule, type DrTrafficPolicy } from './resources-istio-net.js';
import type { LineOf } from './validate-route-filters.js';

type Note = (p: FieldPath, message: string) => void;

/** Istio's outlier detection defaults (DestinationRule reference). */
export const OUTLIER_DEFAULTS = { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 } as const;

const SIMPLE = ['UNSPECIFIED', 'LEAST_CONN', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST'] as const;
/** A subset name becomes part of cluster names in Istio: a DNS label. */
const SUBSET_NAME = /^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/;

function count(v: unknown, p: FieldPath, max = 2 ** 32 - 1): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw fieldError(`${formatPath(p)} must be an integer 0-${max}, got ${JSON.stringify(v)}`, p);
  return v;
}

/** Known fields the mesh does not apply: each is noted, then ignored. */
function ignore(m: Record<string, unknown>, p: FieldPath, fields: readonly string[], note: Note, why = 'not supported; ignored'): void {
  for (const f of fields) if (m[f] !== undefined && m[f] !== null) note([...p, f], `${f} is ${why}`);
}

function loadBalancer(v: unknown, p: FieldPath, note: Note): LbAlgorithm | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['simple', 'consistentHash', 'localityLbSetting', 'zoneAwareLbSetting', 'warmupDurationSecs', 'warmup']);
  if (m.simple !== undefined && m.consistentHash !== undefined) throw fieldError(`${formatPath(p)}: only one of simple or consistentHash may be set`, [...p, 'consistentHash']);
  ignore(m, p, ['consistentHash', 'localityLbSetting', 'zoneAwareLbSetting', 'warmupDurationSecs', 'warmup'], note);
  const simple = enumOf(m.simple, [...p, 'simple'], SIMPLE, 'UNSPECIFIED');
  if (simple === 'PASSTHROUGH') note([...p, 'simple'], 'PASSTHROUGH is not supported; endpoints are balanced with the default algorithm');
  // LEAST_CONN is Istio's deprecated name for LEAST_REQUEST.
  return simple === 'LEAST_CONN' ? 'LEAST_REQUEST' : simple === 'UNSPECIFIED' || simple === 'PASSTHROUGH' ? undefined : simple;
}

function connectionPool(v: unknown, p: FieldPath, note: Note): DrTrafficPolicy['connectionPool'] {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['tcp', 'http']);
  const tcp = map(m.tcp, [...p, 'tcp']) ?? {};
  onlyKeys(tcp, [...p, 'tcp'], ['maxConnections', 'connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout']);
  ignore(tcp, [...p, 'tcp'], ['connectTimeout', 'tcpKeepalive', 'maxConnectionDuration', 'idleTimeout'], note);
  const http = map(m.http, [...p, 'http']) ?? {};
  onlyKeys(http, [...p, 'http'], [
    'http1MaxPendingRequests', 'http2MaxRequests', 'maxRequestsPerConnection', 'maxRetries', 'idleTimeout', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams', 'http2KeepAlive',
  ]);
  ignore(http, [...p, 'http'], ['maxRetries', 'idleTimeout', 'h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams', 'http2KeepAlive'], note);
  // 0 is proto3's unset for the three limits: Istio leaves them at Envoy's default (unlimited).
  const positive = (x: number | undefined) => (x ? x : undefined);
  const maxConnections = positive(count(tcp.maxConnections, [...p, 'tcp', 'maxConnections'], 2 ** 31 - 1));
  const maxPendingRequests = positive(count(http.http1MaxPendingRequests, [...p, 'http', 'http1MaxPendingRequests'], 2 ** 31 - 1));
  const maxRequests = positive(count(http.http2MaxRequests, [...p, 'http', 'http2MaxRequests'], 2 ** 31 - 1));
  const maxRequestsPerConnection = count(http.maxRequestsPerConnection, [...p, 'http', 'maxRequestsPerConnection'], 2 ** 31 - 1);
  return {
    ...(maxConnections !== undefined ? { maxConnections } : {}),
    ...(maxPendingRequests !== undefined ? { maxPendingRequests } : {}),
    ...(maxRequests !== undefined ? { maxRequests } : {}),
    ...(maxRequestsPerConnection !== undefined ? { maxRequestsPerConnection } : {}),
  };
}

function outlierDetection(v: unknown, p: FieldPath, note: Note): DrTrafficPolicy['outlierDetection'] {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, [
    'consecutiveErrors', 'splitExternalLocalOriginErrors', 'consecutiveLocalOriginFailures', 'consecutiveGatewayErrors', 'consecutive5xxErrors', 'interval', 'baseEjectionTime',
    'maxEjectionPercent', 'minHealthPercent', 'outlierDetectionHttpErrorCodes',
  ]);
  ignore(m, p, ['consecutiveErrors', 'splitExternalLocalOriginErrors', 'consecutiveLocalOriginFailures', 'outlierDetectionHttpErrorCodes'], note);
  // A gateway-error threshold only adds ejections for 502-504 before the 5xx threshold is reached.
  if (count(m.consecutiveGatewayErrors, [...p, 'consecutiveGatewayErrors'])) note([...p, 'consecutiveGatewayErrors'], 'consecutiveGatewayErrors is not supported; only consecutive5xxErrors ejects endpoints');
  if (count(m.minHealthPercent, [...p, 'minHealthPercent'], 100)) note([...p, 'minHealthPercent'], 'minHealthPercent is not supported; outlier detection stays on at any health');
  const maxEjection = count(m.maxEjectionPercent, [...p, 'maxEjectionPercent'], 100);
  return {
    consecutive5xxErrors: count(m.consecutive5xxErrors, [...p, 'consecutive5xxErrors']) ?? OUTLIER_DEFAULTS.consecutive5xxErrors,
    intervalMs: istioDuration(m.interval, [...p, 'interval']) ?? OUTLIER_DEFAULTS.intervalMs,
    baseEjectionTimeMs: istioDuration(m.baseEjectionTime, [...p, 'baseEjectionTime']) ?? OUTLIER_DEFAULTS.baseEjectionTimeMs,
    // Istio leaves 0 (proto3's unset) at Envoy's default, 10%.
    maxEjectionPercent: maxEjection ? maxEjection : OUTLIER_DEFAULTS.maxEjectionPercent,
  };
}

export function trafficPolicy(v: unknown, p: FieldPath, note: Note): DrTrafficPolicy | undefined {
  const m = map(v, p);
  if (!m) return undefined;
  onlyKeys(m, p, ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'portLevelSettings', 'tunnel', 'proxyProtocol', 'retryBudget']);
  const tls = map(m.tls, [...p, 'tls']);
  if (tls && tls.mode !== 'ISTIO_MUTUAL') note([...p, 'tls'], 'tls is not supported; mesh traffic is mutual TLS over HBONE, other traffic leaves as the client sent it');
  if (list(m.portLevelSettings, [...p, 'portLevelSettings']).length > 0) note([...p, 'portLevelSettings'], 'portLevelSettings is not supported; ignored (the Service-wide policy applies to every port)');
  ignore(m, p, ['tunnel', 'proxyProtocol', 'retryBudget'], note);
  const loadBalancerAlg = loadBalancer(m.loadBalancer, [...p, 'loadBalancer'], note);
  const pool = connectionPool(m.connectionPool, [...p, 'connectionPool'], note);
  const od = outlierDetection(m.outlierDetection, [...p, 'outlierDetection'], note);
  const set = (['loadBalancer', 'connectionPool', 'outlierDetection'] as const).filter((k) => m[k] !== undefined && m[k] !== null);
  return {
    set,
    ...(loadBalancerAlg ? { loadBalancer: loadBalancerAlg } : {}),
    ...(pool && Object.keys(pool).length > 0 ? { connectionPool: pool } : {}),
    ...(od ? { outlierDetection: od } : {}),
  };
}

export function toDestinationRule(o: K8sObject, lineOf: LineOf = () => o.source.line): DestinationRule {
  if (!o.apiVersion.startsWith(`${NETWORKING_GROUP}/`)) throw fieldError(`apiVersion ${o.apiVersion} is not ${NETWORKING_GROUP}/v1`, ['apiVersion']);
  const spec = map(o.raw.spec, ['spec'], true)!;
  onlyKeys(spec, ['spec'], ['host', 'trafficPolicy', 'subsets', 'exportTo', 'workloadSelector']);
  const notes: RouteNote[] = [];
  const note: Note = (p, message) => notes.push({ path: p, line: lineOf(p), message });
  const host = str(spec.host, ['spec', 'host'], true)!;
  if (host === '') throw fieldError('spec.host must not be empty', ['spec', 'host']);
  const tp = trafficPolicy(spec.trafficPolicy, ['spec', 'trafficPolicy'], note);
  const names = new Set<string>();
  const subsets = list(spec.subsets, ['spec', 'subsets']).map((s, i) => {
    const p: FieldPath = ['spec', 'subsets', i];
    const m = map(s, p, true)!;
    onlyKeys(m, p, ['name', 'labels', 'trafficPolicy']);
    const name = str(m.name, [...p, 'name'], true)!;
    if (!SUBSET_NAME.test(name)) throw fieldError(`${formatPath([...p, 'name'])}: ${JSON.stringify(name)} is not a valid subset name`, [...p, 'name']);
    if (names.has(name)) throw fieldError(`${formatPath([...p, 'name'])}: subset ${JSON.stringify(name)} is defined twice`, [...p, 'name']);
    names.add(name);
    const stp = trafficPolicy(m.trafficPolicy, [...p, 'trafficPolicy'], note);
    return { name, labels: strMap(m.labels, [...p, 'labels']), ...(stp ? { trafficPolicy: stp } : {}), line: lineOf(p) };
  });
  const exportTo = strList(spec.exportTo, ['spec', 'exportTo']);
  const workloadSelector = spec.workloadSelector !== undefined && spec.workloadSelector !== null;
  if (workloadSelector) {
    note(['spec', 'workloadSelector'], 'workloadSelector is not supported (the rule is for some clients only, which the node proxy cannot tell apart); the rule is not applied');
  }
  if (exportTo.length > 0 && !(exportTo.length === 1 && exportTo[0] === '*')) note(['spec', 'exportTo'], 'exportTo is not supported; the rule applies as if exported to every namespace');
  const meta = isRecord(o.raw.metadata) ? o.raw.metadata : {};
  const createdAt = str(meta.creationTimestamp, ['metadata', 'creationTimestamp']);
  return {
    ...o,
    kind: 'DestinationRule',
    dr: {
      host,
      ...(tp ? { trafficPolicy: tp } : {}),
      subsets,
      exportTo,
      workloadSelector,
      ...(createdAt ? { createdAt } : {}),
      notes,
      line: lineOf(['spec', 'host']),
    },
  };
}

// Pure translation of objects read from the Kubernetes API into the typed resources of a
// ConfigSnapshot (with the directory source's own validators), istiod's ambient rules for
// which Pods are workloads, and EndpointSlice endpoints without a Pod into workloads.
import { fieldPathOf, isRecord, objectFromRaw, type K8sObject, type Service, type SourcePos } from '../k8s/index.js';
import { ipToBytes, isIPv4 } from '../net/index.js';
import { podIpv4, podSkipReason } from '../kube/index.js';
import type { PbPort, PbWorkload } from '../xds/index.js';
import { appProtocolOf, serviceKey, type MeshSettings } from './translate.js';
import { typedConfigObject, type ConfigObject, type ConfigProblem, type ProblemCode } from './validate.js';

/** What problems about API objects give as their file: there is no file or line. */
export const KUBE_FILE = 'kubernetes';
const KUBE_POS: SourcePos = { file: KUBE_FILE, line: 0 };

/** The label that ties an EndpointSlice to its Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export type ApiVerdict =
  | { kind: 'object'; object: ConfigObject }
  /** Not a mesh resource in this state (e.g. a hostNetwork or finished Pod): served as absent. */
  | { kind: 'skip'; reason: string }
  | { kind: 'invalid'; problem: ConfigProblem };

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (isRecord(v) ? v : {});

/** A dual-stack pod's IPv4 address as status.podIP (the mesh is IPv4); other fields untouched. */
function withIpv4PodIp(raw: Raw): Raw {
  const status = rec(raw.status);
  if (typeof status.podIP !== 'string' || isIPv4(status.podIP)) return raw;
  const v4 = podIpv4(raw);
  const { podIP: _drop, ...rest } = status;
  return { ...raw, status: v4 ? { ...rest, podIP: v4 } : rest };
}

/** A dual-stack Service's IPv4 cluster IP as spec.clusterIP; an IPv6-only Service has no VIP here. */
function withIpv4ClusterIp(raw: Raw): Raw {
  const spec = rec(raw.spec);
  if (typeof spec.clusterIP !== 'string' || spec.clusterIP === 'None' || isIPv4(spec.clusterIP)) return raw;
  const v4 = (Array.isArray(spec.clusterIPs) ? spec.clusterIPs : []).find((ip): ip is string => typeof ip === 'string' && isIPv4(ip));
  const { clusterIP: _drop, ...rest } = spec;
  return { ...raw, spec: v4 ? { ...rest, clusterIP: v4 } : rest };
}

/** The `Kind ns/name` of a raw API object, for problems about objects too broken to type. */
export function describeRaw(raw: Raw): string {
  const m = rec(raw.metadata);
  const kind = typeof raw.kind === 'string' ? raw.kind : 'object';
  const name = typeof m.name === 'string' ? m.name : '?';
  return `${kind} ${typeof m.namespace === 'string' && m.namespace ? `${m.namespace}/` : ''}${name}`;
}

/**
 * Validates one object from the API with the directory source's validators. There is no line:
 * problems name the resource (`file: 'kubernetes'`, `line: 0`, `resource: 'Kind ns/name'`).
 */
export function fromApi(raw: Raw): ApiVerdict {
  if (raw.kind === 'Pod') {
    const skip = podSkipReason(raw);
    if (skip) return { kind: 'skip', reason: skip };
    raw = withIpv4PodIp(raw);
  }
  if (raw.kind === 'Service') raw = withIpv4ClusterIp(raw);
  try {
    const o: K8sObject = objectFromRaw(raw, KUBE_POS, { simulated: false });
    return { kind: 'object', object: typedConfigObject(o, () => 0) };
  } catch (e) {
    if (!fieldPathOf(e)) throw e;
    const err = e as Error & { code: ProblemCode };
    const what = describeRaw(raw);
    const message = err.message.startsWith(`${what}:`) ? err.message : `${what}: ${err.message}`;
    return { kind: 'invalid', problem: { code: err.code, severity: 'error', file: KUBE_FILE, line: 0, message, resource: what } };
  }
}

/** The identity a raw object is kept under (the same form as validate.ts identityOf). */
export function rawIdentity(raw: Raw): string {
  const m = rec(raw.metadata);
  const ns = raw.kind === 'Namespace' ? '' : typeof m.namespace === 'string' ? m.namespace : 'default';
  return `${String(raw.kind)}/${ns}/${String(m.name)}`;
}


// ---- EndpointSlices -------------------------------------------------------------------------

/**
 * Workloads for EndpointSlice endpoints that are not Pods (Services without selectors, whose
 * endpoints someone wrote by hand), as istiod's endpointSlicesBuilder makes them: one per
 * address, named after the slice, healthy unless `conditions.ready` is false, serving the
 * slice's Service on the slice's ports. Pod endpoints are skipped: the Pod says more.
 * Istio marks these HOST_NETWORK (shared addresses); the workload API here has no network
 * mode, so an address that is also a pod's is left to the pod.
 */
export function endpointSliceWorkloads(mesh: MeshSettings, slices: readonly K8sObject[], services: readonly Service[], podIps: ReadonlySet<string>): PbWorkload[] {
  const out: PbWorkload[] = [];
  const seen = new Set<string>();
  for (const es of slices) {
    const raw = es.raw;
    const svcName = es.metadata.labels[SERVICE_NAME_LABEL];
    if (!svcName || raw.addressType === 'FQDN' || raw.addressType === 'IPv6') continue;
    const svc = services.find((s) => s.metadata.namespace === es.metadata.namespace && s.metadata.name === svcName);
    if (!svc) continue;
    const ports: PbPort[] = [];
    for (const p of Array.isArray(raw.ports) ? raw.ports : []) {
      const pr = rec(p);
      if (typeof pr.port !== 'number' || (pr.protocol ?? 'TCP') !== 'TCP') continue;
      const name = typeof pr.name === 'string' ? pr.name : '';
      const sp = svc.spec.ports.find((x) => (x.name ?? '') === name && x.protocol === 'TCP');
      if (sp) ports.push({ servicePort: sp.port, targetPort: pr.port, appProtocol: appProtocolOf(sp) });
    }
    const services_ = { [serviceKey(mesh, svc)]: { ports } };
    for (const ep of Array.isArray(raw.endpoints) ? raw.endpoints : []) {
      const e = rec(ep);
      if (rec(e.targetRef).kind === 'Pod') continue;
      const ip = Array.isArray(e.addresses) ? e.addresses[0] : undefined;
      if (typeof ip !== 'string' || !isIPv4(ip) || podIps.has(ip)) continue;
      const uid = `${mesh.clusterId}/discovery.k8s.io/EndpointSlice/${es.metadata.namespace}/${es.metadata.name}/${ip}`;
      if (seen.has(uid)) continue;
      seen.add(uid);
      out.push({
        uid,
        name: es.metadata.name,
        namespace: es.metadata.namespace,
        addresses: [ipToBytes(ip)],
        network: '',
        tunnelProtocol: 'NONE',
        trustDomain: mesh.trustDomain,
        serviceAccount: '',
        node: typeof e.nodeName === 'string' ? e.nodeName : '',
        canonicalName: es.metadata.name,
        canonicalRevision: 'latest',
        workloadType: 'POD',
        workloadName: es.metadata.name,
        authorizationPolicies: [],
        status: rec(e.conditions).ready === false ? 'UNHEALTHY' : 'HEALTHY',
        clusterId: mesh.clusterId,
        services: services_,
      });
    }
  }
  return out;
}

// Pure translation of Pods and Services (plus the pod IPs agents report) into the xDS
// workload API: one Workload per running pod with an IP, one Service per Service.
import { isAmbient, type Namespace, type Pod, type Service } from '../k8s/index.js';
import { ipToBytes } from '../net/index.js';
import type { PbAppProtocol, PbPort, PbService, PbWorkload } from '../xds/index.js';

export interface MeshSettings {
  trustDomain: string;
  /** Istio's default cluster id is "Kubernetes". */
  clusterId: string;
  /** The cluster DNS domain: hostnames are <name>.<ns>.svc.<domain>. */
  clusterDomain: string;
  /** Namespace whose policies apply mesh-wide (Istio's root namespace). */
  rootNamespace: string;
}

export const DEFAULT_MESH: MeshSettings = {
  trustDomain: 'cluster.local',
  clusterId: 'Kubernetes',
  clusterDomain: 'cluster.local',
  rootNamespace: 'istio-system',
};

/** A pod from the config with where it runs: its IP and node. */
export interface RunningPod {
  pod: Pod;
  ip: string;
  node: string;
  phase: string;
  /** From the pod's own status when it carries one (the Kubernetes API): Ready and not deleting. */
  healthy?: boolean;
}

/**
 * Health the way istiod reads it for ambient: the Ready condition, and not being deleted.
 * Undefined when the pod carries no conditions (a config file), so the phase decides.
 */
export function podHealthy(pod: Pod): boolean | undefined {
  const status = pod.raw.status as { conditions?: unknown } | undefined;
  if (!status || !Array.isArray(status.conditions)) return undefined;
  const ready = status.conditions.some((c: { type?: unknown; status?: unknown } | null) => c?.type === 'Ready' && c.status === 'True');
  const meta = pod.raw.metadata as { deletionTimestamp?: unknown } | undefined;
  return ready && !meta?.deletionTimestamp;
}

/** A pod status as an agent reports it. */
export interface ReportedPod {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  phase: string;
  node: string;
}

const TERMINAL = new Set(['Succeeded', 'Failed']);

/**
 * Joins Pod specs with reported pod status. A Pod whose file pins `status.podIP` is used as
 * is (on spec.nodeName); other pods need a report with an IP. Terminal pods are left out.
 */
export function runningPods(pods: readonly Pod[], reports: Iterable<ReportedPod>): RunningPod[] {
  const byUid = new Map<string, ReportedPod>();
  const byName = new Map<string, ReportedPod>();
  for (const r of reports) {
    if (r.uid) byUid.set(r.uid, r);
    byName.set(`${r.namespace}/${r.name}`, r);
  }
  const out: RunningPod[] = [];
  for (const pod of pods) {
    if (pod.requestedIp) {
      const phase = (pod.raw.status as { phase?: unknown } | undefined)?.phase;
      const healthy = podHealthy(pod);
      out.push({ pod, ip: pod.requestedIp, node: pod.spec.nodeName ?? '', phase: typeof phase === 'string' ? phase : 'Running', ...(healthy === undefined ? {} : { healthy }) });
      continue;
    }
    const r = byUid.get(pod.metadata.uid) ?? byName.get(`${pod.metadata.namespace}/${pod.metadata.name}`);
    if (!r || !r.ip || TERMINAL.has(r.phase)) continue;
    // A report for another incarnation of the same name (different uid) is not this pod.
    if (r.uid && r.uid !== pod.metadata.uid) continue;
    const healthy = podHealthy(pod);
    out.push({ pod, ip: r.ip, node: r.node, phase: r.phase || 'Running', ...(healthy === undefined ? {} : { healthy }) });
  }
  return out;
}

export function workloadUid(mesh: MeshSettings, pod: Pod): string {
  return `${mesh.clusterId}//Pod/${pod.metadata.namespace}/${pod.metadata.name}`;
}

export function serviceHostname(mesh: MeshSettings, svc: Service): string {
  return `${svc.metadata.name}.${svc.metadata.namespace}.svc.${mesh.clusterDomain}`;
}

/** The xDS resource name of a service: `<namespace>/<hostname>`. */
export function serviceKey(mesh: MeshSettings, svc: Service): string {
  return `${svc.metadata.namespace}/${serviceHostname(mesh, svc)}`;
}

/** appProtocol, else the port name's prefix (Istio's convention: `http-web`, `grpc`). */
export function appProtocolOf(port: { name?: string; appProtocol?: string }): PbAppProtocol {
  const pick = (s: string | undefined): PbAppProtocol | undefined => {
    switch (s?.toLowerCase()) {
      case 'http':
      case 'http1':
      // WebSocket is HTTP/1.1 up to its 101; the engine then tunnels it.
      case 'ws':
      case 'kubernetes.io/ws':
        return 'HTTP11';
      case 'http2':
      case 'h2c':
      case 'kubernetes.io/h2c':
        return 'HTTP2';
      case 'grpc':
      case 'grpc-web':
        return 'GRPC';
      case 'tcp':
        return 'TCP';
      case 'tls':
      case 'https':
        return 'TLS';
      default:
        return undefined;
    }
  };
  return pick(port.appProtocol) ?? pick(port.name?.split('-')[0]) ?? 'UNKNOWN';
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** Services that select a pod: same namespace, non-empty selector, all labels match. */
export function servicesOf(pod: Pod, services: readonly Service[]): Service[] {
  return services.filter(
    (s) => s.metadata.namespace === pod.metadata.namespace && Object.keys(s.spec.selector).length > 0 && selects(s.spec.selector, pod.metadata.labels),
  );
}

/** The ports of a service on one pod: named target ports resolved from the pod's containers. */
export function podPortsFor(svc: Service, pod: Pod): PbPort[] {
  const out: PbPort[] = [];
  for (const p of svc.spec.ports) {
    if (p.protocol !== 'TCP') continue;
    let target: number | undefined;
    if (typeof p.targetPort === 'number') target = p.targetPort;
    else {
      for (const c of pod.spec.containers) {
        const cp = c.ports.find((x) => x.name === p.targetPort);
        if (cp) {
          target = cp.containerPort;
          break;
        }
      }
    }
    // Like an Endpoints controller: a named port the pod does not define is not served by it.
    if (target === undefined) continue;
    out.push({ servicePort: p.port, targetPort: target, appProtocol: appProtocolOf(p) });
  }
  return out;
}

export function translateService(mesh: MeshSettings, svc: Service): PbService {
  const ip = svc.spec.clusterIP;
  return {
    name: svc.metadata.name,
    namespace: svc.metadata.namespace,
    hostname: serviceHostname(mesh, svc),
    addresses: ip && ip !== 'None' ? [{ network: '', address: ipToBytes(ip) }] : [],
    ports: svc.spec.ports
      .filter((p) => p.protocol === 'TCP')
      .map((p) => ({ servicePort: p.port, targetPort: typeof p.targetPort === 'number' ? p.targetPort : 0, appProtocol: appProtocolOf(p) })),
    subjectAltNames: [],
  };
}

export interface WorkloadInputs {
  services: readonly Service[];
  namespaces: readonly Namespace[];
  /** `ns/name` of the authorizations that select the pod (WORKLOAD_SELECTOR scope). */
  policiesFor: (pod: Pod) => string[];
}

export function translateWorkload(mesh: MeshSettings, rp: RunningPod, inputs: WorkloadInputs): PbWorkload {
  const { pod } = rp;
  const labels = pod.metadata.labels;
  const services: Record<string, { ports: PbPort[] }> = {};
  for (const svc of servicesOf(pod, inputs.services)) services[serviceKey(mesh, svc)] = { ports: podPortsFor(svc, pod) };
  return {
    uid: workloadUid(mesh, pod),
    name: pod.metadata.name,
    namespace: pod.metadata.namespace,
    addresses: [ipToBytes(rp.ip)],
    network: '',
    tunnelProtocol: isAmbient(pod, [...inputs.namespaces]) ? 'HBONE' : 'NONE',
    trustDomain: mesh.trustDomain,
    serviceAccount: pod.spec.serviceAccountName,
    node: rp.node,
    canonicalName: labels['service.istio.io/canonical-name'] ?? labels['app.kubernetes.io/name'] ?? labels.app ?? pod.metadata.name,
    canonicalRevision: labels['service.istio.io/canonical-revision'] ?? labels['app.kubernetes.io/version'] ?? labels.version ?? 'latest',
    workloadType: 'POD',
    workloadName: pod.metadata.name,
    authorizationPolicies: inputs.policiesFor(pod),
    status: (rp.healthy ?? rp.phase === 'Running') ? 'HEALTHY' : 'UNHEALTHY',
    clusterId: mesh.clusterId,
    services,
    labels: { ...labels },
  };
}

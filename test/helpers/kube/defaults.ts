// What kube-apiserver fills in on create beyond metadata: the defaults of the kinds served here
// (Pod, Service, Namespace, CRD status), a Service's ClusterIP from 10.96.0.0/16, and generateName.
import { randomBytes } from 'node:crypto';
import { invalid, type KubeObject } from './errors.js';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/** The five-character suffix generateName gets (k8s.io/apiserver names.SimpleNameGenerator alphabet). */
export function generatedSuffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}

/** The status a kind starts with when created through the API (the body's status is dropped). */
export function initialStatus(kind: string): unknown {
  if (kind === 'Pod') return { phase: 'Pending', qosClass: 'BestEffort' };
  if (kind === 'Namespace') return { phase: 'Active' };
  return undefined;
}

/** Allocates Service ClusterIPs the way the service IP allocator would, from 10.96.0.0/16. */
export class ClusterIpAllocator {
  #used = new Set<string>();
  #next = 10;
  take(ip: string): boolean {
    if (this.#used.has(ip)) return false;
    this.#used.add(ip);
    return true;
  }
  release(ip: string | undefined): void {
    if (ip) this.#used.delete(ip);
  }
  allocate(): string {
    for (;;) {
      const n = this.#next++;
      const ip = `10.96.${(n >> 8) & 0xff}.${n & 0xff}`;
      if (n >= 0xfffe) throw new Error('stand-in ClusterIP range exhausted');
      if (this.take(ip)) return ip;
    }
  }
}

/** Fills the spec defaults of one kind in place (a subset of the real defaulting functions). */
export function applyDefaults(o: KubeObject, ips: ClusterIpAllocator, old?: KubeObject): void {
  if (o.kind === 'Pod') {
    const spec = obj(o.spec);
    spec.serviceAccountName ??= spec.serviceAccount ?? 'default';
    spec.restartPolicy ??= 'Always';
    spec.schedulerName ??= 'default-scheduler';
    spec.dnsPolicy ??= 'ClusterFirst';
    spec.terminationGracePeriodSeconds ??= 30;
    spec.containers ??= [];
    o.spec = spec;
  } else if (o.kind === 'Service') {
    const spec = obj(o.spec);
    const oldSpec = obj(old?.spec);
    spec.type ??= 'ClusterIP';
    spec.sessionAffinity ??= 'None';
    spec.ports = (Array.isArray(spec.ports) ? spec.ports : []).map((p: Obj) => ({ protocol: 'TCP', ...p, targetPort: p.targetPort ?? p.port }));
    if (spec.type !== 'ExternalName') {
      if (old) spec.clusterIP ??= oldSpec.clusterIP;
      if (spec.clusterIP === undefined || spec.clusterIP === '') spec.clusterIP = ips.allocate();
      else if (!old && spec.clusterIP !== 'None' && !ips.take(String(spec.clusterIP))) {
        throw invalid('Service', '', o.metadata.name, 'spec.clusterIPs', `Invalid value: []string{"${String(spec.clusterIP)}"}: failed to allocate IP ${String(spec.clusterIP)}: provided IP is already allocated`);
      }
      if (old && oldSpec.clusterIP !== undefined && spec.clusterIP !== oldSpec.clusterIP) {
        throw invalid('Service', '', o.metadata.name, 'spec.clusterIPs[0]', 'Invalid value: field is immutable');
      }
      spec.clusterIPs = [spec.clusterIP];
      if (spec.clusterIP !== 'None') {
        spec.ipFamilies ??= ['IPv4'];
        spec.ipFamilyPolicy ??= 'SingleStack';
      }
    }
    o.spec = spec;
  } else if (o.kind === 'CustomResourceDefinition') {
    const spec = obj(o.spec);
    const names = obj(spec.names);
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const cond = (type: string, reason: string, message: string): Obj => ({ type, status: 'True', lastTransitionTime: now, reason, message });
    o.status = {
      acceptedNames: { ...names, listKind: names.listKind ?? `${String(names.kind)}List`, singular: names.singular ?? String(names.kind).toLowerCase() },
      conditions: [cond('NamesAccepted', 'NoConflicts', 'no conflicts found'), cond('Established', 'InitialNamesAccepted', 'the initial names have been accepted')],
      storedVersions: (Array.isArray(spec.versions) ? spec.versions : []).filter((v: Obj) => v.storage).map((v: Obj) => v.name),
    };
  }
}

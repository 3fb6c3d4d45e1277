// The agent's local view of workloads by IP, in local mode: every pod this node's CNI saw,
// enrolled or not. (With a control plane, xDS state replaces it.)
import type { PeerInfo } from '../telemetry/index.js';
import type { WorkloadIndex } from '../proxy/index.js';

export interface KnownPod {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  serviceAccount: string;
  labels: Record<string, string>;
  enrolled: boolean;
}

export class LocalWorkloads implements WorkloadIndex {
  readonly #byIp = new Map<string, KnownPod>();
  readonly #trustDomain: string;
  /** Called after every change (the proxy workers mirror the list). */
  onChange: (() => void) | undefined;

  constructor(trustDomain = 'cluster.local') {
    this.#trustDomain = trustDomain;
  }

  set(p: KnownPod): void {
    for (const [ip, q] of this.#byIp) if (q.uid === p.uid && ip !== p.ip) this.#byIp.delete(ip);
    this.#byIp.set(p.ip, p);
    this.onChange?.();
  }

  deleteUid(uid: string): void {
    for (const [ip, q] of this.#byIp) if (q.uid === uid) this.#byIp.delete(ip);
    this.onChange?.();
  }

  all(): KnownPod[] {
    return [...this.#byIp.values()];
  }

  byIp(ip: string): PeerInfo | undefined {
    const p = this.#byIp.get(ip);
    if (!p) return undefined;
    const app = p.labels['app.kubernetes.io/name'] ?? p.labels.app;
    return {
      workload: p.name,
      namespace: p.namespace,
      // Only enrolled pods have a mesh identity on the wire.
      ...(p.enrolled ? { principal: `${this.#trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}` } : {}),
      ...(app ? { app, canonicalService: app } : {}),
    };
  }
}

// The pods each node agent reports (as a kubelet reports pod status): node → its pods.
import { EventEmitter } from 'node:events';
import { isIp } from '../net/index.js';
import type { PbPodStatus } from '../xds/index.js';
import type { ReportedPod } from './translate.js';

const PHASES = new Set(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown']);

export interface NodeReport {
  node: string;
  pods: ReportedPod[];
  reportedAt: string;
}

/** Checks one report entry; returns a reason when it is unusable. */
export function invalidPodStatus(p: PbPodStatus): string | undefined {
  if (!p.namespace || !p.name) return 'namespace and name are required';
  if (p.ip && !isIp(p.ip)) return `ip ${JSON.stringify(p.ip)} is not an IP address`;
  if (!PHASES.has(p.phase)) return `phase ${JSON.stringify(p.phase)} is not one of ${[...PHASES].join(', ')}`;
  return undefined;
}

export class PodStatusStore extends EventEmitter<{ change: [node: string] }> {
  readonly #nodes = new Map<string, NodeReport>();

  /** Replaces a node's pods; emits `change` when they differ from the last report. */
  report(node: string, pods: readonly PbPodStatus[]): boolean {
    const next: ReportedPod[] = pods.map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, ip: p.ip, phase: p.phase, node }));
    const prev = this.#nodes.get(node);
    const same = prev !== undefined && JSON.stringify(prev.pods) === JSON.stringify(next);
    this.#nodes.set(node, { node, pods: next, reportedAt: new Date().toISOString() });
    if (!same) this.emit('change', node);
    return !same;
  }

  /** Every reported pod of every node. When two nodes report one pod, the latest report wins. */
  pods(): ReportedPod[] {
    const latest = [...this.#nodes.values()].sort((a, b) => a.reportedAt.localeCompare(b.reportedAt));
    const byName = new Map<string, ReportedPod>();
    for (const n of latest) for (const p of n.pods) byName.set(`${p.namespace}/${p.name}`, p);
    return [...byName.values()];
  }

  nodes(): NodeReport[] {
    return [...this.#nodes.values()];
  }
}

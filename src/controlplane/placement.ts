// Where the source of truth (the config dir's Pods) places each pod, and which node reports
// that placement lets through: a node speaks only for the pods placed on it, and only with
// IPs inside its own pod CIDRs.
import type { Pod } from '../k8s/index.js';
import { cidrContains, formatCidr, normalizedIpBytes } from '../net/index.js';
import type { PbPodStatus } from '../xds/index.js';
import type { NodeCaller } from './node-credentials.js';
import type { ReportedPod } from './translate.js';

/** The node a Pod runs on: its spec.nodeName, else the default node (where the simulator runs it). */
export function placedNode(pod: Pod, defaultNode: string): string {
  return pod.spec.nodeName ?? defaultNode;
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;

/** Config pods by `namespace/name`. */
export function podIndex(pods: readonly Pod[]): Map<string, Pod> {
  return new Map(pods.map((p) => [key(p.metadata.namespace, p.metadata.name), p]));
}

/**
 * Why `caller` may not report this entry, or undefined when it may: a pod the config places
 * on another node, or an IP outside the caller's pod CIDRs. A pod the config does not know is
 * let through (answered as unknown; placement is checked again when it appears, see
 * placementAllows).
 */
export function reportRefusal(entry: PbPodStatus, caller: NodeCaller, pods: ReadonlyMap<string, Pod>, defaultNode: string): string | undefined {
  const pod = pods.get(key(entry.namespace, entry.name));
  if (pod) {
    const node = placedNode(pod, defaultNode);
    if (node !== caller.node) return `the config places this pod on node ${node}, not on ${caller.node}`;
  }
  if (entry.ip) {
    const bytes = normalizedIpBytes(entry.ip);
    if (!caller.podCidrs.some((c) => cidrContains(c, bytes))) {
      const cidrs = caller.podCidrs.map(formatCidr).join(', ') || 'none';
      return `ip ${entry.ip} is outside node ${caller.node}'s pod CIDRs (${cidrs})`;
    }
  }
  return undefined;
}

/**
 * Which stored reports the config's placement lets count: each pod only from the node it is
 * placed on. Reports of pods the config does not know pass (they publish nothing). Applied at
 * every use, so a config change that moves a pod, or a report stored before it, never lets a
 * node speak for a pod of another node.
 */
export function placementAllows(pods: ReadonlyMap<string, Pod>, defaultNode: string): (r: ReportedPod) => boolean {
  return (r) => {
    const pod = pods.get(key(r.namespace, r.name));
    return !pod || placedNode(pod, defaultNode) === r.node;
  };
}

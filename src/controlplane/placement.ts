// Where the source of truth (the config dir's Pods, or the Kubernetes API's) places each pod,
// and which node reports that placement lets through: a node speaks only for the pods placed
// on it, and only with IPs inside its own pod CIDRs.
import type { Pod } from '../k8s/index.js';
import { cidrContains, formatCidr, normalizedIpBytes } from '../net/index.js';
import type { PbPodStatus } from '../xds/index.js';
import type { NodeCaller } from './node-credentials.js';
import type { ReportedPod } from './translate.js';

/** Who places pods, and where a pod without spec.nodeName runs. */
export interface Placement {
  /** As messages name it: `the config` (the directory) or `the Kubernetes API`. */
  source: 'the config' | 'the Kubernetes API';
  /**
   * Where pods without spec.nodeName run: the simulator's default node in the directory mode.
   * None on Kubernetes: there such a pod is not scheduled yet and runs nowhere.
   */
  defaultNode?: string;
}

/** The node a Pod runs on: its spec.nodeName, else the default node (none on Kubernetes). */
export function placedNode(pod: Pod, placement: Placement): string | undefined {
  return pod.spec.nodeName ?? placement.defaultNode;
}

const key = (namespace: string, name: string) => `${namespace}/${name}`;

/** Config pods by `namespace/name`. */
export function podIndex(pods: readonly Pod[]): Map<string, Pod> {
  return new Map(pods.map((p) => [key(p.metadata.namespace, p.metadata.name), p]));
}

/**
 * Why `caller` may not report this entry, or undefined when it may: a pod placed on another
 * node (or, on Kubernetes, on none yet), or an IP outside the caller's pod CIDRs. On
 * Kubernetes the IP the API itself gives the pod (status.podIP) is taken as well: it needs no
 * CIDR to be believed. A pod the source does not know is let through (answered as unknown;
 * placement is checked again when it appears, see placementAllows).
 */
export function reportRefusal(entry: PbPodStatus, caller: NodeCaller, pods: ReadonlyMap<string, Pod>, placement: Placement): string | undefined {
  const pod = pods.get(key(entry.namespace, entry.name));
  if (pod) {
    const node = placedNode(pod, placement);
    if (node === undefined) return `${placement.source} has not scheduled this pod to a node yet`;
    if (node !== caller.node) return `${placement.source} places this pod on node ${node}, not on ${caller.node}`;
  }
  if (entry.ip) {
    const apiIp = placement.source === 'the Kubernetes API' && pod?.requestedIp === entry.ip;
    const bytes = normalizedIpBytes(entry.ip);
    if (!apiIp && !caller.podCidrs.some((c) => cidrContains(c, bytes))) {
      const cidrs = caller.podCidrs.map(formatCidr).join(', ') || 'none';
      return `ip ${entry.ip} is outside node ${caller.node}'s pod CIDRs (${cidrs})`;
    }
  }
  return undefined;
}

/**
 * Which stored reports the placement lets count: each pod only from the node it is placed on.
 * Reports of pods the source does not know pass (they publish nothing). Applied at every use,
 * so a change that moves a pod, or a report stored before it, never lets a node speak for a
 * pod of another node.
 */
export function placementAllows(pods: ReadonlyMap<string, Pod>, placement: Placement): (r: ReportedPod) => boolean {
  return (r) => {
    const pod = pods.get(key(r.namespace, r.name));
    return !pod || placedNode(pod, placement) === r.node;
  };
}

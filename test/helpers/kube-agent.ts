// A node agent's credential on Kubernetes, made in the stand-in API server the way a cluster
// makes it: the DaemonSet's namespace and ServiceAccount, the agent's pod bound to its node
// (hostNetwork, so the control plane's source skips it as istiod would), the Node with its pod
// CIDR, and the projected ServiceAccount token (audience nodemesh) kubelet mints for that pod.
import type { KubeObject, KubeStandIn, TokenOptions } from './kube-apiserver.js';
import { KubeApiError } from './kube-apiserver.js';

export const AGENT_NS = 'nodemesh-system';
export const AGENT_SA = 'nodemesh-agent';

/** Creates `obj` unless an object of that name exists. */
export function ensure(api: KubeStandIn, obj: KubeObject): void {
  try {
    api.create(obj);
  } catch (err) {
    if (!(err instanceof KubeApiError && err.code === 409)) throw err;
  }
}

export interface AgentPodOptions {
  /** Default nodemesh-agent-<node>. */
  pod?: string;
  /** The ServiceAccount the pod runs as; default nodemesh-agent (in nodemesh-system). */
  serviceAccount?: string;
  /** The Node's spec.podCIDR; the Node is not created when null. Default 10.0.0.0/8. */
  podCidr?: string | null;
  /** Leave spec.nodeName unset (a pod not scheduled yet). */
  unscheduled?: boolean;
}

/** The agent's pod on `node` (and its namespace, ServiceAccount and Node); returns the pod's name. */
export function agentPod(api: KubeStandIn, node: string, o: AgentPodOptions = {}): string {
  const sa = o.serviceAccount ?? AGENT_SA;
  const name = o.pod ?? `nodemesh-agent-${node}`;
  ensure(api, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: AGENT_NS } });
  ensure(api, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace: AGENT_NS } });
  if (o.podCidr !== null) ensure(api, { apiVersion: 'v1', kind: 'Node', metadata: { name: node }, spec: { podCIDR: o.podCidr ?? '10.0.0.0/8', podCIDRs: [o.podCidr ?? '10.0.0.0/8'] } });
  api.create({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: AGENT_NS, labels: { app: 'nodemesh-agent' } },
    spec: { ...(o.unscheduled ? {} : { nodeName: node }), hostNetwork: true, serviceAccountName: sa, containers: [{ name: 'agent', image: 'nodemesh' }] },
    status: { phase: 'Running', podIP: '192.168.0.10', hostIP: '192.168.0.10' },
  });
  return name;
}

/** A projected ServiceAccount token of `pod` (default audience nodemesh), as kubelet writes it. */
export async function projectedToken(api: KubeStandIn, pod: string, o: TokenOptions & { serviceAccount?: string } = {}): Promise<string> {
  const { serviceAccount, ...opts } = o;
  return (await api.requestToken(AGENT_NS, serviceAccount ?? AGENT_SA, { audiences: ['nodemesh'], boundPod: pod, ...opts })).token;
}

/** The agent's pod on `node` and its projected token: what the DaemonSet gives an agent. */
export async function agentToken(api: KubeStandIn, node: string, o: AgentPodOptions & TokenOptions = {}): Promise<string> {
  const { pod, serviceAccount, podCidr, unscheduled, ...tokenOpts } = o;
  const name = agentPod(api, node, { pod, serviceAccount, podCidr, unscheduled });
  return projectedToken(api, name, { ...tokenOpts, serviceAccount });
}

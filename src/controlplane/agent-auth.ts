// How agents prove their node to this control plane, per mode: in the directory mode a node
// token signed with the node secret (node-credentials.ts); on Kubernetes the agent pod's
// ServiceAccount token, checked with TokenReview (kube-auth.ts), and no node secret at all.
// With it comes who places pods, which the CA and pod-status checks follow (placement.ts).
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { nodeTokenAuthenticator } from './auth.js';
import type { KubeApi } from '../kube/index.js';
import { KubeNodeAuthenticator, type KubeNodeAuthOptions } from './kube-auth.js';
import type { Authenticator } from './node-auth.js';
import { loadOrCreateNodeSecret } from './node-credentials.js';
import type { Placement } from './placement.js';

/** On Kubernetes: the agents' ServiceAccount (`namespace/name`), the token audience and the review cache. */
export type AgentAuthOptions = { serviceAccount?: string; audience?: string } & Pick<KubeNodeAuthOptions, 'cacheMs' | 'cacheMax' | 'now'>;

export interface AgentAuth {
  authenticate: Authenticator;
  placement: Placement;
  /** Directory mode: the node secret's file and value. */
  nodeSecretFile?: string;
  nodeSecret?: string;
  /** Kubernetes: whose tokens prove a node (`namespace/name`), for which audience. */
  agentServiceAccount?: string;
  audience?: string;
}

/** Refuses a flag of one mode given to the other, before anything starts. */
export function checkAgentAuthOptions(o: { kubernetes?: unknown; nodeSecretFile?: string; agentAuth?: AgentAuthOptions }): void {
  if (o.kubernetes && o.nodeSecretFile) {
    throw new UsageError("--node-secret is for the directory mode (--config); on Kubernetes agents authenticate with their pod's ServiceAccount token, checked with TokenReview, and no node secret exists");
  }
  if (!o.kubernetes && o.agentAuth) throw new UsageError('--agent-service-account is for the Kubernetes mode (--kubeconfig or --in-cluster); in the directory mode agents use node tokens');
}

export function agentAuth(o: { kube?: KubeApi; stateDir: string; nodeSecretFile?: string; agentAuth?: AgentAuthOptions; defaultNode: string; adminToken: string; log: Logger }): AgentAuth {
  if (!o.kube) {
    const nodeSecretFile = o.nodeSecretFile ?? join(o.stateDir, 'node-secret');
    const nodeSecret = loadOrCreateNodeSecret(nodeSecretFile);
    return { authenticate: nodeTokenAuthenticator(nodeSecret, o.adminToken), placement: { source: 'the config', defaultNode: o.defaultNode }, nodeSecretFile, nodeSecret };
  }
  const a = o.agentAuth ?? {};
  const kubeAuth = new KubeNodeAuthenticator({ api: o.kube, adminToken: o.adminToken, agentServiceAccount: a.serviceAccount, audience: a.audience, cacheMs: a.cacheMs, cacheMax: a.cacheMax, now: a.now, log: o.log });
  const sa = kubeAuth.agentServiceAccount;
  return { authenticate: kubeAuth.authenticate, placement: { source: 'the Kubernetes API' }, agentServiceAccount: `${sa.namespace}/${sa.name}`, audience: kubeAuth.audience };
}

// istio.v1.auth.IstioCertificateService/CreateCertificate: signs a workload CSR for the calling
// node, and only for an identity that a pod has which the source of truth places on that node:
// the config dir (and the node reported the pod, or its file pins its IP), or the Kubernetes
// API (spec.nodeName, set by the scheduler).
import * as grpc from '@grpc/grpc-js';
import { CaRefusal } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import type { Logger } from '../log.js';
import type { PbCertificateRequest, PbCertificateResponse } from '../xds/index.js';
import { grpcError } from './auth.js';
import type { CertificateAuthority } from './ca.js';
import type { NodeCaller } from './node-credentials.js';
import type { NodeGate } from './node-auth.js';
import { placedNode, type Placement } from './placement.js';
import type { PodStatusStore } from './podstatus.js';
import type { ReportedPod } from './translate.js';

export interface CaServiceDeps {
  ca: CertificateAuthority;
  /** The Pods of the config or the API (the source of truth for who runs where). */
  configPods: () => readonly Pod[];
  pods: PodStatusStore;
  placement: Placement;
  log: Logger;
}

const TERMINAL = ['Succeeded', 'Failed'];

/**
 * Config pods running on a node: placed there by the config (spec.nodeName, else the default
 * node), and either reported by that node (not terminal, the same uid) or pinned by the file.
 * A report from any other node never counts.
 */
export function podsOnNode(configPods: readonly Pod[], reports: readonly ReportedPod[], node: string, placement: Placement): Pod[] {
  const reported = new Map(reports.filter((p) => p.node === node && !TERMINAL.includes(p.phase)).map((p) => [`${p.namespace}/${p.name}`, p]));
  return configPods.filter((p) => {
    if (placedNode(p, placement) !== node) return false;
    const r = reported.get(`${p.metadata.namespace}/${p.metadata.name}`);
    // A report of another incarnation of the name (a different uid) does not count.
    if (r) return !r.uid || r.uid === p.metadata.uid;
    return p.requestedIp !== undefined;
  });
}

/**
 * On Kubernetes: why no pod the API places on `node` (spec.nodeName) runs as this identity, or
 * undefined when one does. The API's pods are those the source serves: not finished, not
 * hostNetwork. Its word needs no report: the agent asks for a pod's certificate at CNI ADD,
 * before the kubelet writes the pod's IP.
 */
function apiRefusal(pods: readonly Pod[], id: { namespace: string; serviceAccount: string }, node: string): string | undefined {
  const same = pods.filter((p) => p.metadata.namespace === id.namespace && p.spec.serviceAccountName === id.serviceAccount);
  if (same.some((p) => p.spec.nodeName === node)) return undefined;
  const elsewhere = [...new Set(same.map((p) => p.spec.nodeName ?? '(not scheduled)'))].sort();
  const where = elsewhere.length ? `its pods are on ${elsewhere.map((n) => (n.startsWith('(') ? n : `node ${n}`)).join(', ')}` : 'the API has no running pod of it';
  return `the Kubernetes API places no pod of service account ${id.namespace}/${id.serviceAccount} on node ${node} (${where})`;
}

/** The service implementation to register for `caService`. */
export function caServiceImpl(gate: NodeGate, deps: CaServiceDeps): { CreateCertificate: grpc.handleUnaryCall<PbCertificateRequest, PbCertificateResponse> } {
  const { ca, log } = deps;
  const createCertificate = (caller: NodeCaller, call: grpc.ServerUnaryCall<PbCertificateRequest, PbCertificateResponse>, callback: grpc.sendUnaryData<PbCertificateResponse>): void => {
    const { node } = caller;
    const authorize = (id: { namespace: string; serviceAccount: string }): string | undefined =>
      deps.placement.source === 'the Kubernetes API'
        ? apiRefusal(deps.configPods(), id, node)
        : podsOnNode(deps.configPods(), deps.pods.pods((p) => p.node === node), node, deps.placement).some((p) => p.metadata.namespace === id.namespace && p.spec.serviceAccountName === id.serviceAccount)
          ? undefined
          : `no pod with this identity runs on node ${node} (the config must place it there and the node must report it first)`;
    ca.sign(call.request.csr, call.request.validityDuration, authorize).then(
      (chain) => callback(null, { certChain: chain }),
      (err: Error) => {
        if (err instanceof CaRefusal) {
          log.warn({ node, peer: call.getPeer(), err }, 'refused a certificate request');
          callback(grpcError(err.grpcCode, err.message));
        } else {
          log.error({ node, err }, 'certificate signing failed');
          callback(grpcError(grpc.status.INTERNAL, `signing failed: ${err.message}`));
        }
      },
    );
  };
  return { CreateCertificate: gate({ what: 'a certificate request' }, createCertificate) };
}

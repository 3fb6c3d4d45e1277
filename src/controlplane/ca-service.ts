// istio.v1.auth.IstioCertificateService/CreateCertificate: signs a workload CSR for the calling
// node, and only for an identity that a pod has which the config places on that node (and
// which that node reported, or whose file pins its IP).
import * as grpc from '@grpc/grpc-js';
import { CaRefusal } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import type { Logger } from '../log.js';
import type { PbCertificateRequest, PbCertificateResponse } from '../xds/index.js';
import { grpcError } from './auth.js';
import type { CertificateAuthority } from './ca.js';
import type { NodeCaller } from './node-credentials.js';
import type { NodeGate } from './node-auth.js';
import { placedNode } from './placement.js';
import type { PodStatusStore } from './podstatus.js';
import type { ReportedPod } from './translate.js';

export interface CaServiceDeps {
  ca: CertificateAuthority;
  /** The Pods of the config (the source of truth for who runs where). */
  configPods: () => readonly Pod[];
  pods: PodStatusStore;
  /** Where pods without spec.nodeName run. */
  defaultNode: string;
  log: Logger;
}

const TERMINAL = ['Succeeded', 'Failed'];

/**
 * Config pods running on a node: placed there by the config (spec.nodeName, else the default
 * node), and either reported by that node (not terminal, the same uid) or pinned by the file.
 * A report from any other node never counts.
 */
export function podsOnNode(configPods: readonly Pod[], reports: readonly ReportedPod[], node: string, defaultNode: string): Pod[] {
  const reported = new Map(reports.filter((p) => p.node === node && !TERMINAL.includes(p.phase)).map((p) => [`${p.namespace}/${p.name}`, p]));
  return configPods.filter((p) => {
    if (placedNode(p, defaultNode) !== node) return false;
    const r = reported.get(`${p.metadata.namespace}/${p.metadata.name}`);
    // A report of another incarnation of the name (a different uid) does not count.
    if (r) return !r.uid || r.uid === p.metadata.uid;
    return p.requestedIp !== undefined;
  });
}

/** The service implementation to register for `caService`. */
export function caServiceImpl(gate: NodeGate, deps: CaServiceDeps): { CreateCertificate: grpc.handleUnaryCall<PbCertificateRequest, PbCertificateResponse> } {
  const { ca, log } = deps;
  const createCertificate = (caller: NodeCaller, call: grpc.ServerUnaryCall<PbCertificateRequest, PbCertificateResponse>, callback: grpc.sendUnaryData<PbCertificateResponse>): void => {
    const { node } = caller;
    const authorize = (id: { namespace: string; serviceAccount: string }): string | undefined =>
      podsOnNode(deps.configPods(), deps.pods.pods((p) => p.node === node), node, deps.defaultNode).some((p) => p.metadata.namespace === id.namespace && p.spec.serviceAccountName === id.serviceAccount)
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

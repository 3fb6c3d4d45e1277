// nodemesh.v1.PodStatusService/Report: a node agent reports the pods on its node (as a kubelet
// writes pod status); the report replaces that node's pods, and a change recomputes the resources.
import * as grpc from '@grpc/grpc-js';
import type { Pod } from '../k8s/index.js';
import type { Logger } from '../log.js';
import type { PbPodStatusReply, PbPodStatusReport } from '../xds/index.js';
import { grpcError } from './auth.js';
import type { NodeGate } from './node-auth.js';
import { invalidPodStatus, type PodStatusStore } from './podstatus.js';

export interface PodStatusServiceDeps {
  pods: PodStatusStore;
  /** The Pods of the config: a reported pod the config does not know is answered as unknown. */
  configPods: () => readonly Pod[];
  /** Called after a report changed what a node runs. */
  onChange: () => void;
  log: Logger;
}

type ReportCall = grpc.ServerUnaryCall<PbPodStatusReport, PbPodStatusReply>;

/** The service implementation to register for `podStatusService`. */
export function podStatusServiceImpl(gate: NodeGate, deps: PodStatusServiceDeps): { Report: grpc.handleUnaryCall<PbPodStatusReport, PbPodStatusReply> } {
  const report = (node: string, call: ReportCall, callback: grpc.sendUnaryData<PbPodStatusReply>): void => {
    const req = call.request;
    for (const p of req.pods) {
      const why = invalidPodStatus(p);
      if (why) {
        callback(grpcError(grpc.status.INVALID_ARGUMENT, `pod ${p.namespace}/${p.name}: ${why}`));
        return;
      }
    }
    if (deps.pods.report(node, req.pods)) {
      deps.log.info({ node, pods: req.pods.length }, 'pod status reported');
      deps.onChange();
    }
    const known = new Set(deps.configPods().map((p) => `${p.metadata.namespace}/${p.metadata.name}`));
    const unknown = req.pods.map((p) => `${p.namespace}/${p.name}`).filter((k) => !known.has(k));
    callback(null, { accepted: req.pods.length - unknown.length, unknown });
  };
  // A node reports only its own pods: a report naming another node is refused.
  return { Report: gate({ what: 'a pod status report', claim: { noun: 'report', node: (call: ReportCall) => call.request.node } }, report) };
}

// nodemesh.v1.PodStatusService/Report: a node agent reports the pods on its node (as a kubelet
// writes pod status); the report replaces that node's pods, and a change recomputes the
// resources. A node speaks only for itself: entries about a pod the config places on another
// node, or with an IP outside the node's pod CIDRs, are refused and logged; the rest of the
// report is taken. The config dir or the Kubernetes API is what places pods (placement.ts).
import * as grpc from '@grpc/grpc-js';
import type { Pod } from '../k8s/index.js';
import type { Logger } from '../log.js';
import type { PbPodStatus, PbPodStatusReply, PbPodStatusReport } from '../xds/index.js';
import { grpcError } from './auth.js';
import type { NodeCaller } from './node-credentials.js';
import type { NodeGate } from './node-auth.js';
import { podIndex, reportRefusal, type Placement } from './placement.js';
import { invalidPodStatus, type PodStatusStore } from './podstatus.js';

export interface PodStatusServiceDeps {
  pods: PodStatusStore;
  /** The Pods of the config or the API: a reported pod it does not know is answered as unknown. */
  configPods: () => readonly Pod[];
  placement: Placement;
  /** Called after a report changed what a node runs. */
  onChange: () => void;
  log: Logger;
}

type ReportCall = grpc.ServerUnaryCall<PbPodStatusReport, PbPodStatusReply>;

/** The service implementation to register for `podStatusService`. */
export function podStatusServiceImpl(gate: NodeGate, deps: PodStatusServiceDeps): { Report: grpc.handleUnaryCall<PbPodStatusReport, PbPodStatusReply> } {
  const report = (caller: NodeCaller, call: ReportCall, callback: grpc.sendUnaryData<PbPodStatusReply>): void => {
    const { node } = caller;
    const req = call.request;
    // A malformed entry is a broken agent: the whole report is refused and the last one stays.
    for (const p of req.pods) {
      const why = invalidPodStatus(p);
      if (why) {
        callback(grpcError(grpc.status.INVALID_ARGUMENT, `pod ${p.namespace}/${p.name}: ${why}`));
        return;
      }
    }
    const index = podIndex(deps.configPods());
    const taken: PbPodStatus[] = [];
    const refused: string[] = [];
    for (const p of req.pods) {
      const why = reportRefusal(p, caller, index, deps.placement);
      if (!why) {
        taken.push(p);
        continue;
      }
      refused.push(`${p.namespace}/${p.name}: ${why}`);
      deps.log.warn({ node, pod: `${p.namespace}/${p.name}`, ip: p.ip, peer: call.getPeer(), reason: why }, 'refused a pod status entry');
    }
    if (deps.pods.report(node, taken)) {
      deps.log.info({ node, pods: taken.length, refused: refused.length }, 'pod status reported');
      deps.onChange();
    }
    const unknown = taken.map((p) => `${p.namespace}/${p.name}`).filter((k) => !index.has(k));
    callback(null, { accepted: taken.length - unknown.length, unknown, refused });
  };
  // A node reports only its own pods: a report naming another node is refused.
  return { Report: gate({ what: 'a pod status report', claim: { noun: 'report', node: (call: ReportCall) => call.request.node } }, report) };
}

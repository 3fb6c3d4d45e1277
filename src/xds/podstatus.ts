// The agent's side of nodemesh.v1.PodStatusService: tells the control plane which pods run on
// this node and their IPs, as a kubelet reports pod status.
import * as grpc from '@grpc/grpc-js';
import { errorFor } from '../errors.js';
import { authMetadata, controlPlaneClient, type ControlPlaneConnection } from './credentials.js';
import { podStatusService, type PbPodStatus, type PbPodStatusReply } from './proto.js';

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';

export interface PodStatus {
  /** metadata.uid of the Pod in the config (empty: matched by namespace/name). */
  uid?: string;
  namespace: string;
  name: string;
  ip: string;
  phase: PodPhase;
}

export class PodStatusClient {
  readonly #conn: ControlPlaneConnection;
  #client: grpc.Client | undefined;

  constructor(conn: ControlPlaneConnection) {
    this.#conn = conn;
  }

  /**
   * Reports every pod of this node; the report replaces the previous one (a pod left out is
   * gone). Call it after each enrollment change and periodically (e.g. every 30 s) so a
   * restarted control plane learns the pods again.
   */
  report(pods: readonly PodStatus[], timeoutMs = 10_000): Promise<PbPodStatusReply> {
    this.#client ??= controlPlaneClient(this.#conn);
    const m = podStatusService.Report;
    const body = { node: this.#conn.nodeName, pods: pods.map((p): PbPodStatus => ({ uid: p.uid ?? '', namespace: p.namespace, name: p.name, ip: p.ip, phase: p.phase })) };
    return new Promise((resolve, reject) => {
      this.#client!.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, body, authMetadata(this.#conn), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) {
          const code = err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.PERMISSION_DENIED ? 'NM_ERR_AUTH' : 'NM_ERR_XDS_UNAVAILABLE';
          reject(errorFor(code, `pod status report to ${this.#conn.address} failed: ${err.details || err.message}`, { cause: err, grpcCode: err.code }));
        } else resolve(res!);
      });
    });
  }

  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}

// Outbound HBONE: opens a CONNECT tunnel from a pod of this node to a mesh pod on another node,
// presenting the source pod's certificate, over sessions pooled per (source identity,
// destination identity, destination address) and made from inside the source pod's netns.
import type { Logger } from '../log.js';
import type { HboneDialer } from './context.js';
import { HbonePool, type HboneTuning } from './hbone/index.js';
import type { RelayEnd } from './relay.js';
import { podIdentity, type LocalPod, type RouteTarget, type SocketAddress, type UpstreamConnector, type WorkloadCredentials } from './types.js';

export interface HboneOutboundOptions {
  credentials: WorkloadCredentials;
  upstream: UpstreamConnector;
  /** The pod with this IP on this node: HBONE sockets leave from its netns. */
  localPod: (ip: string) => LocalPod | undefined;
  hbonePort: number;
  connectTimeoutMs: number;
  maxStreamsPerSession?: number;
  idleTimeoutMs?: number;
  tuning?: Partial<HboneTuning>;
  log: Logger;
}

export class HboneOutbound implements HboneDialer {
  readonly pool: HbonePool;
  readonly #o: HboneOutboundOptions;

  constructor(o: HboneOutboundOptions) {
    this.#o = o;
    this.pool = new HbonePool({
      connectTimeoutMs: o.connectTimeoutMs,
      maxStreamsPerSession: o.maxStreamsPerSession,
      idleTimeoutMs: o.idleTimeoutMs,
      tuning: o.tuning,
      log: o.log,
      // From the source pod's own netns: the destination sees the pod's IP, as with plain TCP.
      connectSocket: (addr: SocketAddress, source: { identity: string; ip?: string }) => {
        const pod = source.ip ? o.localPod(source.ip) : undefined;
        if (!pod) return Promise.reject(Object.assign(new Error(`no enrolled pod with IP ${source.ip ?? '(none)'} on this node to open HBONE from`), { code: 'ENOENT' }));
        return o.upstream.connect(pod.netnsPath, addr, o.connectTimeoutMs);
      },
    });
  }

  async dial(src: LocalPod, target: RouteTarget & { identity: string }, forwardedFor: string, traceparent: string): Promise<RelayEnd> {
    const identity = podIdentity(src);
    const cert = await this.#o.credentials.get(identity);
    return this.pool.connect({
      source: { identity, ip: src.ip, ...cert },
      destIdentity: target.identity,
      destAddr: { ip: target.addr.ip, port: this.#o.hbonePort },
      target: target.addr,
      forwardedFor,
      traceparent,
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

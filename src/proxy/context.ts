// What the outbound and inbound handlers share: options, the node's pods, and helpers.
import type { Logger } from '../log.js';
import type { Boundary } from './boundary.js';
import type { HttpLayer } from './http-layer.js';
import type { ConnectionTracker, ConnectionView } from './connection.js';
import type { RelayEnd, RelayOptions } from './relay.js';
import type { Authorizer, LocalPod, MeshRouter, OriginalDstResolver, RouteTarget, UpstreamConnector, WorkloadIndex } from './types.js';

/** Opens HBONE tunnels to other nodes (mTLS + HTTP/2 CONNECT to the destination's 15008). */
export interface HboneDialer {
  dial(src: LocalPod, target: RouteTarget & { identity: string }, forwardedFor: string, traceparent: string): Promise<RelayEnd>;
}

export interface ProxyContext {
  log: Logger;
  tracker: ConnectionTracker;
  /** Resets, logs and counts a connection whose handling failed (boundary.ts). */
  boundary: Boundary;
  /** Idle timeout and keepalive for every relay. */
  relay: RelayOptions;
  upstream: UpstreamConnector;
  originalDst: OriginalDstResolver;
  workloads: WorkloadIndex;
  router?: MeshRouter;
  authorize?: Authorizer;
  hbone?: HboneDialer;
  /** The L7 path for HTTP ports; absent, every port is L4. */
  http?: HttpLayer;
  fastPath: boolean;
  timeoutMs: number;
  /** The enrolled pod on this node with this IP. */
  localPod(ip: string): LocalPod | undefined;
  /** Remembers one of our own upstream sockets, so inbound can trust where it came from. */
  registerOrigin(sock: RelayEnd & { localAddress?: string; localPort?: number }, pod: LocalPod): void;
  originOf(ip: string, port: number, isLocalPodIp: boolean): Promise<LocalPod | undefined>;
}

export function podName(p: LocalPod): string {
  return `${p.namespace}/${p.name}`;
}

export function describeView(v: ConnectionView): string {
  return `${v.pod} ${v.direction} ${v.source.ip}:${v.source.port} -> ${v.originalDst}`;
}

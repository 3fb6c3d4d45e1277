// What the proxy knows of the pods it serves and of the rest of the mesh.
import type { PeerInfo } from '../telemetry/index.js';
import { formatSpiffeId } from '../identity/index.js';
import type { HboneCredentials } from './hbone/index.js';
import type { AppProtocol, HttpRequestFacts } from '../state/index.js';

/** A pod on this node whose traffic the proxy captures. */
export interface LocalPod {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  netnsPath: string;
  serviceAccount: string;
  labels: Record<string, string>;
  trustDomain: string;
}

/** Looks up what is known about an address: a workload, or nothing. */
export interface WorkloadIndex {
  byIp(ip: string): PeerInfo | undefined;
}

export interface SocketAddress {
  ip: string;
  port: number;
}

/** Creates upstream connections from inside a pod's network namespace. */
export interface UpstreamConnector {
  connect(netnsPath: string, to: SocketAddress, timeoutMs: number): Promise<import('node:net').Socket>;
  /**
   * Connects to an app inside the pod whose netns this is, with `fromIp` (the client's IPv4
   * address) as the source: the inbound delivery socket. Rejects when that cannot be done;
   * it never falls back to another source or to loopback.
   */
  deliver(netnsPath: string, to: SocketAddress, fromIp: string, timeoutMs: number): Promise<import('node:net').Socket>;
  /** Drops any sockets prepared for a namespace that is going away. */
  forget(netnsPath: string): void;
}

/** Answers the original destination of a connection accepted on the outbound listener. */
export interface OriginalDstResolver {
  originalDst(fd: number): SocketAddress | null;
}

export function peerOf(pod: LocalPod): PeerInfo {
  const app = pod.labels['app.kubernetes.io/name'] ?? pod.labels.app;
  const version = pod.labels['app.kubernetes.io/version'] ?? pod.labels.version;
  return {
    workload: pod.name,
    namespace: pod.namespace,
    principal: `${pod.trustDomain}/ns/${pod.namespace}/sa/${pod.serviceAccount}`,
    ...(app ? { app, canonicalService: app } : {}),
    ...(version ? { version, canonicalRevision: version } : {}),
  };
}

export { HBONE_PORT, INBOUND_PORT, MESH_PORTS, OUTBOUND_PORT } from '../net/index.js';

/** The authorization question the proxy asks for every inbound connection. */
/**
 * The same-node kernel splice (src/redirect/splice.ts implements it): pairs two proxy sockets so
 * the kernel moves their bytes, and tells what the kernel counted of each.
 */
export interface SocketSplicer {
  /** Pairs two established TCP sockets; their cookies. Throws a Node-style system error. */
  pair(fdA: number, fdB: number): [bigint, bigint];
  /** User space has written `total` bytes the kernel passed it on this socket to the peer. */
  taken(cookie: bigint, total: number): void;
  release(cookieA: bigint, cookieB: bigint): void;
  stats(fd: number): { bytesReceived: number; bytesAcked: number; outq: number; lastDataRecvMs: number };
}

export interface AuthorizeInput {
  /** SPIFFE identity of the source when known for certain (our own outbound socket, or a verified certificate). */
  srcPrincipal?: string;
  srcIp: string;
  /** The client's port, when the proxy accepted its socket (lets the node's own probes be recognised). */
  srcPort?: number;
  dstIp: string;
  dstPort: number;
  /** The request, on HTTP ports (decided per request): HTTP attributes of policies are matched. */
  http?: HttpRequestFacts;
}

export interface AuthorizeResult {
  allowed: boolean;
  /** `ns/name` of the deciding policy. */
  policy?: string;
  reason: string;
}

export type Authorizer = (i: AuthorizeInput) => AuthorizeResult;

/** Where an outbound connection goes, as the mesh resolves its original destination. */
export interface RouteTarget {
  /** The address to reach: the workload's, or the chosen endpoint's for a Service VIP. */
  addr: SocketAddress;
  /** The destination workload, for telemetry. */
  peer?: PeerInfo;
  /** The destination's SPIFFE identity (`spiffe://…`), checked against its certificate. */
  identity?: string;
  /** The destination is captured by a mesh agent and takes HBONE on 15008. */
  hbone: boolean;
  /** The Service the app addressed, when it dialed a VIP. */
  service?: { hostname: string; name: string; namespace: string };
  /** Call when the connection ends (least-connections accounting). */
  release?: () => void;
  /** What the addressed port speaks: the Service port's appProtocol, or the workload's for a pod IP. */
  appProtocol?: AppProtocol;
}

export interface MeshRouter {
  /** Resolves an original destination; `undefined` means outside the mesh (pass through). */
  route(dst: SocketAddress): RouteTarget | undefined;
  /** What a port of a workload speaks, from the Services it backs ('UNKNOWN': none says). */
  portProtocol?(ip: string, port: number): AppProtocol;
}

/** Ports whose protocol is HTTP (appProtocol http, http2, grpc, or an http-/http2-/grpc- port name). */
export function isHttpProtocol(p: AppProtocol | undefined): boolean {
  return p === 'HTTP11' || p === 'HTTP2' || p === 'GRPC';
}

/** A pod's SPIFFE identity: `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function podIdentity(pod: LocalPod): string {
  return formatSpiffeId({ trustDomain: pod.trustDomain, namespace: pod.namespace, serviceAccount: pod.serviceAccount });
}

/** Where the proxy gets the certificates its pods present on HBONE. */
export interface WorkloadCredentials {
  /** The pod identity's current certificate, key and mesh roots; fetches them on first use. */
  get(identity: string): Promise<HboneCredentials>;
}

/** A stream of one connection's plaintext for capture (docs/capture.md): both directions, as relayed. */
export interface PlaintextSink {
  data(dir: 'c2s' | 's2c', chunk: Buffer): void;
  /** That direction's FIN. */
  end(dir: 'c2s' | 's2c'): void;
  close(): void;
}

/**
 * Plaintext capture, asked once per relayed connection before its first byte: undefined (nobody
 * captures it) leaves the relay without any tap, so capture costs nothing when no one listens.
 */
export interface PlaintextTap {
  open(c: { pod: string; src: SocketAddress & PeerInfo; dst: SocketAddress & PeerInfo; originalDst: string }): PlaintextSink | undefined;
}

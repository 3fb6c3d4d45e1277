// The capture record (format v1, docs/capture.md): one per connection the node saw, from the
// proxy's flow records, from kernel events alone, or both joined; and the stream's other lines.
import type { RequestRecord } from '../l7/index.js';
import type { FlowRecord } from '../telemetry/index.js';

export const RECORD_VERSION = 1;

export type Verdict = 'allowed' | 'denied' | 'dropped' | 'passed' | 'observed';
export const VERDICTS: readonly Verdict[] = ['allowed', 'denied', 'dropped', 'passed', 'observed'];

export interface CaptureEnd {
  ip: string;
  port: number;
  /** `ns/name` of the pod with this address, where known. */
  pod?: string;
  /** SPIFFE ID (`spiffe://…`), where the proxy knows it for certain. */
  identity?: string;
}

export interface CaptureRecord {
  v: typeof RECORD_VERSION;
  /** Unique on the node for the agent's lifetime: `<node>/<n>`. */
  id: string;
  node: string;
  /** Start of the connection (ISO 8601). */
  time: string;
  durationMs?: number;
  /** Which proxy side reported it (`outbound`, `inbound`), `local` for both halves on this node, `kernel` for kernel-only. */
  direction: 'outbound' | 'inbound' | 'local' | 'kernel';
  /** Who saw it: the proxy, the kernel programs, or both joined. */
  source: 'proxy' | 'kernel' | 'proxy+kernel';
  protocol: 'tcp' | 'http';
  src: CaptureEnd;
  dst: CaptureEnd;
  /** The address the app dialed (a Service VIP, say), when it differs from dst. */
  originalDst?: string;
  verdict: Verdict;
  /** `ns/name` of the policy that decided. */
  policy?: string;
  /** Why a connection was passed, dropped or observed (kernel reason), or why the proxy failed it. */
  reason?: string;
  /** HBONE tunnel peer (`ip:15008`) of a connection that crossed nodes. */
  hbone?: { peer: string; traceparent?: string };
  /** Bytes client → server and server → client; `from` says who counted them. */
  bytes?: { sent: number; received: number; from: 'proxy' | 'kernel' };
  /** Envoy-style response flags of a proxied connection (`-` when clean). */
  responseFlags?: string;
  /**
   * One HTTP request on an L7 port (protocol `http`): there is a record per request besides the
   * connection's own. `status` 0: no response began (the client left first).
   */
  l7?: { method: string; path: string; authority: string; status: number; protocol: string; grpcStatus?: string };
  /** Kernel facts joined in: cookies as decimal strings, and the events seen. */
  kernel?: { socketCookie?: string; netnsCookie?: string; events: string[] };
}

/** Lines of the /debug/capture stream (NDJSON), each with a `type`. */
export type StreamLine =
  | { type: 'hello'; v: typeof RECORD_VERSION; node: string; pcap: boolean; filter: Record<string, string> }
  | { type: 'flow'; flow: CaptureRecord }
  | { type: 'replayed'; count: number }
  | { type: 'open'; conn: number; t: number; src: { ip: string; port: number }; dst: { ip: string; port: number }; pod: string }
  | { type: 'data'; conn: number; t: number; dir: 'c2s' | 's2c'; seq: number; data: string }
  | { type: 'end'; conn: number; t: number; dir: 'c2s' | 's2c'; seq: number }
  | { type: 'close'; conn: number; t: number }
  | { type: 'dropped'; flows: number; chunks: number };

/** `cluster.local/ns/a/sa/b` (the proxy's principal form) → `spiffe://cluster.local/ns/a/sa/b`. */
export function spiffeOf(principal: string | undefined): string | undefined {
  if (!principal) return undefined;
  return principal.startsWith('spiffe://') ? principal : `spiffe://${principal}`;
}

function endOf(e: FlowRecord['src']): CaptureEnd {
  const pod = e.workload && e.namespace ? `${e.namespace}/${e.workload}` : undefined;
  const identity = spiffeOf(e.principal);
  return { ip: e.ip, port: e.port, ...(pod ? { pod } : {}), ...(identity ? { identity } : {}) };
}

/** The verdict of a proxied connection: denied by policy, else allowed. */
function proxyVerdict(f: FlowRecord): Verdict {
  return f.policy?.allowed === false || f.responseFlags === 'DENY' ? 'denied' : 'allowed';
}

/**
 * A capture record from one or two proxy flow records: `inbound` is the destination half of a
 * same-node hand-off (both halves are one connection), which carries the policy decision.
 */
export function fromFlow(id: string, node: string, f: FlowRecord, inbound?: FlowRecord): CaptureRecord {
  const decided = inbound ?? f;
  const dst = endOf(inbound?.dst ?? f.dst);
  const original = f.originalDst !== `${dst.ip}:${dst.port}` ? f.originalDst : undefined;
  const policy = decided.policy?.name ?? f.policy?.name;
  const reason = f.error ?? inbound?.error;
  return {
    v: RECORD_VERSION,
    id,
    node,
    time: f.startedAt,
    ...(f.durationMs !== undefined ? { durationMs: f.durationMs } : {}),
    direction: inbound ? 'local' : f.direction,
    source: 'proxy',
    protocol: f.protocol ?? 'tcp',
    src: endOf(f.src),
    dst,
    ...(original ? { originalDst: original } : {}),
    verdict: proxyVerdict(decided),
    ...(policy ? { policy } : {}),
    ...(reason ? { reason } : {}),
    ...(f.hbone ? { hbone: { peer: f.hbone.peer, traceparent: f.hbone.traceparent } } : {}),
    bytes: { sent: f.bytesSent, received: f.bytesReceived, from: f.spliced ? 'kernel' : 'proxy' },
    responseFlags: f.responseFlags,
  };
}

/** One reporter's view of a request's connection, as the proxy has it (its ConnectionView). */
export interface RequestSide {
  direction: 'outbound' | 'inbound';
  pod: string;
  source: FlowRecord['src'];
  destination: FlowRecord['dst'];
  originalDst: string;
  hbone?: { peer: string; traceparent?: string };
}

/** What a request record must carry for capture: the L7 engine's RequestRecord, or any with its fields. */
export type RequestFacts = Pick<RequestRecord, 'protocol' | 'method' | 'path' | 'authority' | 'status' | 'requestBytes' | 'responseBytes' | 'durationMs' | 'responseFlags' | 'grpcStatus' | 'policy'>;

/**
 * The record of one HTTP request. `local`: both halves ran in this proxy (the destination's
 * view is the one given). Denied: a policy refused it (RBAC), or its JWT did not verify (the
 * proxy's 401, naming the RequestAuthentications).
 */
export function fromRequest(v: RequestSide, r: RequestFacts, local: boolean): Omit<CaptureRecord, 'v' | 'id' | 'node'> {
  const dst = endOf(v.destination);
  const original = v.originalDst !== `${dst.ip}:${dst.port}` ? v.originalDst : undefined;
  const denied = r.responseFlags.split(',').includes('RBAC') || (r.status === 401 && r.policy !== undefined);
  return {
    time: new Date(Date.now() - r.durationMs).toISOString(),
    durationMs: Math.round(r.durationMs),
    direction: local ? 'local' : v.direction,
    source: 'proxy',
    protocol: 'http',
    src: endOf(v.source),
    dst,
    ...(original ? { originalDst: original } : {}),
    verdict: denied ? 'denied' : 'allowed',
    ...(r.policy ? { policy: r.policy } : {}),
    ...(v.hbone ? { hbone: { peer: v.hbone.peer, ...(v.hbone.traceparent ? { traceparent: v.hbone.traceparent } : {}) } } : {}),
    bytes: { sent: r.requestBytes, received: r.responseBytes, from: 'proxy' },
    responseFlags: r.responseFlags,
    l7: { method: r.method, path: r.path, authority: r.authority, status: r.status, protocol: r.protocol, ...(r.grpcStatus !== undefined ? { grpcStatus: r.grpcStatus } : {}) },
  };
}

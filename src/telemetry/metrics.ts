// The agent's Prometheus registry: Istio's istio_tcp_* counters, reported as connections
// open and close and, for long connections, every flush interval so bytes never lag long.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { BatchedCounter } from './batched-counter.js';
import { TCP_LABELS, type TcpLabelName, type TcpLabels } from './labels.js';
import { RequestMetrics, type RequestMetricsOptions } from './requests.js';

/** The listener a contained connection failure happened on: 15001, 15006 (and the in-process hand-off), 15008. */
export type ErrorDirection = 'outbound' | 'inbound' | 'hbone';

/**
 * Why the proxy gave up on a connection (a bounded set, for the counter's `reason` label):
 * - `peer_gone`: the peer reset or closed it before the proxy was done setting it up;
 * - `original_dst`: the original destination of a captured connection is unknown;
 * - `authorize`: the authorization decision failed (the connection is denied);
 * - `upstream_connect`: the upstream (app, peer or HBONE tunnel) could not be connected;
 * - `accept`: the listener could not accept (e.g. out of file descriptors);
 * - `internal`: anything else; a bug, reported with its stack.
 */
export type ConnectionErrorReason = 'peer_gone' | 'original_dst' | 'authorize' | 'upstream_connect' | 'accept' | 'internal';

/**
 * The node-wide original-destination maps of the redirection programs, as the agent exports
 * them (docs/security.md "Bounded kernel state"): what they hold, each pod's share, and what
 * the kernel refused or evicted. Counts are the kernel's own, only ever growing.
 */
export interface OrigDstMetrics {
  capacity: number;
  /** 0: no per-pod quota. */
  podQuota: number;
  entries: number;
  recordFailures: number;
  quotaRefusals: number;
  evictions: { nm_cookie_dst: number; nm_orig_dst: number };
  /** By pod `ns/name`, or `netns:<cookie>` for a netns this agent does not know. */
  pods: Array<{ pod: string; entries: number; refused: number }>;
}

export class MeshMetrics {
  readonly registry = new Registry();
  // Counted by label-set identity and added when read: pass TcpLabelCache's shared objects.
  readonly opened: BatchedCounter<TcpLabelName>;
  readonly closed: BatchedCounter<TcpLabelName>;
  readonly sent: BatchedCounter<TcpLabelName>;
  readonly received: BatchedCounter<TcpLabelName>;
  readonly enrolledPods: Gauge<string>;
  readonly activeConnections: Gauge<string>;
  readonly connectionErrors: Counter<'direction' | 'reason'>;
  /** Istio's istio_request* metrics, for the L7 engine's finished requests. */
  readonly requests: RequestMetrics;
  readonly #origDst: {
    capacity: Gauge;
    podQuota: Gauge;
    entries: Gauge;
    podEntries: Gauge<'pod'>;
    recordFailures: Counter;
    quotaRefusals: Counter<'pod'>;
    evictions: Counter<'map'>;
  };
  #origDstSource: (() => OrigDstMetrics | undefined) | undefined;

  constructor(opts: { defaultMetrics?: boolean; requests?: RequestMetricsOptions } = {}) {
    const labelNames = [...TCP_LABELS];
    const registers = [this.registry];
    this.opened = new BatchedCounter({ name: 'istio_tcp_connections_opened_total', help: 'TCP connections opened', labelNames, registers });
    this.closed = new BatchedCounter({ name: 'istio_tcp_connections_closed_total', help: 'TCP connections closed', labelNames, registers });
    this.sent = new BatchedCounter({ name: 'istio_tcp_sent_bytes_total', help: 'Bytes sent by the client side of the connection toward the server (request direction)', labelNames, registers });
    this.received = new BatchedCounter({ name: 'istio_tcp_received_bytes_total', help: 'Bytes received by the client side from the server (response direction)', labelNames, registers });
    this.enrolledPods = new Gauge({ name: 'nodemesh_enrolled_pods', help: 'Pods captured by this node agent', registers });
    this.activeConnections = new Gauge({ name: 'nodemesh_active_connections', help: 'Connections open through the proxy', labelNames: ['direction'], registers });
    this.connectionErrors = new Counter({
      name: 'nodemesh_connection_errors_total',
      help: 'Connections the proxy reset or dropped because their set-up failed, by listener and reason (each contained to its connection)',
      labelNames: ['direction', 'reason'],
      registers,
    });
    this.#origDst = {
      capacity: new Gauge({ name: 'nodemesh_orig_dst_capacity', help: 'Entries of the node-wide original-destination maps (nm_cookie_dst, nm_orig_dst), shared by every pod', registers }),
      podQuota: new Gauge({ name: 'nodemesh_orig_dst_pod_quota', help: 'Captured connections one pod may hold open at once (0: no quota); beyond it its connects fail with EPERM', registers }),
      entries: new Gauge({ name: 'nodemesh_orig_dst_entries', help: 'Captured connections open on this node, each holding an entry in both original-destination maps', registers }),
      podEntries: new Gauge({ name: 'nodemesh_orig_dst_pod_entries', help: 'Captured connections open, by pod', labelNames: ['pod'], registers }),
      recordFailures: new Counter({ name: 'nodemesh_orig_dst_record_failures_total', help: 'Captured connects whose original destination could not be recorded (refused with EPERM, or reset by the proxy)', registers }),
      quotaRefusals: new Counter({ name: 'nodemesh_orig_dst_quota_refusals_total', help: 'Connects refused with EPERM because the pod held its quota of captured connections, by pod', labelNames: ['pod'], registers }),
      evictions: new Counter({ name: 'nodemesh_orig_dst_evictions_total', help: 'Entries of open connections the LRU maps evicted because they were full, by map', labelNames: ['map'], registers }),
    };
    this.requests = new RequestMetrics(this.registry, opts.requests);
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'nodemesh_agent_' });
  }

  connectionOpened(l: TcpLabels): void {
    this.opened.add(l);
  }

  /** Adds byte deltas: `up` flowed client→server, `down` server→client. */
  bytes(l: TcpLabels, up: number, down: number): void {
    if (up > 0) this.sent.add(l, up);
    if (down > 0) this.received.add(l, down);
  }

  connectionClosed(l: TcpLabels): void {
    this.closed.add(l);
  }

  /** Counts one connection the proxy gave up on. */
  connectionError(direction: ErrorDirection, reason: ConnectionErrorReason): void {
    this.connectionErrors.inc({ direction, reason });
  }

  /** Where the original-destination figures come from; read once per scrape. */
  origDstFrom(source: () => OrigDstMetrics | undefined): void {
    this.#origDstSource = source;
  }

  /** Sets the original-destination metrics to what the kernel counts now. */
  #refreshOrigDst(): void {
    const s = this.#origDstSource?.();
    if (!s) return;
    const m = this.#origDst;
    m.capacity.set(s.capacity);
    m.podQuota.set(s.podQuota);
    m.entries.set(s.entries);
    // Pods that left take their series along: reset, then set what the kernel holds now.
    m.podEntries.reset();
    m.quotaRefusals.reset();
    m.evictions.reset();
    m.recordFailures.reset();
    for (const p of s.pods) {
      m.podEntries.set({ pod: p.pod }, p.entries);
      m.quotaRefusals.inc({ pod: p.pod }, p.refused);
    }
    for (const [map, n] of Object.entries(s.evictions)) m.evictions.inc({ map }, n);
    m.recordFailures.inc(s.recordFailures);
  }

  /** The series as JSON (for summing with proxy workers' registries), as of now. */
  json(): ReturnType<Registry['getMetricsAsJSON']> {
    this.#refreshOrigDst();
    return this.registry.getMetricsAsJSON();
  }

  async render(): Promise<{ contentType: string; body: string }> {
    this.#refreshOrigDst();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

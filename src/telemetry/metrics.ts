// The agent's Prometheus registry: Istio's istio_tcp_* counters, reported as connections
// open and close and, for long connections, every flush interval so bytes never lag long.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { TCP_LABELS, type TcpLabels } from './labels.js';

export class MeshMetrics {
  readonly registry = new Registry();
  readonly opened: Counter<string>;
  readonly closed: Counter<string>;
  readonly sent: Counter<string>;
  readonly received: Counter<string>;
  readonly enrolledPods: Gauge<string>;
  readonly activeConnections: Gauge<string>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const labelNames = [...TCP_LABELS];
    const registers = [this.registry];
    this.opened = new Counter({ name: 'istio_tcp_connections_opened_total', help: 'TCP connections opened', labelNames, registers });
    this.closed = new Counter({ name: 'istio_tcp_connections_closed_total', help: 'TCP connections closed', labelNames, registers });
    this.sent = new Counter({ name: 'istio_tcp_sent_bytes_total', help: 'Bytes sent by the client side of the connection toward the server (request direction)', labelNames, registers });
    this.received = new Counter({ name: 'istio_tcp_received_bytes_total', help: 'Bytes received by the client side from the server (response direction)', labelNames, registers });
    this.enrolledPods = new Gauge({ name: 'nodemesh_enrolled_pods', help: 'Pods captured by this node agent', registers });
    this.activeConnections = new Gauge({ name: 'nodemesh_active_connections', help: 'Connections open through the proxy', labelNames: ['direction'], registers });
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'nodemesh_agent_' });
  }

  connectionOpened(l: TcpLabels): void {
    this.opened.inc(l);
  }

  /** Adds byte deltas: `up` flowed client→server, `down` server→client. */
  bytes(l: TcpLabels, up: number, down: number): void {
    if (up > 0) this.sent.inc(l, up);
    if (down > 0) this.received.inc(l, down);
  }

  connectionClosed(l: TcpLabels): void {
    this.closed.inc(l);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

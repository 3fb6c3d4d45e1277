// One proxied connection from accept to close: upstream connect, relay, telemetry, and a
// reset to the client whenever the upstream cannot be had.
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import { tcpLabels, type FlowLog, type FlowRecord, type MeshMetrics, type PeerInfo, type Reporter, type TcpLabels } from '../telemetry/index.js';
import { relay, type RelayProgress } from './relay.js';

export interface Telemetry {
  metrics: MeshMetrics;
  flows: FlowLog;
  log: Logger;
}

/** A connection in flight, as the proxy tracks it for flushes, config_dump and policy. */
export interface ActiveConnection {
  record: FlowRecord;
  labels: TcpLabels;
  progress?: RelayProgress;
  reported: { sent: number; received: number };
  client: Socket;
  upstream?: Socket;
}

export interface ConnectionPlan {
  reporter: Reporter;
  direction: 'outbound' | 'inbound';
  pod: string;
  source: PeerInfo & { ip: string; port: number };
  destination: PeerInfo & { ip: string; port: number };
  originalDst: string;
  securityPolicy: 'mutual_tls' | 'none';
  /** Opens the upstream; rejects with a Node system error (code ECONNREFUSED, ...). */
  open: () => Promise<Socket>;
  upstreamLabel: string;
  /** Service hostname when known, for the destination_service label. */
  destinationService?: string;
  /** The authorization decision taken for this connection, if one was. */
  policy?: { allowed: boolean; name?: string };
}

/** Envoy's response flag for an upstream failure, by errno. */
function flagFor(code: string | undefined): string {
  if (code === 'ECONNREFUSED') return 'UF,URX';
  if (code === 'ETIMEDOUT') return 'UF,UT';
  return 'UF';
}

export class ConnectionTracker {
  readonly active = new Set<ActiveConnection>();
  readonly #t: Telemetry;
  #timer: NodeJS.Timeout | undefined;

  constructor(t: Telemetry, flushMs = 5000) {
    this.#t = t;
    this.#timer = setInterval(() => this.flush(), flushMs);
    this.#timer.unref();
  }

  /** Reports byte deltas of open connections, so long-lived streams show up in metrics. */
  flush(): void {
    for (const c of this.active) this.#report(c);
  }

  #report(c: ActiveConnection): void {
    if (!c.progress) return;
    const s = c.progress.sent();
    const r = c.progress.received();
    this.#t.metrics.bytes(c.labels, s - c.reported.sent, r - c.reported.received);
    c.reported.sent = s;
    c.reported.received = r;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Refuses a connection that authorization denied: reset, recorded and counted as DENY. */
  deny(client: Socket, plan: Omit<ConnectionPlan, 'open'>, policy: { name?: string; reason: string }): void {
    const t0 = performance.now();
    const { metrics, flows } = this.#t;
    client.on('error', () => {});
    const record = flows.start({
      direction: plan.direction,
      pod: plan.pod,
      src: plan.source,
      dst: plan.destination,
      originalDst: plan.originalDst,
      policy: { allowed: false, ...(policy.name ? { name: policy.name } : {}) },
    });
    record.responseFlags = 'DENY';
    record.error = `denied: ${policy.reason}${policy.name ? ` by ${policy.name}` : ''}`;
    const labels = this.#labels(plan);
    labels.response_flags = 'DENY';
    metrics.connectionOpened(labels);
    metrics.connectionClosed(labels);
    client.resetAndDestroy();
    flows.finish(record, t0);
  }

  #labels(plan: Omit<ConnectionPlan, 'open'>): TcpLabels {
    return tcpLabels({
      reporter: plan.reporter,
      source: plan.source,
      destination: plan.destination,
      ...(plan.destinationService ? { destinationService: plan.destinationService } : {}),
      securityPolicy: plan.securityPolicy,
    });
  }

  /** Runs one connection to completion. Never throws: failures reset the client. */
  async run(client: Socket, plan: ConnectionPlan): Promise<void> {
    const t0 = performance.now();
    const { metrics, flows, log } = this.#t;
    // Errors on the client before the relay starts are handled here; the relay adds its own.
    const early = (err: Error) => log.debug({ err, pod: plan.pod }, 'client error before relay');
    client.on('error', early);
    const record = flows.start({
      direction: plan.direction,
      pod: plan.pod,
      src: plan.source,
      dst: plan.destination,
      originalDst: plan.originalDst,
      upstream: plan.upstreamLabel,
      ...(plan.policy ? { policy: plan.policy } : {}),
    });
    const labels = this.#labels(plan);
    const conn: ActiveConnection = { record, labels, reported: { sent: 0, received: 0 }, client };
    this.active.add(conn);
    metrics.activeConnections.inc({ direction: plan.direction });
    let upstream: Socket;
    try {
      upstream = await plan.open();
    } catch (e) {
      const err = e as Error & { code?: string };
      record.error = err.code ?? err.message;
      record.responseFlags = flagFor(err.code);
      labels.response_flags = record.responseFlags;
      metrics.connectionOpened(labels);
      metrics.connectionClosed(labels);
      // The app's connect() already succeeded against the proxy; the only honest answer
      // now is a reset, never a hang or a clean EOF.
      if (!client.destroyed) client.resetAndDestroy();
      this.#end(conn, plan, t0);
      return;
    }
    conn.upstream = upstream;
    metrics.connectionOpened(labels);
    client.off('error', early);
    if (client.destroyed) {
      // The client went away while we connected upstream.
      upstream.resetAndDestroy();
      record.error = 'downstream closed before upstream connected';
      record.responseFlags = 'DC';
      labels.response_flags = 'DC';
      metrics.connectionClosed(labels);
      this.#end(conn, plan, t0);
      return;
    }
    const r = relay(client, upstream);
    conn.progress = r.progress;
    const res = await r.done;
    this.#report(conn);
    record.bytesSent = res.sent;
    record.bytesReceived = res.received;
    if (res.error) {
      record.error = `${res.failedSide}: ${res.error.code ?? res.error.message}`;
      if (res.failedSide === 'upstream') record.responseFlags = 'UC';
      else record.responseFlags = 'DC';
    }
    metrics.connectionClosed(labels);
    this.#end(conn, plan, t0);
  }

  #end(conn: ActiveConnection, plan: ConnectionPlan, t0: number): void {
    this.active.delete(conn);
    this.#t.metrics.activeConnections.dec({ direction: plan.direction });
    this.#t.flows.finish(conn.record, t0);
  }
}

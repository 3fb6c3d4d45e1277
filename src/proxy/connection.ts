// One proxied connection from accept to close: upstream connect, relay, telemetry for each
// reporter that sees it, and a reset to the client whenever the upstream cannot be had.
import type { Logger } from '../log.js';
import { TcpLabelCache, type FlowLog, type HboneInfo, type FlowRecord, type MeshMetrics, type PeerInfo, type Reporter, type TcpLabels } from '../telemetry/index.js';
import { resetQuietly, type Boundary } from './boundary.js';
import { Socket } from 'node:net';
import { relay, tapRelay, type RelayEnd, type RelayOptions, type RelayProgress, type RelayResult } from './relay.js';
import { spliceRelay, type SpliceRelayResult } from './splice.js';
import type { AuthorizeInput, LocalPod, PlaintextSink, PlaintextTap, SocketSplicer } from './types.js';

export interface Telemetry {
  metrics: MeshMetrics;
  flows: FlowLog;
  log: Logger;
}

/** One reporter's view of a connection: which pod's proxy saw it, and both peers. */
export interface ConnectionView {
  reporter: Reporter;
  direction: 'outbound' | 'inbound';
  pod: string;
  source: PeerInfo & { ip: string; port: number };
  destination: PeerInfo & { ip: string; port: number };
  originalDst: string;
  securityPolicy: 'mutual_tls' | 'none';
  upstreamLabel: string;
  /** Service the app addressed, for the destination_service labels. */
  service?: { hostname: string; name: string; namespace: string };
  /** The authorization decision taken for this connection, if one was. */
  policy?: { allowed: boolean; name?: string };
  /** The HBONE tunnel carrying the connection, when it crossed nodes. */
  hbone?: HboneInfo;
}

/** What it takes to authorize a connection again when policy changes. */
export interface AuthzContext {
  destination: LocalPod;
  input: AuthorizeInput;
}

export interface ConnectionPlan extends ConnectionView {
  /** Opens the upstream; rejects with a Node system error (code ECONNREFUSED, ...). */
  open: () => Promise<RelayEnd>;
  /** A second reporter of the same bytes: the destination side of an in-process hand-off. */
  mirror?: ConnectionView;
  authz?: AuthzContext;
  /** Runs once when the connection is over, whatever the outcome. */
  onEnd?: () => void;
}

/** A connection in flight, as the proxy tracks it for flushes, config_dump and policy. */
export interface ActiveConnection {
  records: FlowRecord[];
  labels: TcpLabels[];
  progress?: RelayProgress;
  reported: { sent: number; received: number };
  client: RelayEnd;
  upstream?: RelayEnd;
  authz?: AuthzContext;
}

/** Envoy's response flag for an upstream failure, by errno / status. */
export function flagFor(err: { code?: string; status?: number }): string {
  if (err.status === 401) return 'DENY';
  if (err.code === 'ECONNREFUSED') return 'UF,URX';
  if (err.code === 'ETIMEDOUT') return 'UF,UT';
  return 'UF';
}

/** The proxy already closed this connection on purpose (abort, revoke): its records say why. */
function isAborted(c: ActiveConnection): boolean {
  return c.records.some((r) => r.responseFlags !== '-');
}

/** The label sets of this node's connections, one shared object per pair of peers (and flags). */
const labelSets = new TcpLabelCache();

function labelsOf(v: ConnectionView, flags = '-'): TcpLabels {
  const s = v.service;
  return labelSets.get({
    reporter: v.reporter,
    source: v.source,
    destination: v.destination,
    destinationService: s?.hostname,
    destinationServiceName: s?.name,
    destinationServiceNamespace: s?.namespace,
    securityPolicy: v.securityPolicy,
    responseFlags: flags,
  });
}

export interface TrackerOptions {
  /** Idle timeout and keepalive of the relays. */
  relay?: RelayOptions;
  /** Where connections that could not be set up are logged and counted. */
  boundary?: Boundary;
  /** Plaintext capture of relayed connections (docs/capture.md). */
  tap?: PlaintextTap;
  /**
   * The same-node kernel splice: a connection between two TCP sockets of this proxy (same node,
   * or plain TCP in and out) has its bytes moved by the kernel (splice.ts). Not for a connection
   * a plaintext capture is tapping: its bytes must come up to user space.
   */
  splice?: SocketSplicer;
}

export class ConnectionTracker {
  readonly active = new Set<ActiveConnection>();
  readonly #t: Telemetry;
  readonly #relay: RelayOptions;
  readonly #boundary: Boundary | undefined;
  readonly #tap: PlaintextTap | undefined;
  readonly #splice: SocketSplicer | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(t: Telemetry, flushMs = 5000, o: TrackerOptions = {}) {
    this.#t = t;
    this.#relay = o.relay ?? {};
    this.#boundary = o.boundary;
    this.#tap = o.tap;
    this.#splice = o.splice;
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
    for (const l of c.labels) this.#t.metrics.bytes(l, s - c.reported.sent, r - c.reported.received);
    c.reported.sent = s;
    c.reported.received = r;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #start(v: ConnectionView): FlowRecord {
    const r: Parameters<FlowLog['start']>[0] = { direction: v.direction, pod: v.pod, src: v.source, dst: v.destination, originalDst: v.originalDst, upstream: v.upstreamLabel };
    // Set, not spread: the same fields in the same order, without a throwaway object each.
    if (v.policy) r.policy = v.policy;
    if (v.hbone) r.hbone = v.hbone;
    return this.#t.flows.start(r);
  }

  /** Refuses a connection that authorization denied: reset, recorded and counted as DENY. */
  deny(client: RelayEnd, views: ConnectionView[], policy: { name?: string; reason: string }): void {
    client.on('error', () => {});
    this.refused(views, { flags: 'DENY', error: `denied: ${policy.reason}${policy.name ? ` by ${policy.name}` : ''}`, policy: { allowed: false, ...(policy.name ? { name: policy.name } : {}) } });
    resetQuietly(client);
  }

  /**
   * Records a connection that was refused before any byte was relayed (a denied or failed
   * HBONE CONNECT, a denied plaintext connection): one closed record and metric per view.
   */
  refused(views: ConnectionView[], r: { flags: string; error: string; policy?: { allowed: boolean; name?: string } }): void {
    const t0 = performance.now();
    for (const v of views) {
      const record = this.#start({ ...v, ...(r.policy ? { policy: r.policy } : {}) });
      record.responseFlags = r.flags;
      record.error = r.error;
      const labels = labelsOf(v, r.flags);
      this.#t.metrics.connectionOpened(labels);
      this.#t.metrics.connectionClosed(labels);
      this.#t.flows.finish(record, t0);
    }
  }

  /**
   * Tracks a connection whose relay runs elsewhere (the HBONE server relays its own tunnels):
   * records, metrics and byte flushes as for run(), and revocation on policy change.
   */
  async observe(client: RelayEnd, upstream: RelayEnd, r: { done: Promise<RelayResult>; progress: RelayProgress }, plan: ConnectionView & { authz?: AuthzContext }): Promise<void> {
    const t0 = performance.now();
    let conn: ActiveConnection | undefined;
    try {
      conn = this.#track(client, [plan], plan);
      conn.upstream = upstream;
      conn.progress = r.progress;
      const sink = this.#sinkFor(plan);
      if (sink) tapRelay(client, upstream, sink, r.done);
      for (const l of conn.labels) this.#t.metrics.connectionOpened(l);
      this.#finish(conn, plan, t0, await r.done);
    } finally {
      if (conn && this.active.has(conn)) this.#end(conn, plan, t0);
    }
  }

  /**
   * Tracks a connection the L7 engine serves (HTTP ports): one record and TCP metrics per view,
   * as for a relayed one, with the bytes the client socket counted. Requests have their own
   * records and metrics; policy is decided per request, so the connection carries no `authz`
   * for revocation (a request that policy no longer allows is refused at its start).
   */
  async session(client: RelayEnd, views: ConnectionView[], direction: ConnectionPlan['direction'], serve: () => Promise<void>, onEnd?: () => void): Promise<void> {
    const t0 = performance.now();
    const plan = { direction, ...(onEnd ? { onEnd } : {}) };
    const conn = this.#track(client, views, plan);
    for (const r of conn.records) r.protocol = 'http';
    const counted = client as RelayEnd & { bytesRead?: number; bytesWritten?: number };
    for (const l of conn.labels) this.#t.metrics.connectionOpened(l);
    try {
      await serve();
    } finally {
      // Sent and received as the proxy's relays count them: toward the upstream, from it.
      const received = counted.bytesWritten ?? 0;
      const sent = counted.bytesRead ?? 0;
      for (const l of conn.labels) {
        this.#t.metrics.bytes(l, sent, received);
        this.#t.metrics.connectionClosed(l);
      }
      for (const r of conn.records) {
        r.bytesSent = sent;
        r.bytesReceived = received;
      }
      this.#end(conn, plan, t0);
    }
  }

  /** Starts tracking a connection: its records (one per view), labels, and the active gauge. */
  #track(client: RelayEnd, views: ConnectionView[], plan: Pick<ConnectionPlan, 'direction' | 'authz'>): ActiveConnection {
    const conn: ActiveConnection = {
      records: views.map((v) => this.#start(v)),
      labels: views.map((v) => labelsOf(v)),
      reported: { sent: 0, received: 0 },
      client,
      ...(plan.authz ? { authz: plan.authz } : {}),
    };
    this.active.add(conn);
    this.#t.metrics.activeConnections.inc({ direction: plan.direction });
    return conn;
  }

  /**
   * Runs one connection to completion. An upstream that cannot be had resets the client (and is
   * booked, never thrown). Anything else that fails (our own code, telemetry) resets both sides
   * and rejects, for the accept boundary to book; the connection is never left half-tracked.
   */
  async run(client: RelayEnd, plan: ConnectionPlan): Promise<void> {
    const t0 = performance.now();
    const { log } = this.#t;
    // Errors on the client before the relay starts are handled here; the relay adds its own.
    const early = (err: Error) => log.debug({ err, pod: plan.pod }, 'client error before relay');
    client.on('error', early);
    let conn: ActiveConnection | undefined;
    try {
      const views = plan.mirror ? [plan, plan.mirror] : [plan];
      conn = this.#track(client, views, plan);
      await this.#connectAndRelay(conn, views, plan, early, t0);
    } catch (err) {
      resetQuietly(client);
      if (conn?.upstream) resetQuietly(conn.upstream);
      throw err;
    } finally {
      if (conn && this.active.has(conn)) this.#end(conn, plan, t0);
    }
  }

  async #connectAndRelay(conn: ActiveConnection, views: ConnectionView[], plan: ConnectionPlan, early: (err: Error) => void, t0: number): Promise<void> {
    const { metrics } = this.#t;
    const client = conn.client;
    const fields = { pod: plan.pod, upstream: plan.upstreamLabel };
    let upstream: RelayEnd;
    try {
      upstream = await plan.open();
    } catch (e) {
      const err = e as Error & { code?: string; status?: number };
      const flags = flagFor(err);
      const aborted = isAborted(conn);
      conn.labels = views.map((v) => labelsOf(v, flags));
      for (const r of conn.records) {
        r.error ??= err.code ?? err.message;
        if (r.responseFlags === '-') r.responseFlags = flags;
      }
      for (const l of conn.labels) {
        metrics.connectionOpened(l);
        metrics.connectionClosed(l);
      }
      // The app's connect() already succeeded against the proxy; the only honest answer
      // now is a reset, never a hang or a clean EOF.
      resetQuietly(client);
      // A peer's 401 is a policy decision (counted as DENY above), not a failure.
      if (flags !== 'DENY' && !aborted) this.#boundary?.record(plan.direction, err, fields, { reason: 'upstream_connect', flags, ...(err.code ? { code: err.code } : {}) });
      this.#end(conn, plan, t0);
      return;
    }
    conn.upstream = upstream;
    for (const l of conn.labels) metrics.connectionOpened(l);
    client.off('error', early);
    if (client.destroyed) {
      // The client went away while we connected upstream.
      resetQuietly(upstream);
      const aborted = isAborted(conn);
      for (const r of conn.records) {
        r.error ??= 'downstream closed before upstream connected';
        if (r.responseFlags === '-') r.responseFlags = 'DC';
      }
      for (const l of conn.labels) metrics.connectionClosed(l);
      if (!aborted) this.#boundary?.record(plan.direction, undefined, fields, { reason: 'peer_gone', flags: 'DC' });
      this.#end(conn, plan, t0);
      return;
    }
    const sink = this.#sinkFor(plan);
    const r = this.#relayOrSplice(client, upstream, sink, fields);
    conn.progress = r.progress;
    if (sink) tapRelay(client, upstream, sink, r.done);
    const res = await r.done;
    if ((res as SpliceRelayResult).spliced) for (const rec of conn.records) rec.spliced = true;
    this.#finish(conn, plan, t0, res);
  }

  /** Spliced in the kernel when both ends are TCP sockets and nobody taps it; else relayed. */
  #relayOrSplice(client: RelayEnd, upstream: RelayEnd, sink: PlaintextSink | undefined, fields: Record<string, string>): { done: Promise<RelayResult>; progress: RelayProgress } {
    if (!sink && this.#splice && client instanceof Socket && upstream instanceof Socket) {
      const log = this.#t.log;
      return spliceRelay(client, upstream, this.#splice, { ...this.#relay, onFallback: (reason, err) => log.debug({ ...fields, err, reason }, 'connection relayed in user space instead of spliced') });
    }
    return relay(client, upstream, this.#relay);
  }

  /** The capture sink that wants this connection, if any (asked once, at its start). */
  #sinkFor(v: ConnectionView): PlaintextSink | undefined {
    return this.#tap?.open({ pod: v.pod, src: v.source, dst: v.destination, originalDst: v.originalDst });
  }

  /** Books the outcome of a finished relay: last byte counts, error flags, closed metrics. */
  #finish(conn: ActiveConnection, plan: Pick<ConnectionPlan, 'direction' | 'onEnd'>, t0: number, res: RelayResult): void {
    this.#report(conn);
    const { metrics } = this.#t;
    for (const rec of conn.records) {
      rec.bytesSent = res.sent;
      rec.bytesReceived = res.received;
      if (res.error) {
        rec.error ??= `${res.failedSide}: ${res.error.code ?? res.error.message}`;
        if (rec.responseFlags === '-') rec.responseFlags = res.failedSide === 'upstream' ? 'UC' : 'DC';
      } else if (res.idleTimeout) {
        rec.error ??= 'closed by the idle timeout: no byte either way for too long';
        if (rec.responseFlags === '-') rec.responseFlags = 'SI';
      }
    }
    for (const l of conn.labels) metrics.connectionClosed(l);
    this.#end(conn, plan, t0);
  }

  /** Resets a connection that policy no longer allows; its records say which policy. */
  revoke(c: ActiveConnection, policy: string | undefined, reason: string): void {
    for (const r of c.records) {
      r.policy = { allowed: false, ...(policy ? { name: policy } : {}) };
      r.error = `closed: ${reason}${policy ? ` by ${policy}` : ''} after a policy change`;
      r.responseFlags = 'DENY';
    }
    resetQuietly(c.client);
    if (c.upstream) resetQuietly(c.upstream);
  }

  /** Resets a connection the proxy closes on its own (its pod left the mesh), saying why. */
  abort(c: ActiveConnection, why: string): void {
    for (const r of c.records) {
      r.error ??= why;
      if (r.responseFlags === '-') r.responseFlags = 'LR';
    }
    resetQuietly(c.client);
    if (c.upstream) resetQuietly(c.upstream);
  }

  /** Books the end once: bookkeeping first, so a failing telemetry hook cannot leak the entry. */
  #end(conn: ActiveConnection, plan: Pick<ConnectionPlan, 'direction' | 'onEnd'>, t0: number): void {
    if (!this.active.delete(conn)) return;
    try {
      plan.onEnd?.();
    } finally {
      this.#t.metrics.activeConnections.dec({ direction: plan.direction });
      for (const r of conn.records) this.#t.flows.finish(r, t0);
    }
  }
}

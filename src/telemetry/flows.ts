// Connection records ("flows"): one per proxied connection, written as a pino access log
// line when it closes and kept in a bounded ring for /debug/flows and the demo's table.
import type { Logger } from '../log.js';
import type { PeerInfo } from './labels.js';

export type Direction = 'outbound' | 'inbound';

/** The HBONE tunnel of a cross-node connection, as each side saw it. */
export interface HboneInfo {
  /** Outbound: the destination's HBONE address; inbound: the TCP peer of the tunnel. */
  peer: string;
  /** W3C trace context sent (outbound) or received (inbound) with the CONNECT. */
  traceparent: string;
  /** Inbound: the client address the source sent in `forwarded: for=`. */
  forwardedFor?: string;
}

export interface FlowRecord {
  id: number;
  direction: Direction;
  /** Pod whose listener accepted the connection (`ns/name`). */
  pod: string;
  src: { ip: string; port: number } & PeerInfo;
  dst: { ip: string; port: number } & PeerInfo;
  /** The address the app asked for (outbound) or that was steered to us (inbound). */
  originalDst: string;
  /** Where the proxy connected: `ip:port`. */
  upstream?: string;
  startedAt: string;
  durationMs?: number;
  /** Bytes client → server. */
  bytesSent: number;
  /** Bytes server → client. */
  bytesReceived: number;
  responseFlags: string;
  error?: string;
  /** Authorization decision and policy, when one was taken. */
  policy?: { allowed: boolean; name?: string };
  hbone?: HboneInfo;
  /** `http`: the L7 engine served the connection (its requests have records of their own). */
  protocol?: 'http';
  /** The kernel moved this connection's bytes (the same-node splice); the counts are the kernel's. */
  spliced?: true;
  /** With proxy workers (--workers > 1): the proxy that served it, 0 the main thread's. */
  proxy?: number;
  open: boolean;
}

export class FlowLog {
  /** The last `#cap` records, a circular buffer: `#head` is where the next one goes. */
  readonly #ring: FlowRecord[] = [];
  #head = 0;
  #next = 1;
  /** With proxy workers: the node-wide id counter every proxy shares, and this proxy's index. */
  #shared: { ids: BigInt64Array; proxy: number } | undefined;
  readonly #cap: number;
  readonly #log: Logger;
  readonly #listeners = new Set<(r: FlowRecord) => void>();
  /** startedAt of the last record and the millisecond it is for: connections come many a millisecond. */
  #isoMs = -1;
  #iso = '';

  constructor(log: Logger, capacity = 1000) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.#log = log.child({ component: 'access' });
    this.#cap = capacity;
  }

  /**
   * With proxy workers: ids come from one counter in shared memory (`ids[0]`, the next id less
   * one), so they stay unique and in start order node-wide, and records name their proxy.
   */
  shareIds(ids: BigInt64Array, proxy: number): void {
    this.#shared = { ids, proxy };
  }

  #id(): number {
    if (!this.#shared) return this.#next++;
    return Number(Atomics.add(this.#shared.ids, 0, 1n)) + 1;
  }

  /** A finished record another proxy (a worker) already logged: kept in the ring, told to the listeners. */
  ingest(rec: FlowRecord): void {
    this.#put(rec);
    for (const l of this.#listeners) l(rec);
  }

  #put(rec: FlowRecord): void {
    // Overwrite the oldest in place: shifting a full array of 1,000 cost microseconds a connection.
    if (this.#ring.length < this.#cap) this.#ring.push(rec);
    else this.#ring[this.#head] = rec;
    this.#head = (this.#head + 1) % this.#cap;
  }

  start(r: Omit<FlowRecord, 'id' | 'startedAt' | 'bytesSent' | 'bytesReceived' | 'open' | 'responseFlags'>): FlowRecord {
    const rec: FlowRecord = { ...r, id: this.#id(), startedAt: this.#now(), bytesSent: 0, bytesReceived: 0, responseFlags: '-', open: true, ...(this.#shared ? { proxy: this.#shared.proxy } : {}) };
    this.#put(rec);
    return rec;
  }

  #now(): string {
    const ms = Date.now();
    if (ms !== this.#isoMs) {
      this.#isoMs = ms;
      this.#iso = new Date(ms).toISOString();
    }
    return this.#iso;
  }

  /** The ring, oldest first. */
  #records(): FlowRecord[] {
    if (this.#ring.length < this.#cap) return this.#ring.slice();
    return [...this.#ring.slice(this.#head), ...this.#ring.slice(0, this.#head)];
  }

  finish(rec: FlowRecord, startedMs: number): void {
    rec.open = false;
    rec.durationMs = Math.round(performance.now() - startedMs);
    this.#log.info(
      {
        direction: rec.direction,
        pod: rec.pod,
        src: { ip: rec.src.ip, port: rec.src.port, workload: rec.src.workload, namespace: rec.src.namespace, principal: rec.src.principal },
        dst: { ip: rec.dst.ip, port: rec.dst.port, workload: rec.dst.workload, namespace: rec.dst.namespace, principal: rec.dst.principal },
        original_dst: rec.originalDst,
        upstream: rec.upstream,
        bytes_sent: rec.bytesSent,
        bytes_received: rec.bytesReceived,
        duration_ms: rec.durationMs,
        response_flags: rec.responseFlags,
        policy: rec.policy,
        ...(rec.hbone ? { hbone: rec.hbone } : {}),
        error: rec.error,
      },
      'connection complete',
    );
    for (const l of this.#listeners) l(rec);
  }

  recent(limit = this.#cap): FlowRecord[] {
    return this.#records().slice(-limit);
  }

  open(): FlowRecord[] {
    return this.#records().filter((r) => r.open);
  }

  onFinish(fn: (r: FlowRecord) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }
}

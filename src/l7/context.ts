// What every session of one engine shares: resolved options, the upstream pools, the logger,
// a coarse clock for timeouts, and the accounting of bytes the engine holds.
import { pino } from 'pino';
import type { Logger } from '../log.js';
import { resolveLimits, UpstreamPool } from './pool.js';
import type { EngineOptions } from './types.js';

export interface ResolvedOptions {
  maxHeaderBytes: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  sweepMs: number;
  /** How long a closing client may go on sending before it is reset (lingering close). */
  lingerMs: number;
  /** Request body bytes held per request for its retries. */
  retryBufferBytes: number;
  /** Bytes a mirror may have queued before it is dropped. */
  mirrorQueueBytes: number;
}

/** What became of the mirrored copies of requests (EngineStats.mirrors). */
export interface MirrorCounts {
  started: number;
  /** The shadow answered in full (its response was read and dropped). */
  completed: number;
  /** Fell behind its queue bound, or its request could not be completed (the client left). */
  dropped: number;
  /** Could not connect, was reset, answered garbage or timed out. */
  failed: number;
}

export interface Sweepable {
  sweep(now: number): void;
}

function positive(v: number | undefined, d: number, what: string, min = 1): number {
  const x = v ?? d;
  if (!Number.isFinite(x) || x < min) throw new RangeError(`${what} must be a number >= ${min}, got ${v}`);
  return x;
}

export class EngineContext {
  readonly o: ResolvedOptions;
  readonly pool: UpstreamPool;
  readonly log: Logger;
  readonly sessions = new Set<Sweepable>();
  /** Work no client waits for (mirrors, responses of retried tries being drained): swept, and dropped at close. */
  readonly background = new Set<Sweepable & { drop(): void }>();
  readonly mirrors: MirrorCounts = { started: 0, completed: 0, dropped: 0, failed: 0 };
  /** Date.now() as of the last sweep: timeouts need no finer clock than the sweep's. */
  now = Date.now();
  /** The most bytes seen queued in any one write queue or pending list of the engine. */
  peakQueued = 0;
  /** How long an idle upstream connection (or HTTP/2 session) is kept. */
  readonly poolIdleTimeoutMs: number;

  constructor(o: EngineOptions) {
    this.o = {
      maxHeaderBytes: positive(o.maxHeaderBytes, 60 * 1024, 'maxHeaderBytes', 256),
      headerTimeoutMs: positive(o.headerTimeoutMs, 10_000, 'headerTimeoutMs'),
      idleTimeoutMs: positive(o.idleTimeoutMs, 3_600_000, 'idleTimeoutMs'),
      connectTimeoutMs: positive(o.connectTimeoutMs, 10_000, 'connectTimeoutMs'),
      requestTimeoutMs: positive(o.requestTimeoutMs, 0, 'requestTimeoutMs', 0),
      sweepMs: positive(o.sweepMs, 250, 'sweepMs', 5),
      lingerMs: 2_000,
      retryBufferBytes: positive(o.retryBufferBytes, 64 * 1024, 'retryBufferBytes', 0),
      mirrorQueueBytes: positive(o.mirrorQueueBytes, 256 * 1024, 'mirrorQueueBytes', 0),
    };
    const limits = resolveLimits(o.pool);
    this.poolIdleTimeoutMs = limits.idleTimeoutMs;
    this.pool = new UpstreamPool(limits, this.o.maxHeaderBytes, this.o.connectTimeoutMs);
    this.log = o.log ?? pino({ level: 'silent' });
  }

  /** Books a queue length, for the peak that tests and stats read. */
  queued(n: number): void {
    if (n > this.peakQueued) this.peakQueued = n;
  }

  sweep(): void {
    this.now = Date.now();
    this.pool.sweep(this.now);
    for (const s of this.sessions) s.sweep(this.now);
    for (const b of this.background) b.sweep(this.now);
  }

  /** The engine closes: background work stops with it (its connections closed). */
  dropBackground(): void {
    for (const b of [...this.background]) b.drop();
    this.background.clear();
  }
}

// The L7 engine: takes client connections the proxy accepted and authorized at L4, and serves
// the HTTP on them (HTTP/1.1, or HTTP/2 when the connection opens with its preface) through
// per-upstream connection pools, under the route and telemetry hooks each connection brings.
import type { Duplex } from 'node:stream';
import { EngineContext, type MirrorCounts } from './context.js';
import { H2Front } from './h2.js';
import { Http1Session } from './session.js';
import { resetStream, type EngineOptions, type SessionHooks, type Stream } from './types.js';

export interface EngineStats {
  /** Client connections being served. */
  sessions: number;
  /** The most bytes seen queued in any one of the engine's write queues or pending lists. */
  peakQueuedBytes: number;
  pools: { upstream: string; connections: number; idle: number; waiting: number }[];
  /** Mirrored copies of requests, by what became of them. */
  mirrors: MirrorCounts;
}

export class HttpEngine {
  readonly #ctx: EngineContext;
  readonly #sweeper: NodeJS.Timeout;
  readonly #h2: H2Front;
  #closed = false;

  constructor(o: EngineOptions = {}) {
    this.#ctx = new EngineContext(o);
    this.#h2 = new H2Front(this.#ctx);
    this.#sweeper = setInterval(() => this.#sweep(), this.#ctx.o.sweepMs);
    this.#sweeper.unref();
  }

  #sweep(): void {
    try {
      this.#ctx.sweep();
    } catch (err) {
      this.#ctx.log.error({ err }, 'L7 engine sweep failed');
    }
  }

  /**
   * Serves HTTP on `client` until it closes. The promise resolves then and never rejects: every
   * failure is answered on the connection (an error status or a reset) and booked through the
   * hooks, never thrown.
   */
  serve(client: Duplex, hooks: SessionHooks): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.#closed) {
        resetStream(client as Stream);
        resolve();
        return;
      }
      try {
        const h2 = (first: Buffer): void => this.#h2.serve(client as Stream, first, hooks, resolve);
        new Http1Session(this.#ctx, client as Stream, hooks, resolve, h2);
      } catch (err) {
        this.#ctx.log.error({ err }, 'L7 session could not start; resetting the client');
        client.on('error', () => {});
        resetStream(client as Stream);
        resolve();
      }
    });
  }

  stats(): EngineStats {
    return { sessions: this.#ctx.sessions.size, peakQueuedBytes: this.#ctx.peakQueued, pools: this.#ctx.pool.stats(), mirrors: { ...this.#ctx.mirrors } };
  }

  /** Stops the sweeper and closes idle upstream connections; sessions in flight finish or fail. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    this.#ctx.dropBackground();
    this.#ctx.pool.close();
    this.#h2.close();
  }
}

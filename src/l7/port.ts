// What an HTTP/1.1 exchange needs of the client connection it belongs to (session.ts has it).
import type { EngineContext } from './context.js';
import type { Exchange } from './exchange.js';
import type { UpstreamConn } from './pool.js';
import type { SessionHooks, Stream } from './types.js';

/** What an exchange needs of the client connection it belongs to. */
export interface SessionPort {
  readonly client: Stream;
  readonly hooks: SessionHooks;
  readonly ctx: EngineContext;
  /** The client connection closes after the exchange in flight (FIN seen, bad bytes queued). */
  readonly closing: boolean;
  done(ex: Exchange): void;
  /** Re-evaluates whether the client may be read (an upstream write blocked or unblocked). */
  updateReading(): void;
  tunnel(ex: Exchange, conn: UpstreamConn, rest: Buffer): void;
  /** Resets the client: a response was cut short and must not look complete. */
  abort(): void;
}

// HTTP/2 cleartext (prior knowledge) through the engine, node:http2 on both sides: the front
// that takes a sniffed connection and hands each stream to an H2Exchange (h2-exchange.ts),
// which routes it by the same hook as HTTP/1.1 over a multiplexed upstream session per key.
import { constants, createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { EngineContext } from './context.js';
import { H2Exchange } from './h2-exchange.js';
import { H2Pool } from './h2-pool.js';
import type { SessionHooks, Stream } from './types.js';

const { NGHTTP2_INTERNAL_ERROR } = constants;

/** The client connection preface of RFC 9113 §3.4: prior-knowledge HTTP/2 starts with it. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** The engine's HTTP/2 side: one (unlistening) node:http2 server fed the sniffed connections. */
export class H2Front {
  readonly #ctx: EngineContext;
  readonly #server: Http2Server;
  readonly #pool: H2Pool;
  #next: { hooks: SessionHooks; onEnd: () => void } | undefined;

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
    this.#pool = new H2Pool(ctx);
    this.#server = createServer({ maxHeaderListPairs: 256, maxSessionMemory: 16 });
    this.#server.on('session', (session: ServerHttp2Session) => {
      const next = this.#next;
      this.#next = undefined;
      if (!next) {
        session.destroy();
        return;
      }
      session.on('error', (err: Error) => this.#ctx.log.debug({ err }, 'downstream HTTP/2 session failed'));
      session.on('close', next.onEnd);
      session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
        try {
          new H2Exchange(this.#ctx, next.hooks, this.#pool, stream, headers, raw).start();
        } catch (err) {
          this.#ctx.log.error({ err }, 'HTTP/2 stream failed; resetting it');
          stream.close(NGHTTP2_INTERNAL_ERROR);
        }
      });
    });
    this.#server.on('sessionError', (err: Error) => this.#ctx.log.debug({ err }, 'downstream HTTP/2 session error'));
  }

  /** Serves a connection whose first bytes (already read, in `first`) are the HTTP/2 preface. */
  serve(client: Stream, first: Buffer, hooks: SessionHooks, onEnd: () => void): void {
    client.pause();
    client.unshift(first);
    this.#next = { hooks, onEnd };
    this.#server.emit('connection', client);
    if (this.#next) {
      // node:http2 took no session from it: nothing to serve.
      this.#next = undefined;
      onEnd();
    }
  }

  close(): void {
    this.#pool.close();
  }
}

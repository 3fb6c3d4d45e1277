// The rest of an HTTP/1.1 response nobody will see (a try that answered a retried status): read
// and dropped so its keep-alive connection can serve again, within a byte and a time bound;
// past either, or on anything odd, the connection is closed instead.
import type { EngineContext } from './context.js';
import { responseFraming, type HeadInfo } from './head.js';
import type { ParsedHead } from './parser.js';
import type { ResponseSink, UpstreamConn } from './pool.js';

/** More than this of a dropped body is not worth a connection: close it. */
const MAX_DRAIN_BYTES = 64 * 1024;
/** A dropped body not complete this long after its head closes its connection. */
const MAX_DRAIN_MS = 2_000;

/**
 * Takes over `c` after the head `h` of a response the client will not see: drained when the
 * connection can serve again (the request went up whole, the body has an end), else closed.
 */
export function drain(ctx: EngineContext, c: UpstreamConn, h: ParsedHead, info: HeadInfo, method: string, requestSent: boolean, maxRequests: number): void {
  c.keepAlive = h.keepAlive;
  if (requestSent && h.keepAlive && !responseFraming(method, h.status, info, false).closeDelimited) new Drain(ctx, c, maxRequests);
  else ctx.pool.discard(c);
}

class Drain implements ResponseSink {
  readonly #ctx: EngineContext;
  readonly #conn: UpstreamConn;
  readonly #maxRequests: number;
  readonly #deadline = Date.now() + MAX_DRAIN_MS;
  #bytes = 0;
  #done = false;

  constructor(ctx: EngineContext, conn: UpstreamConn, maxRequests: number) {
    this.#ctx = ctx;
    this.#conn = conn;
    this.#maxRequests = maxRequests;
    conn.sink = this;
    conn.peer = undefined;
    ctx.background.add(this);
  }

  head(): number {
    // Another response before this one ended: the connection is out of step.
    this.#finish(false);
    return 1;
  }

  body(b: Buffer): void {
    this.#bytes += b.length;
    if (this.#bytes > MAX_DRAIN_BYTES) this.#finish(false);
  }

  complete(): void {
    this.#finish(true);
  }

  upgraded(): void {
    this.#finish(false);
  }

  failed(): void {
    this.#finish(false);
  }

  sweep(now: number): void {
    if (now >= this.#deadline) this.#finish(false);
  }

  drop(): void {
    this.#finish(false);
  }

  #finish(reuse: boolean): void {
    if (this.#done) return;
    this.#done = true;
    this.#ctx.background.delete(this);
    const c = this.#conn;
    c.sink = undefined;
    if (reuse && c.keepAlive) this.#ctx.pool.release(c, this.#maxRequests);
    else this.#ctx.pool.discard(c);
  }
}

// Request mirroring over HTTP/1.1 (Envoy's request_mirror_policies): a shadow copy of the
// request, head and body as they stream, to another upstream whose response is read and
// dropped. A shadow never holds the request up: it queues at most mirrorQueueBytes, then it
// is dropped (and counted), and it lives no longer than its timeout.
import type { EngineContext } from './context.js';
import { Upload } from './bodies.js';
import { inspect, requestHead, responseFraming, withHost } from './head.js';
import { UpstreamConn, type ResponseSink } from './pool.js';
import type { HttpRequestHead, Stream, UpstreamTarget } from './types.js';

/** A shadow with no timeout of its own, nor its request's, gives up after Envoy's default route timeout. */
export const DEFAULT_MIRROR_TIMEOUT_MS = 15_000;

/**
 * The Host (or :authority) of a shadow request: `-shadow` added to the host, before the port
 * (`reviews:9080` becomes `reviews-shadow:9080`), as Envoy's shadow writer does.
 */
export function shadowHost(host: string): string {
  const bracket = host.lastIndexOf(']');
  const colon = host.lastIndexOf(':');
  if (colon > bracket && (bracket >= 0 || host.indexOf(':') === colon)) return `${host.slice(0, colon)}-shadow${host.slice(colon)}`;
  return `${host}-shadow`;
}

/**
 * Shadows of `req` (as the route left it, Host with `-shadow`), one per target, given the body
 * read so far (`held`); undefined when the head cannot be written.
 */
export function startMirrors(ctx: EngineContext, req: HttpRequestHead, targets: readonly UpstreamTarget[], chunked: boolean, timeoutMs: number, held: { chunks: readonly Buffer[]; ended: boolean; trailers: string[] | undefined }): Http1Mirror[] | undefined {
  const fields = req.authority !== '' ? withHost(req.headers, shadowHost(req.authority)) : req.headers;
  let head: string;
  try {
    head = requestHead(req.method, req.path, fields, inspect(fields), false, req.dirty);
  } catch (err) {
    ctx.log.debug({ err }, 'mirror request head refused; not mirrored');
    return undefined;
  }
  return targets.map((t) => {
    const m = new Http1Mirror(ctx, t, req.method, head, chunked, t.timeoutMs ?? timeoutMs);
    for (const b of held.chunks) m.requestBody(b);
    if (held.ended) m.requestComplete(held.trailers);
    return m;
  });
}

/** What becomes of a shadow, counted in EngineStats.mirrors. */
export type MirrorEnd = 'completed' | 'dropped' | 'failed';

export class Http1Mirror implements ResponseSink {
  readonly #ctx: EngineContext;
  readonly #t: UpstreamTarget;
  readonly #upload: Upload;
  readonly #method: string;
  readonly #deadline: number;
  #conn: UpstreamConn | undefined;
  /** Body bytes held before a connection was attached. */
  #held = 0;
  #reqDone = false;
  #interim = false;
  #done = false;

  constructor(ctx: EngineContext, t: UpstreamTarget, method: string, head: string, chunked: boolean, timeoutMs: number) {
    this.#ctx = ctx;
    this.#t = t;
    this.#method = method;
    this.#deadline = Date.now() + (timeoutMs > 0 ? timeoutMs : DEFAULT_MIRROR_TIMEOUT_MS);
    // A shadow's upstream writes block nothing: the client is paced by the request's own upstream.
    this.#upload = new Upload(chunked, ctx, () => {});
    ctx.mirrors.started++;
    ctx.background.add(this);
    const c = ctx.pool.acquire(t.upstream, t.open as () => Promise<Stream>);
    if (c instanceof UpstreamConn) this.#attach(c, head);
    else
      c.then(
        (conn) => this.#attach(conn, head),
        (err: Error) => {
          ctx.log.debug({ err, upstream: t.upstream }, 'mirror connection failed');
          this.#finish('failed');
        },
      );
  }

  requestBody(b: Buffer): void {
    if (this.#done) return;
    this.#upload.body(b);
    if (this.#conn === undefined) this.#held += b.length;
    this.#check();
  }

  requestComplete(trailers: string[] | undefined): void {
    this.#reqDone = true;
    if (!this.#done) this.#upload.end(trailers);
  }

  /** The request will never be whole (the client left, bad bytes): the shadow copy goes too. */
  abort(): void {
    this.#finish('dropped');
  }

  #attach(c: UpstreamConn, head: string): void {
    if (this.#done) {
      this.#ctx.pool.release(c);
      return;
    }
    if (c.dead) {
      this.#ctx.pool.discard(c);
      this.#finish('failed');
      return;
    }
    this.#conn = c;
    c.sink = this;
    c.peer = undefined;
    this.#upload.attach(c.stream, head);
    this.#held = 0;
    this.#check();
  }

  /** A shadow behind its bound is dropped rather than let the engine hold its bytes. */
  #check(): void {
    const queued = this.#conn ? this.#conn.stream.writableLength : this.#held;
    if (queued > this.#ctx.o.mirrorQueueBytes) {
      this.#ctx.log.debug({ upstream: this.#t.upstream, queued }, 'mirror fell behind; dropping its copy');
      this.#finish('dropped');
    }
  }

  // --- the shadow's response, read and dropped ---

  head(h: { status: number; headers: string[]; keepAlive: boolean }): number {
    if (h.status < 200 && h.status !== 101) {
      this.#interim = true;
      return 0;
    }
    if (h.status === 101) {
      this.#finish('failed');
      return 1;
    }
    const c = this.#conn!;
    c.keepAlive = h.keepAlive && !responseFraming(this.#method, h.status, inspect(h.headers), false).closeDelimited;
    return this.#method === 'HEAD' ? 1 : 0;
  }

  body(): void {}

  complete(): void {
    if (this.#interim) {
      this.#interim = false;
      return;
    }
    this.#finish('completed');
  }

  upgraded(): void {
    this.#finish('failed');
  }

  failed(): void {
    this.#finish('failed');
  }

  sweep(now: number): void {
    if (now >= this.#deadline) this.#finish('failed');
  }

  drop(): void {
    this.#finish('dropped');
  }

  #finish(end: MirrorEnd): void {
    if (this.#done) return;
    this.#done = true;
    this.#ctx.background.delete(this);
    this.#ctx.mirrors[end]++;
    this.#upload.detach();
    const c = this.#conn;
    this.#conn = undefined;
    if (!c) return;
    c.sink = undefined;
    if (end === 'completed' && this.#reqDone && c.keepAlive) this.#ctx.pool.release(c, this.#t.maxRequestsPerConnection ?? 0);
    else this.#ctx.pool.discard(c);
  }
}

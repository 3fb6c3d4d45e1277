// Request mirroring over HTTP/2: a shadow stream per mirror target on that target's upstream
// session, the request's body copied as the request's own upstream takes it, the response read
// and dropped. Bounded like the HTTP/1.1 shadows (mirror.ts): it never holds the request up.
import { constants, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import type { EngineContext } from './context.js';
import { retire, type H2Lease, type H2Pool } from './h2-pool.js';
import { DEFAULT_MIRROR_TIMEOUT_MS, type MirrorEnd } from './mirror.js';
import type { Stream, UpstreamTarget } from './types.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR } = constants;

export class H2Mirror {
  readonly #ctx: EngineContext;
  readonly #t: UpstreamTarget;
  readonly #deadline: number;
  #up: ClientHttp2Stream | undefined;
  /** Body read before the shadow's stream was open. */
  #held: Buffer[] = [];
  #heldBytes = 0;
  #ended = false;
  #done = false;

  /** `headers`: the request's, :authority with `-shadow` already. */
  constructor(ctx: EngineContext, pool: H2Pool, t: UpstreamTarget, headers: OutgoingHttpHeaders, timeoutMs: number) {
    this.#ctx = ctx;
    this.#t = t;
    this.#deadline = Date.now() + (timeoutMs > 0 ? timeoutMs : DEFAULT_MIRROR_TIMEOUT_MS);
    ctx.mirrors.started++;
    ctx.background.add(this);
    pool.get(t.upstream, t.open as () => Promise<Stream>, t.maxRequestsPerConnection ?? 0).then(
      (lease) => this.#start(lease, headers),
      (err: Error) => {
        ctx.log.debug({ err, upstream: t.upstream }, 'mirror connection failed');
        this.#finish('failed');
      },
    );
  }

  requestBody(b: Buffer): void {
    if (this.#done) return;
    const up = this.#up;
    if (up) up.write(b);
    else {
      this.#held.push(b);
      this.#heldBytes += b.length;
    }
    this.#check();
  }

  requestComplete(): void {
    this.#ended = true;
    if (this.#up && !this.#done) this.#up.end();
  }

  /** The request will never be whole (the client left): the shadow copy goes too. */
  abort(): void {
    this.#finish('dropped');
  }

  #check(): void {
    const queued = this.#up ? this.#up.writableLength : this.#heldBytes;
    if (queued > this.#ctx.o.mirrorQueueBytes) {
      this.#ctx.log.debug({ upstream: this.#t.upstream, queued }, 'mirror fell behind; dropping its copy');
      this.#finish('dropped');
    }
  }

  #start(lease: H2Lease, headers: OutgoingHttpHeaders): void {
    if (this.#done) return retire(lease, undefined);
    let up: ClientHttp2Stream;
    try {
      up = lease.session.request(headers);
    } catch (err) {
      retire(lease, undefined);
      this.#ctx.log.debug({ err, upstream: this.#t.upstream }, 'mirror HTTP/2 request could not start');
      this.#finish('failed');
      return;
    }
    retire(lease, up);
    this.#up = up;
    up.on('error', (err: Error) => this.#ctx.log.debug({ err, upstream: this.#t.upstream }, 'mirror HTTP/2 stream failed'));
    up.on('close', () => this.#finish(up.readableEnded && up.rstCode === NGHTTP2_NO_ERROR ? 'completed' : 'failed'));
    up.resume();
    for (const b of this.#held) up.write(b);
    this.#held = [];
    this.#heldBytes = 0;
    if (this.#ended) up.end();
    this.#check();
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
    this.#held = [];
    const up = this.#up;
    this.#up = undefined;
    if (up && !up.destroyed) up.close(NGHTTP2_CANCEL);
  }
}

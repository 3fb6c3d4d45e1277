// One HTTP/1.1 request and its response through the engine: route, upstream connection from
// the pool, the request streamed up and the response streamed down with backpressure both
// ways, interim 1xx passed on, the route's retries and mirrors, and every failure answered or
// booked with its response flag.
import { drain } from './drain.js';
import { addFlag, connectFailure, FAILURES, type LocalFailure } from './flags.js';
import { inspect, localResponse, requestHead, responseFraming, responseHead, withHost, type HeadInfo } from './head.js';
import { directParts, isDirect, logRouteFailure, report, responseHook, route } from './hooks.js';
import { startMirrors, type Http1Mirror } from './mirror.js';
import type { ParsedHead } from './parser.js';
import { UpstreamConn, type FlaggedError, type ResponseSink } from './pool.js';
import { Download, Upload } from './bodies.js';
import type { SessionPort } from './port.js';
import { connectOutcome, Retries, type TryOutcome } from './retry.js';
import { endTry, tryEndOf, type DirectResponse, type HttpRequestHead, type Stream, type UpstreamTarget } from './types.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export class Exchange implements ResponseSink {
  readonly req: HttpRequestHead;
  readonly #info: HeadInfo;
  readonly #s: SessionPort;
  readonly #hasBody: boolean;
  readonly #http10: boolean;
  /** The request lets the client connection stay open after it. */
  readonly #keepAlive: boolean;
  readonly upgrade: boolean;
  readonly #t0 = performance.now();
  started = false;
  reqDone = false;
  finished = false;
  tunneling = false;
  closeAfter = false;
  #upload: Upload;
  readonly #download: Download;
  #failure: LocalFailure | undefined;
  conn: UpstreamConn | undefined;
  #target: UpstreamTarget | undefined;
  #retried = false;
  #status = 0;
  #headSent = false;
  #interim = false;
  #sawInterim = false;
  #reqBytes = 0;
  #resBytes = 0;
  #flags = '-';
  #upstream = '-';
  #policy: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** This exchange resets the client itself (a cut response): not the client's doing. */
  #resetting = false;
  #retries: Retries | undefined;
  #mirrors: Http1Mirror[] | undefined;
  /** Tries made upstream, for the record. */
  #attempts = 0;
  /** Numbers each try: a connection or failure of an earlier one, arriving late, is not acted on. */
  #try = 0;
  #tryTimer: NodeJS.Timeout | undefined;
  #backoff: NodeJS.Timeout | undefined;

  constructor(s: SessionPort, req: HttpRequestHead, info: HeadInfo, h: { versionMinor: number; keepAlive: boolean; upgrade: boolean }, failure?: LocalFailure) {
    this.#s = s;
    this.req = req;
    this.#info = info;
    this.#hasBody = info.chunked || info.contentLength;
    this.#http10 = h.versionMinor === 0;
    this.#keepAlive = h.keepAlive;
    this.upgrade = h.upgrade;
    this.#failure = failure;
    if (failure) this.closeAfter = true;
    this.#upload = new Upload(info.chunked, s.ctx, () => s.updateReading());
    this.#download = new Download(s.client, s.ctx);
  }

  /** Body bytes may go straight to the upstream (else the session stops reading the client). */
  canWrite(): boolean {
    return this.#upload.canWrite();
  }

  requestBody(b: Buffer): void {
    this.#reqBytes += b.length;
    if (this.#mirrors) for (const m of this.#mirrors) m.requestBody(b);
    if (this.finished || this.#failure) return;
    this.#retries?.body(b);
    this.#upload.body(b);
  }

  requestComplete(trailers: string[] | undefined): void {
    this.reqDone = true;
    if (this.#mirrors) for (const m of this.#mirrors) m.requestComplete(trailers);
    if (this.finished || this.#failure) return;
    this.#retries?.end(trailers);
    this.#upload.end(trailers);
  }

  /** The rest of the request cannot be read (bad bytes, header timeout): answer `f` and close. */
  requestFailed(f: LocalFailure): void {
    this.closeAfter = true;
    this.#abortMirrors();
    if (this.finished) return;
    if (this.#backoff) {
      // Between tries: nothing upstream has this request, so answer now.
      this.#fail(f);
      return;
    }
    if (!this.started || !this.conn) {
      this.#failure = f;
      return;
    }
    // The upstream already has part of this request: that connection is spoiled.
    this.#dropConn();
    this.#fail(f);
  }

  start(): void {
    this.started = true;
    if (this.#failure) {
      this.#fail(this.#failure);
      return;
    }
    route(this.#s.hooks, this.req, {
      direct: (d) => {
        if (this.finished) return;
        if (this.#failure) return this.#fail(this.#failure);
        this.#direct(d);
      },
      upstream: (t) => {
        if (this.finished) return;
        if (this.#failure) return this.#fail(this.#failure);
        this.#target = t;
        this.#upstream = t.upstream;
        const ms = t.timeoutMs ?? this.#s.ctx.o.requestTimeoutMs;
        if (ms > 0) this.#timer = setTimeout(() => this.#timedOut(), ms);
        // An upgrade becomes a tunnel: neither replayed nor shadowed.
        if (!this.upgrade) {
          const held = this.#upload.held();
          this.#retries = Retries.for(t, this.req, this.#s.ctx.o.retryBufferBytes, this.#s.ctx.log, held);
          if (t.mirror && t.mirror.length > 0) this.#mirrors = startMirrors(this.#s.ctx, this.req, t.mirror, this.#info.chunked, ms, held);
        }
        this.#dispatch();
      },
      failed: (err) => this.#routeFailed(err),
    });
  }

  #direct(d: DirectResponse): void {
    const p = directParts(d);
    this.#flags = p.flags;
    if (d.respond.upstream) this.#upstream = d.respond.upstream;
    if (d.respond.policy) this.#policy = d.respond.policy;
    try {
      this.#local(p.status, p.headers, p.body);
    } catch (err) {
      this.#routeFailed(err);
    }
  }

  #abortMirrors(): void {
    if (this.#mirrors) for (const m of this.#mirrors) m.abort();
  }

  /** A try: its own timeout (the policy's perTryTimeoutMs) and a connection for it. */
  #dispatch(): void {
    const per = this.#retries?.perTryTimeoutMs ?? 0;
    if (per > 0) this.#tryTimer = setTimeout(() => this.#tryTimedOut(), per);
    this.#acquire(false);
  }

  #routeFailed(err: unknown): void {
    if (this.finished) return;
    logRouteFailure(this.#s.ctx.log, this.req, err);
    this.#fail(FAILURES.routeError);
  }

  #acquire(fresh: boolean): void {
    const t = this.#target!;
    const n = ++this.#try;
    this.#attempts++;
    let c: UpstreamConn | Promise<UpstreamConn>;
    try {
      c = this.#s.ctx.pool.acquire(t.upstream, t.open as () => Promise<Stream>, fresh, t);
    } catch (err) {
      this.#connectFailed(n, err as FlaggedError);
      return;
    }
    if (c instanceof UpstreamConn) this.#attach(n, c);
    else
      c.then(
        (conn) => this.#attach(n, conn),
        (err: FlaggedError) => this.#connectFailed(n, err),
      );
  }

  #connectFailed(n: number, err: FlaggedError): void {
    if (this.finished || n !== this.#try) return;
    if (this.#failure) return this.#fail(this.#failure);
    this.#s.ctx.log.debug({ err, upstream: this.#upstream }, 'upstream connection failed');
    const f = connectFailure(err, this.#retried);
    this.#tryFailed(connectOutcome(f), f);
  }

  #attach(n: number, c: UpstreamConn): void {
    if (this.finished || this.#failure || n !== this.#try) {
      if (this.#failure && !this.finished && n === this.#try) this.#fail(this.#failure);
      this.#s.ctx.pool.release(c);
      return;
    }
    if (c.dead) {
      this.#s.ctx.pool.discard(c);
      this.#retryOrFail(FAILURES.upstreamReset, c.served > 0);
      return;
    }
    let head: string;
    try {
      const r = this.req;
      const fields = r.authorityChanged && r.authority !== '' ? withHost(r.headers, r.authority) : r.headers;
      head = requestHead(r.method, r.path, fields, r.dirty ? inspect(fields) : this.#info, this.upgrade, r.dirty);
    } catch (err) {
      this.#s.ctx.pool.release(c);
      this.#routeFailed(err);
      return;
    }
    this.conn = c;
    c.sink = this;
    c.peer = this.#s.client;
    this.#download.from(c.stream);
    this.#upload.attach(c.stream, head);
    this.#s.updateReading();
  }

  // --- the response, from the upstream connection's parser ---

  head(h: ParsedHead): number {
    const st = h.status;
    if (st < 200 && st !== 101) {
      // 100 Continue and other interim answers go to HTTP/1.1 clients as they come.
      this.#interim = true;
      this.#sawInterim = true;
      if (!this.#http10) this.#download.write(responseHead(st, h.statusMessage, h.headers, inspect(h.headers), { framing: 'none', upstreamChunked: false, close: false, keepAlive10: false, upgrade: false, check: false }));
      return 0;
    }
    if (st === 101 && !this.upgrade) {
      this.failed('protocol', new Error('101 Switching Protocols to a request that asked for no upgrade'));
      return 2;
    }
    const info = inspect(h.headers);
    if (this.#retries?.wantsStatus(st) && this.#mayRetry()) {
      const p = this.#retries.plan('status', this.#target!, st);
      if (p.kind === 'retry') {
        drain(this.#s.ctx, this.#detach()!, h, info, this.req.method, this.reqDone, this.#target!.maxRequestsPerConnection ?? 0);
        this.#retry(p.to);
        return this.req.method === 'HEAD' ? 1 : 0;
      }
      if (p.kind === 'exhausted') this.#flags = addFlag(this.#flags, 'URX');
    }
    const c = this.conn!;
    c.keepAlive = h.keepAlive;
    if (info.keepAliveTimeout !== undefined) c.hintMs = info.keepAliveTimeout * 1000;
    const { framing, closeDelimited } = responseFraming(this.req.method, st, info, this.#http10);
    // A close-delimited upstream body ends with that connection.
    if (closeDelimited) c.keepAlive = false;
    if (framing === 'close' || !this.#keepAlive || (this.upgrade && st !== 101)) this.closeAfter = true;
    const close = this.closeAfter || this.#s.closing;
    const hooked = responseHook(this.#target, st, h.headers, this.#s.ctx.log);
    let head: string;
    try {
      head = responseHead(st, h.statusMessage, hooked.headers, hooked.changed ? inspect(hooked.headers) : info, { framing, upstreamChunked: info.chunked, close, keepAlive10: this.#http10 && !close, upgrade: st === 101, check: hooked.changed });
    } catch (err) {
      this.failed('protocol', err as Error);
      return 2;
    }
    this.#download.framing = framing;
    this.#status = st;
    this.#headSent = true;
    this.#download.write(head);
    return st === 101 ? 2 : this.req.method === 'HEAD' ? 1 : 0;
  }

  body(b: Buffer): void {
    if (this.finished) return;
    this.#resBytes += b.length;
    this.#download.body(b);
  }

  complete(trailers: string[] | undefined): void {
    if (this.#interim) {
      this.#interim = false;
      return;
    }
    // llhttp completes a 101 at its head; the tunnel (upgraded()) takes it from there.
    if (this.finished || this.tunneling || this.#status === 101) return;
    this.#download.end(trailers);
    if (!this.reqDone) {
      // The upstream answered before the request ended: that connection cannot be reused, and
      // the client's remaining bytes cannot be told from a next request. Close after.
      this.closeAfter = true;
      this.conn!.keepAlive = false;
    }
    this.#finish();
  }

  upgraded(rest: Buffer): void {
    if (this.finished) return;
    this.tunneling = true;
    const c = this.#detach()!;
    this.#clearTimer();
    this.#s.tunnel(this, c, rest);
  }

  failed(kind: 'reset' | 'protocol', err?: Error): void {
    // No connection: one this exchange let go of (a retried try's, now draining) failed on its own.
    if (this.finished || this.tunneling || !this.conn) return;
    this.#s.ctx.log.debug({ err, upstream: this.#upstream, kind }, 'upstream failed before the response completed');
    const reused = (this.conn?.served ?? 0) > 0;
    this.#dropConn();
    const f = kind === 'protocol' ? FAILURES.upstreamProtocol : FAILURES.upstreamReset;
    if (kind === 'reset' && !this.#headSent) this.#retryOrFail(f, reused);
    else this.#fail(f);
  }

  /**
   * A keep-alive connection the upstream closed as we reused it fails before any response: the
   * request is sent again once, on a new connection, when that is safe (idempotent, no body).
   */
  #retryOrFail(f: LocalFailure, reused: boolean): void {
    const safe = reused && this.#target !== undefined && !this.#retried && IDEMPOTENT.has(this.req.method) && !this.#hasBody && !this.upgrade && !this.#sawInterim;
    if (safe) {
      this.#retried = true;
      this.#acquire(true);
      return;
    }
    this.#tryFailed('reset', this.#retried ? { ...f, flags: `${f.flags},URX` } : f);
  }

  /** Nothing of a response went to the client, so another try may still answer it. */
  #mayRetry(): boolean {
    return !this.#headSent && !this.#sawInterim && !this.finished && !this.#failure && !this.tunneling;
  }

  /** A try failed with `f` before its response: retried if the policy says so, else answered. */
  #tryFailed(o: TryOutcome | undefined, f: LocalFailure): void {
    const p = o !== undefined && this.#retries && this.#mayRetry() ? this.#retries.plan(o, this.#target!) : undefined;
    if (p?.kind === 'retry') return this.#retry(p.to);
    this.#fail(p?.kind === 'exhausted' ? { ...f, flags: addFlag(f.flags, 'URX') } : f);
  }

  /** The next try, after the backoff: the body kept so far goes up again, then the rest as it comes. */
  #retry(to: UpstreamTarget | DirectResponse): void {
    this.#clearTryTimer();
    this.#try++;
    const r = this.#retries!;
    const up = new Upload(this.#info.chunked, this.#s.ctx, () => this.#s.updateReading());
    for (const b of r.chunks ?? []) up.body(b);
    if (r.ended) up.end(r.trailers);
    this.#upload = up;
    this.#s.updateReading();
    this.#backoff = setTimeout(() => {
      this.#backoff = undefined;
      if (this.finished) return;
      if (this.#failure) return this.#fail(this.#failure);
      if (isDirect(to)) return this.#direct(to);
      this.#target = to;
      this.#upstream = to.upstream;
      this.#dispatch();
    }, r.delayMs());
  }

  #timedOut(): void {
    this.#timer = undefined;
    if (this.finished || this.tunneling) return;
    this.#dropConn();
    this.#fail(FAILURES.timeout);
  }

  /** The try's own timeout: retried while nothing went to the client, else the client is reset (UT). */
  #tryTimedOut(): void {
    this.#tryTimer = undefined;
    if (this.finished || this.tunneling) return;
    this.#dropConn();
    if (this.#headSent) this.#fail(FAILURES.timeout);
    else this.#tryFailed('timeout', FAILURES.timeout);
  }

  /** The client went away before this exchange finished. */
  clientGone(): void {
    if (this.finished || this.tunneling) return;
    if (!this.#resetting) this.#flags = addFlag(this.#flags, 'DC');
    this.#dropConn();
    this.#finish();
  }

  /** Lets go of the upstream connection (both bodies stop using it) and returns it. */
  #detach(): UpstreamConn | undefined {
    const c = this.conn;
    if (!c) return undefined;
    this.#upload.detach();
    this.#download.from(undefined);
    this.conn = undefined;
    c.sink = undefined;
    c.peer = undefined;
    return c;
  }

  #dropConn(): void {
    const c = this.#detach();
    if (c) this.#s.ctx.pool.discard(c);
  }

  /** Answers a failure: an error response when nothing was sent yet, else a reset client. */
  #fail(f: LocalFailure): void {
    if (this.finished) return;
    this.#flags = addFlag(this.#flags, f.flags);
    if (this.#headSent) {
      // Part of the response is out: only a reset tells the client it is not the whole of it.
      this.#dropConn();
      this.closeAfter = true;
      this.#resetting = true;
      this.#s.abort();
      this.#finish();
      return;
    }
    this.#local(f.status, [], Buffer.from(f.body));
  }

  #local(status: number, headers: string[], body: Buffer): void {
    // The request's rest is unread (no route for a body still coming, a 100-continue client
    // waiting): the connection cannot be trusted for a next request.
    if (!this.reqDone || !this.#keepAlive || this.upgrade) this.closeAfter = true;
    const bytes = localResponse(status, headers, this.req.method === 'HEAD' ? Buffer.alloc(0) : body, this.closeAfter || this.#s.closing);
    this.#dropConn();
    this.#status = status;
    this.#headSent = true;
    this.#resBytes = body.length;
    this.#download.write(bytes);
    this.#finish();
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #clearTryTimer(): void {
    if (this.#tryTimer) clearTimeout(this.#tryTimer);
    this.#tryTimer = undefined;
  }

  /** The tunnel after a 101 closed; `sent`/`received` are its payload bytes. */
  tunnelDone(sent: number, received: number, broken: boolean): void {
    this.#reqBytes += sent;
    this.#resBytes += received;
    if (broken) this.#flags = addFlag(this.#flags, 'UC');
    this.tunneling = false;
    this.closeAfter = true;
    this.#finish();
  }

  #finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.#clearTimer();
    this.#clearTryTimer();
    if (this.#backoff) clearTimeout(this.#backoff);
    this.#backoff = undefined;
    const c = this.#detach();
    if (c) {
      if (c.keepAlive && this.reqDone) this.#s.ctx.pool.release(c, this.#target?.maxRequestsPerConnection ?? 0);
      else this.#s.ctx.pool.discard(c);
    }
    // A shadow cannot finish a request this one will read no more of.
    if (!this.reqDone) this.#abortMirrors();
    this.#record();
    this.#s.done(this);
  }

  #record(): void {
    endTry(this.#target, tryEndOf(this.#status, this.#flags), this.#s.ctx.log);
    const upgraded = this.#status === 101;
    report(this.#s.hooks, this.#s.ctx.log, this.req, this.#t0, { status: this.#status, requestBytes: this.#reqBytes, responseBytes: this.#resBytes, responseFlags: this.#flags, upstream: this.#upstream, upgraded, attempts: this.#attempts, ...(this.#policy ? { policy: this.#policy } : {}) });
  }
}

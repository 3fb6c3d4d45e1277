// One HTTP/2 stream through the engine: routed by the same hook as HTTP/1.1, sent on a
// multiplexed upstream session, the request body relayed under flow control (and kept, within
// a bound, for the route's retries), the response and its trailers (gRPC's grpc-status) passed
// on, shadows fed, and failures answered with the same statuses and response flags.
import { constants, type ClientHttp2Stream, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { EngineContext } from './context.js';
import { addFlag, connectFailure, FAILURES, type LocalFailure } from './flags.js';
import { fromH2, toH2 } from './h2-fields.js';
import { H2Mirror } from './h2-mirror.js';
import { retire, type H2Lease, type H2Pool } from './h2-pool.js';
import { directParts, isDirect, logRouteFailure, report, responseHook, route } from './hooks.js';
import { shadowHost } from './mirror.js';
import { connectOutcome, Retries, type TryOutcome } from './retry.js';
import { endTry, HttpRequestHead, tryEndOf, type DirectResponse, type SessionHooks, type Stream, type UpstreamTarget } from './types.js';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, HTTP2_HEADER_STATUS } = constants;

/** One downstream stream and the upstream stream of its current try. */
export class H2Exchange {
  readonly #ctx: EngineContext;
  readonly #hooks: SessionHooks;
  readonly #down: ServerHttp2Stream;
  readonly #pool: H2Pool;
  readonly req: HttpRequestHead;
  readonly #t0 = performance.now();
  #up: ClientHttp2Stream | undefined;
  /** The current try's response is going to the client: no retry from now on. */
  #forwarded = false;
  /** The client has its answer or its reset: the request body is read for shadows only. */
  #settled = false;
  #target: UpstreamTarget | undefined;
  #status = 0;
  #flags = '-';
  #upstream = '-';
  #policy: string | undefined;
  #reqBytes = 0;
  #resBytes = 0;
  #grpc: string | undefined;
  #trailers: IncomingHttpHeaders | undefined;
  #timer: NodeJS.Timeout | undefined;
  #tryTimer: NodeJS.Timeout | undefined;
  #backoff: NodeJS.Timeout | undefined;
  #done = false;
  /** The whole response was handed to the client stream. */
  #complete = false;
  #retries: Retries | undefined;
  #mirrors: H2Mirror[] | undefined;
  #attempts = 0;
  /** Numbers each try: a session or failure of an earlier one, arriving late, is not acted on. */
  #try = 0;
  /** Request body the next upstream stream is sent first: read while no try could take it, or kept for a retry. */
  #held: Buffer[] = [];
  #reqEnded = false;
  #draining = false;

  constructor(ctx: EngineContext, hooks: SessionHooks, pool: H2Pool, down: ServerHttp2Stream, h: IncomingHttpHeaders, raw: string[]) {
    this.#ctx = ctx;
    this.#hooks = hooks;
    this.#pool = pool;
    this.#down = down;
    const pairs: string[] = [];
    for (let i = 0; i < raw.length; i += 2) if (!raw[i]!.startsWith(':')) pairs.push(raw[i]!, raw[i + 1]!);
    this.req = new HttpRequestHead(String(h[':method'] ?? ''), String(h[':path'] ?? ''), String(h[':authority'] ?? h.host ?? ''), pairs, 'HTTP/2');
    down.on('error', (err: Error) => this.#ctx.log.debug({ err }, 'downstream HTTP/2 stream failed'));
    down.on('wantTrailers', () => {
      try {
        down.sendTrailers(this.#trailers ?? {});
      } catch {
        down.close();
      }
    });
    down.on('close', () => this.#closed());
  }

  start(): void {
    if (this.req.method === 'CONNECT') return this.#fail(FAILURES.connectMethod);
    route(this.#hooks, this.req, {
      direct: (d) => {
        if (this.#done || this.#down.destroyed) return;
        this.#direct(d);
      },
      upstream: (t) => {
        if (this.#done || this.#down.destroyed) return;
        this.#target = t;
        this.#upstream = t.upstream;
        const ms = t.timeoutMs ?? this.#ctx.o.requestTimeoutMs;
        if (ms > 0) this.#timer = setTimeout(() => this.#fail(FAILURES.timeout), ms);
        this.#retries = Retries.for(t, this.req, this.#ctx.o.retryBufferBytes, this.#ctx.log);
        if (t.mirror && t.mirror.length > 0) this.#startMirrors(t.mirror, ms);
        this.#read();
        this.#dispatch();
      },
      failed: (err) => {
        logRouteFailure(this.#ctx.log, this.req, err);
        this.#fail(FAILURES.routeError);
      },
    });
  }

  #direct(d: DirectResponse): void {
    const p = directParts(d);
    this.#flags = p.flags;
    if (d.respond.upstream) this.#upstream = d.respond.upstream;
    if (d.respond.policy) this.#policy = d.respond.policy;
    this.#local(p.status, p.headers, p.body);
  }

  #startMirrors(targets: readonly UpstreamTarget[], timeoutMs: number): void {
    const r = this.req;
    const authority = r.authority === '' ? '' : shadowHost(r.authority);
    this.#mirrors = targets.map((t) => new H2Mirror(this.#ctx, this.#pool, t, toH2(r.headers, { ':method': r.method, ':path': r.path, ':authority': authority, ':scheme': 'http' }), t.timeoutMs ?? timeoutMs));
  }

  /** Reads the request body from now on, as fast as the current try's upstream stream takes it. */
  #read(): void {
    const down = this.#down;
    // Paused first: a 'data' listener then does not start the flow before a try can take it.
    down.pause();
    down.on('data', (c: Buffer) => this.#body(c));
    down.on('end', () => this.#bodyEnd());
  }

  #body(c: Buffer): void {
    this.#reqBytes += c.length;
    if (this.#mirrors) for (const m of this.#mirrors) m.requestBody(c);
    if (this.#settled) return;
    this.#retries?.body(c);
    const up = this.#up;
    if (!up) {
      this.#held.push(c);
      this.#down.pause();
    } else if (!up.write(c)) this.#backpressure(up);
  }

  #bodyEnd(): void {
    this.#reqEnded = true;
    if (this.#mirrors) for (const m of this.#mirrors) m.requestComplete();
    if (this.#settled) return;
    this.#retries?.end(undefined);
    // A request without a body went up already ended: ending it again builds an error per request.
    const up = this.#up;
    if (up && !up.writableEnded) up.end();
  }

  #backpressure(up: ClientHttp2Stream): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#down.pause();
    up.once('drain', () => {
      if (this.#up !== up) return;
      this.#draining = false;
      if (!this.#settled) this.#down.resume();
    });
  }

  /** A try: its own timeout (the policy's perTryTimeoutMs) and a stream on the key's session. */
  #dispatch(): void {
    const n = ++this.#try;
    this.#attempts++;
    const per = this.#retries?.perTryTimeoutMs ?? 0;
    if (per > 0) this.#tryTimer = setTimeout(() => this.#tryTimedOut(), per);
    const t = this.#target!;
    this.#pool.get(t.upstream, t.open as () => Promise<Stream>, t.maxRequestsPerConnection ?? 0).then(
      (lease) => this.#forward(n, lease),
      (err: { responseFlags?: string }) => {
        if (n !== this.#try || this.#settled || this.#done) return;
        const f = connectFailure(err, false);
        this.#tryFailed(connectOutcome(f), f);
      },
    );
  }

  #forward(n: number, lease: H2Lease): void {
    if (n !== this.#try || this.#settled || this.#done || this.#down.destroyed) return retire(lease, undefined);
    const r = this.req;
    let up: ClientHttp2Stream;
    try {
      up = lease.session.request(toH2(r.headers, { ':method': r.method, ':path': r.path, ':authority': r.authority, ':scheme': 'http' }));
    } catch (err) {
      retire(lease, undefined);
      this.#ctx.log.debug({ err, upstream: this.#upstream }, 'upstream HTTP/2 request could not start');
      return this.#tryFailed('reset', FAILURES.upstreamReset);
    }
    retire(lease, up);
    this.#listen(up);
    this.#up = up;
    this.#forwarded = false;
    this.#draining = false;
    let ok = true;
    for (const c of this.#held.splice(0)) ok = up.write(c);
    if (this.#reqEnded) up.end();
    else if (ok) this.#down.resume();
    else this.#backpressure(up);
  }

  #listen(up: ClientHttp2Stream): void {
    const mine = (): boolean => this.#up === up && this.#forwarded;
    up.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (this.#up === up) this.#response(up, h, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
    });
    up.on('trailers', (t: IncomingHttpHeaders) => {
      if (!mine()) return;
      this.#trailers = t;
      if (t['grpc-status'] !== undefined) this.#grpc = String(t['grpc-status']);
    });
    // No 'data' listener here: it would start the stream flowing before 'response', and over a
    // JS Duplex (an HBONE stream) node:http2 can emit the first DATA chunk before 'response',
    // which would then reach only the counter. #response counts once it pipes.
    up.on('end', () => {
      if (!mine()) return;
      this.#complete = true;
      this.#clearTimers();
    });
    up.on('error', (err: Error) => this.#ctx.log.debug({ err, upstream: this.#upstream }, 'upstream HTTP/2 stream failed'));
    up.on('close', () => {
      if (this.#done || this.#up !== up) return; // done with, or cancelled by us
      // Closed without its END_STREAM having been read through: a reset, not an answer.
      if (up.readableEnded && up.rstCode === NGHTTP2_NO_ERROR) return;
      if (this.#forwarded) this.#fail(FAILURES.upstreamReset);
      else this.#tryFailed('reset', FAILURES.upstreamReset);
    });
  }

  /** `ended`: the head carried END_STREAM (a gRPC trailers-only answer): it goes on as one too. */
  #response(up: ClientHttp2Stream, h: IncomingHttpHeaders, ended: boolean): void {
    if (this.#done || this.#settled) return;
    const status = Number(h[HTTP2_HEADER_STATUS]);
    if (status < 200) return; // informational answers are not passed on over HTTP/2 here
    if (this.#retries?.wantsStatus(status) && this.#mayRetry()) {
      const p = this.#retries.plan('status', this.#target!, status);
      if (p.kind === 'retry') {
        // Never shown to the client: the stream is cancelled, what it still sends dropped.
        this.#cancelUp();
        return this.#retry(p.to);
      }
      if (p.kind === 'exhausted') this.#flags = addFlag(this.#flags, 'URX');
    }
    this.#forwarded = true;
    if (h['grpc-status'] !== undefined) this.#grpc = String(h['grpc-status']);
    const { headers } = responseHook(this.#target, status, fromH2(h), this.#ctx.log);
    try {
      this.#down.respond(toH2(headers, { ':status': status }), ended ? { endStream: true } : { waitForTrailers: true });
    } catch (err) {
      this.#ctx.log.debug({ err }, 'the downstream HTTP/2 stream took no response');
      return this.#fail(FAILURES.upstreamProtocol);
    }
    this.#status = status;
    if (ended) up.resume();
    else {
      up.pipe(this.#down);
      up.on('data', (c: Buffer) => {
        if (this.#up === up && this.#forwarded) this.#resBytes += c.length;
      });
    }
  }

  #mayRetry(): boolean {
    return !this.#forwarded && !this.#settled && !this.#done && !this.#down.headersSent && !this.#down.destroyed;
  }

  /** A try failed with `f` before its response: retried if the policy says so, else answered. */
  #tryFailed(o: TryOutcome | undefined, f: LocalFailure): void {
    this.#cancelUp();
    const p = o !== undefined && this.#retries && this.#mayRetry() ? this.#retries.plan(o, this.#target!) : undefined;
    if (p?.kind === 'retry') return this.#retry(p.to);
    this.#fail(p?.kind === 'exhausted' ? { ...f, flags: addFlag(f.flags, 'URX') } : f);
  }

  /** The next try, after the backoff: the body kept so far goes up again, then the rest as it comes. */
  #retry(to: UpstreamTarget | DirectResponse): void {
    if (this.#tryTimer) clearTimeout(this.#tryTimer);
    this.#tryTimer = undefined;
    this.#try++;
    this.#down.pause();
    const r = this.#retries!;
    this.#held = [...(r.chunks ?? [])];
    this.#backoff = setTimeout(() => {
      this.#backoff = undefined;
      if (this.#done || this.#settled || this.#down.destroyed) return;
      if (isDirect(to)) return this.#direct(to);
      this.#target = to;
      this.#upstream = to.upstream;
      this.#dispatch();
    }, r.delayMs());
  }

  #tryTimedOut(): void {
    this.#tryTimer = undefined;
    if (this.#done || this.#settled) return;
    if (this.#forwarded) this.#fail(FAILURES.timeout);
    else this.#tryFailed('timeout', FAILURES.timeout);
  }

  #cancelUp(): void {
    const up = this.#up;
    this.#up = undefined;
    if (up && !up.destroyed) up.close(NGHTTP2_CANCEL);
  }

  #clearTimers(): void {
    for (const t of [this.#timer, this.#tryTimer, this.#backoff]) if (t) clearTimeout(t);
    this.#timer = this.#tryTimer = this.#backoff = undefined;
  }

  #fail(f: LocalFailure): void {
    if (this.#done || this.#settled) return;
    this.#flags = addFlag(this.#flags, f.flags);
    this.#cancelUp();
    if (this.#down.headersSent || this.#down.destroyed) {
      // Part of the response is out: a reset, so the client cannot take it for the whole.
      this.#settled = true;
      this.#clearTimers();
      if (!this.#down.destroyed) this.#down.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    this.#local(f.status, [], Buffer.from(f.body));
  }

  #local(status: number, headers: string[], body: Buffer): void {
    this.#settled = true;
    this.#clearTimers();
    const down = this.#down;
    if (down.destroyed || down.headersSent) return;
    try {
      down.respond(toH2(headers, { ':status': status, 'content-length': body.length, ...(body.length ? { 'content-type': 'text/plain' } : {}) }));
      down.end(this.req.method === 'HEAD' ? undefined : body);
      this.#complete = true;
      this.#status = status;
      this.#resBytes = body.length;
    } catch (err) {
      this.#ctx.log.error({ err }, 'a local HTTP/2 response could not be sent');
      down.close(NGHTTP2_INTERNAL_ERROR);
    }
    // Nothing of the request body goes upstream any more (shadows still get it, if any).
    down.resume();
  }

  #closed(): void {
    if (this.#done) return;
    this.#done = true;
    this.#clearTimers();
    const down = this.#down;
    // The client's own RST_STREAM may say NO_ERROR: only a response we finished is clean.
    const clean = this.#complete && down.rstCode === NGHTTP2_NO_ERROR;
    if (!clean && this.#flags === '-') this.#flags = 'DC';
    this.#cancelUp();
    // A shadow cannot finish a request whose body will never be whole.
    if (!this.#reqEnded && this.#mirrors) for (const m of this.#mirrors) m.abort();
    this.#record();
  }

  #record(): void {
    endTry(this.#target, tryEndOf(this.#status, this.#flags), this.#ctx.log);
    const o = { status: this.#status, requestBytes: this.#reqBytes, responseBytes: this.#resBytes, responseFlags: this.#flags, upstream: this.#upstream, upgraded: false, attempts: this.#attempts, ...(this.#policy ? { policy: this.#policy } : {}) };
    report(this.#hooks, this.#ctx.log, this.req, this.#t0, this.#grpc === undefined ? o : { ...o, grpcStatus: this.#grpc });
  }
}

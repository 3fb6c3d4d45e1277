// HTTP/2 cleartext (prior knowledge) through the engine, node:http2 on both sides: each stream
// routed by the same hook as HTTP/1.1, sent over a multiplexed upstream session per key, bodies
// piped with HTTP/2 flow control, trailers passed through (gRPC's grpc-status), and failures
// answered with the same statuses and response flags.
import { connect, constants, createServer, type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { EngineContext } from './context.js';
import { addFlag, connectFailure, FAILURES, type LocalFailure } from './flags.js';
import { directParts, logRouteFailure, report, responseHook, route } from './hooks.js';
import { HttpRequestHead, type SessionHooks, type Stream, type UpstreamTarget } from './types.js';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_FLAG_END_STREAM, HTTP2_HEADER_STATUS } = constants;

/** The client connection preface of RFC 9113 §3.4: prior-knowledge HTTP/2 starts with it. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), and Host (it is :authority). */
const NOT_H2 = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);

/** Raw pairs (pseudo-headers left out, forbidden fields dropped) as node:http2 header object fields. */
function toH2(pairs: readonly string[], into: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i]!.toLowerCase();
    const value = pairs[i + 1]!;
    if (name.startsWith(':') || NOT_H2.has(name)) continue;
    if (name === 'te' && value.trim().toLowerCase() !== 'trailers') continue;
    const prev = into[name];
    into[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  }
  return into;
}

function fromH2(h: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(':') || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, String(v));
  }
  return out;
}

/** Multiplexed upstream sessions, one per key, opened over the route's Duplex. */
class H2Pool {
  readonly #sessions = new Map<string, Promise<ClientHttp2Session>>();
  readonly #ctx: EngineContext;

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
  }

  get(key: string, open: () => Promise<Stream>): Promise<ClientHttp2Session> {
    const have = this.#sessions.get(key);
    if (have) return have;
    const ms = this.#ctx.o.connectTimeoutMs;
    const p = new Promise<ClientHttp2Session>((resolve, reject) => {
      const timer = setTimeout(() => reject(Object.assign(new Error(`upstream ${key}: no connection within ${ms} ms`), { code: 'ETIMEDOUT', responseFlags: 'UF' })), ms);
      let opening: Promise<Stream>;
      try {
        opening = open();
      } catch (e) {
        opening = Promise.reject(e);
      }
      opening.then((stream) => {
        clearTimeout(timer);
        const s = connect(`http://${key.replace(/[^A-Za-z0-9.:-]/g, '_') || 'upstream'}`, { createConnection: () => stream });
        const forget = (): void => {
          if (this.#sessions.get(key) === p) this.#sessions.delete(key);
        };
        s.on('error', (err: Error) => this.#ctx.log.debug({ err, upstream: key }, 'upstream HTTP/2 session failed'));
        s.on('close', forget);
        s.on('goaway', forget);
        s.setTimeout(this.#ctx.poolIdleTimeoutMs, () => s.close());
        resolve(s);
      }, (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    p.catch(() => {
      if (this.#sessions.get(key) === p) this.#sessions.delete(key);
    });
    this.#sessions.set(key, p);
    return p;
  }

  close(): void {
    for (const p of this.#sessions.values()) p.then((s) => s.destroy(), () => {});
    this.#sessions.clear();
  }
}

/** One downstream stream and its upstream stream. */
class H2Exchange {
  readonly #ctx: EngineContext;
  readonly #hooks: SessionHooks;
  readonly #down: ServerHttp2Stream;
  readonly #pool: H2Pool;
  readonly req: HttpRequestHead;
  readonly #t0 = performance.now();
  #up: ClientHttp2Stream | undefined;
  #target: UpstreamTarget | undefined;
  #status = 0;
  #flags = '-';
  #upstream = '-';
  #reqBytes = 0;
  #resBytes = 0;
  #grpc: string | undefined;
  #trailers: IncomingHttpHeaders | undefined;
  #timer: NodeJS.Timeout | undefined;
  #done = false;
  /** The whole response was handed to the client stream. */
  #complete = false;

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
        const p = directParts(d);
        this.#flags = p.flags;
        this.#local(p.status, p.headers, p.body);
      },
      upstream: (t) => {
        if (this.#done || this.#down.destroyed) return;
        this.#target = t;
        this.#upstream = t.upstream;
        const ms = t.timeoutMs ?? this.#ctx.o.requestTimeoutMs;
        if (ms > 0) this.#timer = setTimeout(() => this.#fail(FAILURES.timeout), ms);
        this.#pool.get(t.upstream, t.open as () => Promise<Stream>).then(
          (s) => this.#forward(s),
          (err: { responseFlags?: string }) => this.#fail(connectFailure(err, false)),
        );
      },
      failed: (err) => {
        logRouteFailure(this.#ctx.log, this.req, err);
        this.#fail(FAILURES.routeError);
      },
    });
  }

  #forward(s: ClientHttp2Session): void {
    if (this.#done || this.#down.destroyed) return;
    const r = this.req;
    let up: ClientHttp2Stream;
    try {
      up = s.request(toH2(r.headers, { ':method': r.method, ':path': r.path, ':authority': r.authority, ':scheme': 'http' }));
    } catch (err) {
      this.#ctx.log.debug({ err, upstream: this.#upstream }, 'upstream HTTP/2 request could not start');
      return this.#fail(FAILURES.upstreamReset);
    }
    this.#up = up;
    up.on('response', (h: IncomingHttpHeaders, flags: number) => this.#response(up, h, (flags & NGHTTP2_FLAG_END_STREAM) !== 0));
    up.on('trailers', (t: IncomingHttpHeaders) => {
      this.#trailers = t;
      if (t['grpc-status'] !== undefined) this.#grpc = String(t['grpc-status']);
    });
    up.on('data', (c: Buffer) => (this.#resBytes += c.length));
    up.on('end', () => (this.#complete = true));
    up.on('error', (err: Error) => this.#ctx.log.debug({ err, upstream: this.#upstream }, 'upstream HTTP/2 stream failed'));
    up.on('close', () => {
      if (this.#done || this.#up !== up) return; // done with, or cancelled by us
      // Closed without its END_STREAM having been read through: a reset, not an answer.
      if (!up.readableEnded || up.rstCode !== constants.NGHTTP2_NO_ERROR) this.#fail(FAILURES.upstreamReset);
    });
    this.#down.pipe(up);
    // Counted once piped: a 'data' listener of its own would start the flow before the upstream.
    this.#down.on('data', (c: Buffer) => (this.#reqBytes += c.length));
  }

  /** `ended`: the head carried END_STREAM (a gRPC trailers-only answer): it goes on as one too. */
  #response(up: ClientHttp2Stream, h: IncomingHttpHeaders, ended: boolean): void {
    if (this.#done) return;
    const status = Number(h[HTTP2_HEADER_STATUS]);
    if (status < 200) return; // informational answers are not passed on over HTTP/2 here
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
    else up.pipe(this.#down);
  }

  #fail(f: LocalFailure): void {
    if (this.#done) return;
    this.#flags = addFlag(this.#flags, f.flags);
    const up = this.#up;
    this.#up = undefined;
    if (up && !up.destroyed) up.close(NGHTTP2_CANCEL);
    if (this.#down.headersSent || this.#down.destroyed) {
      // Part of the response is out: a reset, so the client cannot take it for the whole.
      if (!this.#down.destroyed) this.#down.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    this.#local(f.status, [], Buffer.from(f.body));
  }

  #local(status: number, headers: string[], body: Buffer): void {
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
    // Nothing of the request body is read any more.
    down.resume();
  }

  #closed(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#timer) clearTimeout(this.#timer);
    const down = this.#down;
    const up = this.#up;
    // The client's own RST_STREAM may say NO_ERROR: only a response we finished is clean.
    const clean = this.#complete && down.rstCode === constants.NGHTTP2_NO_ERROR;
    if (!clean && this.#flags === '-') this.#flags = 'DC';
    if (up && !up.destroyed) up.close(NGHTTP2_CANCEL);
    this.#record();
  }

  #record(): void {
    const o = { status: this.#status, requestBytes: this.#reqBytes, responseBytes: this.#resBytes, responseFlags: this.#flags, upstream: this.#upstream, upgraded: false };
    report(this.#hooks, this.#ctx.log, this.req, this.#t0, this.#grpc === undefined ? o : { ...o, grpcStatus: this.#grpc });
  }
}

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

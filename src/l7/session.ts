// One client connection speaking HTTP/1.1: parses its requests, keeps pipelined ones in order
// (one in flight, the rest held with the client paused), stops reading when an upstream write
// blocks, turns bad bytes into 400/431 and a stalled head into 408, and ends with a lingering
// close so a final response is not lost to a reset.
import type { EngineContext, Sweepable } from './context.js';
import { Exchange } from './exchange.js';
import { FAILURES, type LocalFailure } from './flags.js';
import { inspect } from './head.js';
import { H2_PREFACE } from './h2.js';
import { Http1Parser, isParseFailure, type ParsedHead, type ParseFailure } from './parser.js';
import type { UpstreamConn } from './pool.js';
import type { SessionPort } from './port.js';
import { splice } from './tunnel.js';
import { HttpRequestHead, resetStream, type SessionHooks, type Stream } from './types.js';

const NO_INFO = inspect([]);

export class Http1Session implements SessionPort, Sweepable {
  readonly client: Stream;
  readonly hooks: SessionHooks;
  readonly ctx: EngineContext;
  closing = false;
  readonly #parser: Http1Parser;
  readonly #queue: Exchange[] = [];
  /** The exchange whose request is still being parsed. */
  #parsing: Exchange | undefined;
  /** No request after the one in hand is read (Connection: close, bad bytes, an upgrade). */
  #noMore = false;
  /** The parser is done with this connection. */
  #stopped = false;
  #upgrading = false;
  /** Client bytes after an upgrade request's head: the first of the tunnel. */
  #held: Buffer[] = [];
  #paused = false;
  #pumping = false;
  #dead = false;
  #lingerSince = 0;
  #headStart = 0;
  #lastActive: number;
  readonly #onEnd: () => void;
  /** Takes the connection over when it opens with the HTTP/2 preface; undefined once decided. */
  #h2: ((first: Buffer) => void) | undefined;
  #sniffed: Buffer | undefined;
  readonly #onData = (d: Buffer): void => this.#data(d);
  readonly #onEndEvent = (): void => this.#guard(() => this.#end());
  readonly #onError = (err: Error): void => this.#gone(err);
  readonly #onClose = (): void => this.#gone(undefined);

  constructor(ctx: EngineContext, client: Stream, hooks: SessionHooks, onEnd: () => void, h2?: (first: Buffer) => void) {
    this.ctx = ctx;
    this.client = client;
    this.hooks = hooks;
    this.#onEnd = onEnd;
    this.#h2 = h2;
    this.#lastActive = ctx.now;
    this.#parser = new Http1Parser('request', ctx.o.maxHeaderBytes, {
      head: (h) => this.#head(h),
      body: (b) => this.#parsing?.requestBody(b),
      complete: (t) => {
        const ex = this.#parsing;
        this.#parsing = undefined;
        ex?.requestComplete(t);
      },
    });
    ctx.sessions.add(this);
    client.setNoDelay?.(true);
    client.on('data', this.#onData);
    client.on('end', this.#onEndEvent);
    client.on('error', this.#onError);
    client.on('close', this.#onClose);
    if (client.destroyed) queueMicrotask(() => this.#gone(undefined));
  }

  /** Runs `fn`; a throw is a bug of ours: the connection is reset, the process lives. */
  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.ctx.log.error({ err }, 'L7 session failed; resetting the client connection');
      this.abort();
    }
  }

  /**
   * Prior-knowledge HTTP/2 opens with its 24-byte preface: the first read decides. Bytes that
   * are still a prefix of it wait for more; anything else is HTTP/1.1 from the first byte.
   */
  #sniff(d: Buffer): Buffer | undefined {
    const got = this.#sniffed ? Buffer.concat([this.#sniffed, d]) : d;
    const n = Math.min(got.length, H2_PREFACE.length);
    if (got.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
      if (got.length < H2_PREFACE.length) {
        this.#sniffed = got;
        this.#headStart ||= this.ctx.now || 1; // a preface that stalls is timed like a head
        return undefined;
      }
      const h2 = this.#h2!;
      this.#h2 = undefined;
      this.client.off('data', this.#onData);
      this.client.off('end', this.#onEndEvent);
      this.client.off('error', this.#onError);
      this.client.off('close', this.#onClose);
      this.#dead = true;
      this.ctx.sessions.delete(this);
      this.#parser.close();
      try {
        h2(got);
      } catch (err) {
        this.ctx.log.error({ err }, 'HTTP/2 connection could not start; resetting it');
        this.client.on('error', () => {});
        resetStream(this.client);
        this.#onEnd();
      }
      return undefined;
    }
    this.#h2 = undefined;
    this.#sniffed = undefined;
    return got;
  }

  #data(chunk: Buffer): void {
    let d = chunk;
    if (this.#h2) {
      const rest = this.#sniff(chunk);
      if (!rest) return;
      d = rest;
    }
    this.#lastActive = this.ctx.now;
    if (this.#stopped) {
      if (this.#upgrading) this.#held.push(d);
      return; // a lingering close discards what the client still sends
    }
    // The header timeout runs from the first read that starts (or continues) a head. Not a
    // per-message callback: a head that starts at the end of a read is timed from the next one.
    if (this.#parsing === undefined && this.#headStart === 0) this.#headStart = this.ctx.now || 1;
    const client = this.client;
    client.cork();
    try {
      const r = this.#parser.execute(d);
      if (isParseFailure(r)) this.#parseFailed(r);
      else if ((this.#upgrading || this.#noMore) && this.#parsing === undefined) {
        // The last request is parsed (llhttp stops at an upgrade request's head).
        this.#stopped = true;
        if (this.#upgrading && r < d.length) this.#held.push(d.subarray(r));
      }
      this.#pump();
      this.updateReading();
    } catch (err) {
      this.ctx.log.error({ err }, 'L7 session failed; resetting the client connection');
      this.abort();
    } finally {
      client.uncork();
    }
  }

  #head(h: ParsedHead): number {
    this.#headStart = 0;
    if (this.#noMore) return 2; // stop llhttp here: nothing after the last request is read
    const info = inspect(h.headers);
    const authority = info.host >= 0 ? h.headers[info.host + 1]! : '';
    const req = new HttpRequestHead(h.method, h.url, authority, h.headers, h.versionMinor === 0 ? 'HTTP/1.0' : 'HTTP/1.1');
    let bad: LocalFailure | undefined;
    // RFC 9112 §3.2: a 1.1 request without exactly one Host is answered 400.
    if (info.host === -2 || (info.host === -1 && h.versionMinor === 1)) bad = FAILURES.badRequest;
    else if (h.method === 'CONNECT') bad = FAILURES.connectMethod;
    const ex = new Exchange(this, req, info, h, bad);
    this.#queue.push(ex);
    this.#parsing = ex;
    if (!h.keepAlive || bad) this.#noMore = true;
    if (h.upgrade && !bad) {
      this.#upgrading = true;
      this.#noMore = true;
    }
    return 0;
  }

  #parseFailed(err: ParseFailure): void {
    const wasLast = this.#noMore && this.#parsing === undefined;
    this.#stopped = true;
    this.#noMore = true;
    if (wasLast) return; // bytes after the last request: never read as a request
    const f = err.code === 'HPE_HEADER_OVERFLOW' ? FAILURES.headerTooLarge : FAILURES.badRequest;
    this.ctx.log.debug({ code: err.code, reason: err.reason }, 'malformed HTTP request');
    this.#refuse(f);
  }

  /** Answers `f` to the request being parsed (or to a head that never completed), then closes. */
  #refuse(f: LocalFailure): void {
    const ex = this.#parsing;
    this.#parsing = undefined;
    if (ex) ex.requestFailed(f);
    else {
      const req = new HttpRequestHead('-', '-', '-', [], 'HTTP/1.1');
      this.#queue.push(new Exchange(this, req, NO_INFO, { versionMinor: 1, keepAlive: false, upgrade: false }, f));
    }
  }

  /** Starts the exchange at the head of the queue; a loop, so long pipelines do not recurse. */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      for (let ex = this.#queue[0]; ex && !ex.started && !this.#dead; ex = this.#queue[0]) ex.start();
    } finally {
      this.#pumping = false;
    }
  }

  updateReading(): void {
    if (this.#dead) return;
    let hold: boolean;
    if (this.#lingerSince) hold = false;
    else if (this.#stopped) hold = !this.#upgrading || this.#queue.length > 0;
    else hold = this.#queue.length > 1 || (this.#parsing !== undefined && !this.#parsing.canWrite());
    if (hold === this.#paused) return;
    this.#paused = hold;
    if (hold) this.client.pause();
    else this.client.resume();
  }

  done(ex: Exchange): void {
    const i = this.#queue.indexOf(ex);
    if (i >= 0) this.#queue.splice(i, 1);
    if (this.#dead) return;
    if (ex.closeAfter || (this.closing && this.#queue.length === 0) || (this.#stopped && !this.#upgrading && this.#queue.length === 0)) {
      this.#close();
      return;
    }
    this.#pump();
    this.updateReading();
  }

  #end(): void {
    // The client's FIN: a request cut short is the client's doing (DC); others are answered.
    const r = this.#stopped ? undefined : this.#parser.finish();
    this.closing = true;
    if (r && this.#parsing) {
      const ex = this.#parsing;
      this.#parsing = undefined;
      ex.clientGone();
    }
    this.#stopped = true;
    if (this.#queue.length === 0) this.#close();
  }

  /** Ends the client connection after what was written, and discards what it still sends. */
  #close(): void {
    if (this.#dead || this.#lingerSince) return;
    this.#stopped = true;
    this.#upgrading = false;
    this.#lingerSince = this.ctx.now || 1;
    this.updateReading();
    this.client.end();
  }

  tunnel(ex: Exchange, conn: UpstreamConn, rest: Buffer): void {
    this.client.off('data', this.#onData);
    this.#stopped = true;
    this.#upgrading = false;
    const up = conn.stream;
    if (rest.length > 0) this.client.write(rest);
    for (const b of this.#held.splice(0)) up.write(b);
    splice(this.client, up, (r) => {
      ex.tunnelDone(r.sent, r.received, r.broken);
    });
    this.#paused = false;
    this.client.resume();
  }

  abort(): void {
    if (this.#dead) return;
    resetStream(this.client);
    this.#gone(undefined);
  }

  #gone(_err: Error | undefined): void {
    if (this.#dead) return;
    this.#dead = true;
    this.ctx.sessions.delete(this);
    this.#parser.close();
    for (const ex of [...this.#queue]) ex.clientGone();
    if (!this.client.destroyed) this.client.destroy();
    this.#onEnd();
  }

  sweep(now: number): void {
    if (this.#dead) return;
    if (this.#lingerSince) {
      if (now - this.#lingerSince >= this.ctx.o.lingerMs) this.abort();
      return;
    }
    if (this.#headStart && !this.#stopped && now - this.#headStart >= this.ctx.o.headerTimeoutMs) {
      this.#headStart = 0;
      this.#stopped = true;
      this.#noMore = true;
      this.#guard(() => {
        this.#refuse(FAILURES.headerTimeout);
        this.#pump();
      });
      return;
    }
    if (this.#queue.length === 0 && !this.#headStart && now - this.#lastActive >= this.ctx.o.idleTimeoutMs) this.#close();
  }
}

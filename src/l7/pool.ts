// Upstream HTTP/1.1 connection pools, one per upstream key: keep-alive connections over the
// Duplexes a route's open() returns (plain TCP or HBONE streams alike), with per-key limits,
// a wait queue, idle timeouts and the upstream's own Keep-Alive hint (as undici reads it).
import type { Writable } from 'node:stream';
import { Http1Parser, isParseFailure, type ParsedHead, type ParseFailure } from './parser.js';
import { resetStream, type PoolLimits, type Stream } from './types.js';

/** Where a connection's response goes: the exchange using it. */
export interface ResponseSink {
  head(h: ParsedHead): number;
  body(chunk: Buffer): void;
  complete(trailers: string[] | undefined): void;
  /** The response head was a 101: the rest of `chunk` is already tunnel payload. */
  upgraded(rest: Buffer): void;
  /** The connection failed before the response completed: reset or closed, or bytes llhttp refused. */
  failed(kind: 'reset' | 'protocol', err?: Error): void;
}

/** An error that carries the Envoy-style flags and status it should be answered with. */
export type FlaggedError = Error & { responseFlags?: string; code?: string };

/** One upstream connection and the parser of its responses. */
export class UpstreamConn {
  readonly stream: Stream;
  readonly key: string;
  /** Exchanges this connection served before the current one (0: fresh). */
  served = 0;
  /** The last response allowed another request on this connection. */
  keepAlive = true;
  /** When an idle connection is closed (ms since the epoch). */
  idleDeadline = 0;
  /** The upstream's Keep-Alive timeout hint, ms. */
  hintMs: number | undefined;
  sink: ResponseSink | undefined;
  /** Corked around each parse so a response head and its body leave in one write. */
  peer: Writable | undefined;
  dead = false;
  readonly #parser: Http1Parser;
  readonly #pool: UpstreamPool;
  #upgrade = false;
  #detached = false;
  readonly #onData = (d: Buffer): void => this.#data(d);

  constructor(stream: Stream, key: string, pool: UpstreamPool, maxHeaderBytes: number) {
    this.stream = stream;
    this.key = key;
    this.#pool = pool;
    this.#parser = new Http1Parser('response', maxHeaderBytes, {
      head: (h) => {
        if (!this.sink) {
          // A second response in the bytes of the first, or one nobody asked for.
          this.#kill();
          return 1;
        }
        const r = this.sink.head(h);
        if (r === 2) this.#upgrade = true;
        return r;
      },
      body: (b) => this.sink?.body(b),
      complete: (t) => this.sink?.complete(t),
    });
    stream.setNoDelay?.(true);
    stream.on('data', this.#onData);
    stream.on('end', () => this.#end());
    stream.on('error', (err: Error) => this.#gone(err));
    stream.on('close', () => this.#gone(undefined));
  }

  #data(d: Buffer): void {
    if (this.#detached) return;
    const sink = this.sink;
    if (!sink) {
      // Bytes on an idle connection: a response nobody asked for. Never hand it to a request.
      this.#kill();
      return;
    }
    const peer = this.peer;
    peer?.cork();
    try {
      const r = this.#parser.execute(d);
      if (isParseFailure(r)) {
        this.#kill();
        sink.failed('protocol', r);
      } else if (this.#upgrade) {
        this.detach();
        sink.upgraded(d.subarray(r));
      }
    } finally {
      peer?.uncork();
    }
  }

  #end(): void {
    if (this.#detached) return;
    // A close-delimited body ends here; a response cut short fails.
    const r: ParseFailure | undefined = this.sink ? this.#parser.finish() : undefined;
    this.#gone(r);
  }

  #gone(err: Error | undefined): void {
    if (this.#detached) return;
    this.dead = true;
    this.#pool.died(this);
    const sink = this.sink;
    this.sink = undefined;
    if (sink) sink.failed(err && (err as ParseFailure).code?.startsWith('HPE_') ? 'protocol' : 'reset', err);
    if (!this.stream.destroyed) this.stream.destroy();
  }

  #kill(): void {
    this.keepAlive = false;
    this.dead = true;
    this.sink = undefined;
    resetStream(this.stream);
  }

  /** The connection leaves the pool for good (a tunnel took it); its listeners go with it. */
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.stream.off('data', this.#onData);
    this.sink = undefined;
    this.#parser.close();
    this.#pool.died(this);
  }

  destroy(): void {
    this.sink = undefined;
    this.dead = true;
    this.stream.destroy();
  }
}

interface Waiter {
  resolve(c: UpstreamConn): void;
  reject(e: FlaggedError): void;
  open: () => Promise<Stream>;
}

class KeyPool {
  readonly idle: UpstreamConn[] = [];
  readonly waiters: Waiter[] = [];
  /** Connections in use or idle, and those being opened. */
  total = 0;
}

function flagged(message: string, responseFlags: string, code: string): FlaggedError {
  return Object.assign(new Error(message), { responseFlags, code });
}

export interface ResolvedLimits {
  maxConnections: number;
  maxPending: number;
  maxIdle: number;
  idleTimeoutMs: number;
  /** 0: no limit. */
  maxRequestsPerConnection: number;
}

export function resolveLimits(l: PoolLimits = {}): ResolvedLimits {
  const pick = (v: number | undefined, d: number, what: string, min = 1): number => {
    const x = v ?? d;
    if (!Number.isInteger(x) || x < min) throw new RangeError(`pool.${what} must be an integer >= ${min}, got ${v}`);
    return x;
  };
  return {
    maxConnections: pick(l.maxConnections, 1024, 'maxConnections'),
    maxPending: pick(l.maxPending, 1024, 'maxPending', 0),
    maxIdle: pick(l.maxIdle, 128, 'maxIdle', 0),
    idleTimeoutMs: pick(l.idleTimeoutMs, 30_000, 'idleTimeoutMs'),
    maxRequestsPerConnection: pick(l.maxRequestsPerConnection, 0, 'maxRequestsPerConnection', 0),
  };
}

/** Every upstream key's connections. */
export class UpstreamPool {
  readonly #keys = new Map<string, KeyPool>();
  readonly #limits: ResolvedLimits;
  readonly #maxHeaderBytes: number;
  readonly #connectTimeoutMs: number;
  #closed = false;

  constructor(limits: ResolvedLimits, maxHeaderBytes: number, connectTimeoutMs: number) {
    this.#limits = limits;
    this.#maxHeaderBytes = maxHeaderBytes;
    this.#connectTimeoutMs = connectTimeoutMs;
  }

  #pool(key: string): KeyPool {
    let p = this.#keys.get(key);
    if (!p) {
      p = new KeyPool();
      this.#keys.set(key, p);
    }
    return p;
  }

  /**
   * A connection for `key`: an idle one at once (most recently used first, the warmest), or a
   * new one, or a place in the queue. `fresh` skips idle connections (the retry of a request
   * a stale keep-alive connection dropped).
   */
  acquire(key: string, open: () => Promise<Stream>, fresh = false, own?: { maxConnections?: number; maxPending?: number }): UpstreamConn | Promise<UpstreamConn> {
    if (this.#closed) return Promise.reject(flagged('the L7 engine is closed', 'LR', 'ECANCELED'));
    const p = this.#pool(key);
    if (!fresh) {
      while (p.idle.length > 0) {
        const c = p.idle.pop()!;
        if (!c.dead) {
          c.served++;
          return c;
        }
      }
    }
    // A route's own limits (DestinationRule connectionPool) only ever lower the engine's.
    const maxConnections = Math.min(own?.maxConnections || Infinity, this.#limits.maxConnections);
    const maxPending = own?.maxPending !== undefined && own.maxPending >= 0 ? Math.min(own.maxPending, this.#limits.maxPending) : this.#limits.maxPending;
    if (p.total < maxConnections) return this.#open(key, p, open);
    if (p.waiters.length >= maxPending) {
      return Promise.reject(flagged(`upstream ${key}: ${p.total} connections and ${p.waiters.length} waiting requests, the pool's limits`, 'UO', 'EOVERFLOW'));
    }
    return new Promise((resolve, reject) => p.waiters.push({ resolve, reject, open }));
  }

  #open(key: string, p: KeyPool, open: () => Promise<Stream>): Promise<UpstreamConn> {
    p.total++;
    return new Promise<UpstreamConn>((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        this.#lost(key, p);
        reject(flagged(`upstream ${key}: no connection within ${this.#connectTimeoutMs} ms`, 'UF', 'ETIMEDOUT'));
      }, this.#connectTimeoutMs);
      let opening: Promise<Stream>;
      try {
        opening = open();
      } catch (e) {
        opening = Promise.reject(e);
      }
      opening.then(
        (stream) => {
          clearTimeout(timer);
          if (done || this.#closed) {
            stream.on('error', () => {});
            stream.destroy();
            if (!done) {
              this.#lost(key, p);
              reject(flagged('the L7 engine is closed', 'LR', 'ECANCELED'));
            }
            return;
          }
          resolve(new UpstreamConn(stream, key, this, this.#maxHeaderBytes));
        },
        (err: FlaggedError) => {
          clearTimeout(timer);
          if (done) return;
          this.#lost(key, p);
          reject(err instanceof Error ? err : flagged(String(err), 'UF', 'EIO'));
        },
      );
    });
  }

  /** A connection slot was freed: let the first waiter open one. */
  #lost(key: string, p: KeyPool): void {
    p.total--;
    const w = p.waiters.shift();
    if (w) this.#open(key, p, w.open).then(w.resolve, w.reject);
    else if (p.total === 0 && p.idle.length === 0) this.#keys.delete(key);
  }

  /** The requests a connection serves at most by default (0: no limit). */
  get maxRequestsPerConnection(): number {
    return this.#limits.maxRequestsPerConnection;
  }

  /**
   * Returns a connection after its exchange: to a waiter, to the idle list, or closed (also once
   * it served `maxRequests`, the route's limit, else the pool's; 0: none).
   */
  release(c: UpstreamConn, maxRequests = 0): void {
    const p = this.#keys.get(c.key);
    const max = maxRequests > 0 ? maxRequests : this.#limits.maxRequestsPerConnection;
    if (!p || c.dead || !c.keepAlive || this.#closed || (max > 0 && c.served + 1 >= max)) {
      this.discard(c);
      return;
    }
    const w = p.waiters.shift();
    if (w) {
      c.served++;
      w.resolve(c);
      return;
    }
    if (p.idle.length >= this.#limits.maxIdle) {
      this.discard(c);
      return;
    }
    // Undici's rule: trust the upstream's Keep-Alive timeout, less a second for the race.
    const ms = c.hintMs !== undefined ? Math.min(this.#limits.idleTimeoutMs, Math.max(c.hintMs - 1000, 0)) : this.#limits.idleTimeoutMs;
    c.idleDeadline = Date.now() + ms;
    p.idle.push(c);
  }

  /** Closes a connection that must not be reused (its exchange failed, or it said close). */
  discard(c: UpstreamConn): void {
    if (!c.dead) c.destroy();
    this.died(c);
  }

  /** A connection is gone (closed by either side, or detached into a tunnel): forget it once. */
  died(c: UpstreamConn): void {
    const marked = c as UpstreamConn & { [kCounted]?: true };
    if (marked[kCounted]) return;
    marked[kCounted] = true;
    const p = this.#keys.get(c.key);
    if (!p) return;
    const i = p.idle.indexOf(c);
    if (i >= 0) p.idle.splice(i, 1);
    this.#lost(c.key, p);
  }

  /** Closes idle connections past their deadline. */
  sweep(now: number): void {
    for (const p of this.#keys.values()) {
      for (const c of [...p.idle]) if (c.idleDeadline <= now) this.discard(c);
    }
  }

  stats(): { upstream: string; connections: number; idle: number; waiting: number }[] {
    return [...this.#keys].map(([upstream, p]) => ({ upstream, connections: p.total, idle: p.idle.length, waiting: p.waiters.length }));
  }

  close(): void {
    this.#closed = true;
    for (const p of this.#keys.values()) {
      for (const w of p.waiters.splice(0)) w.reject(flagged('the L7 engine is closed', 'LR', 'ECANCELED'));
      for (const c of p.idle.splice(0)) resetStream(c.stream);
    }
  }
}

const kCounted = Symbol('counted');

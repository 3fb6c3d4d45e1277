// Upstream HTTP/2 sessions, one multiplexed session per key over the Duplex a route's open()
// returns; a session that reached its request limit takes no new stream and closes once its
// streams are done, the next request opening a fresh one.
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { EngineContext } from './context.js';
import type { Stream } from './types.js';

/** A session for one request; `last`: it reached its limit with it (see `retire`). */
export interface H2Lease {
  session: ClientHttp2Session;
  last: boolean;
}

/**
 * Closes a session that reached its limit once the stream it was leased for is done (`up`;
 * undefined: none was started). Not at once: a stream not yet given its id would be cancelled.
 */
export function retire(lease: H2Lease, up: ClientHttp2Stream | undefined): void {
  if (!lease.last) return;
  if (!up || up.destroyed) lease.session.close();
  else up.once('close', () => lease.session.close());
}

interface Entry {
  p: Promise<ClientHttp2Session>;
  /** Requests given this session so far. */
  used: number;
}

export class H2Pool {
  readonly #sessions = new Map<string, Entry>();
  /** Sessions past their limit, finishing their streams: closed with the engine. */
  readonly #retiring = new Set<Promise<ClientHttp2Session>>();
  readonly #ctx: EngineContext;

  constructor(ctx: EngineContext) {
    this.#ctx = ctx;
  }

  /** `maxRequests`: the route's limit per session, else the pool's (0: none). */
  get(key: string, open: () => Promise<Stream>, maxRequests = 0): Promise<H2Lease> {
    let e = this.#sessions.get(key);
    if (!e) {
      e = { p: this.#connect(key, open), used: 0 };
      this.#sessions.set(key, e);
    }
    e.used++;
    const max = maxRequests > 0 ? maxRequests : this.#ctx.pool.maxRequestsPerConnection;
    const last = max > 0 && e.used >= max;
    // The next request for the key opens a new session; this one finishes what it has.
    if (last) {
      this.#sessions.delete(key);
      const p = e.p;
      this.#retiring.add(p);
      p.then((s) => s.once('close', () => this.#retiring.delete(p)), () => this.#retiring.delete(p));
    }
    return e.p.then((session) => ({ session, last }));
  }

  #connect(key: string, open: () => Promise<Stream>): Promise<ClientHttp2Session> {
    const ms = this.#ctx.o.connectTimeoutMs;
    let entry: Promise<ClientHttp2Session> | undefined;
    const forget = (): void => {
      if (entry && this.#sessions.get(key)?.p === entry) this.#sessions.delete(key);
    };
    entry = new Promise<ClientHttp2Session>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        reject(Object.assign(new Error(`upstream ${key}: no connection within ${ms} ms`), { code: 'ETIMEDOUT', responseFlags: 'UF' }));
      }, ms);
      let opening: Promise<Stream>;
      try {
        opening = open();
      } catch (e) {
        opening = Promise.reject(e);
      }
      opening.then(
        (stream) => {
          clearTimeout(timer);
          if (late) {
            stream.on('error', () => {});
            stream.destroy();
            return;
          }
          // The authority is never used (every request sets its own :authority), and a pool key
          // is no host name: 'upstream' stands in for it.
          let s: ClientHttp2Session;
          try {
            s = connect('http://upstream', { createConnection: () => stream });
          } catch (err) {
            stream.on('error', () => {});
            stream.destroy();
            reject(Object.assign(err as Error, { responseFlags: 'UF' }));
            return;
          }
          s.on('error', (err: Error) => this.#ctx.log.debug({ err, upstream: key }, 'upstream HTTP/2 session failed'));
          s.on('close', forget);
          s.on('goaway', forget);
          s.setTimeout(this.#ctx.poolIdleTimeoutMs, () => s.close());
          resolve(s);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
    entry.catch(forget);
    return entry;
  }

  close(): void {
    for (const p of [...[...this.#sessions.values()].map((e) => e.p), ...this.#retiring]) p.then((s) => s.destroy(), () => {});
    this.#sessions.clear();
    this.#retiring.clear();
  }
}

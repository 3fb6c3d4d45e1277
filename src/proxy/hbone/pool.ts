// The outbound side of HBONE: a pool of mutual-TLS HTTP/2 sessions per (source identity,
// destination identity, destination address), each carrying many CONNECT tunnels: capacity,
// idle close, draining on rotation or GOAWAY, and one retry of a stream the server refused.
import type { ClientHttp2Session } from 'node:http2';
import { Socket } from 'node:net';
import { HboneError } from '../../errors.js';
import { log as rootLog, type Logger } from '../../log.js';
import type { SocketAddress } from '../types.js';
import { connectFd } from '../upstream.js';
import { dialSession, openStream, type ConnectSocket, type HboneConnectRequest, type HboneSource, type StreamOutcome } from './connect.js';
import { formatAuthority } from './headers.js';
import type { HboneStream } from './stream.js';
import { ContextCache } from './tls.js';
import { resolveTuning, type HboneTuning } from './tuning.js';

export interface HbonePoolOptions {
  /** New sessions are opened once a session carries this many streams (default 100). */
  maxStreamsPerSession?: number;
  /** A session without streams for this long is closed (default 60 s). */
  idleTimeoutMs?: number;
  /** Bounds TCP connect + TLS + the server's SETTINGS, and separately the wait for the CONNECT answer (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * Makes the TCP connection to `addr` (e.g. from inside the source pod's netns). Default: a
   * plain socket in this process's namespace.
   */
  connectSocket?: ConnectSocket;
  tuning?: Partial<HboneTuning>;
  log?: Logger;
}

export interface HboneSessionInfo {
  key: string;
  source: string;
  destIdentity: string;
  destAddr: string;
  state: 'connecting' | 'ready' | 'draining';
  /** Streams open or being opened on the session. */
  streams: number;
  maxStreams: number;
  /** Time since the last stream closed; 0 while streams are open. */
  idleMs: number;
  ageMs: number;
}

type State = 'connecting' | 'ready' | 'draining' | 'closed';

/** One HTTP/2 session of the pool. */
class PooledSession {
  state: State = 'connecting';
  h2: ClientHttp2Session | undefined;
  ready!: Promise<ClientHttp2Session>;
  streams = 0;
  idleSince = Date.now();
  idleTimer: NodeJS.Timeout | undefined;
  readonly createdAt = Date.now();
  /** Destroys whatever the handshake has made so far. */
  abort: ((err: Error) => void) | undefined;

  constructor(
    readonly key: string,
    readonly source: string,
    readonly certChainPem: string,
    readonly destIdentity: string,
    readonly destAddr: SocketAddress,
    readonly maxStreams: number,
  ) {}

  capacity(): number {
    const remote = this.h2?.remoteSettings.maxConcurrentStreams;
    return remote === undefined ? this.maxStreams : Math.min(this.maxStreams, remote);
  }
}

export class HbonePool {
  readonly #log: Logger;
  readonly #tuning: HboneTuning;
  readonly #maxStreams: number;
  readonly #idleMs: number;
  readonly #timeoutMs: number;
  readonly #connectSocket: ConnectSocket;
  readonly #contexts = new ContextCache();
  readonly #pools = new Map<string, PooledSession[]>();
  #closed = false;

  constructor(o: HbonePoolOptions = {}) {
    this.#log = (o.log ?? rootLog).child({ component: 'hbone-outbound' });
    this.#tuning = resolveTuning(o.tuning);
    this.#maxStreams = o.maxStreamsPerSession ?? 100;
    this.#idleMs = o.idleTimeoutMs ?? 60_000;
    this.#timeoutMs = o.connectTimeoutMs ?? 10_000;
    if (!Number.isInteger(this.#maxStreams) || this.#maxStreams < 1) throw new RangeError(`maxStreamsPerSession must be a positive integer, got ${o.maxStreamsPerSession}`);
    if (!(this.#idleMs >= 0)) throw new RangeError(`idleTimeoutMs must be >= 0, got ${o.idleTimeoutMs}`);
    if (!(this.#timeoutMs > 0)) throw new RangeError(`connectTimeoutMs must be > 0, got ${o.connectTimeoutMs}`);
    this.#connectSocket = o.connectSocket ?? ((addr) => connectFd(new Socket(), addr, this.#timeoutMs));
  }

  /**
   * Opens a tunnel to `target` through the destination's HBONE port, reusing a pooled session
   * when one has room. Resolves once the server answered 200. Rejects with NM_ERR_HBONE_STATUS
   * (`status` 400/401/503, `policy` on 401), NM_ERR_HBONE_IDENTITY, NM_ERR_HBONE_TLS,
   * NM_ERR_HBONE_CONNECT, NM_ERR_HBONE_RESET or NM_ERR_TIMEOUT.
   */
  async connect(p: HboneConnectRequest): Promise<HboneStream> {
    const first = await this.#connectOnce(p);
    if ('stream' in first) return first.stream;
    // REFUSED_STREAM (or a GOAWAY that excluded the stream) means the server did not process
    // it, so it is safe to try once more on another session (RFC 9113 §8.7).
    this.#log.debug({ err: first.refused, dest: formatAuthority(p.destAddr) }, 'HBONE stream refused; retrying on a new session');
    const second = await this.#connectOnce(p, true);
    if ('stream' in second) return second.stream;
    throw second.refused;
  }

  stats(): { sessions: HboneSessionInfo[]; tlsContexts: number } {
    const now = Date.now();
    const sessions: HboneSessionInfo[] = [];
    for (const list of this.#pools.values()) {
      for (const s of list) {
        if (s.state === 'closed') continue;
        sessions.push({
          key: s.key,
          source: s.source,
          destIdentity: s.destIdentity,
          destAddr: formatAuthority(s.destAddr),
          state: s.state,
          streams: s.streams,
          maxStreams: s.capacity(),
          idleMs: s.streams > 0 ? 0 : now - s.idleSince,
          ageMs: now - s.createdAt,
        });
      }
    }
    return { sessions, tlsContexts: this.#contexts.size };
  }

  /** Closes every session now; open tunnels are reset. Further connect() calls fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const waits: Promise<void>[] = [];
    // Over copies: aborting a session still connecting forgets it (splices it out of its list)
    // at once, which would skip the next session of the same key and leak it.
    for (const list of [...this.#pools.values()]) {
      for (const s of [...list]) {
        clearTimeout(s.idleTimer);
        s.abort?.(new HboneError('NM_ERR_HBONE_CLOSED', 'the HBONE pool was closed'));
        const h2 = s.h2;
        if (h2 && !h2.destroyed) {
          waits.push(new Promise((r) => h2.once('close', () => r())));
          h2.destroy();
        }
        s.state = 'closed';
      }
    }
    this.#pools.clear();
    this.#contexts.clear();
    await Promise.all(waits);
  }

  async #connectOnce(p: HboneConnectRequest, fresh = false): Promise<StreamOutcome> {
    if (this.#closed) throw new HboneError('NM_ERR_HBONE_CLOSED', 'this HBONE pool was closed; create a new one');
    const s = this.#acquire(p, fresh);
    let h2: ClientHttp2Session;
    try {
      h2 = await s.ready;
    } catch (e) {
      this.#release(s);
      throw e;
    }
    return openStream(h2, p, this.#timeoutMs, {
      unusable: () => this.#drain(s),
      closed: () => this.#release(s),
    });
  }

  /** Picks a session with room for one more stream, or starts a new one; reserves the slot. */
  #acquire(p: HboneConnectRequest, fresh: boolean): PooledSession {
    const src = p.source;
    const key = `${src.identity}${src.ip ? `@${src.ip}` : ''}|${p.destIdentity}|${formatAuthority(p.destAddr)}`;
    let list = this.#pools.get(key);
    if (!list) {
      list = [];
      this.#pools.set(key, list);
    }
    let pick: PooledSession | undefined;
    if (!fresh) {
      for (const s of list) {
        if (s.state !== 'connecting' && s.state !== 'ready') continue;
        if (s.certChainPem !== src.certChainPem) {
          // The source certificate rotated: this session keeps its tunnels but takes no new ones.
          this.#drain(s);
          continue;
        }
        if (s.streams < s.capacity()) {
          pick = s;
          break;
        }
      }
    }
    if (!pick) {
      pick = new PooledSession(key, src.identity, src.certChainPem, p.destIdentity, p.destAddr, this.#maxStreams);
      list.push(pick);
      pick.ready = this.#dial(pick, src);
      // A failed handshake is reported to every waiter through `ready`; never unhandled.
      pick.ready.catch(() => {});
    }
    pick.streams++;
    clearTimeout(pick.idleTimer);
    pick.idleTimer = undefined;
    return pick;
  }

  #release(s: PooledSession): void {
    s.streams--;
    if (s.streams > 0) return;
    s.idleSince = Date.now();
    if (s.state === 'draining') {
      this.#closeSession(s);
    } else if (s.state === 'ready') {
      clearTimeout(s.idleTimer);
      s.idleTimer = setTimeout(() => {
        s.idleTimer = undefined;
        if (s.streams === 0 && s.state === 'ready') {
          this.#log.debug({ key: s.key }, 'HBONE session idle; closing');
          this.#closeSession(s);
        }
      }, this.#idleMs);
      s.idleTimer.unref();
    }
  }

  /** No new streams; closes once the open ones finish. */
  #drain(s: PooledSession): void {
    if (s.state === 'closed' || s.state === 'draining') return;
    s.state = 'draining';
    if (s.streams === 0 && s.h2) this.#closeSession(s);
  }

  /** Sends GOAWAY and forgets the session; its open streams (if any) finish first. */
  #closeSession(s: PooledSession): void {
    this.#forget(s);
    s.state = 'closed';
    if (s.h2 && !s.h2.closed && !s.h2.destroyed) s.h2.close();
  }

  #forget(s: PooledSession): void {
    clearTimeout(s.idleTimer);
    s.idleTimer = undefined;
    const list = this.#pools.get(s.key);
    if (!list) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length > 0) return;
    this.#pools.delete(s.key);
    // A source identity's TLS context (its key) lives as long as a session of it: nothing is
    // kept for an identity whose pods left the node or that stopped talking.
    if (![...this.#pools.values()].some((l) => l.some((x) => x.source === s.source))) this.#contexts.delete(s.source);
  }

  /** Dials the session's HTTP/2 connection and keeps the pool's view of it current. */
  #dial(s: PooledSession, source: HboneSource): Promise<ClientHttp2Session> {
    const settings = { tuning: this.#tuning, maxStreams: this.#maxStreams, timeoutMs: this.#timeoutMs, contexts: this.#contexts, connectSocket: this.#connectSocket, log: this.#log };
    const dialing = dialSession({ key: s.key, source, destIdentity: s.destIdentity, destAddr: s.destAddr }, settings, {
      created: (h2) => (s.h2 = h2),
      ready: () => {
        s.abort = undefined;
        if (s.state === 'connecting') s.state = 'ready';
      },
      goaway: () => this.#drain(s),
      closed: () => {
        s.abort = undefined;
        this.#forget(s);
        s.state = 'closed';
      },
    });
    s.abort = dialing.abort;
    return dialing.ready;
  }
}

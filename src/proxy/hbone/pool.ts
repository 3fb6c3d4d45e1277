// The outbound side of HBONE: a pool of mutual-TLS HTTP/2 sessions per (source identity,
// destination identity, destination address), each carrying many CONNECT tunnels.
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { HboneError, HboneResetError, HboneStatusError, isNodemeshError, TimeoutError } from '../../errors.js';
import { log as rootLog, type Logger } from '../../log.js';
import type { SocketAddress } from '../types.js';
import { connectFd } from '../upstream.js';
import { h2CodeName } from './errors.js';
import { DENY_POLICY_HEADER, formatAuthority, formatForwarded, isValidTraceparent, newTraceparent } from './headers.js';
import { verifyServerIdentity } from './identity.js';
import { HboneStream } from './stream.js';
import { ALPN_H2, ContextCache, type HboneCredentials } from './tls.js';
import { applyConnectionWindow, localSettings, resolveTuning, type HboneTuning } from './tuning.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = constants;

const CHAIN_ERRORS = /^(UNABLE_TO_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED|CERT_|INVALID_CA|PATH_LENGTH_EXCEEDED)/;

/** The workload a tunnel is opened for: its identity and current certificate. */
export interface HboneSource extends HboneCredentials {
  /** spiffe://<td>/ns/<ns>/sa/<sa>; must be the certificate's URI SAN. */
  identity: string;
  /**
   * The source pod's IP, when the pool's sockets are made inside that pod's netns. It joins the
   * pool key, so two pods of one service account never share a session (and a source IP).
   */
  ip?: string;
}

export interface HboneConnectRequest {
  source: HboneSource;
  /** The SPIFFE ID the server must present (its URI SAN must equal it). */
  destIdentity: string;
  /** The destination's HBONE address (pod IP, port 15008). */
  destAddr: SocketAddress;
  /** The address the app dialed, sent as `:authority`. */
  target: SocketAddress;
  /** The app's IP, sent as `forwarded: for="<ip>"`. */
  forwardedFor: string;
  /** Propagated as is when valid; a new one is generated otherwise. */
  traceparent?: string;
}

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
  connectSocket?: (addr: SocketAddress, source: { identity: string; ip?: string }) => Promise<Socket>;
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

/** Raised inside the pool when a stream was refused before the server processed it. */
class Retryable extends Error {
  constructor(readonly original: Error) {
    super(original.message);
  }
}

export class HbonePool {
  readonly #log: Logger;
  readonly #tuning: HboneTuning;
  readonly #maxStreams: number;
  readonly #idleMs: number;
  readonly #timeoutMs: number;
  readonly #connectSocket: (addr: SocketAddress, source: { identity: string; ip?: string }) => Promise<Socket>;
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
    try {
      return await this.#connectOnce(p);
    } catch (e) {
      // REFUSED_STREAM (or a GOAWAY that excluded the stream) means the server did not process
      // it, so it is safe to try once more on another session (RFC 9113 §8.7).
      if (!(e instanceof Retryable)) throw e;
      this.#log.debug({ err: e.original, dest: formatAuthority(p.destAddr) }, 'HBONE stream refused; retrying on a new session');
      try {
        return await this.#connectOnce(p, true);
      } catch (e2) {
        throw e2 instanceof Retryable ? e2.original : e2;
      }
    }
  }

  stats(): { sessions: HboneSessionInfo[] } {
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
    return { sessions };
  }

  /** Closes every session now; open tunnels are reset. Further connect() calls fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const waits: Promise<void>[] = [];
    for (const list of this.#pools.values()) {
      for (const s of list) {
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

  async #connectOnce(p: HboneConnectRequest, fresh = false): Promise<HboneStream> {
    if (this.#closed) throw new HboneError('NM_ERR_HBONE_CLOSED', 'this HBONE pool was closed; create a new one');
    const s = this.#acquire(p, fresh);
    let h2: ClientHttp2Session;
    try {
      h2 = await s.ready;
    } catch (e) {
      this.#release(s);
      throw e;
    }
    return this.#request(s, h2, p);
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
      pick.ready = this.#open(pick, src);
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
    if (list.length === 0) this.#pools.delete(s.key);
  }

  /** TCP, then TLS 1.3 (server SAN checked), then HTTP/2 until the server's SETTINGS arrive. */
  #open(s: PooledSession, src: HboneSource): Promise<ClientHttp2Session> {
    const where = formatAuthority(s.destAddr);
    return new Promise<ClientHttp2Session>((resolve, reject) => {
      let tcp: Socket | undefined;
      let tls: TLSSocket | undefined;
      let h2: ClientHttp2Session | undefined;
      let settled = false;
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        s.abort = undefined;
        this.#forget(s);
        s.state = 'closed';
        if (h2) h2.destroy();
        else if (tls) tls.destroy();
        else tcp?.destroy();
        this.#log.info({ err, key: s.key }, 'HBONE session could not be established');
        reject(err);
      };
      s.abort = fail;
      const timer = setTimeout(() => {
        const stage = h2 ? 'the HTTP/2 settings exchange' : tls ? 'the TLS handshake' : 'the TCP connection';
        fail(new TimeoutError(`HBONE to ${where} (${s.destIdentity}): ${stage} did not finish in ${this.#timeoutMs} ms; maybe a NetworkPolicy is blocking HBONE port ${s.destAddr.port}`));
      }, this.#timeoutMs);

      const onTlsError = (e: Error & { code?: string }): void => {
        if (isNodemeshError(e)) {
          fail(e);
          return;
        }
        // OpenSSL's verification codes; Node's text for them suggests system CAs, which is wrong here.
        const why = e.code && CHAIN_ERRORS.test(e.code) ? `its certificate does not verify against the mesh roots (${e.code}); it may belong to another mesh or hold an expired certificate` : e.message;
        fail(new HboneError('NM_ERR_HBONE_TLS', `TLS handshake with the HBONE server at ${where} (${s.destIdentity}) failed: ${why}`, { cause: e, tlsCode: e.code }));
      };

      const startTls = (sock: Socket): void => {
        sock.setNoDelay(true);
        sock.setKeepAlive(true, 30_000);
        tls = tlsConnect({
          socket: sock,
          secureContext: this.#contexts.get(src.identity, src),
          ALPNProtocols: ALPN_H2,
          minVersion: 'TLSv1.3',
          rejectUnauthorized: true,
          // No SNI: identity comes from the certificate's URI SAN, checked here after the chain.
          checkServerIdentity: (_host: string, cert: PeerCertificate) => verifyServerIdentity(cert, s.destIdentity, where),
        });
        tls.once('error', onTlsError);
        tls.once('secureConnect', () => {
          if (settled) return;
          if (tls!.alpnProtocol !== 'h2') {
            fail(new HboneError('NM_ERR_HBONE_TLS', `the server at ${where} did not negotiate ALPN h2 (got ${JSON.stringify(tls!.alpnProtocol || 'none')}); it is not an HBONE server`));
            return;
          }
          tls!.off('error', onTlsError);
          startH2(tls!);
        });
      };

      const startH2 = (sock: TLSSocket): void => {
        const session = h2connect(`https://${where}`, {
          createConnection: () => sock,
          settings: localSettings(this.#tuning, { enablePush: false }),
          maxSessionMemory: this.#tuning.maxSessionMemoryMb,
          peerMaxConcurrentStreams: this.#maxStreams,
        });
        h2 = session;
        s.h2 = session;
        let lastError: (Error & { code?: string }) | undefined;
        session.on('error', (err) => {
          lastError = err;
          this.#log.debug({ err, key: s.key }, 'HBONE session error');
        });
        session.once('connect', () => applyConnectionWindow(session, this.#tuning));
        session.on('goaway', (code) => {
          this.#log.debug({ key: s.key, code: h2CodeName(code) }, 'HBONE session got GOAWAY');
          this.#drain(s);
        });
        session.once('close', () => {
          this.#forget(s);
          s.state = 'closed';
          // The server closes right after the handshake when it refuses our certificate: TLS 1.3
          // finishes the client side before the server has verified the client.
          const why = lastError ? `: ${lastError.message}` : '';
          fail(new HboneError('NM_ERR_HBONE_TLS', `the HBONE server at ${where} (${s.destIdentity}) closed the connection before HTTP/2 started; it likely refused our certificate for ${s.source} (another root or trust domain?)${why}`, { ...(lastError ? { cause: lastError, tlsCode: lastError.code } : {}) }));
        });
        // The server's SETTINGS prove it accepted our certificate; only then is the session ready.
        session.once('remoteSettings', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          s.abort = undefined;
          if (s.state === 'connecting') s.state = 'ready';
          resolve(session);
        });
      };

      this.#connectSocket(s.destAddr, { identity: src.identity, ...(src.ip ? { ip: src.ip } : {}) }).then(
        (sock) => {
          tcp = sock;
          if (settled) {
            sock.destroy();
            return;
          }
          startTls(sock);
        },
        (e: Error & { code?: string }) => {
          fail(new HboneError('NM_ERR_HBONE_CONNECT', `cannot reach the HBONE port of ${s.destIdentity} at ${where}: ${e.code ?? e.message}; check that its node runs the agent and that no NetworkPolicy blocks port ${s.destAddr.port}`, { cause: e, sysCode: e.code }));
        },
      );
    });
  }

  /** Sends the CONNECT on a ready session and waits for the answer. */
  #request(s: PooledSession, h2: ClientHttp2Session, p: HboneConnectRequest): Promise<HboneStream> {
    const target = formatAuthority(p.target);
    const label = `${target} via ${formatAuthority(p.destAddr)} (${p.destIdentity})`;
    let st: ClientHttp2Stream;
    try {
      st = h2.request(
        {
          ':method': 'CONNECT',
          ':authority': target,
          forwarded: formatForwarded(p.forwardedFor),
          traceparent: isValidTraceparent(p.traceparent) ? p.traceparent : newTraceparent(),
        },
        { endStream: false },
      );
    } catch (e) {
      // The session went away between acquire and now (GOAWAY, out of stream ids).
      this.#drain(s);
      this.#release(s);
      throw new Retryable(e as Error);
    }
    let released = false;
    st.once('close', () => {
      if (released) return;
      released = true;
      this.#release(s);
    });
    return new Promise<HboneStream>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        st.close(NGHTTP2_CANCEL);
        reject(new TimeoutError(`HBONE CONNECT to ${label} got no answer in ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      const onError = (err: Error & { code?: string }): void => {
        cleanup();
        const code = st.rstCode;
        if (code === NGHTTP2_REFUSED_STREAM || err.code === 'ERR_HTTP2_GOAWAY_SESSION') {
          reject(new Retryable(err));
          return;
        }
        reject(new HboneResetError(`HBONE CONNECT to ${label} failed before an answer: ${err.message}`, { cause: err, ...(code !== undefined ? { h2Code: code } : {}) }));
      };
      const onClose = (): void => {
        cleanup();
        const code = st.rstCode;
        if (code === NGHTTP2_REFUSED_STREAM) {
          reject(new Retryable(new Error('REFUSED_STREAM')));
          return;
        }
        reject(new HboneResetError(`HBONE CONNECT to ${label} was closed before an answer (${h2CodeName(code)})`, { ...(code !== undefined ? { h2Code: code } : {}) }));
      };
      const onResponse = (headers: Record<string, string | string[] | undefined>): void => {
        cleanup();
        const status = Number(headers[':status']);
        if (status === 200) {
          resolve(new HboneStream(st, label));
          return;
        }
        // Nothing more will be read or written on a refused tunnel.
        st.on('error', () => {});
        st.close();
        const policy = typeof headers[DENY_POLICY_HEADER] === 'string' ? (headers[DENY_POLICY_HEADER] as string) : undefined;
        reject(new HboneStatusError(status, statusMessage(status, label, policy), { ...(policy ? { policy } : {}) }));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        st.off('error', onError);
        st.off('close', onClose);
        st.off('response', onResponse);
      };
      st.once('error', onError);
      st.once('close', onClose);
      st.once('response', onResponse);
    });
  }
}

function statusMessage(status: number, label: string, policy: string | undefined): string {
  switch (status) {
    case 401:
      return `HBONE CONNECT to ${label} was denied by the destination's authorization policy${policy ? ` ${policy}` : ''} (401)`;
    case 503:
      return `HBONE CONNECT to ${label}: the destination app refused the connection or did not answer (503)`;
    case 400:
      return `HBONE CONNECT to ${label} was refused as a bad request (400): the target is not an address of that pod, or it is a mesh port`;
    default:
      return `HBONE CONNECT to ${label} was answered ${status}`;
  }
}

// Dialing HBONE: one session (TCP, then TLS 1.3 with ALPN h2 and the server's SPIFFE ID
// checked, then HTTP/2 with the tuned windows) and one CONNECT stream on a ready session.
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { HboneError, HboneResetError, HboneStatusError, isNodemeshError, TimeoutError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { SocketAddress } from '../types.js';
import { h2CodeName } from './errors.js';
import { DENY_POLICY_HEADER, formatAuthority, formatForwarded, isValidTraceparent, newTraceparent } from './headers.js';
import { verifyServerIdentity } from './identity.js';
import { HboneStream } from './stream.js';
import { ALPN_H2, type ContextCache, type HboneCredentials } from './tls.js';
import { applyConnectionWindow, localSettings, type HboneTuning } from './tuning.js';

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

/** Makes the TCP connection to an HBONE address (e.g. from inside the source pod's netns). */
export type ConnectSocket = (addr: SocketAddress, source: { identity: string; ip?: string }) => Promise<Socket>;

/** What every session of a pool is dialed with. */
export interface DialSettings {
  tuning: HboneTuning;
  /** The streams we assume the server allows until its SETTINGS say otherwise. */
  maxStreams: number;
  /** Bounds TCP connect + TLS + the server's SETTINGS. */
  timeoutMs: number;
  contexts: ContextCache;
  connectSocket: ConnectSocket;
  log: Logger;
}

/** One session to dial: the pool's key for it (for logs), the destination and the source. */
export interface SessionTarget {
  key: string;
  source: HboneSource;
  destIdentity: string;
  destAddr: SocketAddress;
}

/** What a session tells its owner while and after it is set up. */
export interface SessionEvents {
  /** The HTTP/2 session object exists; the server's SETTINGS have not arrived yet. */
  created(h2: ClientHttp2Session): void;
  /** The server's SETTINGS arrived: it accepted our certificate, and the session takes streams. */
  ready(): void;
  /** The server sent GOAWAY: no new streams on this session. */
  goaway(): void;
  /** The session is gone: its handshake failed, or it closed. May be called more than once. */
  closed(): void;
}

export interface Dialing {
  /** Resolves once the session is ready; rejects with the reason it could not be set up. */
  ready: Promise<ClientHttp2Session>;
  /** Stops the handshake with `err` (no-op once it settled). */
  abort(err: Error): void;
}

/** TCP, then TLS 1.3 (server SAN checked), then HTTP/2 until the server's SETTINGS arrive. */
export function dialSession(t: SessionTarget, d: DialSettings, ev: SessionEvents): Dialing {
  const where = formatAuthority(t.destAddr);
  const src = t.source;
  let abort: (err: Error) => void = () => {};
  const ready = new Promise<ClientHttp2Session>((resolve, reject) => {
    let tcp: Socket | undefined;
    let tls: TLSSocket | undefined;
    let h2: ClientHttp2Session | undefined;
    let settled = false;
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ev.closed();
      if (h2) h2.destroy();
      else if (tls) tls.destroy();
      else tcp?.destroy();
      d.log.info({ err, key: t.key }, 'HBONE session could not be established');
      reject(err);
    };
    abort = fail;
    const timer = setTimeout(() => {
      const stage = h2 ? 'the HTTP/2 settings exchange' : tls ? 'the TLS handshake' : 'the TCP connection';
      fail(new TimeoutError(`HBONE to ${where} (${t.destIdentity}): ${stage} did not finish in ${d.timeoutMs} ms; maybe a NetworkPolicy is blocking HBONE port ${t.destAddr.port}`));
    }, d.timeoutMs);

    const onTlsError = (e: Error & { code?: string }): void => {
      if (isNodemeshError(e)) {
        fail(e);
        return;
      }
      // OpenSSL's verification codes; Node's text for them suggests system CAs, which is wrong here.
      const why = e.code && CHAIN_ERRORS.test(e.code) ? `its certificate does not verify against the mesh roots (${e.code}); it may belong to another mesh or hold an expired certificate` : e.message;
      fail(new HboneError('NM_ERR_HBONE_TLS', `TLS handshake with the HBONE server at ${where} (${t.destIdentity}) failed: ${why}`, { cause: e, tlsCode: e.code }));
    };

    const startTls = (sock: Socket): void => {
      sock.setNoDelay(true);
      sock.setKeepAlive(true, 30_000);
      tls = tlsConnect({
        socket: sock,
        secureContext: d.contexts.get(src.identity, src),
        ALPNProtocols: ALPN_H2,
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        // No SNI: identity comes from the certificate's URI SAN, checked here after the chain.
        checkServerIdentity: (_host: string, cert: PeerCertificate) => verifyServerIdentity(cert, t.destIdentity, where),
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
        settings: localSettings(d.tuning, { enablePush: false }),
        maxSessionMemory: d.tuning.maxSessionMemoryMb,
        peerMaxConcurrentStreams: d.maxStreams,
      });
      h2 = session;
      ev.created(session);
      let lastError: (Error & { code?: string }) | undefined;
      session.on('error', (err) => {
        lastError = err;
        d.log.debug({ err, key: t.key }, 'HBONE session error');
      });
      session.once('connect', () => applyConnectionWindow(session, d.tuning));
      session.on('goaway', (code) => {
        d.log.debug({ key: t.key, code: h2CodeName(code) }, 'HBONE session got GOAWAY');
        ev.goaway();
      });
      session.once('close', () => {
        ev.closed();
        // The server closes right after the handshake when it refuses our certificate: TLS 1.3
        // finishes the client side before the server has verified the client.
        const why = lastError ? `: ${lastError.message}` : '';
        fail(new HboneError('NM_ERR_HBONE_TLS', `the HBONE server at ${where} (${t.destIdentity}) closed the connection before HTTP/2 started; it likely refused our certificate for ${src.identity} (another root or trust domain?)${why}`, { ...(lastError ? { cause: lastError, tlsCode: lastError.code } : {}) }));
      });
      // The server's SETTINGS prove it accepted our certificate; only then is the session ready.
      session.once('remoteSettings', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ev.ready();
        resolve(session);
      });
    };

    d.connectSocket(t.destAddr, { identity: src.identity, ...(src.ip ? { ip: src.ip } : {}) }).then(
      (sock) => {
        tcp = sock;
        if (settled) {
          sock.destroy();
          return;
        }
        startTls(sock);
      },
      (e: Error & { code?: string }) => {
        fail(new HboneError('NM_ERR_HBONE_CONNECT', `cannot reach the HBONE port of ${t.destIdentity} at ${where}: ${e.code ?? e.message}; check that its node runs the agent and that no NetworkPolicy blocks port ${t.destAddr.port}`, { cause: e, sysCode: e.code }));
      },
    );
  });
  return { ready, abort: (err) => abort(err) };
}

/**
 * How a CONNECT ended when it did not fail outright: a tunnel, or a refusal the server did not
 * process (REFUSED_STREAM, or a GOAWAY that excluded the stream), which is safe to send again
 * on another session (RFC 9113 §8.7). `refused` is the error to report if no retry succeeds.
 */
export type StreamOutcome = { stream: HboneStream } | { refused: Error };

/** What a CONNECT stream tells the session's owner. */
export interface StreamEvents {
  /** The stream could not be created: the session takes no more (GOAWAY, out of stream ids). */
  unusable(): void;
  /** The stream's slot on the session is free again. Called exactly once. */
  closed(): void;
}

/**
 * Sends the CONNECT on a ready session and waits for the answer (at most `timeoutMs`). Rejects
 * with NM_ERR_HBONE_STATUS for a non-200 answer, NM_ERR_HBONE_RESET or NM_ERR_TIMEOUT.
 */
export function openStream(h2: ClientHttp2Session, p: HboneConnectRequest, timeoutMs: number, ev: StreamEvents): Promise<StreamOutcome> {
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
    ev.unusable();
    ev.closed();
    return Promise.resolve({ refused: e as Error });
  }
  let released = false;
  st.once('close', () => {
    if (released) return;
    released = true;
    ev.closed();
  });
  return new Promise<StreamOutcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      st.close(NGHTTP2_CANCEL);
      reject(new TimeoutError(`HBONE CONNECT to ${label} got no answer in ${timeoutMs} ms`));
    }, timeoutMs);
    const onError = (err: Error & { code?: string }): void => {
      cleanup();
      const code = st.rstCode;
      if (code === NGHTTP2_REFUSED_STREAM || err.code === 'ERR_HTTP2_GOAWAY_SESSION') {
        resolve({ refused: err });
        return;
      }
      reject(new HboneResetError(`HBONE CONNECT to ${label} failed before an answer: ${err.message}`, { cause: err, ...(code !== undefined ? { h2Code: code } : {}) }));
    };
    const onClose = (): void => {
      cleanup();
      const code = st.rstCode;
      if (code === NGHTTP2_REFUSED_STREAM) {
        resolve({ refused: new Error('REFUSED_STREAM') });
        return;
      }
      reject(new HboneResetError(`HBONE CONNECT to ${label} was closed before an answer (${h2CodeName(code)})`, { ...(code !== undefined ? { h2Code: code } : {}) }));
    };
    const onResponse = (headers: Record<string, string | string[] | undefined>): void => {
      cleanup();
      const status = Number(headers[':status']);
      if (status === 200) {
        resolve({ stream: new HboneStream(st, label) });
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

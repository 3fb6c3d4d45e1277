// The inbound HBONE handler (port 15008): mutual TLS that admits only workloads of our trust
// domain, then one HTTP/2 CONNECT per proxied connection, checked, authorized and relayed to the app.
import { constants, performServerHandshake, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { createServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { HboneError } from '../../errors.js';
import { log as rootLog, type Logger } from '../../log.js';
import { Boundary, classify, resetQuietly } from '../boundary.js';
import { relay, type RelayOptions } from '../relay.js';
import { MESH_PORTS, type SocketAddress } from '../types.js';
import { DENY_POLICY_HEADER, formatAuthority, isValidTraceparent, newTraceparent, parseAuthority, parseForwardedFor } from './headers.js';
import { verifyClientIdentity } from './identity.js';
import { HboneStream } from './stream.js';
import { ALPN_H2, contextOptions, sameCredentials, type HboneCredentials } from './tls.js';
import { applyConnectionWindow, localSettings, resolveTuning, type HboneTuning } from './tuning.js';
import type { InboundDecision, InboundRejection, InboundRelay, InboundRequest, InboundStatus } from './requests.js';

export type { InboundDecision, InboundRejection, InboundRelay, InboundRequest, InboundStatus } from './requests.js';

export interface HboneServerOptions {
  /**
   * The pod's certificate, key and the mesh roots. Called for every accepted TCP connection
   * and cheap to call: return the same object while nothing changed. A changed value applies to
   * connections accepted from then on; established sessions keep their handshake.
   */
  credentials: () => HboneCredentials;
  /** Clients must hold a SPIFFE ID of this trust domain. */
  trustDomain: string;
  /** The pod's IPs: the only `:authority` addresses accepted. */
  localAddresses: readonly string[];
  authorize: (r: InboundRequest) => InboundDecision | Promise<InboundDecision>;
  /**
   * Connects to the app (e.g. 127.0.0.1:<target port> in the pod's netns). The socket must be
   * created with `allowHalfOpen: true`. A rejection answers 503.
   */
  connectUpstream: (r: InboundRequest) => Promise<Socket>;
  /**
   * Called once a tunnel is established (200 sent) and the relay started; observation only. A
   * promise it returns is part of the tunnel: if it rejects, the tunnel is reset.
   */
  onStream?: (r: InboundRequest, stream: HboneStream, upstream: Socket, relay: InboundRelay) => unknown;
  /**
   * Takes a tunnel instead of relaying it to `connectUpstream`'s socket: the L7 path on HTTP
   * ports serves the HTTP inside the tunnel itself. Asked after `authorize` allowed the CONNECT;
   * returning undefined relays as usual. The promise is the tunnel's life, inside its boundary.
   */
  serveTunnel?: (r: InboundRequest) => ((tunnel: HboneStream) => Promise<void>) | undefined;
  /** Called for every CONNECT answered with an error status. */
  onReject?: (r: InboundRejection) => void;
  /** Send the denying policy's name to the client on 401 (default true; mesh peers only). */
  revealDenyPolicy?: boolean;
  tuning?: Partial<HboneTuning>;
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (default 1000). */
  maxConcurrentStreams?: number;
  /** A TLS handshake must complete within this time (default 10 s). */
  handshakeTimeoutMs?: number;
  /**
   * Contains the failures of each connection and each tunnel: reset, logged with
   * response_flags, counted (default: a boundary that logs and counts nothing).
   */
  boundary?: Boundary;
  /** Idle timeout and keepalive of the relays from tunnels to the app. */
  relay?: RelayOptions;
  log?: Logger;
}

export interface HboneServerStats {
  sessions: number;
  activeStreams: number;
  /** Handshakes that failed: no certificate, TLS < 1.3, no common ALPN, timeouts. */
  tlsRejected: number;
  /** Verified chains whose identity was refused (no SPIFFE ID, another trust domain, no h2). */
  identityRejected: number;
  /** CONNECT answers by status. */
  answered: Record<string, number>;
}

/** What a tunnel's failure boundary must reset: its HBONE stream once it is up, its app socket. */
interface Held {
  tunnel?: HboneStream;
  upstream?: Socket;
}

export class HboneServer {
  readonly #o: HboneServerOptions;
  readonly #log: Logger;
  readonly #tuning: HboneTuning;
  readonly #tls: TlsServer;
  readonly #boundary: Boundary;
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Set<ServerHttp2Session>();
  #local: Set<string>;
  #creds: HboneCredentials;
  #closed = false;
  #draining = false;
  #activeStreams = 0;
  #tlsRejected = 0;
  #identityRejected = 0;
  readonly #answered: Record<string, number> = {};

  constructor(o: HboneServerOptions) {
    if (!/^[a-z0-9._-]+$/.test(o.trustDomain)) throw new TypeError(`trustDomain ${JSON.stringify(o.trustDomain)} is not a valid SPIFFE trust domain`);
    this.#o = o;
    this.#log = (o.log ?? rootLog).child({ component: 'hbone-inbound' });
    this.#tuning = resolveTuning(o.tuning);
    this.#boundary = o.boundary ?? new Boundary({ log: this.#log });
    this.#local = new Set(o.localAddresses);
    this.#creds = o.credentials();
    this.#tls = createServer({
      ...contextOptions(this.#creds),
      // The chain is verified by OpenSSL against the mesh roots only; a client without a
      // certificate fails the handshake (certificate_required), a client whose chain does not
      // verify is dropped by Node before 'secureConnection'. The SPIFFE ID is checked there.
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ALPN_H2,
      handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 30_000,
    });
    // Before the TLS socket (and its context) is made for this connection.
    this.#tls.prependListener('connection', (sock: Socket) => {
      this.#sockets.add(sock);
      sock.once('close', () => this.#sockets.delete(sock));
      this.#refreshCredentials();
    });
    // Each connection is its own failure domain: whatever its set-up throws closes it alone.
    this.#tls.on('secureConnection', (sock: TLSSocket) => this.#boundary.run('hbone', () => sock.destroy(), () => this.#onSecure(sock), { client: `${sock.remoteAddress}:${sock.remotePort}` }));
    this.#tls.on('tlsClientError', (err: Error & { code?: string }, sock: TLSSocket) => {
      this.#tlsRejected++;
      const client = `${sock.remoteAddress}:${sock.remotePort}`;
      const f = classify(err);
      // A client that reset or closed before its handshake (including one gone before the
      // accept) is counted quietly; a refused handshake is worth an info line.
      if (f.reason === 'peer_gone') this.#boundary.record('hbone', err, { client }, f);
      else this.#log.info({ err, client, tlsCode: err.code }, 'HBONE TLS handshake failed; the client gets no connection');
    });
  }

  /** Serves on a listening socket made elsewhere (inside the pod's netns). */
  async attach(listenFd: number): Promise<void> {
    await this.#listen({ fd: listenFd });
  }

  /** Listens on an address (tests, or the root namespace); returns the bound address. */
  async listen(at: { host: string; port: number }): Promise<SocketAddress> {
    await this.#listen({ host: at.host, port: at.port });
    const a = this.#tls.address() as AddressInfo;
    return { ip: a.address, port: a.port };
  }

  /** Replaces the pod's addresses (an IP added or removed). */
  setLocalAddresses(ips: readonly string[]): void {
    this.#local = new Set(ips);
  }

  stats(): HboneServerStats {
    return {
      sessions: this.#sessions.size,
      activeStreams: this.#activeStreams,
      tlsRejected: this.#tlsRejected,
      identityRejected: this.#identityRejected,
      answered: { ...this.#answered },
    };
  }

  /**
   * A drain (the agent is stopping): stops listening and sends every session a GOAWAY, so
   * the peer's pool opens its next session to the node's other agent while the tunnels
   * already open here run to their end. close() later resets what is left.
   */
  drain(): void {
    if (this.#draining || this.#closed) return;
    this.#draining = true;
    if (this.#tls.listening) this.#tls.close();
    for (const s of this.#sessions) if (!s.closed && !s.destroyed) s.close();
  }

  /** Stops listening and resets every session and tunnel (the pod is going away). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closed = new Promise<void>((resolve) => this.#tls.close(() => resolve()));
    for (const s of this.#sessions) s.destroy();
    for (const s of this.#sockets) s.destroy();
    await closed;
  }

  #listen(o: { fd: number } | { host: string; port: number }): Promise<void> {
    if (this.#closed) return Promise.reject(new HboneError('NM_ERR_HBONE_CLOSED', 'this HBONE server was closed; create a new one'));
    return new Promise((resolve, reject) => {
      this.#tls.once('error', reject);
      this.#tls.listen(o, () => {
        this.#tls.off('error', reject);
        if (this.#draining) this.#tls.close();
        this.#tls.on('error', (err) => this.#log.error({ err }, 'HBONE listener failed'));
        resolve();
      });
    });
  }

  #refreshCredentials(): void {
    let c: HboneCredentials;
    try {
      c = this.#o.credentials();
    } catch (err) {
      this.#log.warn({ err }, 'could not read the pod certificate; serving the previous one');
      return;
    }
    if (sameCredentials(this.#creds, c)) return;
    try {
      this.#tls.setSecureContext(contextOptions(c));
      this.#creds = c;
      this.#log.info('pod certificate changed; new HBONE connections present the new one');
    } catch (err) {
      this.#log.error({ err }, 'the new pod certificate is unusable; serving the previous one');
    }
  }

  #onSecure(sock: TLSSocket): void {
    const clientAddr = { ip: sock.remoteAddress ?? '', port: sock.remotePort ?? 0 };
    sock.on('error', (err) => this.#log.debug({ err, client: `${clientAddr.ip}:${clientAddr.port}` }, 'HBONE connection error'));
    if (this.#closed) {
      sock.destroy();
      return;
    }
    let peerIdentity: string;
    try {
      if (sock.alpnProtocol !== 'h2') {
        throw new HboneError('NM_ERR_HBONE_TLS', `the client negotiated ALPN ${JSON.stringify(sock.alpnProtocol || 'none')}, not h2`);
      }
      peerIdentity = verifyClientIdentity(sock.getPeerCertificate(), this.#o.trustDomain);
    } catch (err) {
      // Closed before any HTTP/2 frame: the client never reaches authorization or the app.
      this.#identityRejected++;
      this.#log.warn({ err, client: `${clientAddr.ip}:${clientAddr.port}` }, 'HBONE client refused');
      sock.destroy();
      return;
    }
    const t = this.#tuning;
    const session = performServerHandshake(sock, {
      settings: localSettings(t, { maxConcurrentStreams: this.#o.maxConcurrentStreams ?? 1000 }),
      maxSessionMemory: t.maxSessionMemoryMb,
    });
    applyConnectionWindow(session, t);
    this.#sessions.add(session);
    session.on('error', (err) => this.#log.debug({ err, peerIdentity }, 'HBONE session error'));
    session.on('close', () => this.#sessions.delete(session));
    if (this.#draining) session.close();
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      // Each tunnel is its own failure domain too: a failure resets its stream and its app socket.
      const held: Held = {};
      const reset = (): void => {
        if (held.tunnel) resetQuietly(held.tunnel); // RST_STREAM(CONNECT_ERROR), never a clean END_STREAM
        else if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': 500 }, { endStream: true });
        else if (!stream.destroyed) stream.close(constants.NGHTTP2_INTERNAL_ERROR);
        if (held.upstream) resetQuietly(held.upstream);
      };
      this.#boundary.run('hbone', reset, () => this.#onStream(stream, headers, peerIdentity, clientAddr, held), { peerIdentity, client: `${clientAddr.ip}:${clientAddr.port}`, authority: headers[':authority'] });
    });
  }

  /** Answers the CONNECT 200 and makes the tunnel: from here the tunnel owns the stream's errors. */
  #accept(stream: ServerHttp2Stream, label: string, held: Held, early: (err: Error) => void): HboneStream {
    this.#answered[200] = (this.#answered[200] ?? 0) + 1;
    stream.respond({ ':status': 200 });
    const tunnel = new HboneStream(stream, label);
    held.tunnel = tunnel;
    stream.off('error', early);
    this.#activeStreams++;
    return tunnel;
  }

  async #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, peerIdentity: string, clientAddr: SocketAddress, held: Held): Promise<void> {
    // Until the tunnel owns it: a client reset must not become an unhandled 'error'.
    const early = (err: Error) => this.#log.debug({ err, peerIdentity }, 'HBONE stream error before the tunnel was up');
    stream.on('error', early);
    const reject = (status: InboundStatus, reason: string, extra: Partial<InboundRejection> = {}): void => {
      this.#answered[status] = (this.#answered[status] ?? 0) + 1;
      if (!stream.destroyed && !stream.headersSent) {
        const h: Record<string, string | number> = { ':status': status };
        if (status === 401 && extra.policy && this.#o.revealDenyPolicy !== false) h[DENY_POLICY_HEADER] = extra.policy;
        stream.respond(h, { endStream: true });
      }
      const lvl = status === 400 || status === 500 ? 'warn' : 'info';
      this.#log[lvl]({ status, reason, peerIdentity, client: `${clientAddr.ip}:${clientAddr.port}`, authority: headers[':authority'], ...(extra.policy ? { policy: extra.policy } : {}), ...(extra.error ? { err: extra.error } : {}) }, 'HBONE CONNECT refused');
      this.#o.onReject?.({ status, reason, peerIdentity, clientAddr, ...extra });
    };

    const method = headers[':method'];
    if (method !== 'CONNECT') return reject(400, `method ${String(method)} is not CONNECT`);
    const authority = headers[':authority'];
    const target = parseAuthority(authority);
    if (!target) return reject(400, `:authority ${JSON.stringify(authority ?? '')} is not an ip:port`);
    if (!this.#local.has(target.ip)) return reject(400, `:authority ${authority} is not an address of this pod`);
    // Tunneling into the mesh's own ports would loop back into the proxy.
    if (MESH_PORTS.has(target.port)) return reject(400, `:authority ${authority} is a mesh port`);
    const tp = headers.traceparent;
    const forwardedFor = parseForwardedFor(headers.forwarded);
    const req: InboundRequest = {
      target,
      peerIdentity,
      clientAddr,
      ...(forwardedFor ? { forwardedFor } : {}),
      traceparent: typeof tp === 'string' && isValidTraceparent(tp) ? tp : newTraceparent(),
    };

    let decision: InboundDecision;
    try {
      decision = await this.#o.authorize(req);
    } catch (e) {
      // Fail closed: no decision is a refusal, booked like any connection failure.
      this.#boundary.record('hbone', e, { peerIdentity, client: `${clientAddr.ip}:${clientAddr.port}`, authority }, { reason: 'authorize', flags: 'DENY' });
      return reject(500, 'authorization failed with an internal error', { request: req, error: e as Error });
    }
    if (!decision.allow) return reject(401, decision.reason, { request: req, ...(decision.policy ? { policy: decision.policy } : {}) });
    if (stream.destroyed || stream.closed) return;

    const serve = this.#o.serveTunnel?.(req);
    if (serve) {
      const tunnel = this.#accept(stream, `${formatAuthority(target)} from ${peerIdentity}`, held, early);
      try {
        await serve(tunnel);
      } finally {
        this.#activeStreams--;
      }
      return;
    }

    let upstream: Socket;
    try {
      upstream = await this.#o.connectUpstream(req);
    } catch (e) {
      const err = e as Error & { code?: string };
      this.#boundary.record('hbone', err, { peerIdentity, client: `${clientAddr.ip}:${clientAddr.port}`, authority }, { reason: 'upstream_connect', flags: 'UF', ...(err.code ? { code: err.code } : {}) });
      return reject(503, `the app at ${formatAuthority(target)} refused or did not answer (${err.code ?? err.message})`, { request: req, error: err });
    }
    if (stream.destroyed || stream.closed) {
      // The client gave up while we connected.
      upstream.on('error', () => {});
      upstream.resetAndDestroy();
      return;
    }
    held.upstream = upstream;
    const tunnel = this.#accept(stream, `${formatAuthority(target)} from ${peerIdentity}`, held, early);
    // relay() takes sockets; HboneStream has the socket surface it uses (setNoDelay,
    // resetAndDestroy, bytesRead), so an upstream reset becomes RST_STREAM(CONNECT_ERROR).
    const r = relay(tunnel as unknown as Socket, upstream, this.#o.relay);
    void r.done.then((res) => {
      this.#activeStreams--;
      this.#log.debug({ peerIdentity, target: formatAuthority(target), sent: res.sent, received: res.received, ...(res.error ? { err: res.error, failedSide: res.failedSide } : {}), ...(res.idleTimeout ? { idleTimeout: true } : {}) }, 'HBONE tunnel closed');
    });
    await this.#o.onStream?.(req, tunnel, upstream, r);
  }
}

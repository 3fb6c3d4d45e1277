// An HTTP echo backend modelled on Gateway API's echo-basic, for the GAMMA conformance cases
// (test/fixtures/gamma/) and nodemesh's own L7 tests: every request is answered with JSON saying
// what arrived and which pod answered, over HTTP/1.1 and h2c (prior knowledge) on the same port.
//
// What it answers (every path may carry a query):
//   /health                      200 `OK`.
//   /status/<ddd>                that status (200-599; anything else 400, as echo-basic), with the
//                                echo JSON as body so a test sees which pod sent it (echo-basic sends none).
//   /delay/<ms>[/<rest>]         waits <ms> milliseconds, then echoes.
//   ?delay=<duration>            on any echoed path: waits a Go duration (`1s`, `250ms`) first (echo-basic).
//   /flaky/<n>[/<rest>]          the first n requests of a key fail, the later ones echo with `attempt`
//                                (this key's request count, 1-based). A failure is the status `?code=`
//                                (default 503, with the echo JSON), or with `?mode=reset` a TCP RST
//                                (RST_STREAM on HTTP/2). The key is `?key=`, else the `X-Echo-Key`
//                                header, else the path without its query; counts are per process (all
//                                ports share them), so give each test its own key.
//   /retry/?uuid=&succeedAfter=<n>[&responseCode=<c>][&delayRetry=<duration>]
//                                echo-basic's retry simulation: the first n requests of a uuid get a
//                                TCP RST (or status c, after delayRetry), the later ones the echo.
//   X-Echo-Set-Header: N:v,N2:v2 request header (echo-basic): the echo's response carries these fields.
//   /ws (WebSocket upgrade)      greets with the echo JSON as a text message, then echoes messages (ws-echo.ts).
//   anything else                200 with the echo JSON.
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { constants as h2constants, createServer as createH2Server, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from 'node:http2';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { isWebSocketUpgrade, serveWebSocket } from './ws-echo.js';

/** Who answers: echo-basic's Context (its NAMESPACE, SERVICE_NAME, POD_NAME, INGRESS_NAME). */
export interface EchoContext {
  namespace: string;
  service: string;
  pod: string;
  ingress: string;
}

/** The body of every echoed answer: echo-basic's RequestAssertions (without TLS). */
export interface EchoReply extends EchoContext {
  /** The request target as received, query included (Go's RequestURI). */
  path: string;
  /** Host, or :authority on HTTP/2 (Go's r.Host). */
  host: string;
  method: string;
  /** `HTTP/1.1`, `HTTP/1.0` or `HTTP/2.0`. */
  proto: string;
  /** Field names canonicalized as Go does (`X-Header-Set`), one value per field line; Host and pseudo-headers are left out, as Go does. */
  headers: Record<string, string[]>;
  /** The local port the request arrived on. */
  httpPort: string;
  /** On /flaky/ and /retry/ answers: how many requests of this key came so far, this one included. */
  attempt?: number;
}

export interface EchoOptions {
  /** Ports to listen on; 0 picks one. Each serves HTTP/1.1 and h2c. */
  ports: number[];
  /** Listen address (default `0.0.0.0`: a pod's servers must answer on the pod IP). */
  host?: string;
  context: EchoContext;
}

export interface EchoServer {
  /** The bound ports, in the order asked. */
  ports: number[];
  close(): Promise<void>;
}

/** The client connection preface of RFC 9113 §3.4: a connection opening with it is HTTP/2. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

/** Go's CanonicalMIMEHeaderKey: `x-header-set` → `X-Header-Set`; names with other than token characters stay as they are. */
export function canonicalHeaderName(name: string): string {
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) return name;
  return name.toLowerCase().replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase());
}

/** A Go duration (`300ms`, `1.5s`, `1m30s`) in milliseconds; undefined when it is not one. */
export function parseGoDuration(s: string): number | undefined {
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (s === '0') return 0;
  const parts = [...s.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== s) return undefined;
  return parts.reduce((ms, p) => ms + Number(p[1]) * unit[p[2]!]!, 0);
}

/** Header fields as the echo reports them, from the raw name/value list. */
function headersOf(req: Req): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.startsWith(':') || name.toLowerCase() === 'host') continue;
    (out[canonicalHeaderName(name)] ??= []).push(raw[i + 1]!);
  }
  return out;
}

/** The state one server keeps across requests and ports. */
class Echo {
  readonly #ctx: EchoContext;
  readonly #counts = new Map<string, number>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #closed = false;

  constructor(ctx: EchoContext) {
    this.#ctx = ctx;
  }

  stop(): void {
    this.#closed = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  /** Answers once the request body has been read (and dropped): the echo reports heads only. */
  handle(req: Req, res: Res, port: number): void {
    req.on('error', () => {});
    res.on('error', () => {});
    req.resume();
    req.once('end', () => this.#answer(req, res, port));
  }

  #answer(req: Req, res: Res, port: number): void {
    const target = req.url ?? '/';
    const url = new URL(target, 'http://echo.invalid');
    const q = url.searchParams;
    const reply = (): EchoReply => ({
      path: target,
      host: (req.headers[':authority'] as string | undefined) ?? req.headers.host ?? '',
      method: req.method ?? '',
      proto: req.httpVersion === '2.0' ? 'HTTP/2.0' : `HTTP/${req.httpVersion}`,
      headers: headersOf(req),
      httpPort: String(port),
      ...this.#ctx,
    });
    const path = url.pathname;
    if (path === '/health') return this.#send(res, 200, 'OK', 'text/plain');

    const status = /^\/status\/(\d+)$/.exec(path);
    if (status) {
      const code = Number(status[1]);
      if (status[1]!.length !== 3 || code < 200 || code > 599) return this.#send(res, 400, 'status must be three digits, 200-599', 'text/plain');
      return this.#echo(req, res, code, reply());
    }

    const delay = /^\/delay\/(\d+)(?:\/|$)/.exec(path);
    if (delay) return this.#later(Number(delay[1]), () => this.#echoAfterQueryDelay(req, res, q, reply()));

    const flaky = /^\/flaky\/(\d+)(?:\/|$)/.exec(path);
    if (flaky) {
      const key = q.get('key') ?? (req.headers['x-echo-key'] as string | undefined) ?? path;
      const attempt = this.#count(`flaky\0${key}`);
      if (attempt <= Number(flaky[1])) return this.#fail(req, res, q.get('mode') === 'reset' ? 'reset' : Number(q.get('code') ?? 503), reply());
      return this.#echoAfterQueryDelay(req, res, q, { ...reply(), attempt });
    }

    if (path === '/retry' || path.startsWith('/retry/')) {
      const uuid = q.get('uuid');
      const after = Number(q.get('succeedAfter') ?? NaN);
      if (!uuid) return this.#send(res, 400, 'uuid is required', 'text/plain');
      if (!Number.isInteger(after)) return this.#send(res, 400, 'succeedAfter is required', 'text/plain');
      const attempt = this.#count(`retry\0${uuid}`);
      if (attempt <= after) {
        const wait = q.get('delayRetry');
        const ms = wait ? parseGoDuration(wait) : 0;
        if (ms === undefined) return this.#send(res, 500, JSON.stringify({ message: `bad duration ${wait}` }), 'application/json');
        const code = Number(q.get('responseCode') ?? NaN);
        return this.#later(ms, () => this.#fail(req, res, Number.isInteger(code) ? code : 'reset', reply()));
      }
      return this.#echoAfterQueryDelay(req, res, q, { ...reply(), attempt });
    }

    this.#echoAfterQueryDelay(req, res, q, reply());
  }

  #count(key: string): number {
    const n = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, n);
    return n;
  }

  #later(ms: number, fn: () => void): void {
    if (this.#closed) return;
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  #echoAfterQueryDelay(req: Req, res: Res, q: URLSearchParams, body: EchoReply): void {
    const d = q.get('delay');
    if (d === null) return this.#echo(req, res, 200, body);
    const ms = parseGoDuration(d);
    if (ms === undefined) return this.#send(res, 500, JSON.stringify({ message: `time: invalid duration ${JSON.stringify(d)}` }), 'application/json');
    this.#later(ms, () => this.#echo(req, res, 200, body));
  }

  #fail(req: Req, res: Res, how: number | 'reset', body: EchoReply): void {
    if (how !== 'reset') return this.#echo(req, res, how, body);
    // A reset, not a close: the proxy must see the upstream fail mid-request (Envoy's `reset`).
    if ('stream' in req) req.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
    else req.socket.resetAndDestroy();
  }

  #echo(req: Req, res: Res, status: number, body: EchoReply): void {
    // echo-basic: `X-Echo-Set-Header: a:1,b:2`, repeated names joined with a comma.
    const extra = new Map<string, string>();
    for (const line of body.headers['X-Echo-Set-Header'] ?? []) {
      for (const kv of line.split(',')) {
        const [name, ...rest] = kv.trim().split(':');
        if (!name) continue;
        const value = rest.join(':').trim();
        extra.set(name, extra.has(name) ? `${extra.get(name)},${value}` : value);
      }
    }
    for (const [name, value] of extra) res.setHeader(name, value);
    this.#send(res, status, req.method === 'HEAD' ? '' : JSON.stringify(body, null, 1), 'application/json');
  }

  #send(res: Res, status: number, body: string, type: string): void {
    if (res.headersSent || res.destroyed) return;
    res.setHeader('Content-Type', type);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.statusCode = status;
    res.end(body);
  }
}

/**
 * Starts the echo on every port of `o.ports`. Each accepted connection is read until it is
 * clearly HTTP/1.x or opens with the HTTP/2 preface, then handed to a node:http or node:http2
 * server that never listens itself.
 */
export async function startEchoServer(o: EchoOptions): Promise<EchoServer> {
  const echo = new Echo(o.context);
  const sockets = new Set<Socket>();
  const sessions = new Set<Http2Session>();
  const listeners: Server[] = [];
  const portOf = (s: Socket): number => s.localPort ?? 0;
  // Only WebSocket upgrades leave node:http's request handling; others (`Upgrade: h2c`) are echoed as before.
  const h1 = createHttpServer({ keepAliveTimeout: 30_000, shouldUpgradeCallback: isWebSocketUpgrade }, (req, res) => echo.handle(req, res, portOf(req.socket)));
  h1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const hello: EchoReply = { path: req.url ?? '/', host: req.headers.host ?? '', method: req.method ?? '', proto: `HTTP/${req.httpVersion}`, headers: headersOf(req), httpPort: String(portOf(socket)), ...o.context };
    serveWebSocket(req, socket, head, { ...hello });
  });
  const h2 = createH2Server((req, res) => echo.handle(req, res, portOf(req.socket as Socket)));
  h2.on('session', (s: Http2Session) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  h2.on('sessionError', () => {});

  const accept = (sock: Socket): void => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      const n = Math.min(got.length, PREFACE.length);
      const isH2 = got.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && got.length < PREFACE.length) return;
      sock.off('data', onData);
      sock.pause();
      sock.unshift(got);
      (isH2 ? h2 : h1).emit('connection', sock);
      // node:http reads the socket's handle directly once it has it, so what was unshifted
      // reaches its parser only through the stream: resume lets it flow.
      if (!isH2) sock.resume();
    };
    sock.on('data', onData);
  };

  const ports: number[] = [];
  try {
    for (const p of o.ports) {
      const l = createServer(accept);
      listeners.push(l);
      await new Promise<void>((resolve, reject) => {
        l.once('error', reject);
        l.listen(p, o.host ?? '0.0.0.0', () => {
          l.off('error', reject);
          resolve();
        });
      });
      ports.push((l.address() as AddressInfo).port);
    }
  } catch (err) {
    for (const l of listeners) l.close();
    throw err;
  }

  return {
    ports,
    close: async () => {
      echo.stop();
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      h1.closeAllConnections();
      await Promise.all(listeners.map((l) => new Promise<void>((r) => l.close(() => r()))));
    },
  };
}

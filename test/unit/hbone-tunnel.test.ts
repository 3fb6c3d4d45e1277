// HBONE tunnels end to end on loopback: pool → real mTLS HTTP/2 CONNECT → server → a TCP app.
// Bytes are exact, half-close travels both ways, answers are 200/400/401/503, resets stay resets.
import { createHash, randomBytes } from 'node:crypto';
import { connect as h2connect, constants, type ClientHttp2Session } from 'node:http2';
import { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool } from '../../src/proxy/hbone/pool.js';
import { HboneServer, type HboneServerOptions, type InboundRejection, type InboundRequest } from '../../src/proxy/hbone/server.js';
import type { HboneStream } from '../../src/proxy/hbone/stream.js';
import { connectFd } from '../../src/proxy/upstream.js';
import { startApp } from '../helpers/app.js';
import { createTestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
const log = pino({ level: 'silent' });

let serverCert: TestCert;
let clientCert: TestCert;
beforeAll(async () => {
  const ca = await createTestCa({ intermediate: true });
  serverCert = await ca.issue(SERVER_ID);
  clientCert = await ca.issue(CLIENT_ID);
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A TCP app on loopback; counts the connections it accepted. */
async function app(onConn: (s: Socket) => void): Promise<{ port: number; accepts: () => number }> {
  let n = 0;
  const a = await startApp((s) => {
    n++;
    onConn(s);
  }, { allowHalfOpen: true });
  cleanups.push(() => a.close());
  return { port: a.port, accepts: () => n };
}

async function hbone(o: Partial<HboneServerOptions> = {}) {
  const seen: InboundRequest[] = [];
  const rejected: InboundRejection[] = [];
  const server = new HboneServer({
    credentials: () => serverCert,
    trustDomain: TD,
    localAddresses: ['127.0.0.1'],
    authorize: (r) => {
      seen.push(r);
      return { allow: true };
    },
    connectUpstream: (r) => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: r.target.port }, 2000),
    onReject: (r) => rejected.push(r),
    log,
    ...o,
  });
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  const pool = new HbonePool({ log, connectTimeoutMs: 3000 });
  cleanups.push(() => pool.close());
  const open = (port: number, extra: { traceparent?: string; ip?: string } = {}) =>
    pool.connect({
      source: { identity: CLIENT_ID, ...clientCert },
      destIdentity: SERVER_ID,
      destAddr: addr,
      target: { ip: extra.ip ?? '127.0.0.1', port },
      forwardedFor: '10.1.0.7',
      ...(extra.traceparent ? { traceparent: extra.traceparent } : {}),
    });
  return { server, addr, pool, seen, rejected, open };
}

function collect(s: HboneStream | Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A raw mTLS HTTP/2 session to the server, for requests the pool would never send. */
async function rawSession(port: number): Promise<ClientHttp2Session> {
  const tls = tlsConnect({ host: '127.0.0.1', port, cert: clientCert.certChainPem, key: clientCert.keyPem, ca: clientCert.rootsPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  await new Promise((r, j) => tls.once('secureConnect', r).once('error', j));
  const s = h2connect(`https://127.0.0.1:${port}`, { createConnection: () => tls });
  s.on('error', () => {});
  cleanups.push(() => s.destroy());
  return s;
}

async function rawStatus(s: ClientHttp2Session, headers: Record<string, string>): Promise<number> {
  const st = s.request(headers, { endStream: headers[':method'] !== 'CONNECT' });
  st.on('error', () => {});
  const h = await new Promise<Record<string, unknown>>((r) => st.once('response', r));
  return Number(h[':status']);
}

describe('HBONE tunnel', () => {
  it('carries 4 MB each way byte-exact and passes the authority, forwarded and traceparent', async () => {
    const up = randomBytes(4 << 20);
    const down = randomBytes(4 << 20);
    let appGot = '';
    const a = await app((s) => {
      void collect(s).then((b) => {
        appGot = sha(b);
        s.end(down); // answers after the tunnel's END_STREAM reached it as a FIN
      });
    });
    const h = await hbone();
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const stream = await h.open(a.port, { traceparent: tp });
    const got = collect(stream);
    stream.end(up);
    expect(sha(await got)).toBe(sha(down));
    expect(appGot).toBe(sha(up));
    expect(stream.bytesWritten).toBe(up.length);
    expect(stream.bytesRead).toBe(down.length);
    expect(h.seen).toHaveLength(1);
    expect(h.seen[0]).toMatchObject({ target: { ip: '127.0.0.1', port: a.port }, peerIdentity: CLIENT_ID, forwardedFor: '10.1.0.7', traceparent: tp, clientAddr: { ip: '127.0.0.1' } });
  });

  it('generates a valid traceparent when the source sends none', async () => {
    const a = await app((s) => s.end());
    const h = await hbone();
    const stream = await h.open(a.port);
    stream.end();
    await collect(stream);
    expect(h.seen[0]!.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('carries the source half-close: the app still answers after the FIN', async () => {
    const a = await app((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c) => chunks.push(c));
      s.on('end', () => setTimeout(() => s.end(`got ${Buffer.concat(chunks).toString()}`), 50));
    });
    const h = await hbone();
    const stream = await h.open(a.port);
    const got = collect(stream);
    stream.end('ping');
    expect((await got).toString()).toBe('got ping');
  });

  it('carries the app half-close: the source still sends after the app’s FIN', async () => {
    let appEnded = false;
    const appGot = new Promise<string>((resolve) => {
      void app((s) => {
        s.end('bye'); // FIN first, then keep reading
        void collect(s).then((b) => resolve(b.toString()));
      }).then((a) => port.resolve(a.port));
    });
    const port = Promise.withResolvers<number>();
    const h = await hbone();
    const stream = await h.open(await port.promise);
    const closed = new Promise((r) => stream.once('close', r));
    stream.on('end', () => (appEnded = true));
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((r) => stream.once('end', r));
    expect(Buffer.concat(chunks).toString()).toBe('bye');
    stream.write('late ');
    stream.end('data');
    expect(await appGot).toBe('late data');
    expect(appEnded).toBe(true);
    await closed;
    expect(stream.bytesRead).toBe(3);
    expect(stream.bytesWritten).toBe(9);
  });

  it('respects backpressure: a stalled app stops the source within the windows', async () => {
    let appSock: Socket | undefined;
    let appBytes = 0;
    const a = await app((s) => {
      appSock = s;
      s.pause();
      s.on('data', (c: Buffer) => (appBytes += c.length));
      s.on('end', () => s.end());
    });
    const h = await hbone();
    const stream = await h.open(a.port);
    const chunk = Buffer.alloc(64 << 10);
    let written = 0;
    // Write while the tunnel drains; stop once it has stayed blocked for 300 ms.
    for (;;) {
      while (stream.write(chunk)) written += chunk.length;
      written += chunk.length;
      const drained = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => {
          stream.off('drain', on);
          resolve(false);
        }, 300);
        const on = () => {
          clearTimeout(t);
          resolve(true);
        };
        stream.once('drain', on);
      });
      if (!drained || written > 256 << 20) break;
    }
    expect(stream.writableNeedDrain).toBe(true);
    // The stream window (4 MiB), socket buffers and stream buffers bound what is in flight.
    expect(written).toBeLessThan(64 << 20);
    const drained = new Promise((r) => stream.once('drain', r));
    appSock!.resume();
    await drained;
    const closed = new Promise((r) => stream.once('close', r));
    stream.resume();
    stream.end();
    await closed;
    expect(appBytes).toBe(written);
  });

  it('answers 401 with the denying policy when authorization denies, and never connects the app', async () => {
    const a = await app((s) => s.end());
    const h = await hbone({ authorize: () => ({ allow: false, reason: 'DENY policy matched', policy: 'default/deny-client' }) });
    const err = await h.open(a.port).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_STATUS', status: 401, policy: 'default/deny-client' });
    expect(a.accepts()).toBe(0);
    expect(h.rejected[0]).toMatchObject({ status: 401, policy: 'default/deny-client', peerIdentity: CLIENT_ID });
  });

  it('answers 503 when the app port refuses', async () => {
    const a = await app(() => {});
    const h = await hbone();
    // A port nothing listens on: bind one, then free it.
    const dead = await app(() => {});
    cleanups.pop()!();
    await new Promise((r) => setTimeout(r, 10));
    const err = await h.open(dead.port).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_STATUS', status: 503 });
    expect(h.rejected[0]).toMatchObject({ status: 503, error: { code: 'ECONNREFUSED' } });
    expect(a.accepts()).toBe(0);
  });

  it('answers 400 when the target is not an address of this pod', async () => {
    const a = await app(() => {});
    const h = await hbone();
    const err = await h.open(a.port, { ip: '10.9.9.9' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_STATUS', status: 400 });
    expect(h.seen).toHaveLength(0);
  });

  it('answers 400 to a request that is not CONNECT, to a bad :authority and to a mesh port', async () => {
    const a = await app(() => {});
    const h = await hbone();
    const s = await rawSession(h.addr.port);
    expect(await rawStatus(s, { ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${a.port}`, ':scheme': 'https' })).toBe(400);
    expect(await rawStatus(s, { ':method': 'CONNECT', ':authority': `app.default.svc:${a.port}` })).toBe(400);
    expect(await rawStatus(s, { ':method': 'CONNECT', ':authority': '127.0.0.1:99999' })).toBe(400);
    expect(await rawStatus(s, { ':method': 'CONNECT', ':authority': '127.0.0.1:15008' })).toBe(400);
    expect(h.seen).toHaveLength(0);
    expect(a.accepts()).toBe(0);
    expect(h.server.stats().answered['400']).toBe(4);
  });

  it('turns an app reset mid-stream into a reset of the source stream, not a clean end', async () => {
    const a = await app((s) => {
      s.write(Buffer.alloc(100_000, 1), () => setTimeout(() => s.resetAndDestroy(), 50));
    });
    const h = await hbone();
    const stream = await h.open(a.port);
    let ended = false;
    stream.on('end', () => (ended = true));
    let n = 0;
    stream.on('data', (c: Buffer) => (n += c.length));
    const err = await new Promise<Error & { code?: string; h2Code?: number }>((r) => stream.once('error', r));
    expect(err.code).toBe('NM_ERR_HBONE_RESET');
    expect(err.h2Code).toBe(constants.NGHTTP2_CONNECT_ERROR);
    expect(ended).toBe(false);
    expect(n).toBe(100_000);
  });

  it('turns a source reset into a reset of the app connection', async () => {
    const appErr = Promise.withResolvers<Error & { code?: string }>();
    const a = await app((s) => {
      s.on('error', appErr.resolve);
      s.on('end', () => appErr.reject(new Error('clean end')));
      s.write('hello');
    });
    const h = await hbone();
    const stream = await h.open(a.port);
    await new Promise((r) => stream.once('data', r));
    stream.resetAndDestroy();
    expect((await appErr.promise).code).toBe('ECONNRESET');
  });

  it('reports each tunnel to onStream with live byte counts', async () => {
    const results: Promise<{ sent: number; received: number }>[] = [];
    const a = await app((s) => {
      s.on('data', () => {});
      s.on('end', () => s.end('0123456789'));
    });
    const h = await hbone({ onStream: (_r, _s, _u, relay) => results.push(relay.done) });
    const stream = await h.open(a.port);
    const got = collect(stream);
    stream.end('abc');
    await got;
    expect(results).toHaveLength(1);
    expect(await results[0]).toMatchObject({ sent: 3, received: 10 });
  });
});

// Request mirroring through the L7 engine (UpstreamTarget.mirror): the shadow gets the same
// request and body with `-shadow` on its Host (HTTP/1.1) or :authority (h2c) while the client
// gets the main response; dead, stalled and silent shadows leave the main request untouched.
import { connect as h2connect, createServer as createH2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { connect, createServer, type AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { app, dial, listen, perTest, raw, statuses } from '../helpers/l7.js';
import { shadowHost } from '../../src/l7/mirror.js';

const { defer, withFront } = perTest();

interface Seen {
  method: string;
  path: string;
  host: string;
  body: string;
}

/** An HTTP/1.1 app that records each request whole; `answer: false` reads it and never answers. */
async function recorder(name: string, answer = true): Promise<{ port: number; seen: Seen[]; next(): Promise<Seen> }> {
  const seen: Seen[] = [];
  const waiting: ((s: Seen) => void)[] = [];
  const a = await app((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const s = { method: req.method ?? '', path: req.url ?? '', host: req.headers.host ?? '', body };
      seen.push(s);
      waiting.shift()?.(s);
      if (answer) res.end(`${name}:${body.length}`);
    });
  });
  defer(() => a.close());
  return { port: a.port, seen, next: () => (seen.length > waiting.length ? Promise.resolve(seen[waiting.length]!) : new Promise((r) => waiting.push(r))) };
}

/** Resolves once `ok()` holds, checking every few ms (the test's own timeout bounds it). */
async function until(ok: () => boolean): Promise<void> {
  while (!ok()) await new Promise((r) => setTimeout(r, 10));
}

async function deadPort(): Promise<number> {
  const s = createServer();
  const p = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** A peer that stopped reading: the first write is never acknowledged, so later ones queue. */
const stalled = (): Promise<Duplex> => Promise.resolve(new Duplex({ read() {}, write() {} }));

describe('L7 engine, request mirroring over HTTP/1.1', () => {
  it('sends the shadow the same request and body with Host svc-shadow:port, while the client gets the main response', async () => {
    const main = await recorder('main');
    const shadow = await recorder('shadow');
    const f = await withFront(() => ({ upstream: 'main', open: dial(main.port), mirror: [{ upstream: 'shadow', open: dial(shadow.port) }] }));
    const body = Array.from({ length: 100_000 }, (_, i) => String.fromCharCode(65 + (i % 50))).join('');
    const got = await raw(f.port, [`POST /orders?x=1 HTTP/1.1\r\nHost: svc.ns:8080\r\nContent-Length: ${body.length}\r\n\r\n`, body.slice(0, 33_333), body.slice(33_333)], { until: (g) => g.endsWith('main:100000') });
    expect(statuses(got)).toEqual([200]);
    expect(got).not.toContain('shadow');
    const s = await shadow.next();
    expect({ ...s, body: s.body === body }).toEqual({ method: 'POST', path: '/orders?x=1', host: 'svc.ns-shadow:8080', body: true });
    expect(main.seen.map((m) => [m.host, m.body === body])).toEqual([['svc.ns:8080', true]]);
    await until(() => f.engine.stats().mirrors.completed === 1);
    expect(f.engine.stats().mirrors).toEqual({ started: 1, completed: 1, dropped: 0, failed: 0 });
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ status: 200, upstream: 'main', responseFlags: '-', attempts: 1, requestBytes: 100_000 });
  });

  it('answers the client in full while its shadows are refused, stalled, never connected and silent; each is dropped or failed, never the request', async () => {
    const main = await recorder('main');
    const silent = await recorder('silent', false);
    const dead = await deadPort();
    const f = await withFront(
      () => ({
        upstream: 'main',
        open: dial(main.port),
        mirror: [
          { upstream: 'dead', open: dial(dead) },
          { upstream: 'stalled', open: stalled },
          { upstream: 'never', open: () => new Promise<Duplex>(() => {}) },
          { upstream: 'silent', open: dial(silent.port) },
        ],
      }),
    );
    const body = 'm'.repeat(1024 * 1024);
    const got = await raw(f.port, [`POST /big HTTP/1.1\r\nHost: svc\r\nContent-Length: ${body.length}\r\n\r\n`, body], { until: (g) => g.endsWith(`main:${body.length}`), ms: 15_000 });
    expect(statuses(got)).toEqual([200]);
    expect(main.seen.map((m) => m.body.length)).toEqual([body.length]);
    // The silent shadow got it all too, and has not answered: the client was not kept waiting for it.
    expect((await silent.next()).body.length).toBe(body.length);
    await until(() => f.engine.stats().mirrors.dropped === 2 && f.engine.stats().mirrors.failed === 1);
    expect(f.engine.stats().mirrors).toEqual({ started: 4, completed: 0, dropped: 2, failed: 1 });
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ status: 200, responseFlags: '-', responseBytes: `main:${body.length}`.length });
  });

  it('mirrors a retried request once, and drops the shadow of a request the client abandons', async () => {
    let tries = 0;
    const main = await app((req, res) => {
      req.resume();
      req.on('end', () => {
        res.statusCode = ++tries === 1 ? 503 : 200;
        res.end('main');
      });
    });
    defer(() => main.close());
    const shadow = await recorder('shadow');
    const f = await withFront(() => ({ upstream: 'main', open: dial(main.port), retry: { attempts: 2, backoffMs: 1, codes: [503], onConnectFailure: false }, mirror: [{ upstream: 'shadow', open: dial(shadow.port) }] }));
    expect(statuses(await raw(f.port, 'GET /once HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('main') }))).toEqual([200]);
    await until(() => f.engine.stats().mirrors.completed === 1);
    expect(tries).toBe(2);
    expect(shadow.seen.map((s) => s.path)).toEqual(['/once']);
    const s = connect({ host: '127.0.0.1', port: f.port });
    s.write('POST /left HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\npart of it');
    await until(() => f.engine.stats().mirrors.started === 2);
    s.destroy();
    await until(() => f.engine.stats().mirrors.dropped === 1);
    expect(f.engine.stats().mirrors).toEqual({ started: 2, completed: 1, dropped: 1, failed: 0 });
    const recs = await f.recorded(2);
    expect(recs[1]).toMatchObject({ path: '/left', responseFlags: 'DC' });
  });
});

describe('L7 engine, request mirroring over h2c', () => {
  it('sends the shadow the same stream and body with :authority svc-shadow:port; a dead shadow beside it changes nothing', async () => {
    const seen: { who: string; authority: string; path: string; body: string }[] = [];
    const h2app = async (who: string): Promise<number> => {
      const server = createH2Server();
      server.on('stream', (stream: ServerHttp2Stream, h: IncomingHttpHeaders) => {
        let body = '';
        stream.setEncoding('latin1');
        stream.on('data', (c: string) => (body += c));
        stream.on('end', () => {
          seen.push({ who, authority: String(h[':authority']), path: String(h[':path']), body });
          stream.respond({ ':status': 200 });
          stream.end(`${who}:${body.length}`);
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      defer(() => new Promise<void>((r) => server.close(() => r())));
      return (server.address() as AddressInfo).port;
    };
    const mainPort = await h2app('main');
    const shadowPort = await h2app('shadow');
    const dead = await deadPort();
    const f = await withFront(() => ({ upstream: 'main', open: dial(mainPort), mirror: [{ upstream: 'shadow', open: dial(shadowPort) }, { upstream: 'dead', open: dial(dead) }] }));
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const body = 'h'.repeat(50_000);
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = s.request({ ':method': 'PUT', ':path': '/items/7', ':authority': 'svc.ns:8080' });
      let got = '';
      let status = 0;
      req.setEncoding('latin1');
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (c: string) => (got += c));
      req.on('end', () => resolve({ status, body: got }));
      req.on('error', reject);
      req.end(body);
    });
    expect(res).toEqual({ status: 200, body: 'main:50000' });
    await until(() => f.engine.stats().mirrors.completed === 1 && f.engine.stats().mirrors.failed === 1);
    expect(seen.map((x) => [x.who, x.authority, x.path, x.body === body])).toEqual(
      expect.arrayContaining([
        ['main', 'svc.ns:8080', '/items/7', true],
        ['shadow', 'svc.ns-shadow:8080', '/items/7', true],
      ]),
    );
    expect(seen).toHaveLength(2);
    expect(f.engine.stats().mirrors).toEqual({ started: 2, completed: 1, dropped: 0, failed: 1 });
  });
});

describe('shadowHost', () => {
  it('adds -shadow to the host, before the port, as Envoy does', () => {
    expect(shadowHost('reviews')).toBe('reviews-shadow');
    expect(shadowHost('reviews.ns.svc:9080')).toBe('reviews.ns.svc-shadow:9080');
    expect(shadowHost('[fd00::1]:80')).toBe('[fd00::1]-shadow:80');
    expect(shadowHost('[fd00::1]')).toBe('[fd00::1]-shadow');
  });
});

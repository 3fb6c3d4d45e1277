// Per-connection request limits through the L7 engine: a route's maxRequestsPerConnection (or
// the pool's default) closes an upstream HTTP/1.1 connection, or retires an HTTP/2 session,
// after that many requests; the same upstream without a limit keeps one connection.
import { connect as h2connect, createServer as createH2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { app, dial, perTest, raw, statuses, type App } from '../helpers/l7.js';

const { defer, withFront } = perTest();

/** An app that counts the requests each of its connections carried. */
async function counting(): Promise<App & { perConnection: number[] }> {
  const perConnection: number[] = [];
  const a = await app((req, res) => {
    const s = req.socket as Socket & { n?: number };
    if (s.n === undefined) {
      s.n = perConnection.length;
      perConnection.push(0);
    }
    perConnection[s.n]!++;
    req.resume();
    req.on('end', () => res.end('fine'));
  });
  defer(() => a.close());
  return Object.assign(a, { perConnection });
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`;

async function sequential(port: number, n: number, path: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(...statuses(await raw(port, GET(path), { until: (g) => g.endsWith('fine') })));
  return out;
}

describe('L7 engine, requests per upstream connection', () => {
  it("closes an HTTP/1.1 upstream connection after the route's maxRequestsPerConnection; without it one connection serves all", async () => {
    const limited = await counting();
    const open = await counting();
    const f = await withFront((req) => (req.path === '/limited' ? { upstream: 'limited', open: dial(limited.port), maxRequestsPerConnection: 2 } : { upstream: 'open', open: dial(open.port) }));
    expect(await sequential(f.port, 5, '/limited')).toEqual([200, 200, 200, 200, 200]);
    expect(await sequential(f.port, 5, '/open')).toEqual([200, 200, 200, 200, 200]);
    expect(limited.perConnection).toEqual([2, 2, 1]);
    expect(open.perConnection).toEqual([5]);
  });

  it('applies the pool default (pool.maxRequestsPerConnection), which a route may raise', async () => {
    const byDefault = await counting();
    const raised = await counting();
    const f = await withFront((req) => (req.path === '/default' ? { upstream: 'default', open: dial(byDefault.port) } : { upstream: 'raised', open: dial(raised.port), maxRequestsPerConnection: 3 }), { pool: { maxRequestsPerConnection: 1 } });
    expect(await sequential(f.port, 3, '/default')).toEqual([200, 200, 200]);
    expect(await sequential(f.port, 3, '/raised')).toEqual([200, 200, 200]);
    expect(byDefault.perConnection).toEqual([1, 1, 1]);
    expect(raised.perConnection).toEqual([3]);
  });

  it('retires an HTTP/2 upstream session after maxRequestsPerConnection streams; without a limit one session serves all', async () => {
    const server = createH2Server();
    const sessions: Record<string, number> = {};
    server.on('stream', (stream: ServerHttp2Stream, h) => {
      const s = stream.session as unknown as { id?: number };
      const key = String(h[':path']);
      if (s.id === undefined) {
        s.id = 1;
        sessions[key] = (sessions[key] ?? 0) + 1;
      }
      stream.respond({ ':status': 200 });
      stream.end('fine');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    defer(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as AddressInfo).port;
    const f = await withFront((req) => ({ upstream: req.path, open: dial(port), ...(req.path === '/limited' ? { maxRequestsPerConnection: 2 } : {}) }));
    const c = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void c.close());
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const req = c.request({ ':path': path });
        let status = 0;
        req.on('response', (h) => (status = Number(h[':status'])));
        req.on('data', () => {});
        req.on('end', () => resolve(status));
        req.on('error', reject);
        req.end();
      });
    for (let i = 0; i < 4; i++) expect(await get('/limited')).toBe(200);
    for (let i = 0; i < 4; i++) expect(await get('/open')).toBe(200);
    expect(sessions).toEqual({ '/limited': 2, '/open': 1 });
  });
});

describe('L7 engine, a route\'s own connection limits (DestinationRule connectionPool)', () => {
  it('maxConnections 1 with maxPending 0: a second request while the first is out gets 503 UO; without the limits both are served', async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    const slow = await app((req, res) => {
      req.resume();
      void held.then(() => res.end('fine'));
    });
    defer(() => slow.close());
    const f = await withFront((req) => ({ upstream: req.path, open: dial(slow.port), ...(req.path === '/limited' ? { maxConnections: 1, maxPending: 0 } : {}) }));
    const first = raw(f.port, GET('/limited'), { until: (g) => g.endsWith('fine') });
    // The second goes while the first holds the only connection.
    await new Promise((r) => setTimeout(r, 100));
    const second = await raw(f.port, GET('/limited'), { until: (g) => /\r\n\r\n/.test(g) && /503/.test(g) });
    expect(statuses(second)).toEqual([503]);
    const a = raw(f.port, GET('/open'), { until: (g) => g.endsWith('fine') });
    const b = raw(f.port, GET('/open'), { until: (g) => g.endsWith('fine') });
    release();
    expect(statuses(await first)).toEqual([200]);
    expect([...statuses(await a), ...statuses(await b)]).toEqual([200, 200]);
    const flags = f.records.filter((r) => r.upstream === '/limited').map((r) => r.responseFlags);
    expect(flags).toContain('UO');
  });
});

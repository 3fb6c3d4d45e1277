// Upstream and client failures through the L7 engine: each maps to its status and Envoy-style
// response flag (docs/l7.md), is booked once, and leaves the engine serving the next request;
// plus the pool's limits, idle timeouts and the one safe retry of a stale keep-alive connection.
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startApp } from '../helpers/app.js';
import { app, dial, listen, perTest, raw, statuses } from '../helpers/l7.js';

const { defer, withFront } = perTest();

async function good(): Promise<number> {
  const a = await app((req, res) => {
    req.resume();
    req.on('end', () => res.end('fine'));
  });
  defer(() => a.close());
  return a.port;
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`;
const head = (g: string) => g.includes('\r\n\r\n');

/** A port nothing listens on (bound once, then closed). */
async function deadPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const s = createServer();
  const p = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

describe('L7 engine, upstream failures', () => {
  it('answers 503 UF when the upstream refuses the connection; the live upstream on the next path answers', async () => {
    const live = await good();
    const dead = await deadPort();
    const f = await withFront((req) => ({ upstream: req.path, open: dial(req.path === '/dead' ? dead : live) }));
    const got = await raw(f.port, GET('/dead'), { until: (g) => g.includes('connection failure') });
    expect(statuses(got)).toEqual([503]);
    expect(got).toContain('upstream connect error or disconnect/reset before headers. reset reason: connection failure');
    expect(statuses(await raw(f.port, GET('/live'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags])).toEqual([
      ['/dead', 503, 'UF'],
      ['/live', 200, '-'],
    ]);
  });

  it('answers 503 UH when open() says no endpoint is healthy, and 503 UF when it takes longer than the connect timeout', async () => {
    const live = await good();
    const f = await withFront(
      (req) => {
        if (req.path === '/none') return { upstream: 'none', open: () => Promise.reject(Object.assign(new Error('no healthy endpoint'), { responseFlags: 'UH' })) };
        if (req.path === '/hang') return { upstream: 'hang', open: () => new Promise(() => {}) };
        return { upstream: 'live', open: dial(live) };
      },
      { connectTimeoutMs: 150 },
    );
    const none = await raw(f.port, GET('/none'), { until: (g) => g.includes('no healthy upstream') });
    expect(statuses(none)).toEqual([503]);
    const hang = await raw(f.port, GET('/hang'), { until: (g) => g.includes('connection failure') });
    expect(statuses(hang)).toEqual([503]);
    expect(statuses(await raw(f.port, GET('/live'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    const recs = await f.recorded(3);
    expect(recs.map((r) => r.responseFlags)).toEqual(['UH', 'UF', '-']);
  });

  it('answers 503 UC when the upstream resets before its response head, and 502 UPE when it answers garbage', async () => {
    const live = await good();
    const reset = await startApp((s) => s.once('data', () => s.resetAndDestroy()));
    const garbage = await startApp((s) => s.once('data', () => s.write('HTTP/1.1 2OO NOT OK\r\n\r\n')));
    defer(() => reset.close(), () => garbage.close());
    const ports: Record<string, number> = { '/reset': reset.port, '/garbage': garbage.port, '/live': live };
    const f = await withFront((req) => ({ upstream: req.path, open: dial(ports[req.path]!) }));
    expect(statuses(await raw(f.port, GET('/reset'), { until: (g) => g.includes('connection termination') }))).toEqual([503]);
    expect(statuses(await raw(f.port, GET('/garbage'), { until: (g) => g.includes('protocol error') }))).toEqual([502]);
    expect(statuses(await raw(f.port, GET('/live'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.status, r.responseFlags])).toEqual([
      [503, 'UC'],
      [502, 'UPE'],
      [200, '-'],
    ]);
  });

  it('answers 504 UT when the response head does not come within the route timeout; a faster upstream passes', async () => {
    const slow = await app((req, res) => setTimeout(() => res.end('late'), req.url === '/slow' ? 2000 : 0));
    defer(() => slow.close());
    const f = await withFront(() => ({ upstream: 'slow', open: dial(slow.port), timeoutMs: 150 }));
    const got = await raw(f.port, GET('/slow'), { until: (g) => g.includes('upstream request timeout') });
    expect(statuses(got)).toEqual([504]);
    expect(statuses(await raw(f.port, GET('/quick'), { until: (g) => g.endsWith('late') }))).toEqual([200]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.status, r.responseFlags])).toEqual([
      [504, 'UT'],
      [200, '-'],
    ]);
  });

  it('resets the client when the upstream dies mid-body (UC), so a cut response never looks complete', async () => {
    const cut = await startApp((s) =>
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part');
        setTimeout(() => s.resetAndDestroy(), 30);
      }),
    );
    defer(() => cut.close());
    const f = await withFront(() => ({ upstream: 'cut', open: dial(cut.port) }));
    const outcome = await new Promise<{ got: string; error?: string; ended: boolean }>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: f.port });
      let got = '';
      let error: string | undefined;
      let ended = false;
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('end', () => (ended = true));
      s.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
      s.on('close', () => resolve({ got, ...(error ? { error } : {}), ended }));
      s.write(GET('/'));
    });
    expect(outcome.got).toContain('only part');
    expect(outcome.error).toBe('ECONNRESET');
    expect(outcome.ended).toBe(false);
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ status: 200, responseFlags: 'UC', responseBytes: 9 });
  });

  it('books DC when the client leaves mid-request, and drops that upstream connection', async () => {
    let upstreamClosed = 0;
    const a = await app((req, res) => {
      req.resume();
      req.on('end', () => res.end('fine'));
    });
    a.server.on('connection', (s: Socket) => s.on('close', () => upstreamClosed++));
    defer(() => a.close());
    const f = await withFront(() => ({ upstream: 'app', open: dial(a.port) }));
    const s = connect({ host: '127.0.0.1', port: f.port });
    s.write('POST /half HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\npart of it');
    await new Promise((r) => setTimeout(r, 100));
    s.destroy();
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ path: '/half', status: 0, responseFlags: 'DC', requestBytes: 10 });
    await new Promise((r) => setTimeout(r, 50));
    expect(upstreamClosed).toBe(1);
    // The twin: a whole request on the same engine is answered.
    expect(statuses(await raw(f.port, 'POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nfull', { until: (g) => g.endsWith('fine') }))).toEqual([200]);
  });

  it('books DC when the client leaves while its response is still awaited', async () => {
    const slow = await app((_req, res) => setTimeout(() => res.end('late'), 300));
    defer(() => slow.close());
    const f = await withFront(() => ({ upstream: 'slow', open: dial(slow.port) }));
    const s = connect({ host: '127.0.0.1', port: f.port });
    s.write(GET('/wait'));
    await new Promise((r) => setTimeout(r, 80));
    s.resetAndDestroy();
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ path: '/wait', status: 0, responseFlags: 'DC' });
  });

  it('answers 500 when the route hook throws or rejects, and goes on serving', async () => {
    const live = await good();
    const f = await withFront((req) => {
      if (req.path === '/throw') throw new Error('route bug');
      if (req.path === '/reject') return Promise.reject(new Error('async route bug'));
      return Promise.resolve({ upstream: 'live', open: dial(live) });
    });
    const got = await raw(f.port, `${GET('/throw')}${GET('/reject')}${GET('/ok')}`, { until: (g) => g.endsWith('fine') });
    expect(statuses(got)).toEqual([500, 500, 200]);
  });

  it('answers 503 UO beyond the pool limits (connections and queue), and serves again once a connection is free', async () => {
    let release: (() => void) | undefined;
    const a = await app((req, res) => {
      if (req.url === '/hold') release = () => res.end('held');
      else res.end('fine');
    });
    defer(() => a.close());
    const f = await withFront(() => ({ upstream: 'app', open: dial(a.port) }), { pool: { maxConnections: 1, maxPending: 0 } });
    const held = raw(f.port, GET('/hold'), { until: (g) => g.endsWith('held') });
    await new Promise((r) => setTimeout(r, 80));
    const over = await raw(f.port, GET('/over'), { until: (g) => g.includes('overflow') });
    expect(statuses(over)).toEqual([503]);
    release!();
    expect(statuses(await held)).toEqual([200]);
    expect(statuses(await raw(f.port, GET('/after'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.path, r.responseFlags])).toEqual([
      ['/over', 'UO'],
      ['/hold', '-'],
      ['/after', '-'],
    ]);
  });

  it('queues a request for a busy pool and serves it on the connection the first one frees', async () => {
    let release: (() => void) | undefined;
    const a = await app((req, res) => {
      if (req.url === '/hold') release = () => res.end('held');
      else res.end('queued');
    });
    defer(() => a.close());
    const f = await withFront(() => ({ upstream: 'app', open: dial(a.port) }), { pool: { maxConnections: 1, maxPending: 4 } });
    const held = raw(f.port, GET('/hold'), { until: (g) => g.endsWith('held') });
    await new Promise((r) => setTimeout(r, 80));
    const queued = raw(f.port, GET('/next'), { until: (g) => g.endsWith('queued') });
    await new Promise((r) => setTimeout(r, 80));
    expect(f.engine.stats().pools[0]).toMatchObject({ connections: 1, waiting: 1 });
    release!();
    expect(statuses(await held)).toEqual([200]);
    expect(statuses(await queued)).toEqual([200]);
    expect(a.connections).toBe(1);
  });
});

/** An upstream whose first connection answers once with keep-alive, then drops the next request. */
async function flakyApp(): Promise<{ port: number; connections(): number }> {
  let conns = 0;
  const flaky = await startApp((s) => {
    const n = ++conns;
    let served = 0;
    s.on('data', () => {
      if (n === 1 && served++ >= 1) return s.resetAndDestroy();
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  defer(() => flaky.close());
  return { port: flaky.port, connections: () => conns };
}

describe('L7 engine, upstream pool lifetimes', () => {
  it('retries an idempotent request once on a fresh connection when a reused one was closed under it', async () => {
    const flaky = await flakyApp();
    const f = await withFront(() => ({ upstream: 'flaky', open: dial(flaky.port) }));
    expect(statuses(await raw(f.port, GET('/1'), { until: (g) => g.endsWith('ok') }))).toEqual([200]);
    expect(statuses(await raw(f.port, GET('/2'), { until: (g) => g.endsWith('ok') }))).toEqual([200]);
    expect(flaky.connections()).toBe(2);
    const recs = await f.recorded(2);
    expect(recs.map((r) => r.responseFlags)).toEqual(['-', '-']);
  });

  it('does not replay a request with a body on a stale connection: 503 UC', async () => {
    const flaky = await flakyApp();
    const f = await withFront(() => ({ upstream: 'flaky', open: dial(flaky.port) }));
    expect(statuses(await raw(f.port, GET('/1'), { until: (g) => g.endsWith('ok') }))).toEqual([200]);
    const post = await raw(f.port, 'POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody', { until: head });
    expect(statuses(post)).toEqual([503]);
    expect(flaky.connections()).toBe(1);
    const recs = await f.recorded(2);
    expect(recs[1]).toMatchObject({ status: 503, responseFlags: 'UC' });
  });

  it('closes idle upstream connections after the idle timeout, sooner when the upstream says Keep-Alive: timeout', async () => {
    const closed: string[] = [];
    const a = await app((req, res) => {
      if (req.url === '/hint') res.setHeader('keep-alive', 'timeout=1');
      res.end('fine');
    });
    a.server.keepAliveTimeout = 60_000;
    a.server.on('connection', (s: Socket) => s.on('close', () => closed.push('closed')));
    defer(() => a.close());
    const f = await withFront((req) => ({ upstream: req.path, open: dial(a.port) }), { pool: { idleTimeoutMs: 300 } });
    expect(statuses(await raw(f.port, GET('/hint'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    // The hint (1 s, less a second of margin) retires that connection at the next sweep.
    await new Promise((r) => setTimeout(r, 120));
    expect(f.engine.stats().pools.find((p) => p.upstream === '/hint')).toBeUndefined();
    expect(statuses(await raw(f.port, GET('/plain'), { until: (g) => g.endsWith('fine') }))).toEqual([200]);
    await new Promise((r) => setTimeout(r, 100));
    expect(f.engine.stats().pools.find((p) => p.upstream === '/plain')).toMatchObject({ idle: 1 });
    await new Promise((r) => setTimeout(r, 400));
    expect(f.engine.stats().pools.find((p) => p.upstream === '/plain')).toBeUndefined();
    expect(closed.length).toBe(2);
  });
});

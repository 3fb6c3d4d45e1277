// Retries through the L7 engine (UpstreamTarget.retry): a flaky upstream hidden over HTTP/1.1
// and h2c, connect failures sent to next()'s other endpoint, request bodies replayed byte for
// byte (and not replayed past the bound), per-try timeouts, URX when retries run out, and no
// retry once a response is streaming. Each "not retried" case has its retried twin.
import { connect as h2connect, createServer as createH2Server, type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { connect, createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startApp } from '../helpers/app.js';
import { app, dial, listen, perTest, raw, statuses } from '../helpers/l7.js';
import type { UpstreamRetry } from '../../src/l7/types.js';

const { defer, withFront } = perTest();

const retry = (r: Partial<UpstreamRetry> = {}): UpstreamRetry => ({ attempts: 3, backoffMs: 1, codes: [503], onConnectFailure: false, ...r });

/** An HTTP/1.1 upstream that answers `status` to the first `failures` requests of each path, then 200; it records each body. */
async function flaky(failures: number, status = 503): Promise<{ port: number; seen: { path: string; body: string; host: string }[] }> {
  const seen: { path: string; body: string; host: string }[] = [];
  const counts = new Map<string, number>();
  const a = await app((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const path = req.url ?? '';
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      seen.push({ path, body, host: req.headers.host ?? '' });
      if (n <= failures) {
        res.statusCode = status;
        res.end(`fail ${n}`);
      } else res.end(`ok ${n}`);
    });
  });
  defer(() => a.close());
  return { port: a.port, seen };
}

/** A port nothing listens on (bound once, then closed). */
async function deadPort(): Promise<number> {
  const s = createServer();
  const p = await listen(s);
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`;
const ends = (s: string) => (g: string) => g.endsWith(s);

describe('L7 engine, retries over HTTP/1.1', () => {
  it('hides an upstream that answers 503 twice, then 200; the same upstream without a retry policy shows the 503', async () => {
    const up = await flaky(2);
    const f = await withFront((req) => ({ upstream: 'flaky', open: dial(up.port), ...(req.path === '/retried' ? { retry: retry() } : {}) }));
    const got = await raw(f.port, GET('/retried'), { until: ends('ok 3') });
    expect(statuses(got)).toEqual([200]);
    // The 503s were read and dropped: not a byte of them reached the client.
    expect(got).not.toContain('fail');
    const plain = await raw(f.port, GET('/plain'), { until: ends('fail 1') });
    expect(statuses(plain)).toEqual([503]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/retried', 200, '-', 3],
      ['/plain', 503, '-', 1],
    ]);
    expect(up.seen.filter((s) => s.path === '/retried')).toHaveLength(3);
  });

  it('answers the last try when retries run out, flagged URX; with one more attempt the same upstream answers 200', async () => {
    const up = await flaky(3);
    const f = await withFront((req) => ({ upstream: 'flaky', open: dial(up.port), retry: retry({ attempts: req.path === '/two' ? 2 : 3 }) }));
    const two = await raw(f.port, GET('/two'), { until: ends('fail 3') });
    expect(statuses(two)).toEqual([503]);
    expect(two).not.toContain('fail 1');
    const three = await raw(f.port, GET('/three'), { until: ends('ok 4') });
    expect(statuses(three)).toEqual([200]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/two', 503, 'URX', 3],
      ['/three', 200, '-', 4],
    ]);
  });

  it("retries a refused connection on next()'s other endpoint; without onConnectFailure it answers 503 UF", async () => {
    const up = await flaky(0);
    const dead = await deadPort();
    const f = await withFront((req) => ({
      upstream: 'dead',
      open: dial(dead),
      retry: retry({ onConnectFailure: req.path === '/failover', next: () => ({ upstream: 'live', open: dial(up.port) }) }),
    }));
    expect(statuses(await raw(f.port, GET('/failover'), { until: ends('ok 1') }))).toEqual([200]);
    expect(statuses(await raw(f.port, GET('/no-failover'), { until: (g) => g.includes('connection failure') }))).toEqual([503]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.upstream, r.attempts])).toEqual([
      ['/failover', 200, '-', 'live', 2],
      ['/no-failover', 503, 'UF', 'dead', 1],
    ]);
  });

  it('books UF,URX when every endpoint refuses, and a direct answer from next() is the answer', async () => {
    const dead = await deadPort();
    const f = await withFront((req) => ({
      upstream: 'dead',
      open: dial(dead),
      retry: retry({ attempts: 2, onConnectFailure: true, ...(req.path === '/direct' ? { next: () => ({ respond: { status: 503, body: 'no endpoint left', responseFlags: 'UH' } }) } : {}) }),
    }));
    expect(statuses(await raw(f.port, GET('/all-dead'), { until: (g) => g.includes('connection failure') }))).toEqual([503]);
    const direct = await raw(f.port, GET('/direct'), { until: ends('no endpoint left') });
    expect(statuses(direct)).toEqual([503]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.responseFlags, r.attempts])).toEqual([
      ['/all-dead', 'UF,URX', 3],
      ['/direct', 'UH', 1],
    ]);
  });

  it('sends a retried POST body identically on every try, Content-Length and chunked, however the client split it', async () => {
    const up = await flaky(1);
    const f = await withFront(() => ({ upstream: 'flaky', open: dial(up.port), retry: retry() }));
    const body = Array.from({ length: 20_000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
    const cl = await raw(f.port, [`POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`, body.slice(0, 7000), body.slice(7000)], { until: ends('ok 2') });
    expect(statuses(cl)).toEqual([200]);
    const chunks = [body.slice(0, 5000), body.slice(5000, 5001), body.slice(5001)];
    const chunked = chunks.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`);
    const ch = await raw(f.port, ['POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', ...chunked, '0\r\n\r\n'], { until: ends('ok 2') });
    expect(statuses(ch)).toEqual([200]);
    for (const path of ['/cl', '/chunked']) {
      const tries = up.seen.filter((s) => s.path === path);
      expect(tries).toHaveLength(2);
      expect(tries.every((t) => t.body === body)).toBe(true);
    }
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.requestBytes, r.attempts])).toEqual([
      ['/cl', 20_000, 2],
      ['/chunked', 20_000, 2],
    ]);
  });

  it('does not retry a body over retryBufferBytes (declared or found while chunked) and still delivers it whole; a body within it is retried', async () => {
    const up = await flaky(1);
    const f = await withFront(() => ({ upstream: 'flaky', open: dial(up.port), retry: retry() }), { retryBufferBytes: 1024 });
    const big = 'b'.repeat(4096);
    const small = 's'.repeat(1000);
    const bigCl = await raw(f.port, `POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: ${big.length}\r\n\r\n${big}`, { until: ends('fail 1') });
    expect(statuses(bigCl)).toEqual([503]);
    const half = (s: string) => [s.slice(0, s.length / 2), s.slice(s.length / 2)].map((c) => `${c.length.toString(16)}\r\n${c}\r\n`);
    const bigCh = await raw(f.port, ['POST /big-chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', ...half(big), '0\r\n\r\n'], { until: ends('fail 1') });
    expect(statuses(bigCh)).toEqual([503]);
    const smallCl = await raw(f.port, `POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: ${small.length}\r\n\r\n${small}`, { until: ends('ok 2') });
    expect(statuses(smallCl)).toEqual([200]);
    expect(up.seen.map((s) => [s.path, s.body.length])).toEqual([
      ['/big', 4096],
      ['/big-chunked', 4096],
      ['/small', 1000],
      ['/small', 1000],
    ]);
    expect(up.seen.filter((s) => s.path !== '/small').every((s) => s.body === big)).toBe(true);
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/big', 503, '-', 1],
      ['/big-chunked', 503, '-', 1],
      ['/small', 200, '-', 2],
    ]);
  });

  it('retries a try that outlives perTryTimeoutMs (UT); when every try does, 504 UT,URX', async () => {
    const counts = new Map<string, number>();
    const a = await app((req, res) => {
      const n = (counts.get(req.url ?? '') ?? 0) + 1;
      counts.set(req.url ?? '', n);
      // /once hangs on its first try only; /always on every try.
      if (req.url === '/always' || n === 1) return;
      res.end(`ok ${n}`);
    });
    defer(() => a.close());
    const f = await withFront(() => ({ upstream: 'app', open: dial(a.port), retry: retry({ attempts: 1, codes: [], perTryTimeoutMs: 150 }) }));
    expect(statuses(await raw(f.port, GET('/once'), { until: ends('ok 2') }))).toEqual([200]);
    const always = await raw(f.port, GET('/always'), { until: (g) => g.includes('upstream request timeout') });
    expect(statuses(always)).toEqual([504]);
    expect(counts.get('/always')).toBe(2);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/once', 200, '-', 2],
      ['/always', 504, 'UT,URX', 2],
    ]);
  });

  it('never retries once a response is streaming (the client is reset, UC); a reset before the head is retried', async () => {
    const tries = new Map<string, number>();
    const up = await startApp((s) =>
      s.once('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1]!;
        const n = (tries.get(path) ?? 0) + 1;
        tries.set(path, n);
        if (path === '/early' && n === 1) return s.resetAndDestroy();
        if (path === '/mid') {
          s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part');
          setTimeout(() => s.resetAndDestroy(), 30);
          return;
        }
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nwhole');
      }),
    );
    defer(() => up.close());
    const f = await withFront(() => ({ upstream: 'raw', open: dial(up.port), retry: retry({ onConnectFailure: true }) }));
    expect(statuses(await raw(f.port, GET('/early'), { until: ends('whole') }))).toEqual([200]);
    const cut = await new Promise<{ got: string; error?: string }>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: f.port });
      let got = '';
      let error: string | undefined;
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
      s.on('close', () => resolve({ got, ...(error ? { error } : {}) }));
      s.write(GET('/mid'));
    });
    expect(cut.got).toContain('only part');
    expect(cut.error).toBe('ECONNRESET');
    expect(tries.get('/mid')).toBe(1);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/early', 200, '-', 2],
      ['/mid', 200, 'UC', 1],
    ]);
  });

  it('refuses a malformed retry policy with 500, naming the field', async () => {
    const up = await flaky(0);
    const f = await withFront((req) => ({ upstream: 'x', open: dial(up.port), retry: retry({ attempts: req.path === '/bad' ? -1 : 1 }) }));
    expect(statuses(await raw(f.port, GET('/bad'), { until: (g) => g.includes('routing') }))).toEqual([500]);
    expect(statuses(await raw(f.port, GET('/good'), { until: ends('ok 1') }))).toEqual([200]);
  });
});

/** An h2c upstream answering `status` to the first `failures` streams of each path, then 200; it records each body. */
async function flakyH2(failures: number): Promise<{ port: number; seen: { path: string; body: string }[] }> {
  const seen: { path: string; body: string }[] = [];
  const counts = new Map<string, number>();
  const server = createH2Server();
  server.on('stream', (stream: ServerHttp2Stream, h: IncomingHttpHeaders) => {
    let body = '';
    stream.setEncoding('latin1');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => {
      const path = String(h[':path']);
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      seen.push({ path, body });
      stream.respond({ ':status': n <= failures ? 503 : 200 });
      stream.end(n <= failures ? `fail ${n}` : `ok ${n}`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  defer(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, seen };
}

function h2req(s: ClientHttp2Session, path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path });
    let got = '';
    let status = 0;
    req.setEncoding('latin1');
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (c: string) => (got += c));
    req.on('end', () => resolve({ status, body: got }));
    req.on('error', reject);
    req.end(body);
  });
}

describe('L7 engine, retries over h2c', () => {
  it('hides a flaky h2c upstream, replaying the POST body on each try; retries run out with URX; no policy shows the 503', async () => {
    const up = await flakyH2(2);
    const good = await flakyH2(0);
    const dead = await deadPort();
    const f = await withFront((req) => {
      if (req.path === '/plain') return { upstream: 'h2', open: dial(up.port) };
      if (req.path === '/failover') return { upstream: 'dead', open: dial(dead), retry: retry({ onConnectFailure: true, next: () => ({ upstream: 'good', open: dial(good.port) }) }) };
      return { upstream: 'h2', open: dial(up.port), retry: retry({ attempts: req.path === '/short' ? 1 : 3 }) };
    });
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const body = 'p'.repeat(30_000);
    expect(await h2req(s, '/post', body)).toEqual({ status: 200, body: 'ok 3' });
    const posts = up.seen.filter((x) => x.path === '/post');
    expect(posts).toHaveLength(3);
    expect(posts.every((p) => p.body === body)).toBe(true);
    expect(await h2req(s, '/short')).toEqual({ status: 503, body: 'fail 2' });
    expect(await h2req(s, '/plain')).toEqual({ status: 503, body: 'fail 1' });
    expect(await h2req(s, '/failover')).toEqual({ status: 200, body: 'ok 1' });
    const recs = await f.recorded(4);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/post', 200, '-', 3],
      ['/short', 503, 'URX', 2],
      ['/plain', 503, '-', 1],
      ['/failover', 200, '-', 2],
    ]);
    expect(recs[0]!.requestBytes).toBe(30_000);
  });

  it('never retries an h2c response already streaming (the client stream is reset, UC); a reset before the head is retried', async () => {
    const counts = new Map<string, number>();
    const server = createH2Server();
    server.on('stream', (stream: ServerHttp2Stream, h: IncomingHttpHeaders) => {
      const path = String(h[':path']);
      const n = (counts.get(path) ?? 0) + 1;
      counts.set(path, n);
      stream.on('error', () => {});
      if (path === '/early' && n === 1) return stream.close(2); // INTERNAL_ERROR before any head
      stream.respond({ ':status': 200 });
      if (path === '/mid') {
        stream.write('only part');
        // destroy() resets (RST_STREAM INTERNAL_ERROR); close(2) behind a write ends the stream cleanly.
        setTimeout(() => stream.destroy(new Error('upstream failed mid-body')), 30);
      } else stream.end('whole');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    defer(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as AddressInfo).port;
    const f = await withFront(() => ({ upstream: 'h2', open: dial(port), retry: retry({ onConnectFailure: true }) }));
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    s.on('error', () => {});
    defer(async () => void s.close());
    expect(await h2req(s, '/early')).toEqual({ status: 200, body: 'whole' });
    const mid = await new Promise<{ body: string; rst: number }>((resolve) => {
      const req = s.request({ ':path': '/mid' });
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (c: string) => (body += c));
      req.on('error', () => {});
      req.on('close', () => resolve({ body, rst: req.rstCode ?? 0 }));
      req.end();
    });
    expect(mid.body).toBe('only part');
    expect(mid.rst).not.toBe(0);
    expect(counts.get('/mid')).toBe(1);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.attempts])).toEqual([
      ['/early', 200, '-', 2],
      ['/mid', 200, 'UC', 1],
    ]);
  });

  it('does not retry an h2c body over the bound and delivers it whole; a smaller one on the same engine is retried', async () => {
    const up = await flakyH2(1);
    const f = await withFront(() => ({ upstream: 'h2', open: dial(up.port), retry: retry() }), { retryBufferBytes: 2048 });
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    expect(await h2req(s, '/big', 'B'.repeat(10_000))).toEqual({ status: 503, body: 'fail 1' });
    expect(await h2req(s, '/small', 'S'.repeat(2000))).toEqual({ status: 200, body: 'ok 2' });
    expect(up.seen.map((x) => [x.path, x.body.length])).toEqual([
      ['/big', 10_000],
      ['/small', 2000],
      ['/small', 2000],
    ]);
  });
});

// The L7 engine's HTTP/1.1 with real clients (node:http, undici, curl, raw sockets) against
// real node:http upstreams on loopback: keep-alive reuse, chunked bodies both ways, trailers,
// 100-continue, pipelining order, HEAD, HTTP/1.0, and re-framing a close-delimited response.
import { execFile } from 'node:child_process';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { Pool } from 'undici';
import { describe, expect, it } from 'vitest';
import { startApp, type TestApp } from '../helpers/app.js';
import { app, dial, front, perTest, raw, statuses, type App, type Front } from '../helpers/l7.js';

const { defer } = perTest();

async function setup(handler: Parameters<typeof app>[0], o: Parameters<typeof front>[1] = {}): Promise<{ a: App; f: Front }> {
  const a = await app(handler);
  const f = await front(() => ({ upstream: 'app', open: dial(a.port) }), o);
  defer(() => a.close(), () => f.close());
  return { a, f };
}

function get(port: number, path: string, agent: Agent, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent, headers }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    })
      .on('error', reject)
      .end();
  });
}

describe('L7 engine, HTTP/1.1', () => {
  it('reuses one upstream connection for keep-alive requests from node:http and undici clients', async () => {
    const { a, f } = await setup((req, res) => res.end(`you asked ${req.url}`));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    defer(async () => agent.destroy());
    for (let i = 0; i < 5; i++) expect((await get(f.port, `/n${i}`, agent)).body).toBe(`you asked /n${i}`);
    const pool = new Pool(`http://127.0.0.1:${f.port}`, { connections: 1 });
    defer(() => pool.close());
    for (let i = 0; i < 5; i++) {
      const r = await pool.request({ path: `/u${i}`, method: 'GET' });
      expect(r.statusCode).toBe(200);
      expect(await r.body.text()).toBe(`you asked /u${i}`);
    }
    // Two client connections (node:http, undici), ten requests, one upstream connection.
    expect(f.accepted).toBe(2);
    expect(a.connections).toBe(1);
    expect(f.engine.stats().pools).toEqual([{ upstream: 'app', connections: 1, idle: 1, waiting: 0 }]);
    const recs = await f.recorded(10);
    expect(recs.map((r) => [r.method, r.path, r.status, r.responseFlags, r.upstream])).toContainEqual(['GET', '/u4', 200, '-', 'app']);
    expect(recs.every((r) => r.protocol === 'HTTP/1.1' && r.responseBytes === `you asked /u0`.length)).toBe(true);
  });

  it('opens a second upstream connection only when two requests are in flight at once', async () => {
    let hold: (() => void) | undefined;
    const { a, f } = await setup((req, res) => {
      if (req.url === '/slow') hold = () => res.end('slow');
      else res.end('fast');
    });
    const agent = new Agent({ keepAlive: true });
    defer(async () => agent.destroy());
    const slow = get(f.port, '/slow', agent);
    await new Promise((r) => setTimeout(r, 50));
    expect((await get(f.port, '/fast', agent)).body).toBe('fast');
    hold!();
    expect((await slow).body).toBe('slow');
    expect(a.connections).toBe(2);
  });

  it('streams chunked request and response bodies, with trailers, re-chunked one to one', async () => {
    let seen = '';
    const up = await startApp((s) => {
      s.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        if (!seen.endsWith('\r\n\r\n') || !seen.includes('x-client')) return;
        s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n');
        s.write('7\r\ngot 11:\r\n');
        setTimeout(() => s.write('b\r\nHELLO WORLD\r\n0\r\nx-sum: 11\r\n\r\n'), 20);
      });
    });
    const f = await front(() => ({ upstream: 'raw', open: dial(up.port) }));
    defer(() => up.close(), () => f.close());
    const req = 'POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-client\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-client: yes\r\n\r\n';
    const got = await raw(f.port, req, { until: (g) => g.includes('x-sum: 11\r\n\r\n') });
    // The upstream got the client's chunks re-chunked (extensions dropped) and its trailer.
    expect(seen.slice(seen.indexOf('\r\n\r\n') + 4)).toBe('5\r\nhello\r\n6\r\n world\r\n0\r\nx-client: yes\r\n\r\n');
    expect(seen.toLowerCase()).toContain('transfer-encoding: chunked');
    expect(got).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(got.slice(got.indexOf('\r\n\r\n') + 4)).toBe('7\r\ngot 11:\r\nb\r\nHELLO WORLD\r\n0\r\nx-sum: 11\r\n\r\n');
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ method: 'POST', status: 200, requestBytes: 11, responseBytes: 18 });
  });

  it('relays the upstream 100 Continue before the body, then the final response, on one connection', async () => {
    const { f } = await setup((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`received ${n}`));
    });
    const body = 'b'.repeat(5000);
    const s = connect({ host: '127.0.0.1', port: f.port });
    defer(async () => void s.destroy());
    let got = '';
    const seen = (what: string) =>
      new Promise<void>((resolve) => {
        const check = (): void => {
          if (got.includes(what)) resolve();
          else s.once('data', (d: Buffer) => ((got += d.toString('latin1')), check()));
        };
        check();
      });
    s.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
    await seen('\r\n\r\n');
    // Nothing but the interim answer before the client has sent a byte of its body.
    expect(got).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    s.write(body);
    await seen('received 5000');
    expect(statuses(got)).toEqual([100, 200]);
  });

  it('carries curl through Expect: 100-continue end to end (curl would stall 30 s without the 100)', async () => {
    const { f } = await setup((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(`received ${n} expect=${req.headers.expect ?? 'none'}`));
    });
    const child = execFile('curl', ['-sv', '--expect100-timeout', '30', '-H', 'Expect: 100-continue', '--data-binary', '@-', `http://127.0.0.1:${f.port}/big`], { encoding: 'utf8' });
    const out = new Promise<{ stdout: string; stderr: string }>((resolve) => {
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: string) => (stdout += d));
      child.stderr!.on('data', (d: string) => (stderr += d));
      child.on('close', () => resolve({ stdout, stderr }));
    });
    child.stdin!.end('q'.repeat(300_000));
    const { stdout, stderr } = await out;
    expect(stdout).toBe('received 300000 expect=100-continue');
    expect(stderr).toContain('HTTP/1.1 100 Continue');
  });

  it('answers pipelined requests in order, even when a later one is ready first', async () => {
    const { f } = await setup((req, res) => {
      const delay = req.url === '/1' ? 150 : req.url === '/2' ? 50 : 0;
      setTimeout(() => res.end(`r${req.url}`), delay);
    });
    const reqs = ['/1', '/2', '/3'].map((p) => `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join('');
    const got = await raw(f.port, reqs, { until: (g) => g.includes('r/3') });
    expect([...got.matchAll(/r\/\d/g)].map((m) => m[0])).toEqual(['r/1', 'r/2', 'r/3']);
    expect(statuses(got)).toEqual([200, 200, 200]);
  });

  it('answers HEAD without a body and keeps the connection for the next request', async () => {
    const { f } = await setup((req, res) => {
      res.setHeader('content-length', '42');
      res.end(req.method === 'HEAD' ? undefined : 'x'.repeat(42));
    });
    const got = await raw(f.port, 'HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('x'.repeat(42)) });
    expect(statuses(got)).toEqual([200, 200]);
    expect(got.split('x'.repeat(42)).length).toBe(2);
  });

  it('serves HTTP/1.0 clients: closes after a response unless they asked for keep-alive', async () => {
    let host: unknown;
    const a = await app((req, res) => {
      host = req.headers.host;
      res.end('1.0 body');
    });
    // A 1.0 request may come without Host; the route names the authority (as for a Service).
    const f = await front((req) => {
      if (!req.authority) req.authority = 'svc.ns:80';
      return { upstream: 'app', open: dial(a.port) };
    });
    defer(() => a.close(), () => f.close());
    const closed = await raw(f.port, 'GET / HTTP/1.0\r\n\r\n');
    expect(closed).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(closed.toLowerCase()).toContain('connection: close');
    expect(closed.endsWith('1.0 body')).toBe(true);
    expect(host).toBe('svc.ns:80');
    const kept = await raw(f.port, 'GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n', { until: (g) => g.split('1.0 body').length === 3 });
    expect(statuses(kept)).toEqual([200, 200]);
    expect(kept.toLowerCase()).toContain('connection: keep-alive');
  });

  it('re-frames a close-delimited upstream response as chunked for an HTTP/1.1 client', async () => {
    let up: TestApp | undefined;
    up = await startApp((s) => {
      s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end'));
    });
    defer(() => up!.close());
    const f = await front(() => ({ upstream: 'raw', open: dial(up!.port) }));
    defer(() => f.close());
    const got = await raw(f.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /again HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => statuses(g).length === 2 && g.endsWith('0\r\n\r\n') });
    expect(got.toLowerCase()).toContain('transfer-encoding: chunked');
    expect(got).toContain('d\r\nuntil the end\r\n0\r\n\r\n');
    // The upstream connection ended with that body, so the next request needed a new one.
    expect(statuses(got)).toEqual([200, 200]);
  });

  it('drops hop-by-hop fields both ways and keeps end-to-end ones', async () => {
    let seen: Record<string, unknown> = {};
    const { f } = await setup((req, res) => {
      seen = req.headers;
      res.setHeader('x-up', '1');
      res.setHeader('keep-alive', 'timeout=99');
      res.end('ok');
    });
    const got = await raw(f.port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n', { until: (g) => g.endsWith('ok') });
    expect(seen['x-kept']).toBe('yes');
    expect(seen['x-secret']).toBeUndefined();
    expect(seen['proxy-connection']).toBeUndefined();
    expect(seen['keep-alive']).toBeUndefined();
    expect(got.toLowerCase()).toContain('x-up: 1');
    expect(got.toLowerCase()).not.toContain('keep-alive: timeout=99');
  });

  it('lets the route hook answer directly, rewrite the request, and change the response head', async () => {
    let seenPath = '';
    let seenHeader: unknown;
    const a = await app((req, res) => {
      seenPath = req.url!;
      seenHeader = req.headers['x-added'];
      res.end('upstream');
    });
    const f = await front((req) => {
      if (req.path === '/nowhere') return { respond: { status: 404, body: 'no route', responseFlags: 'NR' } };
      req.path = '/rewritten';
      req.headers = [...req.headers, 'x-added', 'by-route'];
      return { upstream: 'app', open: dial(a.port), onResponse: (r) => void (r.headers = [...r.headers, 'x-filtered', 'yes']) };
    });
    defer(() => a.close(), () => f.close());
    const got = await raw(f.port, 'GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\nGET /orig HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('upstream') });
    expect(statuses(got)).toEqual([404, 200]);
    expect(got).toContain('no route');
    expect(got.toLowerCase()).toContain('x-filtered: yes');
    expect(seenPath).toBe('/rewritten');
    expect(seenHeader).toBe('by-route');
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags, r.upstream])).toEqual([
      ['/nowhere', 404, 'NR', '-'],
      ['/rewritten', 200, '-', 'app'],
    ]);
  });

  it('refuses a header a route hook made with CR/LF in it (500), and serves the clean twin', async () => {
    const a = await app((_req, res) => res.end('ok'));
    const f = await front((req) => {
      if (req.path === '/evil') req.headers = [...req.headers, 'x-evil', 'a\r\nInjected: 1'];
      else req.headers = [...req.headers, 'x-fine', 'a b'];
      return { upstream: 'app', open: dial(a.port) };
    });
    defer(() => a.close(), () => f.close());
    expect(statuses(await raw(f.port, 'GET /evil HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.includes('\r\n\r\n') }))).toEqual([500]);
    expect(statuses(await raw(f.port, 'GET /fine HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('ok') }))).toEqual([200]);
  });
});

// Bad input to the L7 engine over raw sockets: each malformed or smuggling-shaped request gets
// its status and never reaches the upstream, and its well-formed twin, on the same engine and
// upstream, passes. Slowloris heads get 408 after the header timeout.
import { connect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { app, dial, front, raw, statuses, type App, type Front } from '../helpers/l7.js';

let a: App;
let f: Front;
let seen: string[];

beforeEach(async () => {
  seen = [];
  a = await app((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.end('fine'));
  });
  f = await front(() => ({ upstream: 'app', open: dial(a.port) }), { maxHeaderBytes: 4096, headerTimeoutMs: 300, sweepMs: 20 });
});
afterEach(async () => {
  await f.close();
  await a.close();
});

const H = 'Host: a\r\n';
/** [name, bad request, expected status, good twin] */
const CASES: [string, string, number, string][] = [
  ['a malformed request line', 'GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n', 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['an invalid method token', `G@T / HTTP/1.1\r\n${H}\r\n`, 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['an unknown HTTP version', `GET / HTTP/1.7\r\n${H}\r\n`, 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['headers over the limit', `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(5000)}\r\n\r\n`, 431, `GET / HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(3000)}\r\n\r\n`],
  ['Content-Length with Transfer-Encoding', `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['two Content-Lengths that differ', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, 400, `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nabcd`],
  ['a Content-Length list', `POST / HTTP/1.1\r\n${H}Content-Length: 4, 4\r\n\r\nabcd`, 400, `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nabcd`],
  ['a Transfer-Encoding not ending in chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n`, 400, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['a Transfer-Encoding other than chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n`, 400, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['Transfer-Encoding twice', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
  ['an obs-fold continuation line', `GET / HTTP/1.1\r\n${H}X-A: one\r\n two\r\n\r\n`, 400, `GET / HTTP/1.1\r\n${H}X-A: one two\r\n\r\n`],
  ['a bare LF ending a header', `GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n`, 400, `GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n`],
  ['bare LFs throughout', 'GET / HTTP/1.1\nHost: a\n\n', 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['whitespace before a colon', `GET / HTTP/1.1\r\nHost : a\r\n\r\n`, 400, `GET / HTTP/1.1\r\nHost: a\r\n\r\n`],
  ['a NUL in a header value', `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, 400, `GET / HTTP/1.1\r\n${H}X-A: ab\r\n\r\n`],
  ['an HTTP/1.1 request without Host', 'GET / HTTP/1.1\r\n\r\n', 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['two Host fields', `GET / HTTP/1.1\r\n${H}Host: b\r\n\r\n`, 400, `GET / HTTP/1.1\r\n${H}\r\n`],
  ['a bad chunk size', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`, 400, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
  ['CONNECT on an HTTP port', 'CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n', 405, `GET / HTTP/1.1\r\n${H}\r\n`],
];

const head = (g: string) => g.includes('\r\n\r\n');

describe('L7 engine, bad input', () => {
  for (const [name, bad, status, good] of CASES) {
    it(`answers ${status} to ${name}, never forwards it, and closes; the well-formed twin passes`, async () => {
      const got = await raw(f.port, bad, { until: head });
      expect(statuses(got)).toEqual([status]);
      expect(got.toLowerCase()).toContain('connection: close');
      expect(seen).toEqual([]);
      const [rec] = await f.recorded(1);
      expect(rec).toMatchObject({ status, responseFlags: 'DPE' });
      const ok = await raw(f.port, good, { until: (g) => g.endsWith('fine') });
      expect(statuses(ok)).toEqual([200]);
      expect(seen.length).toBe(1);
    });
  }

  it('answers a smuggling attempt (CL + TE hiding a second request) with one 400: the hidden request never reaches the upstream', async () => {
    const smuggle = `POST / HTTP/1.1\r\n${H}Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n`;
    const got = await raw(f.port, smuggle);
    expect(statuses(got)).toEqual([400]);
    expect(seen).toEqual([]);
    // The twin: the same two requests, honestly framed, are both served in order.
    const honest = `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /second HTTP/1.1\r\n${H}\r\n`;
    const ok = await raw(f.port, honest, { until: (g) => g.split('fine').length === 3 });
    expect(statuses(ok)).toEqual([200, 200]);
    expect(seen).toEqual(['POST /', 'GET /second']);
  });

  it('answers the good requests before a bad one in a pipeline, then 400, and reads nothing after it', async () => {
    const got = await raw(f.port, `GET /1 HTTP/1.1\r\n${H}\r\nGET /2 HTTP/1.1\r\n${H}\r\nGET / HTTP/1.1 junk\r\n\r\nGET /after HTTP/1.1\r\n${H}\r\n`);
    expect(statuses(got)).toEqual([200, 200, 400]);
    expect(seen).toEqual(['GET /1', 'GET /2']);
  });

  it('answers a bad chunk that arrives after the head was forwarded with 400, on a fresh upstream connection next time', async () => {
    const s = connect({ host: '127.0.0.1', port: f.port });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.write(`POST /stream HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
    await new Promise((r) => setTimeout(r, 100));
    s.write('not-hex\r\n');
    await closed;
    expect(statuses(got)).toEqual([400]);
    const ok = await raw(f.port, `GET / HTTP/1.1\r\n${H}\r\n`, { until: (g) => g.endsWith('fine') });
    expect(statuses(ok)).toEqual([200]);
    // The half-sent request spoiled its upstream connection; the next request used another.
    expect(a.connections).toBe(2);
  });

  it('answers 408 to a head trickled slower than the header timeout (slowloris); a head completed in time passes', async () => {
    const s = connect({ host: '127.0.0.1', port: f.port });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    s.write('GET / HTTP/1.1\r\n');
    const trickle = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 50);
    await closed;
    clearInterval(trickle);
    expect(statuses(got)).toEqual([408]);
    expect(seen).toEqual([]);
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ status: 408, responseFlags: 'DPE' });
    // The twin: the same head in pieces, finished within the timeout.
    const ok = await raw(f.port, ['GET / HTTP/1.1\r\n', 'X-Slow: 1\r\n', `${H}\r\n`], { until: (g) => g.endsWith('fine') });
    expect(statuses(ok)).toEqual([200]);
  });

  it('never reads past a Connection: close request', async () => {
    const got = await raw(f.port, `GET /last HTTP/1.1\r\n${H}Connection: close\r\n\r\nGET /never HTTP/1.1\r\n${H}\r\ngarbage garbage\r\n\r\n`);
    expect(statuses(got)).toEqual([200]);
    expect(got.toLowerCase()).toContain('connection: close');
    expect(seen).toEqual(['GET /last']);
  });
});

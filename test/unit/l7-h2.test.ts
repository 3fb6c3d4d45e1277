// HTTP/2 cleartext (prior knowledge) through the L7 engine: curl and node:http2 clients against
// an h2c upstream, streams multiplexed over one upstream session, a real gRPC client and server
// (@grpc/grpc-js) with grpc-status from the trailers in the request record, and the failure
// answers of HTTP/1.1 (503 UF, local responses) over HTTP/2.
import { execFile } from 'node:child_process';
import { connect as h2connect, createServer as createH2Server, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { app, dial, perTest, raw, statuses } from '../helpers/l7.js';

const { defer, withFront } = perTest();

const run = promisify(execFile);

async function h2app(onStream: Parameters<Http2Server['on']>[1]): Promise<{ port: number; sessions: () => number }> {
  const server = createH2Server();
  let sessions = 0;
  server.on('session', () => sessions++);
  server.on('stream', onStream as never);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  defer(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as AddressInfo).port, sessions: () => sessions };
}

function h2get(s: ClientHttp2Session, path: string, body?: string): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path });
    let got = '';
    let headers: IncomingHttpHeaders = {};
    req.setEncoding('utf8');
    req.on('response', (h) => (headers = h));
    req.on('data', (c: string) => (got += c));
    req.on('end', () => resolve({ status: Number(headers[':status']), body: got, headers }));
    req.on('error', reject);
    req.end(body);
  });
}

describe('L7 engine, HTTP/2 prior knowledge', () => {
  it('serves curl --http2-prior-knowledge through to an h2c upstream, and HTTP/1.1 on the same port', async () => {
    const up = await h2app((stream, h) => {
      stream.respond({ ':status': 200, 'x-seen-path': String(h[':path']) });
      stream.end('over h2');
    });
    const plain = await app((_req, res) => res.end('over h1'));
    defer(() => plain.close());
    // The upstream speaks what the client speaks: h2 to the h2c app, HTTP/1.1 to the other.
    const f = await withFront((req) => ({ upstream: req.protocol, open: dial(req.protocol === 'HTTP/2' ? up.port : plain.port) }));
    const { stdout } = await run('curl', ['-s', '-i', '--http2-prior-knowledge', `http://127.0.0.1:${f.port}/hello?x=1`], { encoding: 'utf8' });
    expect(stdout).toMatch(/^HTTP\/2 200/);
    expect(stdout).toContain('x-seen-path: /hello?x=1');
    expect(stdout.endsWith('over h2')).toBe(true);
    expect(statuses(await raw(f.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('over h1') }))).toEqual([200]);
    const recs = await f.recorded(2);
    expect(recs.map((r) => [r.protocol, r.method, r.path, r.status, r.responseFlags])).toEqual([
      ['HTTP/2', 'GET', '/hello?x=1', 200, '-'],
      ['HTTP/1.1', 'GET', '/', 200, '-'],
    ]);
  });

  it('multiplexes concurrent streams of one client over one upstream session, bodies both ways', async () => {
    const up = await h2app((stream, h) => {
      let body = '';
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (body += c));
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end(`${h[':path']}:${body.length}`);
      });
    });
    const f = await withFront(() => ({ upstream: 'h2', open: dial(up.port) }));
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => h2get(s, `/s${i}`, 'y'.repeat(1000 * i))));
    expect(results.map((r) => r.body)).toEqual(Array.from({ length: 10 }, (_, i) => `/s${i}:${1000 * i}`));
    expect(up.sessions()).toBe(1);
    const recs = await f.recorded(10);
    expect(recs.find((r) => r.path === '/s9')).toMatchObject({ requestBytes: 9000, status: 200 });
  });

  it('works with the proxy\'s pool keys (spaces, colons, IPs) and over a JS Duplex as HBONE streams are: no byte of a body lost', async () => {
    const up = await h2app((stream, h) => {
      stream.respond({ ':status': 200 });
      stream.end(`first-chunk ${h[':path']}`);
    });
    // An HBONE stream is a Duplex of our own, not a socket: node:http2 reads it differently.
    const wrapped = async (): Promise<Duplex> => {
      const sock = await dial(up.port)();
      const w: Duplex = new Duplex({
        read: () => void sock.resume(),
        write: (c: Buffer, _e, cb) => void sock.write(c, cb),
        final: (cb) => {
          sock.end();
          cb();
        },
        destroy: (err, cb) => {
          sock.destroy();
          cb(err);
        },
      });
      sock.on('data', (d: Buffer) => {
        if (!w.push(d)) sock.pause();
      });
      sock.on('end', () => w.push(null));
      sock.on('error', (e) => w.destroy(e));
      return w;
    };
    const f = await withFront(() => ({ upstream: 'hbone spiffe://cluster.local/ns/a/sa/b 10.244.1.2:9090 for mesh/grpc.mesh.svc.cluster.local', open: wrapped }));
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const results = await Promise.all(['/a', '/b', '/c'].map((p) => h2get(s, p)));
    expect(results.map((r) => [r.status, r.body])).toEqual([
      [200, 'first-chunk /a'],
      [200, 'first-chunk /b'],
      [200, 'first-chunk /c'],
    ]);
    const recs = await f.recorded(3);
    expect(recs.map((r) => r.responseBytes)).toEqual([14, 14, 14]);
  });

  it('answers 503 UF over HTTP/2 when the upstream refuses, and a local 404 NR; a good stream on the same session passes', async () => {
    const up = await h2app((stream) => {
      stream.respond({ ':status': 200 });
      stream.end('good');
    });
    const f = await withFront((req) => {
      if (req.path === '/none') return { respond: { status: 404, body: 'no route', responseFlags: 'NR' } };
      return { upstream: req.path, open: dial(req.path === '/dead' ? 1 : up.port) };
    });
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const dead = await h2get(s, '/dead');
    expect(dead.status).toBe(503);
    expect(dead.body).toContain('connection failure');
    expect((await h2get(s, '/none')).status).toBe(404);
    expect((await h2get(s, '/ok')).body).toBe('good');
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags])).toEqual([
      ['/dead', 503, 'UF'],
      ['/none', 404, 'NR'],
      ['/ok', 200, '-'],
    ]);
  });
  it('answers 504 UT over HTTP/2 when the upstream is too slow, and books DC when the client cancels its stream', async () => {
    const up = await h2app((stream, h) => {
      if (h[':path'] === '/fast') {
        stream.respond({ ':status': 200 });
        stream.end('fast');
      }
      // Any other path is never answered.
    });
    const f = await withFront((req) => ({ upstream: 'h2', open: dial(up.port), ...(req.path === '/slow' ? { timeoutMs: 150 } : {}) }));
    const s = h2connect(`http://127.0.0.1:${f.port}`);
    defer(async () => void s.close());
    const slow = await h2get(s, '/slow');
    expect(slow.status).toBe(504);
    expect(slow.body).toBe('upstream request timeout');
    const req = s.request({ ':method': 'GET', ':path': '/hang' });
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, 100));
    req.close();
    expect((await h2get(s, '/fast')).body).toBe('fast');
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.path, r.status, r.responseFlags])).toEqual([
      ['/slow', 504, 'UT'],
      ['/hang', 0, 'DC'],
      ['/fast', 200, '-'],
    ]);
  });
});

describe('L7 engine, gRPC', () => {
  const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
  const service = {
    echo: { path: '/test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: bytes.serialize, requestDeserialize: bytes.deserialize, responseSerialize: bytes.serialize, responseDeserialize: bytes.deserialize },
    count: { path: '/test.Echo/Count', requestStream: false, responseStream: true, requestSerialize: bytes.serialize, requestDeserialize: bytes.deserialize, responseSerialize: bytes.serialize, responseDeserialize: bytes.deserialize },
  } as const;

  it('carries unary and server-streaming gRPC calls, with grpc-status from the trailers in the records', async () => {
    const server = new grpc.Server();
    server.addService(service as unknown as grpc.ServiceDefinition, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        if (call.request.toString() === 'missing') cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
        else cb(null, Buffer.from(`echo ${call.request.toString()}`));
      },
      count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 0; i < 3; i++) call.write(Buffer.from(`n${i}`));
        call.end();
      },
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    defer(() => new Promise<void>((r) => server.tryShutdown(() => r())));
    const f = await withFront(() => ({ upstream: 'grpc', open: dial(port) }));
    const Client = grpc.makeGenericClientConstructor(service as unknown as grpc.ServiceDefinition, 'Echo');
    const client = new Client(`127.0.0.1:${f.port}`, grpc.credentials.createInsecure()) as unknown as {
      echo(req: Buffer, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): void;
      count(req: Buffer): NodeJS.ReadableStream;
      close(): void;
    };
    defer(async () => client.close());
    const echo = (s: string) => new Promise<{ err: grpc.ServiceError | null; res?: Buffer }>((resolve) => client.echo(Buffer.from(s), (err, res) => resolve({ err, ...(res ? { res } : {}) })));
    const ok = await echo('hi');
    expect(ok.err).toBeNull();
    expect(ok.res!.toString()).toBe('echo hi');
    const missing = await echo('missing');
    expect(missing.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(missing.err?.details).toBe('no such thing');
    const streamed: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const st = client.count(Buffer.from('go'));
      st.on('data', (b: Buffer) => streamed.push(b.toString()));
      st.on('end', () => resolve());
      st.on('error', reject);
    });
    expect(streamed).toEqual(['n0', 'n1', 'n2']);
    const recs = await f.recorded(3);
    expect(recs.map((r) => [r.protocol, r.path, r.status, r.grpcStatus])).toEqual([
      ['HTTP/2', '/test.Echo/Echo', 200, '0'],
      ['HTTP/2', '/test.Echo/Echo', 200, '5'],
      ['HTTP/2', '/test.Echo/Count', 200, '0'],
    ]);
  });
});

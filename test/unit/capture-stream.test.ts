// /debug/capture end to end on loopback, with a real relay (ConnectionTracker) tapped by the
// hub: records and plaintext reach a consumer in order; a consumer that reads nothing while
// megabytes cross the relay never slows it, it loses chunks instead, is told so, and the drops
// are counted in nodemesh_capture_dropped_total; the admin-token rule holds both ways.
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttp, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { mayCapture } from '../../src/capture/auth.js';
import { serveCapture } from '../../src/capture/endpoint.js';
import { CaptureHub } from '../../src/capture/hub.js';
import type { StreamLine } from '../../src/capture/record.js';
import { ConnectionTracker } from '../../src/proxy/connection.js';
import { PlainConnector } from '../../src/proxy/upstream.js';
import { FlowLog, MeshMetrics } from '../../src/telemetry/index.js';

const TOKEN = 'a-test-admin-token-0123456789';
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});

function listen(handler: (s: Socket) => void): Promise<number> {
  const srv: Server = createServer({ allowHalfOpen: true }, handler);
  closers.push(() => new Promise((r) => srv.close(r)));
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as AddressInfo).port)));
}

async function setup(o: { queueBytes?: number } = {}) {
  const registry = new Registry();
  const hub = new CaptureHub({ node: 'n1', registry, ...(o.queueBytes ? { queueBytes: o.queueBytes } : {}) });
  const log = pino({ level: 'silent' });
  const http: HttpServer = createHttp((req, res) => serveCapture({ hub, adminToken: TOKEN, log }, req, res, new URL(req.url ?? '/', 'http://x')));
  closers.push(() => {
    http.closeAllConnections();
    return new Promise((r) => http.close(r));
  });
  const adminPort = await new Promise<number>((r) => http.listen(0, '127.0.0.1', () => r((http.address() as AddressInfo).port)));
  const t = { metrics: new MeshMetrics({ defaultMetrics: false }), flows: new FlowLog(log), log };
  const tracker = new ConnectionTracker(t, 60_000, { tap: { open: (c) => hub.openTap(c) } });
  closers.push(async () => tracker.stop());
  const upstream = new PlainConnector();
  const proxyTo = (to: number) =>
    listen((client) => {
      void tracker.run(client, {
        reporter: 'source',
        direction: 'outbound',
        pod: 'shop/client',
        source: { ip: '127.0.0.1', port: client.remotePort ?? 0, workload: 'client', namespace: 'shop' },
        destination: { ip: '127.0.0.1', port: to, workload: 'server', namespace: 'shop' },
        originalDst: `127.0.0.1:${to}`,
        securityPolicy: 'none',
        upstreamLabel: `127.0.0.1:${to}`,
        open: () => upstream.connect('', { ip: '127.0.0.1', port: to }, 2000),
      });
    });
  return { hub, registry, adminPort, proxyTo, t };
}

/** A raw HTTP/1.1 GET whose response we read (or not) ourselves. */
function rawGet(port: number, path: string, token?: string): Socket {
  const s = connect({ port, host: '127.0.0.1' });
  s.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n${token ? `authorization: Bearer ${token}\r\n` : ''}connection: close\r\n\r\n`);
  closers.push(async () => s.destroy());
  return s;
}

/** The complete NDJSON lines of a chunked (Transfer-Encoding) response body read so far. */
function lines(raw: string): StreamLine[] {
  let rest = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  let body = '';
  for (;;) {
    const eol = rest.indexOf('\r\n');
    if (eol < 0) break;
    const size = parseInt(rest.slice(0, eol), 16);
    if (!(size > 0) || rest.length < eol + 2 + size) break;
    body += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
  return body
    .split('\n')
    .slice(0, -1)
    .map((l) => JSON.parse(l) as StreamLine);
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs one client connection through the proxy: sends `up`, half-closes, collects the reply. */
async function transfer(port: number, up: Buffer): Promise<Buffer> {
  const c = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.end(up);
  await new Promise((r) => c.on('end', r));
  c.destroy();
  return Buffer.concat(got);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('capture stream', () => {
  it('streams the hello, the plaintext both ways with offsets, and the record of a relayed connection', async () => {
    const { adminPort, proxyTo, hub, t } = await setup();
    t.flows.onFinish((f) => hub.publish({ time: f.startedAt, direction: 'outbound', source: 'proxy', protocol: 'tcp', src: { ip: f.src.ip, port: f.src.port }, dst: { ip: f.dst.ip, port: f.dst.port }, verdict: 'allowed' }));
    const server = await listen((s) => s.on('data', (d: Buffer) => s.write(Buffer.concat([Buffer.from('echo:'), d]))).on('end', () => s.end()));
    const port = await proxyTo(server);
    const consumer = rawGet(adminPort, '/debug/capture?pcap=1&port=' + server, TOKEN);
    let raw = '';
    consumer.on('data', (d: Buffer) => (raw += d));
    await until(() => lines(raw).some((l) => l.type === 'replayed'), 'the hello');
    const reply = await transfer(port, Buffer.from('ping'));
    expect(reply.toString()).toBe('echo:ping');
    await until(() => lines(raw).some((l) => l.type === 'flow'), 'the record');
    await until(() => lines(raw).some((l) => l.type === 'close'), 'the close');
    const got = lines(raw);
    expect(got[0]).toMatchObject({ type: 'hello', v: 1, node: 'n1', pcap: true, filter: { port: String(server) } });
    const data = got.filter((l): l is Extract<StreamLine, { type: 'data' }> => l.type === 'data');
    expect(Buffer.concat(data.filter((d) => d.dir === 'c2s').map((d) => Buffer.from(d.data, 'base64'))).toString()).toBe('ping');
    expect(Buffer.concat(data.filter((d) => d.dir === 's2c').map((d) => Buffer.from(d.data, 'base64'))).toString()).toBe('echo:ping');
    expect(got.filter((l) => l.type === 'end').map((l) => (l as { dir: string; seq: number }).dir).sort()).toEqual(['c2s', 's2c']);
    expect(got.find((l) => l.type === 'flow')).toMatchObject({ flow: { v: 1, id: 'n1/1', verdict: 'allowed', dst: { port: server } } });

    // A consumer whose filter does not match gets neither the record nor the plaintext.
    const other = rawGet(adminPort, '/debug/capture?pcap=1&port=1', TOKEN);
    let raw2 = '';
    other.on('data', (d: Buffer) => (raw2 += d));
    await until(() => lines(raw2).some((l) => l.type === 'replayed'), 'the second hello');
    await transfer(port, Buffer.from('again'));
    await until(() => lines(raw).filter((l) => l.type === 'flow').length === 2, 'the second record');
    expect(lines(raw2).map((l) => l.type)).toEqual(['hello', 'replayed']);
  });

  it('replays the ring with since=, then streams live', async () => {
    const { adminPort, hub } = await setup();
    const base = { direction: 'kernel' as const, source: 'kernel' as const, protocol: 'tcp' as const, src: { ip: '10.0.0.1', port: 1 }, dst: { ip: '10.0.0.2', port: 80 }, verdict: 'passed' as const };
    hub.publish({ ...base, time: new Date(Date.now() - 3_600_000).toISOString() });
    hub.publish({ ...base, time: new Date(Date.now() - 1000).toISOString() });
    const c = rawGet(adminPort, '/debug/capture?since=1m');
    let raw = '';
    c.on('data', (d: Buffer) => (raw += d));
    await until(() => lines(raw).some((l) => l.type === 'replayed'), 'the replay');
    hub.publish({ ...base, time: new Date().toISOString() });
    await until(() => lines(raw).filter((l) => l.type === 'flow').length === 2, 'the live record');
    expect(lines(raw).map((l) => (l.type === 'flow' ? l.flow.id : l.type))).toEqual(['hello', 'n1/2', 'replayed', 'n1/3']);
  });

  it('keeps the last ringSize records for replays, oldest first, across the wrap', () => {
    const hub = new CaptureHub({ node: 'n1', registry: new Registry(), ringSize: 3 });
    const rec = (port: number) => ({ time: new Date().toISOString(), direction: 'kernel' as const, source: 'kernel' as const, protocol: 'tcp' as const, src: { ip: '10.0.0.1', port }, dst: { ip: '10.0.0.2', port: 80 }, verdict: 'passed' as const });
    hub.publish(rec(1));
    hub.publish(rec(2));
    // Not yet full: what was published, in order.
    expect(hub.recent().map((r) => r.id)).toEqual(['n1/1', 'n1/2']);
    for (const p of [3, 4, 5, 6, 7]) hub.publish(rec(p));
    expect(hub.recent().map((r) => r.src.port)).toEqual([5, 6, 7]);
    // Kept unbuilt while nobody captures: built, with the id taken when kept, on the first read.
    let built = 0;
    hub.publishLazy(() => (built++, rec(8)));
    hub.publish(rec(9));
    expect(built).toBe(0);
    expect(hub.recent().map((r) => [r.id, r.src.port])).toEqual([['n1/7', 7], ['n1/8', 8], ['n1/9', 9]]);
    expect(hub.recent().map((r) => r.id)).toEqual(['n1/7', 'n1/8', 'n1/9']);
    expect(built).toBe(1);
    // A zero-size ring keeps nothing and still publishes.
    const none = new CaptureHub({ node: 'n2', registry: new Registry(), ringSize: 0 });
    expect(none.publish(rec(1)).id).toBe('n2/1');
    expect(none.recent()).toEqual([]);
  });

  it('never slows the relay for a consumer that reads nothing: the transfer completes, chunks are dropped and counted', async () => {
    const { adminPort, proxyTo, registry } = await setup({ queueBytes: 1 << 20 });
    const payload = randomBytes(24 << 20);
    const server = await listen((s) => {
      s.on('data', () => {});
      s.on('end', () => s.end(payload));
    });
    const port = await proxyTo(server);
    const stalled = rawGet(adminPort, '/debug/capture?pcap=1', TOKEN);
    let head = '';
    const onHead = (d: Buffer) => {
      head += d;
      if (lines(head).some((l) => l.type === 'replayed')) {
        // From here on, this consumer reads nothing at all.
        stalled.pause();
        stalled.off('data', onHead);
      }
    };
    stalled.on('data', onHead);
    await until(() => lines(head).some((l) => l.type === 'replayed'), 'the hello');
    const reply = await transfer(port, Buffer.from('go'));
    expect(reply.length).toBe(payload.length);
    expect(sha(reply)).toBe(sha(payload));
    const metric = await registry.getSingleMetricAsString('nodemesh_capture_dropped_total');
    const dropped = Number(/kind="chunk"\} (\d+)/.exec(metric)?.[1] ?? 0);
    expect(dropped).toBeGreaterThan(0);
    // Once it reads again, the consumer is told how much it lost.
    let rest = '';
    stalled.on('data', (d: Buffer) => (rest += d));
    stalled.resume();
    await until(() => lines(head + rest).some((l) => l.type === 'dropped'), 'the dropped line');
    const told = lines(head + rest).filter((l): l is Extract<StreamLine, { type: 'dropped' }> => l.type === 'dropped');
    expect(told.reduce((n, l) => n + l.chunks, 0)).toBe(dropped);
  });

  it('refuses plaintext without the admin token (401), and serves it with the token', async () => {
    const { adminPort } = await setup();
    const no = await fetch(`http://127.0.0.1:${adminPort}/debug/capture?pcap=1`);
    expect(no.status).toBe(401);
    expect(no.headers.get('www-authenticate')).toContain('Bearer');
    expect(((await no.json()) as { error: string }).error).toContain('admin token');
    const wrong = await fetch(`http://127.0.0.1:${adminPort}/debug/capture`, { headers: { authorization: 'Bearer not-the-token-at-all' } });
    expect(wrong.status).toBe(401);
    const ac = new AbortController();
    const yes = await fetch(`http://127.0.0.1:${adminPort}/debug/capture?pcap=1`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: ac.signal });
    expect(yes.status).toBe(200);
    expect(yes.headers.get('content-type')).toBe('application/x-ndjson');
    ac.abort();
    // Records alone from loopback need no token.
    const ac2 = new AbortController();
    const meta = await fetch(`http://127.0.0.1:${adminPort}/debug/capture`, { signal: ac2.signal });
    expect(meta.status).toBe(200);
    ac2.abort();
    const bad = await fetch(`http://127.0.0.1:${adminPort}/debug/capture?verdict=maybe`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toContain('--verdict');
  });

  it('applies the rule: plaintext needs the token from anyone, records need it off loopback', () => {
    const rows: Array<[string | undefined, string | undefined, boolean, boolean]> = [
      ['127.0.0.1', undefined, false, true],
      ['::ffff:127.0.0.1', undefined, false, true],
      ['::1', undefined, false, true],
      ['10.0.0.5', undefined, false, false],
      ['10.0.0.5', TOKEN, false, true],
      ['127.0.0.1', undefined, true, false],
      ['127.0.0.1', TOKEN, true, true],
      ['10.0.0.5', TOKEN, true, true],
      ['10.0.0.5', 'wrong-token-wrong-token', true, false],
      ['127.0.0.1', 'wrong-token-wrong-token', false, false],
    ];
    for (const [peer, token, pcap, ok] of rows) expect(mayCapture({ peer, token, pcap }, TOKEN).ok, `${peer} ${token} ${pcap}`).toBe(ok);
  });
});

// TCP semantics of the proxy's relay on real loopback sockets: byte-exact transfer,
// half-close carried both ways, backpressure, and resets instead of hangs or clean EOFs.
import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ConnectionTracker } from '../../src/proxy/connection.js';
import { PlainConnector } from '../../src/proxy/upstream.js';
import { FlowLog, MeshMetrics } from '../../src/telemetry/index.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

function listen(handler: (s: Socket) => void): Promise<number> {
  const srv = createServer({ allowHalfOpen: true }, handler);
  servers.push(srv);
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as AddressInfo).port)));
}

function telemetry() {
  const log = pino({ level: 'silent' });
  return { metrics: new MeshMetrics({ defaultMetrics: false }), flows: new FlowLog(log), log };
}

/** A proxy on loopback that relays every connection to `to` through ConnectionTracker. */
async function proxyTo(to: number, t = telemetry()) {
  const tracker = new ConnectionTracker(t, 60_000);
  const upstream = new PlainConnector();
  const port = await listen((client) => {
    void tracker.run(client, {
      reporter: 'source',
      direction: 'outbound',
      pod: 'default/client',
      source: { ip: '127.0.0.1', port: client.remotePort ?? 0, workload: 'client', namespace: 'default' },
      destination: { ip: '127.0.0.1', port: to, workload: 'server', namespace: 'default' },
      originalDst: `127.0.0.1:${to}`,
      securityPolicy: 'none',
      upstreamLabel: `127.0.0.1:${to}`,
      open: () => upstream.connect('', { ip: '127.0.0.1', port: to }, 2000),
    });
  });
  return { port, tracker, t };
}

function sha(b: Buffer[]): string {
  const h = createHash('sha256');
  for (const x of b) h.update(x);
  return h.digest('hex');
}

describe('proxy relay', () => {
  it('carries 16 MB each way byte-exact and half-closes in both directions', async () => {
    const payloadUp = randomBytes(16 << 20);
    const payloadDown = randomBytes(16 << 20);
    let serverGot = '';
    const server = await listen((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c) => chunks.push(c));
      // The server answers only after the client's FIN reached it through the proxy.
      s.on('end', () => {
        serverGot = sha(chunks);
        s.end(payloadDown);
      });
    });
    const { port, t } = await proxyTo(server);
    const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    client.on('data', (c) => got.push(c));
    client.end(payloadUp);
    await new Promise((r) => client.on('end', r));
    expect(serverGot).toBe(sha([payloadUp]));
    expect(sha(got)).toBe(sha([payloadDown]));
    client.destroy();
    await new Promise((r) => setTimeout(r, 50));
    const rec = t.flows.recent().at(-1)!;
    expect(rec.bytesSent).toBe(payloadUp.length);
    expect(rec.bytesReceived).toBe(payloadDown.length);
    expect(rec.error).toBeUndefined();
    const metrics = await t.metrics.render();
    expect(metrics.body).toMatch(new RegExp(`istio_tcp_sent_bytes_total\\{[^}]*reporter="source"[^}]*\\} ${payloadUp.length}`));
    expect(metrics.body).toMatch(/istio_tcp_connections_closed_total\{[^}]*destination_workload="server"[^}]*\} 1/);
  });

  it('keeps the server able to write after the client half-closes', async () => {
    const server = await listen((s) => {
      s.on('end', () => {
        // Several writes after the peer's FIN must all arrive.
        for (let i = 0; i < 5; i++) s.write(`line${i}\n`);
        s.end();
      });
      s.resume();
    });
    const { port } = await proxyTo(server);
    const client = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    client.on('data', (c) => (text += c));
    client.end('bye');
    await new Promise((r) => client.on('end', r));
    expect(text).toBe('line0\nline1\nline2\nline3\nline4\n');
    client.destroy();
  });

  it('resets the client when the upstream refuses', async () => {
    const closed = await listen(() => {});
    const refusedPort = closed;
    await new Promise((r) => servers.pop()!.close(r)); // nothing listens there now
    const { port, t } = await proxyTo(refusedPort);
    const client = connect({ port, host: '127.0.0.1' });
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => client.on('error', resolve));
    expect(err.code).toBe('ECONNRESET');
    await new Promise((r) => setTimeout(r, 20));
    const rec = t.flows.recent().at(-1)!;
    expect(rec.error).toBe('ECONNREFUSED');
    expect(rec.responseFlags).toBe('UF,URX');
  });

  it('turns an upstream reset mid-stream into a client reset, not a clean EOF', async () => {
    const server = await listen((s) => {
      s.once('data', () => s.resetAndDestroy());
    });
    const { port } = await proxyTo(server);
    const client = connect({ port, host: '127.0.0.1' });
    client.write('hello');
    const outcome = await new Promise<string>((resolve) => {
      client.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      client.on('end', () => resolve('eof'));
    });
    expect(outcome).toBe('ECONNRESET');
  });

  it('applies backpressure: a stalled reader stops the writer instead of buffering without bound', async () => {
    let serverSock: Socket | undefined;
    const server = await listen((s) => {
      serverSock = s;
      s.pause(); // never reads
    });
    const { port, tracker } = await proxyTo(server);
    const client = connect({ port, host: '127.0.0.1' });
    await new Promise((r) => client.on('connect', r));
    const chunk = Buffer.alloc(64 << 10);
    let written = 0;
    // Write until the chain is full: the client's buffer stays full for 300 ms.
    while (written < 256 << 20) {
      written += chunk.length;
      if (client.write(chunk)) continue;
      const drained = await Promise.race([
        new Promise<boolean>((r) => client.once('drain', () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
      ]);
      if (!drained) break;
    }
    await new Promise((r) => setTimeout(r, 200));
    const c = [...tracker.active][0]!;
    // The proxy holds at most its stream buffers, not the ~25 MB the client tried to push.
    const buffered = c.upstream!.writableLength + c.client.readableLength;
    expect(written).toBeLessThan(256 << 20); // the writer was stopped
    expect(buffered).toBeLessThan(4 << 20);
    expect(c.client.isPaused() || c.upstream!.writableNeedDrain).toBe(true);
    client.destroy();
    serverSock?.destroy();
  });
});

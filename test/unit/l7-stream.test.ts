// Streaming through the L7 engine with bounded memory (a slow reader on either side must stop
// the other side, never fill the engine), and WebSocket upgrades passed through as raw bytes
// after the 101, with a real WebSocket client (Node's global WebSocket).
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { app, dial, front, perTest, raw, statuses, type Front } from '../helpers/l7.js';

const { defer } = perTest();

const MIB = 1024 * 1024;
/** Far above what backpressure lets queue (a socket's 16 KiB mark plus one 64 KiB read), far below the body. */
const BOUND = 1 * MIB;
const SIZE = 24 * MIB;

function pattern(i: number): Buffer {
  return Buffer.alloc(64 * 1024, i % 251);
}

/** Writes SIZE bytes of a known pattern to `s` with backpressure; resolves with their sha256. */
async function pump(s: { write(b: Buffer): boolean; once(e: 'drain', f: () => void): unknown }, chunked = false): Promise<string> {
  const h = createHash('sha256');
  for (let i = 0, sent = 0; sent < SIZE; i++) {
    const b = pattern(i);
    h.update(b);
    sent += b.length;
    const ok = chunked ? s.write(Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')])) : s.write(b);
    if (!ok) await new Promise<void>((r) => s.once('drain', r));
  }
  return h.digest('hex');
}

/** Reads a stream slowly: pauses for `ms` after every `every` bytes. */
function slowRead(s: Duplex, every: number, ms: number, onData: (b: Buffer) => void): void {
  let since = 0;
  s.on('data', (b: Buffer) => {
    onData(b);
    since += b.length;
    if (since >= every) {
      since = 0;
      s.pause();
      setTimeout(() => s.resume(), ms);
    }
  });
}

async function hashingApp(): Promise<{ port: number }> {
  const a = await app((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    slowRead(req as unknown as Duplex, 512 * 1024, 5, (b) => {
      h.update(b);
      n += b.length;
    });
    req.on('end', () => res.end(`${n} ${h.digest('hex')}`));
  });
  defer(() => a.close());
  return a;
}

async function withFront(port: number): Promise<Front> {
  const f = await front(() => ({ upstream: 'app', open: dial(port) }));
  defer(() => f.close());
  return f;
}

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
  });
}

describe('L7 engine, streaming with bounded memory', () => {
  for (const framing of ['content-length', 'chunked'] as const) {
    it(`streams a ${SIZE / MIB} MiB ${framing} upload to a slow upstream with at most ${BOUND / MIB} MiB queued`, async () => {
      const a = await hashingApp();
      const f = await withFront(a.port);
      const s = await connectTo(f.port);
      defer(async () => void s.destroy());
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      const done = new Promise<void>((r) => s.on('data', () => got.includes(' ') && /\d+ [0-9a-f]{64}$/.test(got) && r()));
      s.write(`POST /up HTTP/1.1\r\nHost: a\r\n${framing === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${SIZE}`}\r\n\r\n`);
      const sent = await pump(s, framing === 'chunked');
      if (framing === 'chunked') s.write('0\r\n\r\n');
      await done;
      expect(got.endsWith(`${SIZE} ${sent}`)).toBe(true);
      expect(f.engine.stats().peakQueuedBytes).toBeLessThan(BOUND);
      const [rec] = await f.recorded(1);
      expect(rec).toMatchObject({ status: 200, requestBytes: SIZE });
    });
  }

  it(`streams a ${SIZE / MIB} MiB download to a slow client with at most ${BOUND / MIB} MiB queued`, async () => {
    const a = await app((_req, res) => {
      res.writeHead(200, { 'content-length': String(SIZE) });
      void pump(res).then(() => res.end());
    });
    defer(() => a.close());
    const f = await withFront(a.port);
    const s = await connectTo(f.port);
    defer(async () => void s.destroy());
    const h = createHash('sha256');
    let headerDone = false;
    let n = 0;
    let acc = Buffer.alloc(0);
    const done = new Promise<void>((resolve) =>
      slowRead(s, 512 * 1024, 5, (b) => {
        if (!headerDone) {
          acc = Buffer.concat([acc, b]);
          const i = acc.indexOf('\r\n\r\n');
          if (i < 0) return;
          headerDone = true;
          b = acc.subarray(i + 4);
        }
        h.update(b);
        n += b.length;
        if (n >= SIZE) resolve();
      }),
    );
    s.write('GET /down HTTP/1.1\r\nHost: a\r\n\r\n');
    await done;
    const expected = createHash('sha256');
    for (let i = 0, sent = 0; sent < SIZE; i++, sent += 64 * 1024) expected.update(pattern(i));
    expect(n).toBe(SIZE);
    expect(h.digest('hex')).toBe(expected.digest('hex'));
    expect(f.engine.stats().peakQueuedBytes).toBeLessThan(BOUND);
  });
});

/** A minimal RFC 6455 server side on a raw socket: handshake, then echo text frames. */
function wsEcho(sock: Socket, key: string, head: Buffer): void {
  sock.on('error', () => {}); // the tunnel is reset when the test tears the client down
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  let buf = head;
  const frame = (opcode: number, payload: Buffer) => Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
  const onBytes = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 6) {
      const opcode = buf[0]! & 0x0f;
      const len = buf[1]! & 0x7f; // small frames only (< 126 bytes), masked as clients must
      if (buf.length < 6 + len) return;
      const mask = buf.subarray(2, 6);
      const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]!));
      buf = buf.subarray(6 + len);
      if (opcode === 8) {
        sock.end(frame(8, payload));
        return;
      }
      sock.write(frame(1, Buffer.from(`echo:${payload.toString()}`)));
    }
  };
  sock.on('data', onBytes);
  if (head.length) onBytes(Buffer.alloc(0));
}

describe('L7 engine, upgrades', () => {
  it('passes a WebSocket through after the 101: a real client talks to the upstream, then closes', async () => {
    const a = await app((_req, res) => res.end('plain'));
    a.server.on('upgrade', (req, sock: Socket, head: Buffer) => wsEcho(sock, String(req.headers['sec-websocket-key']), head));
    defer(() => a.close());
    const f = await withFront(a.port);
    const ws = new WebSocket(`ws://127.0.0.1:${f.port}/chat`);
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => ws.send('one');
      ws.onmessage = (m) => {
        messages.push(String(m.data));
        if (messages.length === 1) ws.send('two');
        else ws.close(1000, 'bye');
      };
      ws.onclose = () => resolve();
      ws.onerror = () => reject(new Error('websocket error'));
    });
    expect(messages).toEqual(['echo:one', 'echo:two']);
    const [rec] = await f.recorded(1);
    expect(rec).toMatchObject({ path: '/chat', status: 101, upgraded: true, responseFlags: '-' });
    expect(rec!.requestBytes).toBeGreaterThan(0);
    expect(rec!.responseBytes).toBeGreaterThan(0);
    // The twin on the same engine: a plain request to the same upstream.
    expect(statuses(await raw(f.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.endsWith('plain') }))).toEqual([200]);
  });

  it('carries bytes the client sent right behind its upgrade request into the tunnel', async () => {
    const a = await app((_req, res) => res.end('plain'));
    a.server.on('upgrade', (req, sock: Socket, head: Buffer) => wsEcho(sock, String(req.headers['sec-websocket-key']), head));
    defer(() => a.close());
    const f = await withFront(a.port);
    const mask = Buffer.from([1, 2, 3, 4]);
    const text = Buffer.from('early');
    const masked = Buffer.from(text.map((b, i) => b ^ mask[i % 4]!));
    const earlyFrame = Buffer.concat([Buffer.from([0x81, 0x80 | text.length]), mask, masked]);
    const handshake = 'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    const got = await raw(f.port, [Buffer.concat([Buffer.from(handshake), earlyFrame])], { until: (g) => g.includes('echo:early') });
    expect(statuses(got)).toEqual([101]);
    expect(got).toContain('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    expect(got).toContain('echo:early');
  });

  it('forwards an upstream that declines the upgrade, then closes the connection', async () => {
    const a = await app((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('no upgrades here'));
    defer(() => a.close());
    const f = await withFront(a.port);
    const got = await raw(f.port, 'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    expect(statuses(got)).toEqual([426]);
    expect(got).toContain('\r\n\r\n10\r\nno upgrades here\r\n0\r\n\r\n');
    expect(got.toLowerCase()).toContain('connection: close');
  });
});

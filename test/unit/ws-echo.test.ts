// The echo backend's WebSocket endpoint (test/helpers/ws-echo.ts) and the client program of the
// L7 protocol e2e (ws-client-main.ts), on loopback: Node's WebSocket both ways with a 1 MiB
// message, and raw frames for what that client cannot send (ping, fragments, unmasked frames).
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startEchoServer, type EchoServer } from '../helpers/echo-server.js';
import { runWsClient } from '../helpers/ws-client-main.js';
import { websocketAccept } from '../helpers/ws-echo.js';

let server: EchoServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function echo(): Promise<number> {
  server = await startEchoServer({ ports: [0], host: '127.0.0.1', context: { namespace: 'ns', service: 'svc', pod: 'pod-1', ingress: '' } });
  return server.ports[0]!;
}

/** A masked client frame. */
function clientFrame(opcode: number, payload: Buffer, fin = true, masked = true): Buffer {
  const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  const n = payload.length;
  const len = n < 126 ? Buffer.from([(masked ? 0x80 : 0) | n]) : Buffer.from([(masked ? 0x80 : 0) | 126, n >> 8, n & 0xff]);
  const body = Buffer.from(payload);
  if (masked) for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
  return Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode]), len, masked ? mask : Buffer.alloc(0), body]);
}

/** Server frames in `b` (short ones only, as these tests send), after the 101 head. */
function frames(b: Buffer): { opcode: number; payload: Buffer }[] {
  const out: { opcode: number; payload: Buffer }[] = [];
  let at = b.indexOf('\r\n\r\n') + 4;
  while (at + 2 <= b.length) {
    let n = b[at + 1]! & 0x7f;
    let h = 2;
    if (n === 126) {
      n = b.readUInt16BE(at + 2);
      h = 4;
    }
    out.push({ opcode: b[at]! & 0x0f, payload: b.subarray(at + h, at + h + n) });
    at += h + n;
  }
  return out;
}

/** Handshakes on `path`, writes `send`, and returns all the server sent until it closed. */
function raw(port: number, path: string, send: Buffer[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(got)));
    s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    for (const f of send) s.write(f);
  });
}

describe('echo server WebSocket (/ws)', () => {
  it('computes RFC 6455\'s example Sec-WebSocket-Accept', () => {
    expect(websocketAccept('dGhlIHNhbXBsZSBub25jZQ==')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
  });

  it('greets, echoes text and a 1 MiB binary message intact to Node\'s WebSocket, and closes cleanly', async () => {
    const port = await echo();
    const r = await runWsClient(`ws://127.0.0.1:${port}/ws?x=1`, 1 << 20);
    expect(r.error).toBeUndefined();
    expect(r.hello).toMatchObject({ pod: 'pod-1', path: '/ws?x=1', method: 'GET' });
    expect(r.text).toBe('hello through the mesh: ünïcødé ✓');
    expect(r.binary).toEqual({ bytes: 1 << 20, sha256: r.sentSha256, same: true });
    expect(r.close).toEqual({ code: 1000, reason: '', wasClean: true });
  });

  it('answers ping with pong, joins fragments, echoes the close code; an unmasked frame is closed with 1002', async () => {
    const port = await echo();
    const out = await raw(port, '/ws', [clientFrame(0x9, Buffer.from('p1')), clientFrame(0x1, Buffer.from('ab'), false), clientFrame(0x0, Buffer.from('cd')), clientFrame(0x8, Buffer.from([0x03, 0xe8]))]);
    expect(out.subarray(0, out.indexOf('\r\n')).toString()).toBe('HTTP/1.1 101 Switching Protocols');
    expect(out.toString('latin1')).toContain('Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n');
    const f = frames(out);
    expect(f.map((x) => x.opcode)).toEqual([0x1, 0xa, 0x1, 0x8]);
    expect(JSON.parse(f[0]!.payload.toString()) as unknown).toMatchObject({ pod: 'pod-1' });
    expect(f.slice(1).map((x) => x.payload.toString('hex'))).toEqual([Buffer.from('p1').toString('hex'), Buffer.from('abcd').toString('hex'), '03e8']);

    const bad = frames(await raw(port, '/ws', [clientFrame(0x1, Buffer.from('x'), true, false)]));
    expect(bad.map((x) => x.opcode)).toEqual([0x1, 0x8]);
    expect(bad[1]!.payload.readUInt16BE(0)).toBe(1002);
  });

  it('a WebSocket upgrade to another path is refused with 400, the same handshake on /ws switches, and other upgrades are echoed', async () => {
    const port = await echo();
    expect((await raw(port, '/other', [])).toString()).toMatch(/^HTTP\/1\.1 400 /);
    const h2c = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('error', reject);
      s.on('close', () => resolve(got));
      s.write('GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, close\r\n\r\n');
    });
    expect(h2c).toMatch(/^HTTP\/1\.1 200 /);
    expect(h2c).toContain('"path": "/other"');
    const ok = await raw(port, '/ws', [clientFrame(0x8, Buffer.alloc(0))]);
    expect(ok.toString()).toMatch(/^HTTP\/1\.1 101 /);
    expect(frames(ok).map((x) => x.opcode)).toEqual([0x1, 0x8]);
  });
});

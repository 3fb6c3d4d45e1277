// The same-node kernel splice end to end on loopback: a real client, a real server and the
// proxy's two sockets between them, paired in nm_splice with the real verdict program. Each
// case checks the bytes both ends got (exact, in order), what the proxy itself read (almost
// nothing when spliced), and what relay() promises: half-close after the last byte, resets
// carried as resets, byte counts and the idle timeout.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector } from '../../src/redirect/index.js';
import { spliceRelay, type SpliceRelayResult } from '../../src/proxy/splice.js';
import type { SocketSplicer } from '../../src/proxy/types.js';

interface Trio {
  client: Socket;
  /** The server's accepted socket. */
  server: Socket;
  /** The proxy's two sockets: accepted from the client, and connected to the server. */
  a: Socket;
  b: Socket;
  done: Promise<SpliceRelayResult>;
  fallbacks: string[];
}

function listen(onConn: (s: Socket) => void): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, onConn);
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

function portOf(s: Server): number {
  return (s.address() as { port: number }).port;
}

/** Everything a socket reads until its peer's FIN (rejects on an error). */
function readAll(s: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describePrivileged('the same-node kernel splice', () => {
  const pinRoot = `/sys/fs/bpf/nmt-splice-${process.pid}`;
  let r: Redirector;
  let k: SocketSplicer;
  const servers: Server[] = [];
  /** The test's own ends, destroyed at the end (a half-open one would hold its server open). */
  const ends: Socket[] = [];

  beforeAll(async () => {
    r = await Redirector.open({ pinRoot });
    const s = r.splicer;
    if (s instanceof Error) throw s;
    k = s;
  });

  afterAll(async () => {
    for (const s of ends) s.destroy();
    for (const s of servers) await new Promise((res) => s.close(res));
    r?.close();
    await Redirector.destroyAll(pinRoot);
    expect(existsSync(pinRoot)).toBe(false);
  });

  /**
   * client -> proxy(a) ... proxy(b) -> server. `beforeSplice` runs once the proxy holds both
   * sockets and before it splices them (to send bytes that are then in flight or buffered).
   */
  async function trio(o: { idleTimeoutMs?: number; beforeSplice?: (t: Omit<Trio, 'done' | 'fallbacks'>) => Promise<void> } = {}): Promise<Trio> {
    let serverSide!: (s: Socket) => void;
    const serverSock = new Promise<Socket>((res) => (serverSide = res));
    const backend = await listen((s) => {
      ends.push(s);
      serverSide(s);
    });
    servers.push(backend);
    const fallbacks: string[] = [];
    let proxied!: (t: Trio) => void;
    const got = new Promise<Trio>((res) => (proxied = res));
    let client!: Socket;
    const front = await listen((a) => {
      const b = connect({ port: portOf(backend), host: '127.0.0.1', allowHalfOpen: true });
      b.once('connect', () => {
        void (async () => {
          const server = await serverSock;
          await o.beforeSplice?.({ client, server, a, b });
          const { done } = spliceRelay(a, b, k, { ...(o.idleTimeoutMs ? { idleTimeoutMs: o.idleTimeoutMs } : {}), onFallback: (why) => fallbacks.push(why) });
          proxied({ client, server, a, b, done, fallbacks });
        })();
      });
    });
    servers.push(front);
    client = connect({ port: portOf(front), host: '127.0.0.1', allowHalfOpen: true });
    ends.push(client);
    return got;
  }

  it('moves 16 MiB each way in the kernel, exactly, and counts the bytes from the kernel', async () => {
    const t = await trio();
    const up = randomBytes(16 << 20);
    const down = randomBytes(16 << 20);
    const atServer = readAll(t.server);
    const atClient = readAll(t.client);
    t.client.end(up);
    t.server.end(down);
    const [s, c, res] = await Promise.all([atServer, atClient, t.done]);
    expect(sha(s)).toBe(sha(up));
    expect(sha(c)).toBe(sha(down));
    expect(res.spliced).toBe(true);
    expect(res.error).toBeUndefined();
    expect(res.sent).toBe(up.length);
    expect(res.received).toBe(down.length);
    expect(t.fallbacks).toEqual([]);
    // The proxy's own reads: what it held before the splice and what the verdict passed while
    // the pair was set up. The bulk (32 MiB) never came up to user space.
    expect(t.a.bytesRead + t.b.bytesRead).toBeLessThan(1 << 20);
  });

  it('keeps bytes sent before the splice first, in order, on both sides', async () => {
    const early = Buffer.from('early-from-client;');
    const earlyServer = Buffer.from('banner-from-server;');
    const t = await trio({
      beforeSplice: async ({ client, server }) => {
        client.write(early);
        server.write(earlyServer);
        // Let them arrive at the proxy's sockets (read by Node or waiting in the kernel).
        await new Promise((res) => setTimeout(res, 50));
      },
    });
    const atServer = readAll(t.server);
    const atClient = readAll(t.client);
    // Then a stream of numbered lines both ways while the pair is being set up.
    const lines = (tag: string) => Buffer.from(Array.from({ length: 20000 }, (_, i) => `${tag}${i}\n`).join(''));
    t.client.end(lines('c'));
    t.server.end(lines('s'));
    const [s, c, res] = await Promise.all([atServer, atClient, t.done]);
    expect(s.equals(Buffer.concat([early, lines('c')]))).toBe(true);
    expect(c.equals(Buffer.concat([earlyServer, lines('s')]))).toBe(true);
    expect(res.spliced).toBe(true);
    expect(res.sent).toBe(early.length + lines('c').length);
  });

  // The client's FIN comes after its bytes as an empty skb: redirected, the kernel would fail
  // the server side with EPIPE (the verdict drops it; TCP has taken the FIN already).
  it('carries a half-close only after the last byte: the server answers after the client is done', async () => {
    const t = await trio();
    const request = randomBytes(3 << 20);
    const atServer = readAll(t.server);
    const atClient = readAll(t.client);
    t.client.end(request);
    const got = await atServer;
    expect(got.equals(request)).toBe(true);
    // The client's direction is closed; the other still carries bytes.
    const answer = Buffer.from(`got ${got.length} bytes`);
    t.server.end(answer);
    expect((await atClient).toString()).toBe(answer.toString());
    const res = await t.done;
    expect(res.spliced).toBe(true);
    expect(res.error).toBeUndefined();
  });

  it('carries a reset as a reset, never as a clean end', async () => {
    const t = await trio();
    const serverErr = new Promise<string | undefined>((res) => {
      t.server.once('error', (e: Error & { code?: string }) => res(e.code));
      t.server.once('end', () => res('clean end'));
    });
    t.client.write('some bytes');
    await new Promise((res) => t.server.once('data', res));
    t.client.resetAndDestroy();
    expect(await serverErr).toBe('ECONNRESET');
    const res = await t.done;
    expect(res.spliced).toBe(true);
    expect(res.failedSide).toBe('downstream');
  });

  it('closes a connection idle for longer than the idle timeout, and only then', async () => {
    const t = await trio({ idleTimeoutMs: 300 });
    const atServer = readAll(t.server);
    // Bytes every 100 ms keep it open past the timeout...
    for (let i = 0; i < 6; i++) {
      t.client.write(`tick${i};`);
      await new Promise((res) => setTimeout(res, 100));
    }
    // ...then silence closes it.
    const res = await t.done;
    expect(res.spliced).toBe(true);
    expect(res.idleTimeout).toBe(true);
    expect((await atServer).toString()).toBe('tick0;tick1;tick2;tick3;tick4;tick5;');
  });
  // The kernel refusing a pair (user-space relay instead): test/unit/splice-fallback.test.ts.
});

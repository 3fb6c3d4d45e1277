// The proxy's half of the kernel splice when the kernel refuses a pair (a full nm_splice, an
// old kernel): the connection is relayed in user space with nothing lost. The stand-in splicer
// stands in for the kernel, which this unprivileged test cannot load; the real one is tested in
// test/privileged/splice.test.ts.
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { spliceRelay } from '../../src/proxy/splice.js';
import type { SocketSplicer } from '../../src/proxy/types.js';

const servers: Server[] = [];
const ends: Socket[] = [];
afterAll(async () => {
  for (const s of ends) s.destroy();
  for (const s of servers) await new Promise((r) => s.close(r));
});

function listen(onConn: (s: Socket) => void): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, onConn);
  servers.push(srv);
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}

function readAll(s: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

it('relays in user space, losing nothing, when the kernel refuses the pair', async () => {
  const calls: string[] = [];
  const refusing: SocketSplicer = {
    pair: (a, b) => {
      calls.push(`pair ${a > 0} ${b > 0}`);
      throw Object.assign(new Error('bpf_map_update_elem: nm_splice: Argument list too long'), { code: 'E2BIG' });
    },
    taken: () => calls.push('taken'),
    release: () => calls.push('release'),
    stats: () => {
      calls.push('stats');
      return { bytesReceived: 0, bytesAcked: 0, outq: 0, lastDataRecvMs: 0 };
    },
  };
  let serverSide!: (s: Socket) => void;
  const server = new Promise<Socket>((r) => (serverSide = r));
  const backend = await listen((s) => {
    ends.push(s);
    serverSide(s);
  });
  const fallbacks: string[] = [];
  let proxySide!: (r: { a: Socket; done: Promise<{ sent: number; spliced?: boolean }> }) => void;
  const proxy = new Promise<{ a: Socket; done: Promise<{ sent: number; spliced?: boolean }> }>((r) => (proxySide = r));
  const front = await listen((a) => {
    const b = connect({ port: (backend.address() as { port: number }).port, host: '127.0.0.1', allowHalfOpen: true });
    b.once('connect', () => proxySide({ a, done: spliceRelay(a, b, refusing, { onFallback: (why) => fallbacks.push(why) }).done }));
  });
  const client = connect({ port: (front.address() as { port: number }).port, host: '127.0.0.1', allowHalfOpen: true });
  ends.push(client);
  // Bytes sent at once: Node has read some of them before the (refused) splice.
  const up = randomBytes(1 << 20);
  client.end(up);
  const atClient = readAll(client);
  const srv = await server;
  const atServer = readAll(srv);
  srv.end('bye');
  const { a, done } = await proxy;
  const [s, c, res] = await Promise.all([atServer, atClient, done]);
  expect(s.equals(up)).toBe(true);
  expect(c.toString()).toBe('bye');
  expect(res.spliced).toBeUndefined();
  expect(res.sent).toBe(up.length);
  // In user space the proxy read every byte itself.
  expect(a.bytesRead).toBe(up.length);
  expect(fallbacks).toEqual(['the kernel refused the splice']);
  expect(calls).toEqual(['pair true true']);
});

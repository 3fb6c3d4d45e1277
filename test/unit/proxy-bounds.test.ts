// Relays are bounded: a connection no byte crossed for the idle timeout is closed on both sides
// (fake timers), activity keeps it open, 0 disables it, both sockets get TCP keepalive, and a
// pod leaving the mesh never waits on its open connections: removePod resolves at once and
// resets them. Real loopback sockets.
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { NodeProxy } from '../../src/proxy/proxy.js';
import { relay, type RelayOptions, type RelayResult } from '../../src/proxy/relay.js';
import { INBOUND_PORT, OUTBOUND_PORT, type LocalPod } from '../../src/proxy/types.js';
import { FlowLog, MeshMetrics } from '../../src/telemetry/index.js';
import { startApp } from '../helpers/app.js';
import { FakeConnector, fakeListen } from '../helpers/fake-netns.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Lets real I/O run without touching the (possibly fake) timers. */
const turns = async (n = 20): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

async function untilTrue(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}

/** Two connected socket pairs and a relay between their inner ends: client ⇄ [relay] ⇄ server. */
async function relayed(o: RelayOptions) {
  const accepted: Socket[] = [];
  const srv: Server = createServer({ allowHalfOpen: true }, (s) => accepted.push(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => srv.close(r)));
  const port = (srv.address() as AddressInfo).port;
  const dial = async (): Promise<Socket> => {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => s.once('connect', r));
    return s;
  };
  const client = await dial();
  const server = await dial();
  await untilTrue(() => accepted.length === 2, 'both accepts');
  const [down, up] = accepted as [Socket, Socket];
  for (const s of [client, server, down, up]) {
    s.on('error', () => {});
    cleanups.push(() => s.destroy());
  }
  const keepAlive = { down: vi.spyOn(down, 'setKeepAlive'), up: vi.spyOn(up, 'setKeepAlive') };
  let result: RelayResult | undefined;
  const r = relay(down, up, o);
  void r.done.then((x) => (result = x));
  const ended = { client: false, server: false };
  client.on('end', () => (ended.client = true));
  server.on('end', () => (ended.server = true));
  /** One byte client → server, and it arrives. */
  const poke = async (): Promise<void> => {
    const got = new Promise((res) => server.once('data', res));
    client.write('x');
    await got;
  };
  return { client, server, keepAlive, ended, poke, result: () => result };
}

describe('relay idle timeout and keepalive', () => {
  it('closes both sides after the idle timeout with no byte, and not a moment of activity earlier', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const h = await relayed({ idleTimeoutMs: 60_000 });
    await h.poke();
    vi.advanceTimersByTime(59_000);
    await turns();
    expect(h.ended).toEqual({ client: false, server: false });
    // Activity at 59 s moves the deadline: 59 s later it is still open.
    await h.poke();
    vi.advanceTimersByTime(59_000);
    await turns();
    expect(h.ended).toEqual({ client: false, server: false });
    await h.poke();
    // Now a full minute of silence.
    vi.advanceTimersByTime(60_000);
    await untilTrue(() => h.ended.client && h.ended.server, 'both sides to be closed');
    await untilTrue(() => h.result() !== undefined, 'the relay to finish');
    expect(h.result()).toMatchObject({ idleTimeout: true, sent: 3 });
    expect(h.result()!.error).toBeUndefined();
  });

  it('never closes an idle connection when the idle timeout is 0', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const h = await relayed({ idleTimeoutMs: 0 });
    await h.poke();
    vi.advanceTimersByTime(10 * 3_600_000);
    await turns();
    expect(h.ended).toEqual({ client: false, server: false });
    await h.poke();
  });

  it('defaults to a one-hour idle timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const h = await relayed({});
    await h.poke();
    vi.advanceTimersByTime(3_599_000);
    await turns();
    expect(h.ended.client).toBe(false);
    vi.advanceTimersByTime(1_000);
    await untilTrue(() => h.ended.client && h.ended.server, 'the one-hour close');
  });

  it('turns TCP keepalive on for both sockets (180 s by default, 0 disables)', async () => {
    const on = await relayed({});
    expect(on.keepAlive.down).toHaveBeenCalledWith(true, 180_000);
    expect(on.keepAlive.up).toHaveBeenCalledWith(true, 180_000);
    const off = await relayed({ keepAliveMs: 0 });
    expect(off.keepAlive.down).not.toHaveBeenCalled();
    expect(off.keepAlive.up).not.toHaveBeenCalled();
  });
});

const pod: LocalPod = {
  uid: 'uid-web',
  namespace: 'default',
  name: 'web',
  ip: '10.0.0.8',
  netnsPath: '/fake/netns/web',
  serviceAccount: 'web',
  labels: {},
  trustDomain: 'cluster.local',
};

describe('NodeProxy.removePod', () => {
  async function setup() {
    const appSockets: Socket[] = [];
    const app = await startApp((s) => {
      appSockets.push(s);
      s.pipe(s);
    }, { allowHalfOpen: true });
    cleanups.push(() => app.close());
    const log = pino({ level: 'silent' });
    const fake = fakeListen();
    const upstream = new FakeConnector(app.port);
    const flows = new FlowLog(log);
    const proxy = new NodeProxy({
      listen: fake.listen,
      upstream,
      originalDst: { originalDst: () => ({ ip: '10.0.0.9', port: 8080 }) },
      workloads: { byIp: () => undefined },
      telemetry: { metrics: new MeshMetrics({ defaultMetrics: false }), flows, log },
      fastPath: false,
    });
    cleanups.push(() => proxy.close());
    await proxy.addPod(pod);
    return { proxy, upstream, flows, appSockets, outbound: fake.port(pod.netnsPath, OUTBOUND_PORT), inbound: fake.port(pod.netnsPath, INBOUND_PORT) };
  }

  /** An open connection through the proxy, checked with one echo round trip. */
  async function openEcho(port: number) {
    const s = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const errors: string[] = [];
    s.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const echoed = new Promise<string>((r) => s.once('data', (d) => r(String(d))));
    s.write('hello');
    expect(await echoed).toBe('hello');
    return { s, errors, closed };
  }

  it('resolves while connections are open and resets them, outbound and inbound', async () => {
    const h = await setup();
    const out = await openEcho(h.outbound);
    const inb = await openEcho(h.inbound);
    expect(h.proxy.tracker.active.size).toBe(2);
    await h.proxy.removePod(pod.uid);
    await Promise.all([out.closed, inb.closed]);
    expect(out.errors).toEqual(['ECONNRESET']);
    expect(inb.errors).toEqual(['ECONNRESET']);
    await untilTrue(() => h.proxy.tracker.active.size === 0, 'nothing tracked');
    await untilTrue(() => h.flows.recent().filter((r) => r.responseFlags === 'LR').length === 2, 'two LR records');
    expect(h.proxy.pods()).toEqual([]);
    // Its listeners are gone: a new connect is refused, where it was served before.
    const refused = await new Promise<string>((r) => connect({ port: h.outbound, host: '127.0.0.1' }).on('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')));
    expect(refused).toBe('ECONNREFUSED');
  });

  it('resolves while a connection still waits for its upstream, and resets it', async () => {
    const h = await setup();
    h.upstream.fail = () => new Promise<never>(() => {}); // an upstream that never answers
    const s = connect({ port: h.outbound, host: '127.0.0.1' });
    const err = new Promise<string>((r) => s.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message)));
    await untilTrue(() => h.upstream.asked.length === 1, 'the upstream connect to start');
    await h.proxy.removePod(pod.uid);
    expect(await err).toBe('ECONNRESET');
  });
});

// The accept path never throws: every class of error on a connection accepted on 15001 or 15006
// (original-destination lookup, authorization, upstream connect, telemetry, a peer that reset
// before the handler ran) resets that connection alone, is counted in
// nodemesh_connection_errors_total, and never reaches the process; a normal connection through
// the same proxy still relays its bytes. Real loopback sockets, fake pod namespaces.
import { spawnSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AgentError } from '../../src/errors.js';
import { Boundary } from '../../src/proxy/boundary.js';
import { NodeProxy, type ProxyOptions } from '../../src/proxy/proxy.js';
import { INBOUND_PORT, OUTBOUND_PORT, type LocalPod } from '../../src/proxy/types.js';
import { FlowLog, MeshMetrics } from '../../src/telemetry/index.js';
import { startApp, type TestApp } from '../helpers/app.js';
import { FakeConnector, fakeListen } from '../helpers/fake-netns.js';

const pod: LocalPod = {
  uid: 'uid-client',
  namespace: 'default',
  name: 'client',
  ip: '10.0.0.7',
  netnsPath: '/fake/netns/client',
  serviceAccount: 'client',
  labels: { app: 'client' },
  trustDomain: 'cluster.local',
};

// Anything that escapes a connection's handling lands here instead of in vitest's own report.
const escaped: unknown[] = [];
const onEscape = (e: unknown): void => void escaped.push(e);
process.on('uncaughtException', onEscape);
process.on('unhandledRejection', onEscape);

const cleanups: (() => unknown)[] = [];
let app: TestApp;
beforeEach(async () => {
  escaped.length = 0;
  // An echo app: the upstream of every relayed connection.
  app = await startApp((s) => s.pipe(s), { allowHalfOpen: true });
  cleanups.push(() => app.close());
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  expect(escaped).toEqual([]);
});

/** A NodeProxy with one pod, listeners on loopback, and overrides for the class under test. */
async function setup(o: Partial<ProxyOptions> & { originalDst?: ProxyOptions['originalDst'] } = {}) {
  const log = pino({ level: 'silent' });
  const metrics = new MeshMetrics({ defaultMetrics: false });
  const flows = new FlowLog(log);
  const upstream = new FakeConnector(app.port);
  const fake = fakeListen();
  const proxy = new NodeProxy({
    listen: fake.listen,
    upstream,
    originalDst: { originalDst: () => ({ ip: '10.0.0.9', port: 8080 }) },
    workloads: { byIp: () => undefined },
    telemetry: { metrics, flows, log },
    fastPath: false,
    ...o,
  });
  cleanups.push(() => proxy.close());
  await proxy.addPod(pod);
  const errors = async (direction: string, reason: string): Promise<number> => {
    const m = (await metrics.connectionErrors.get()).values.find((v) => v.labels.direction === direction && v.labels.reason === reason);
    return m?.value ?? 0;
  };
  return { proxy, upstream, flows, metrics, errors, outbound: fake.port(pod.netnsPath, OUTBOUND_PORT), inbound: fake.port(pod.netnsPath, INBOUND_PORT) };
}

/** Connects, sends `payload`, half-closes, and reports what came back or how it broke. */
function exchange(port: number, payload = 'ping'): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    const s: Socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let data = '';
    s.on('data', (c) => (data += c));
    s.on('error', (err: NodeJS.ErrnoException) => resolve({ data, error: err.code ?? err.message }));
    s.on('end', () => {
      s.end();
      resolve({ data });
    });
    s.on('connect', () => s.end(payload));
  });
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('the accept boundary', () => {
  it('relays a normal outbound and a normal inbound connection (the positive twin)', async () => {
    const h = await setup();
    expect(await exchange(h.outbound, 'out')).toEqual({ data: 'out' });
    expect(await exchange(h.inbound, 'in')).toEqual({ data: 'in' });
    expect(h.upstream.asked[0]!.to).toEqual({ ip: '10.0.0.9', port: 8080 });
    for (const d of ['outbound', 'inbound']) for (const r of ['internal', 'peer_gone', 'original_dst']) expect(await h.errors(d, r)).toBe(0);
  });

  it('resets and counts a connection whose original-destination lookup throws, and keeps serving', async () => {
    let broken = true;
    const h = await setup({
      originalDst: {
        originalDst: () => {
          if (broken) throw new AgentError('NM_ERR_ORIGINAL_DST', 'looking up the original destination of fd 42: map lookup failed');
          return { ip: '10.0.0.9', port: 8080 };
        },
      },
    });
    expect((await exchange(h.outbound)).error).toBe('ECONNRESET');
    expect(await h.errors('outbound', 'original_dst')).toBe(1);
    broken = false;
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
  });

  it('resets and counts a captured connection with no original destination', async () => {
    const h = await setup({ originalDst: { originalDst: () => null } });
    expect((await exchange(h.outbound)).error).toBe('ECONNRESET');
    expect(await h.errors('outbound', 'original_dst')).toBe(1);
    expect(h.upstream.asked).toEqual([]);
    expect(await exchange(h.inbound)).toEqual({ data: 'ping' });
  });

  it('drops quietly a connection whose lookup finds the peer gone (ENOTCONN), counted as peer_gone', async () => {
    let gone = true;
    const h = await setup({
      originalDst: {
        originalDst: () => {
          if (gone) throw new AgentError('NM_ERR_ORIGINAL_DST', 'the client already closed the connection', { sysCode: 'ENOTCONN', peerGone: true });
          return { ip: '10.0.0.9', port: 8080 };
        },
      },
    });
    expect((await exchange(h.outbound)).error).toBe('ECONNRESET');
    expect(await h.errors('outbound', 'peer_gone')).toBe(1);
    expect(await h.errors('outbound', 'original_dst')).toBe(0);
    gone = false;
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
  });

  it('denies, resets and counts a connection whose authorization throws', async () => {
    let broken = true;
    const h = await setup({
      authorize: () => {
        if (broken) throw new TypeError('invalid IP address ""');
        return { allowed: true, reason: 'test' };
      },
    });
    expect((await exchange(h.inbound)).error).toBe('ECONNRESET');
    expect(await h.errors('inbound', 'authorize')).toBe(1);
    expect(h.upstream.asked).toEqual([]);
    broken = false;
    expect(await exchange(h.inbound)).toEqual({ data: 'ping' });
  });

  it('resets and counts a connection whose upstream connect rejects', async () => {
    const h = await setup();
    h.upstream.fail = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 10.0.0.9:8080'), { code: 'ECONNREFUSED' }));
    expect((await exchange(h.outbound)).error).toBe('ECONNRESET');
    expect(await h.errors('outbound', 'upstream_connect')).toBe(1);
    await until(() => h.flows.recent().some((r) => r.responseFlags === 'UF,URX'), 'the UF,URX flow record');
    h.upstream.fail = undefined;
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
  });

  it('resets and counts a connection whose telemetry throws when it starts', async () => {
    const h = await setup();
    const start = h.flows.start.bind(h.flows);
    let broken = true;
    h.flows.start = (r) => {
      if (broken) throw new RangeError('flow ring broke');
      return start(r);
    };
    expect((await exchange(h.inbound)).error).toBe('ECONNRESET');
    expect(await h.errors('inbound', 'internal')).toBe(1);
    expect(h.proxy.tracker.active.size).toBe(0);
    broken = false;
    expect(await exchange(h.inbound)).toEqual({ data: 'ping' });
  });

  it('contains telemetry that throws when a connection ends, and leaves nothing tracked', async () => {
    const h = await setup();
    const off = h.flows.onFinish(() => {
      throw new Error('access-log sink broke');
    });
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
    await until(async () => (await h.errors('outbound', 'internal')) === 1, 'the internal error to be counted');
    expect(h.proxy.tracker.active.size).toBe(0);
    expect(await h.metrics.activeConnections.get()).toMatchObject({ values: [{ value: 0 }] });
    off();
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
  });

  it('contains a handler that throws something that is not an Error', async () => {
    const h = await setup({
      router: {
        route: () => {
          throw 'not an error object';
        },
      },
    });
    expect((await exchange(h.outbound)).error).toBe('ECONNRESET');
    expect(await h.errors('outbound', 'internal')).toBe(1);
    expect(await exchange(h.inbound)).toEqual({ data: 'ping' });
  });

  it('drops quietly connections whose peer reset before the handler ran, on both listeners', async () => {
    let lookups = 0;
    const h = await setup({
      originalDst: {
        originalDst: () => {
          lookups++;
          return { ip: '10.0.0.9', port: 8080 };
        },
      },
    });
    // While spawnSync blocks this event loop, the kernel completes each handshake into the
    // listener's backlog and the child resets it: every accept then finds the peer gone.
    const n = 10;
    const script = `const net = require('net'); let left = ${2 * n};
      for (const port of [${h.outbound}, ${h.inbound}]) for (let i = 0; i < ${n}; i++) {
        const s = net.connect(port, '127.0.0.1', () => { s.resetAndDestroy(); if (--left === 0) setTimeout(() => process.exit(0), 50); });
        s.on('error', () => {});
      }`;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 10_000 });
    expect(r.status).toBe(0);
    await until(async () => (await h.errors('outbound', 'peer_gone')) + (await h.errors('inbound', 'peer_gone')) === 2 * n, 'every reset connection to be counted');
    expect(await h.errors('outbound', 'peer_gone')).toBe(n);
    expect(await h.errors('inbound', 'peer_gone')).toBe(n);
    expect(lookups).toBe(0);
    expect(h.upstream.asked).toEqual([]);
    expect(await exchange(h.outbound)).toEqual({ data: 'ping' });
    expect(await exchange(h.inbound)).toEqual({ data: 'ping' });
    expect(lookups).toBe(1);
  });
});

describe('Boundary', () => {
  it('resets, records and swallows a rejection, and survives a logger and a counter that throw', async () => {
    const throwing = () => {
      throw new Error('broken sink');
    };
    const log = Object.assign(pino({ level: 'silent' }), { error: throwing, warn: throwing, debug: throwing });
    const b = new Boundary({ log, metrics: { connectionError: throwing } });
    let resets = 0;
    b.run('inbound', () => resets++, () => Promise.reject(new Error('late failure')));
    b.run('inbound', () => {
      resets++;
      throw new Error('reset failed too');
    }, () => {
      throw new Error('early failure');
    });
    await new Promise((r) => setImmediate(r));
    expect(resets).toBe(2);
  });

  it('classifies a fake socket with no remote address as peer_gone without running the handler', () => {
    const counted: string[] = [];
    const b = new Boundary({ log: pino({ level: 'silent' }), metrics: { connectionError: (d, r) => counted.push(`${d}/${r}`) } });
    let ran = 0;
    let reset = 0;
    const fake = { remoteAddress: undefined, remotePort: undefined, destroyed: false, on: () => fake, resetAndDestroy: () => reset++, destroy: () => {} };
    b.accept('outbound', {}, () => ran++)(fake as unknown as Socket);
    expect({ ran, reset, counted }).toEqual({ ran: 0, reset: 1, counted: ['outbound/peer_gone'] });
    const alive = { ...fake, remoteAddress: '10.0.0.7', remotePort: 40000, on: () => alive };
    b.accept('outbound', {}, () => ran++)(alive as unknown as Socket);
    expect({ ran, reset, counted }).toEqual({ ran: 1, reset: 1, counted: ['outbound/peer_gone'] });
  });
});

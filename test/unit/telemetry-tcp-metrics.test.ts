// The istio_tcp_* counters gathered by label-set identity and added when read: what a scrape
// shows is exactly what prom-client counting every call would show, whenever it scrapes.
import { Counter, Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { BatchedCounter } from '../../src/telemetry/batched-counter.js';
import { MeshMetrics, TcpLabelCache, type PeerInfo, type TcpLabels } from '../../src/telemetry/index.js';
import { TCP_LABELS, tcpLabels } from '../../src/telemetry/labels.js';

const NAMES = ['istio_tcp_connections_opened_total', 'istio_tcp_connections_closed_total', 'istio_tcp_sent_bytes_total', 'istio_tcp_received_bytes_total'] as const;

/** prom-client's own counters, each call counted at once: what the proxy's metrics must look like. */
function reference() {
  const registry = new Registry();
  const [opened, closed, sent, received] = NAMES.map((name) => new Counter({ name, help: name, labelNames: [...TCP_LABELS], registers: [registry] }));
  return {
    registry,
    opened: (l: TcpLabels) => opened!.inc(l),
    closed: (l: TcpLabels) => closed!.inc(l),
    bytes: (l: TcpLabels, up: number, down: number) => {
      if (up > 0) sent!.inc(l, up);
      if (down > 0) received!.inc(l, down);
    },
  };
}

/** The istio_tcp_* samples, in the order the registry wrote them (HELP text aside). */
async function tcpSamples(registry: Registry): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((l) => l.startsWith('istio_tcp_'));
}

const peer = (workload: string): PeerInfo => ({ workload, namespace: 'shop', principal: `cluster.local/ns/shop/sa/${workload}`, app: workload });

describe('MeshMetrics TCP counters', () => {
  it('scrape for scrape, shows what prom-client counting every call shows', async () => {
    const m = new MeshMetrics({ defaultMetrics: false });
    const ref = reference();
    const cache = new TcpLabelCache();
    const pairs = ['web', 'api', 'db', 'cache'].flatMap((s) => ['api', 'db'].map((d) => [s, d] as const));
    const labels = (i: number): TcpLabels => {
      const [s, d] = pairs[i % pairs.length]!;
      const input = { reporter: i % 3 === 0 ? ('destination' as const) : ('source' as const), source: peer(s), destination: peer(d), responseFlags: i % 7 === 0 ? 'UF' : '-', securityPolicy: 'mutual_tls' as const };
      // Mostly the cache's shared objects, as the proxy passes; now and then a fresh equal one.
      return i % 5 === 0 ? tcpLabels(input) : cache.get(input);
    };
    for (let i = 0; i < 400; i++) {
      const l = labels((i * 7919) % 97);
      m.connectionOpened(l);
      ref.opened(l);
      m.bytes(l, i % 4 === 0 ? 0 : i * 13, i % 6 === 0 ? 0 : i * 29);
      ref.bytes(l, i % 4 === 0 ? 0 : i * 13, i % 6 === 0 ? 0 : i * 29);
      if (i % 3 !== 1) {
        m.connectionClosed(l);
        ref.closed(l);
      }
      if (i % 97 === 0) expect(await tcpSamples(m.registry)).toEqual(await tcpSamples(ref.registry));
    }
    const final = await tcpSamples(m.registry);
    expect(final).toEqual(await tcpSamples(ref.registry));
    expect(final.length).toBeGreaterThan(30);
    // A scrape that finds nothing new shows the same again.
    expect(await tcpSamples(m.registry)).toEqual(final);
  });

  it('shows a count to every reader: render(), get() and the JSON form', async () => {
    const m = new MeshMetrics({ defaultMetrics: false });
    const l = new TcpLabelCache().get({ reporter: 'source', source: peer('web'), destination: peer('api') });
    m.connectionOpened(l);
    m.connectionOpened(l);
    expect((await m.opened.get()).values).toEqual([{ value: 2, labels: l }]);
    m.connectionOpened(l);
    const json = (await m.registry.getMetricsAsJSON()).find((x) => x.name === 'istio_tcp_connections_opened_total');
    expect(json?.values.map((v) => v.value)).toEqual([3]);
    expect((await m.render()).body).toMatch(/istio_tcp_connections_opened_total\{[^}]*source_workload="web"[^}]*\} 3\n/);
  });

  it('adds what it gathered once it holds 1,024 label sets, whether or not anyone scrapes', () => {
    const c = new BatchedCounter({ name: 'x_total', help: 'x', labelNames: ['n'], registers: [] });
    const inc = vi.spyOn(c, 'inc');
    for (let i = 0; i < 1024; i++) c.add({ n: String(i) });
    expect(inc).not.toHaveBeenCalled();
    c.add({ n: 'one more' });
    expect(inc).toHaveBeenCalledTimes(1024);
  });

  it('forgets what it gathered when reset, as prom-client forgets its series', async () => {
    const m = new MeshMetrics({ defaultMetrics: false });
    const l = new TcpLabelCache().get({ reporter: 'source', source: peer('web'), destination: peer('api') });
    m.connectionOpened(l);
    m.registry.resetMetrics();
    expect(await tcpSamples(m.registry)).toEqual([]);
    m.connectionOpened(l);
    expect(await tcpSamples(m.registry)).toEqual([expect.stringMatching(/^istio_tcp_connections_opened_total\{.*\} 1$/)]);
  });

  it('adds every other label set when prom-client refuses one, and never adds one twice', async () => {
    const c = new BatchedCounter({ name: 'z_total', help: 'z', labelNames: ['n'], registers: [] });
    c.add({ n: 'a' }, 2);
    c.add({ bogus: 'x' } as unknown as { n: string });
    c.add({ n: 'b' }, 3);
    await expect(c.get()).rejects.toThrow(/bogus/);
    c.add({ n: 'a' }, 1);
    const values = (await c.get()).values.map((v) => [v.labels.n, v.value]);
    expect(values).toEqual([
      ['a', 3],
      ['b', 3],
    ]);
  });

  it('refuses a count that is negative or not finite, when it is counted rather than at the next scrape', () => {
    const c = new BatchedCounter({ name: 'y_total', help: 'y', labelNames: ['n'], registers: [] });
    expect(() => c.add({ n: 'a' }, -1)).toThrow(TypeError);
    expect(() => c.add({ n: 'a' }, Number.NaN)).toThrow(TypeError);
    expect(() => c.add({ n: 'a' }, Number.POSITIVE_INFINITY)).toThrow(TypeError);
    c.add({ n: 'a' }, 2);
  });
});

// The capture join with synthetic kernel events: outbound proxy records join connect/close by
// socket cookie or by (netns cookie, client port), inbound ones the steered SYN's 4-tuple;
// kernel-only flows become records (passed, dropped, observed); pending state stays bounded.
import { describe, expect, it } from 'vitest';
import { CaptureHub } from '../../src/capture/hub.js';
import { FlowJoin, type JoinKernelEvent, type KernelFlow, type PodResolver } from '../../src/capture/join.js';
import { CaptureRecorder } from '../../src/capture/recorder.js';
import type { CaptureRecord } from '../../src/capture/record.js';
import type { FlowRecord } from '../../src/telemetry/index.js';
import type { KernelEvent } from '../../src/redirect/events.js';

const NS_A = 1001n;
const NS_B = 1002n;
const pods: PodResolver = {
  byIp: (ip) => ({ '10.1.0.3': { pod: 'shop/frontend' }, '10.1.0.2': { pod: 'shop/backend' } })[ip],
  byNetns: (c) => (c === NS_A ? 'shop/frontend' : c === NS_B ? 'shop/backend' : undefined),
  netnsOf: (p) => (p === 'shop/frontend' ? NS_A : p === 'shop/backend' ? NS_B : undefined),
};

let ns = 1_000_000_000n;
function ev(e: Partial<JoinKernelEvent> & Pick<JoinKernelEvent, 'kind'>): JoinKernelEvent {
  ns += 1_000_000n;
  return { socketCookie: 0n, netnsCookie: NS_A, src: { ip: '0.0.0.0', port: 0 }, dst: { ip: '0.0.0.0', port: 0 }, monotonicNs: ns, enrolled: true, ...e };
}

function setup(o: { cap?: number; ttlMs?: number; graceMs?: number } = {}) {
  let now = 0;
  const flows: KernelFlow[] = [];
  const join = new FlowJoin({ pods, onKernelFlow: (f) => flows.push(f), now: () => now, ...o });
  return { join, flows, tick: (ms: number) => (now += ms) };
}

describe('capture join', () => {
  it('gives an outbound proxy record its kernel connect by socket cookie, and absorbs the later close', () => {
    const { join, flows } = setup();
    join.kernel({ events: [ev({ kind: 'connect_redirected', socketCookie: 77n, src: { ip: '10.1.0.3', port: 0 }, dst: { ip: '10.1.0.2', port: 8080 } })], lostTotal: 0n });
    const facts = join.proxy({ direction: 'outbound', pod: 'shop/frontend', src: { ip: '10.1.0.3', port: 41000 }, dst: { ip: '10.1.0.2', port: 8080 }, socketCookie: 77n });
    expect(facts).toEqual({ socketCookie: '77', netnsCookie: String(NS_A), events: ['connect_redirected'] });
    // A second record with the same cookie gets nothing: the entry was consumed.
    expect(join.proxy({ direction: 'outbound', pod: 'shop/frontend', src: { ip: '10.1.0.3', port: 41000 }, dst: { ip: '10.1.0.2', port: 8080 }, socketCookie: 77n })).toBeUndefined();
    join.kernel({ events: [ev({ kind: 'close', socketCookie: 77n, src: { ip: '127.0.0.1', port: 41000 }, dst: { ip: '127.0.0.1', port: 15001 }, bytesSent: 4n, bytesReceived: 9n })], lostTotal: 0n });
    expect(flows).toEqual([]);
    expect(join.stats().unmatchedCloses).toBe(0);
  });

  it('joins by (netns cookie, client port) when the proxy has no cookie, and not across netns', () => {
    const { join } = setup();
    // The close came first (the app closed before the proxy finished), in pod A's netns.
    join.kernel({
      events: [
        ev({ kind: 'connect_redirected', socketCookie: 5n, dst: { ip: '10.1.0.2', port: 8080 } }),
        ev({ kind: 'close', socketCookie: 5n, src: { ip: '127.0.0.1', port: 42000 }, dst: { ip: '127.0.0.1', port: 15001 } }),
      ],
      lostTotal: 0n,
    });
    // Same port, other pod (other netns): no join.
    expect(join.proxy({ direction: 'outbound', pod: 'shop/backend', src: { ip: '10.1.0.2', port: 42000 }, dst: { ip: '10.1.0.3', port: 80 } })).toBeUndefined();
    const facts = join.proxy({ direction: 'outbound', pod: 'shop/frontend', src: { ip: '10.1.0.3', port: 42000 }, dst: { ip: '10.1.0.2', port: 8080 } });
    expect(facts?.events).toEqual(['connect_redirected', 'close']);
    expect(facts?.socketCookie).toBe('5');
  });

  it('joins an inbound record with the steered SYN by its 4-tuple', () => {
    const { join } = setup();
    join.kernel({ events: [ev({ kind: 'lookup_steered', netnsCookie: NS_B, src: { ip: '10.1.0.3', port: 43000 }, dst: { ip: '10.1.0.2', port: 8080 } })], lostTotal: 0n });
    expect(join.proxy({ direction: 'inbound', pod: 'shop/backend', src: { ip: '10.1.0.3', port: 43001 }, dst: { ip: '10.1.0.2', port: 8080 } })).toBeUndefined();
    expect(join.proxy({ direction: 'inbound', pod: 'shop/backend', src: { ip: '10.1.0.3', port: 43000 }, dst: { ip: '10.1.0.2', port: 8080 } })).toEqual({ netnsCookie: String(NS_B), events: ['lookup_steered'] });
    expect(join.stats().pending).toBe(0);
  });

  it('reports kernel-only flows: passed with its reason, dropped, refused, and non-enrolled as observed with kernel bytes', () => {
    const { join, flows } = setup();
    join.kernel({
      events: [
        // An enrolled pod's connect to an excluded port: no close follows (only captured and observed sockets report one).
        ev({ kind: 'connect_passed', reason: 'excluded_port', socketCookie: 9n, src: { ip: '10.1.0.3', port: 45000 }, dst: { ip: '10.1.0.2', port: 9999 } }),
        ev({ kind: 'lookup_dropped', reason: 'no_listener', socketCookie: 0n, netnsCookie: NS_B, src: { ip: '10.1.0.3', port: 44000 }, dst: { ip: '10.1.0.2', port: 8080 } }),
        ev({ kind: 'connect_passed', reason: 'quota', refused: true, socketCookie: 11n, dst: { ip: '10.1.0.2', port: 8080 } }),
        ev({ kind: 'connect_passed', reason: 'observed', socketCookie: 10n, enrolled: false, netnsCookie: 3000n, dst: { ip: '10.1.0.2', port: 80 } }),
        ev({ kind: 'close', reason: 'observed', socketCookie: 10n, enrolled: false, netnsCookie: 3000n, src: { ip: '10.1.0.7', port: 46000 }, dst: { ip: '10.1.0.2', port: 80 }, bytesSent: 1n, bytesReceived: 2n }),
      ],
      lostTotal: 3n,
    });
    expect(flows.map((f) => [f.verdict, f.reason, f.src.port, f.dst.port, f.bytes])).toEqual([
      ['passed', 'excluded_port', 45000, 9999, undefined],
      ['dropped', 'no_listener', 44000, 8080, undefined],
      ['dropped', 'quota', 0, 8080, undefined],
      ['observed', 'observed', 46000, 80, { sent: 1, received: 2 }],
    ]);
    expect(flows[0]!.netnsPod).toBe('shop/frontend');
    expect(flows[3]!.durationMs).toBe(1);
    expect(join.stats()).toMatchObject({ pending: 0, kernelLost: 3n, unmatchedCloses: 0 });
  });

  it('makes one record of a pod outside the mesh calling an enrolled pod: the observed events join the proxy\'s inbound record, in either order', () => {
    const client = { ip: '10.1.0.9', port: 45000 };
    const server = { ip: '10.1.0.2', port: 8080 };
    const observed = (port: number) => [
      ev({ kind: 'connect_passed', reason: 'observed', enrolled: false, socketCookie: BigInt(port), netnsCookie: 9n, dst: server }),
      ev({ kind: 'close', reason: 'observed', enrolled: false, socketCookie: BigInt(port), netnsCookie: 9n, src: { ...client, port }, dst: server, bytesSent: 4n, bytesReceived: 33n }),
    ];
    const steered = (port: number) => ev({ kind: 'lookup_steered', netnsCookie: NS_B, src: { ...client, port }, dst: server });
    // The client's close first, then the proxy's record.
    const a = setup();
    a.join.kernel({ events: [steered(45000), ...observed(45000)], lostTotal: 0n });
    expect(a.join.proxy({ direction: 'inbound', pod: 'shop/backend', src: client, dst: server })?.events).toEqual(['lookup_steered', 'connect_passed', 'close']);
    // The proxy's record first, then the client's close: absorbed.
    a.join.kernel({ events: [steered(45001)], lostTotal: 0n });
    expect(a.join.proxy({ direction: 'inbound', pod: 'shop/backend', src: { ...client, port: 45001 }, dst: server })?.events).toEqual(['lookup_steered']);
    a.join.kernel({ events: observed(45001), lostTotal: 0n });
    expect(a.flows).toEqual([]);
    expect(a.join.stats()).toMatchObject({ pending: 0 });
    // Its twin: the same observed connection to a pod outside the mesh (no steered SYN) is a record of its own.
    a.join.kernel({ events: observed(45002), lostTotal: 0n });
    expect(a.flows.map((f) => [f.verdict, f.dst.port, f.bytes])).toEqual([['observed', 8080, { sent: 4, received: 33 }]]);
  });

  it('reports nothing of its own for the agent delivering a connection (sk_lookup passed, reason delivery), but a pod calling itself', () => {
    const { join, flows } = setup();
    join.kernel({
      events: [
        ev({ kind: 'lookup_passed', reason: 'delivery', netnsCookie: NS_B, src: { ip: '10.1.0.3', port: 44000 }, dst: { ip: '10.1.0.2', port: 8080 } }),
        ev({ kind: 'lookup_passed', reason: 'self', netnsCookie: NS_B, src: { ip: '10.1.0.2', port: 44001 }, dst: { ip: '10.1.0.2', port: 8080 } }),
      ],
      lostTotal: 0n,
    });
    expect(flows.map((f) => [f.verdict, f.reason])).toEqual([['passed', 'self']]);
  });

  it('absorbs the close of a redirected connection the proxy reported first (no observed duplicate)', () => {
    const { join, flows, tick } = setup({ graceMs: 1000 });
    join.kernel({ events: [ev({ kind: 'connect_redirected', socketCookie: 21n, dst: { ip: '10.1.0.2', port: 8080 } })], lostTotal: 0n });
    // The connect had no bound port, so the proxy record cannot find it yet: it is reported without facts.
    expect(join.proxy({ direction: 'outbound', pod: 'shop/frontend', src: { ip: '10.1.0.3', port: 49000 }, dst: { ip: '10.1.0.2', port: 8080 } })).toBeUndefined();
    join.kernel({ events: [ev({ kind: 'close', socketCookie: 21n, src: { ip: '127.0.0.1', port: 49000 }, dst: { ip: '127.0.0.1', port: 15001 } })], lostTotal: 0n });
    tick(5000);
    join.sweep();
    expect(flows).toEqual([]);
    expect(join.stats()).toMatchObject({ pending: 0, unmatchedCloses: 0 });
  });

  it('reports a redirected connection the proxy never recorded as observed, after the grace period', () => {
    const { join, flows, tick } = setup({ graceMs: 1000 });
    join.kernel({ events: [ev({ kind: 'connect_redirected', socketCookie: 12n, dst: { ip: '10.1.0.2', port: 8080 } }), ev({ kind: 'close', socketCookie: 12n, src: { ip: '127.0.0.1', port: 47000 } })], lostTotal: 0n });
    tick(500);
    join.sweep();
    expect(flows).toEqual([]);
    tick(600);
    join.sweep();
    expect(flows.map((f) => [f.verdict, f.reason])).toEqual([['observed', 'redirected, no proxy record']]);
  });

  it('stays bounded: the cap evicts the oldest and the TTL the stale, each counted', () => {
    const { join, flows, tick } = setup({ cap: 100, ttlMs: 10_000 });
    const events = Array.from({ length: 250 }, (_, i) => ev({ kind: 'lookup_steered', src: { ip: '10.1.0.3', port: 1000 + i }, dst: { ip: '10.1.0.2', port: 8080 } }));
    join.kernel({ events, lostTotal: 0n });
    expect(join.stats().pending).toBe(100);
    expect(join.stats().evicted.cap).toBe(150);
    // The newest survived, the oldest did not.
    expect(join.proxy({ direction: 'inbound', pod: 'shop/backend', src: { ip: '10.1.0.3', port: 1000 + 249 }, dst: { ip: '10.1.0.2', port: 8080 } })).toBeDefined();
    expect(join.proxy({ direction: 'inbound', pod: 'shop/backend', src: { ip: '10.1.0.3', port: 1000 }, dst: { ip: '10.1.0.2', port: 8080 } })).toBeUndefined();
    tick(10_001);
    join.sweep();
    expect(join.stats().pending).toBe(0);
    expect(join.stats().evicted.ttl).toBe(99);
    expect(flows).toEqual([]);
  });

  it('takes the redirect folder\'s KernelEvent type as it is', () => {
    const { join } = setup();
    const real: KernelEvent = { kind: 'lookup_steered', socketCookie: 0n, netnsCookie: NS_B, src: { ip: '10.1.0.3', port: 48000 }, dst: { ip: '10.1.0.2', port: 8080 }, monotonicNs: 1n, enrolled: true };
    join.kernel({ events: [real], lostTotal: 0n });
    expect(join.stats().pending).toBe(1);
  });
});

describe('capture recorder', () => {
  const flow = (p: Partial<FlowRecord>): FlowRecord => ({
    id: 1,
    direction: 'outbound',
    pod: 'shop/frontend',
    src: { ip: '10.1.0.3', port: 41000, workload: 'frontend', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/frontend' },
    dst: { ip: '10.1.0.2', port: 8080, workload: 'backend', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/backend' },
    originalDst: '10.1.0.2:8080',
    startedAt: new Date().toISOString(),
    durationMs: 3,
    bytesSent: 4,
    bytesReceived: 40,
    responseFlags: '-',
    open: false,
    ...p,
  });

  it('makes one record of the two halves of a same-node hand-off, with the decision and both identities', async () => {
    const hub = new CaptureHub({ node: 'n1' });
    const rec = new CaptureRecorder(hub, pods);
    rec.flow(flow({ upstream: '10.1.0.2:8080 (same node, in process)', policy: { allowed: false, name: 'shop/deny-frontend' }, responseFlags: 'DENY' }));
    rec.flow(flow({ direction: 'inbound', pod: 'shop/backend', policy: { allowed: false, name: 'shop/deny-frontend' }, responseFlags: 'DENY', error: 'denied: matched by shop/deny-frontend' }));
    // An outbound record on its own (to another node) stays one record too.
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41001 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.96.0.1:80', hbone: { peer: '10.2.0.5:15008', traceparent: '00-x' } }));
    await new Promise((r) => setImmediate(r));
    rec.stop();
    const got: CaptureRecord[] = hub.recent();
    expect(got).toHaveLength(2);
    expect(got[0]).toMatchObject({
      v: 1,
      id: 'n1/1',
      direction: 'local',
      verdict: 'denied',
      policy: 'shop/deny-frontend',
      src: { pod: 'shop/frontend', identity: 'spiffe://cluster.local/ns/shop/sa/frontend', port: 41000 },
      dst: { pod: 'shop/backend', identity: 'spiffe://cluster.local/ns/shop/sa/backend', port: 8080 },
      bytes: { sent: 4, received: 40, from: 'proxy' },
    });
    expect(got[1]).toMatchObject({ verdict: 'allowed', direction: 'outbound', originalDst: '10.96.0.1:80', hbone: { peer: '10.2.0.5:15008' } });
  });

  it("says the bytes of a connection the kernel spliced are the kernel's, and of a relayed one the proxy's", async () => {
    const hub = new CaptureHub({ node: 'n1' });
    const rec = new CaptureRecorder(hub, pods);
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41020 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.2.0.5:80', spliced: true }));
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41021 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.2.0.5:80' }));
    await new Promise((r) => setImmediate(r));
    rec.stop();
    expect(hub.recent().map((r) => r.bytes)).toEqual([
      { sent: 4, received: 40, from: 'kernel' },
      { sent: 4, received: 40, from: 'proxy' },
    ]);
  });

  it('keeps no join state for a proxy record while no kernel event source is attached (nobody captures), and does once one is', () => {
    const hub = new CaptureHub({ node: 'n1' });
    const rec = new CaptureRecorder(hub, pods);
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41010 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.2.0.5:80' }));
    expect(rec.join.stats().pending).toBe(0);
    expect(hub.recent()).toHaveLength(1);
    // Attached: the same kind of record leaves a bounded tombstone for the app socket's close.
    rec.attach({ subscribe: () => () => {}, lost: () => 0n });
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41011 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.2.0.5:80' }));
    expect(rec.join.stats().pending).toBe(1);
    rec.detach();
    rec.flow(flow({ src: { ip: '10.1.0.3', port: 41012 }, dst: { ip: '10.2.0.5', port: 80 }, originalDst: '10.2.0.5:80' }));
    expect(rec.join.stats().pending).toBe(1);
    rec.stop();
  });

  it('publishes kernel-only flows from a kernel event source, with pod names', () => {
    const hub = new CaptureHub({ node: 'n1' });
    const rec = new CaptureRecorder(hub, pods);
    let push: ((b: { events: JoinKernelEvent[]; lostTotal: bigint }) => void) | undefined;
    rec.attach({ subscribe: (cb) => ((push = cb), () => (push = undefined)), lost: () => 0n });
    push!({ events: [ev({ kind: 'lookup_dropped', netnsCookie: NS_B, src: { ip: '10.1.0.3', port: 44000 }, dst: { ip: '10.1.0.2', port: 8080 } })], lostTotal: 0n });
    rec.stop();
    expect(push).toBeUndefined();
    expect(hub.recent()).toMatchObject([{ direction: 'kernel', source: 'kernel', verdict: 'dropped', reason: 'no_listener', src: { pod: 'shop/frontend' }, dst: { pod: 'shop/backend' } }]);
  });
});

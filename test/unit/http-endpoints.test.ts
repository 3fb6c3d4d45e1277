// Per-request endpoint choice of src/proxy/http: which workloads qualify (health, addresses,
// subset labels, target port), the three load balancers, outlier ejection and re-admission with
// its max percent, maxRequests overflow, and the cache per state version.
import { describe, expect, it } from 'vitest';
import { EndpointPicker, type EndpointLease } from '../../src/proxy/http/index.js';
import type { ServiceRoutes, TrafficPolicy } from '../../src/state/routes.js';
import type { Service, Workload } from '../../src/state/types.js';

const SVC: Service = {
  name: 'api',
  namespace: 'ns',
  hostname: 'api.ns.svc.cluster.local',
  key: 'ns/api.ns.svc.cluster.local',
  vips: [{ network: '', address: '10.96.0.10' }],
  ports: [
    { servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' },
    { servicePort: 90, targetPort: 0, appProtocol: 'HTTP11' },
  ],
  subjectAltNames: [],
};

function wl(uid: string, o: Partial<Workload> = {}): Workload {
  return {
    uid,
    name: uid,
    namespace: 'ns',
    addresses: [`10.0.0.${uid.replace(/\D/g, '') || '1'}`],
    network: '',
    tunnelProtocol: 'HBONE',
    trustDomain: 'cluster.local',
    serviceAccount: 'api',
    identity: 'spiffe://cluster.local/ns/ns/sa/api',
    node: 'n1',
    canonicalName: 'api',
    canonicalRevision: 'v1',
    workloadType: 'POD',
    workloadName: 'api',
    authorizationPolicies: [],
    status: 'HEALTHY',
    clusterId: '',
    services: { [SVC.key]: [{ servicePort: 80, targetPort: 0, appProtocol: 'HTTP11' }] },
    labels: { app: 'api', version: 'v1' },
    ...o,
  };
}

/** A picker over a mutable workload list, a hand-driven clock and a scripted rand. */
function setup(workloads: Workload[], o: { rand?: () => number } = {}) {
  const clock = { t: 1_000_000 };
  let calls = 0;
  const picker = new EndpointPicker({
    service: (k) => (k === SVC.key ? SVC : undefined),
    endpointsOf: (k) => {
      calls++;
      return k === SVC.key ? workloads : [];
    },
    now: () => clock.t,
    ...(o.rand ? { rand: o.rand } : {}),
  });
  return { picker, clock, calls: () => calls };
}

function uidOf(l: EndpointLease | 'overflow' | undefined): string | undefined {
  if (l === undefined || l === 'overflow') return l;
  return l.workload.uid;
}

function routes(policy: TrafficPolicy, subsets: ServiceRoutes['subsets'] = []): ServiceRoutes {
  return { service: SVC.key, rules: [], tables: [], trafficPolicy: policy, subsets };
}

describe('which endpoints qualify', () => {
  it('takes HEALTHY workloads with an address, at the port they serve the Service port on', () => {
    const ws = [
      wl('w1'),
      wl('w2', { status: 'UNHEALTHY' }),
      wl('w3', { addresses: [] }),
      wl('w4', { services: { [SVC.key]: [{ servicePort: 80, targetPort: 9999, appProtocol: 'HTTP11' }] } }),
    ];
    const { picker } = setup(ws);
    const pool = picker.pool(SVC, 80);
    expect(pool.endpoints.map((e) => [e.workload.uid, e.ip, e.port])).toEqual([
      ['w1', '10.0.0.1', 8080],
      ['w4', '10.0.0.4', 9999],
    ]);
  });

  it('falls back to the Service port when neither the workload nor the Service names a target port, and has none for a port the Service lacks', () => {
    const { picker } = setup([wl('w1', { services: { [SVC.key]: [] } })]);
    expect(picker.pool(SVC, 90).endpoints.map((e) => e.port)).toEqual([90]);
    expect(picker.pool(SVC, 91).endpoints).toEqual([]);
    expect(picker.pick(SVC.key, 91, undefined)).toBeUndefined();
    expect(picker.pick('ns/unknown', 80, undefined)).toBeUndefined();
  });

  it('keeps a subset to the workloads whose labels include all of its labels', () => {
    const ws = [wl('w1', { labels: { app: 'api', version: 'v1' } }), wl('w2', { labels: { app: 'api', version: 'v2' } }), wl('w3', { labels: { version: 'v2' } })];
    const { picker } = setup(ws);
    const v2 = { name: 'v2', labels: { app: 'api', version: 'v2' } };
    expect(picker.pool(SVC, 80, v2).endpoints.map((e) => e.workload.uid)).toEqual(['w2']);
    expect(picker.pool(SVC, 80).endpoints.map((e) => e.workload.uid)).toEqual(['w1', 'w2', 'w3']);
    for (let i = 0; i < 5; i++) expect(uidOf(picker.pick(SVC.key, 80, undefined, v2))).toBe('w2');
  });

  it('reads the state once per version: invalidate() rebuilds, keeping what it knew of endpoints that stay', () => {
    const ws = [wl('w1'), wl('w2')];
    const { picker, calls } = setup(ws);
    for (let i = 0; i < 10; i++) (picker.pick(SVC.key, 80, undefined) as EndpointLease).done(200);
    expect(calls()).toBe(1);
    const lease = picker.pick(SVC.key, 80, undefined) as EndpointLease;
    ws.push(wl('w3'));
    expect(picker.pool(SVC, 80).size).toBe(2);
    picker.invalidate();
    expect(picker.pool(SVC, 80).size).toBe(3);
    expect(calls()).toBe(2);
    expect(picker.pool(SVC, 80).inFlight).toBe(1);
    lease.done(200);
    expect(picker.pool(SVC, 80).inFlight).toBe(0);
  });
});

describe('load balancing', () => {
  it('ROUND_ROBIN (the default) visits each endpoint in turn', () => {
    const { picker } = setup([wl('w1'), wl('w2'), wl('w3')]);
    expect([0, 1, 2, 3, 4].map(() => uidOf(picker.pick(SVC.key, 80, undefined)))).toEqual(['w1', 'w2', 'w3', 'w1', 'w2']);
  });

  it('RANDOM takes the endpoint rand points at', () => {
    const seq = [0.9, 0.1, 0.5];
    const { picker } = setup([wl('w1'), wl('w2'), wl('w3')], { rand: () => seq.shift()! });
    const sr = routes({ loadBalancer: 'RANDOM' });
    expect([0, 1, 2].map(() => uidOf(picker.pick(SVC.key, 80, sr)))).toEqual(['w3', 'w1', 'w2']);
  });

  it('LEAST_REQUEST picks the less loaded of two random endpoints, and done() lowers the count', () => {
    // Each pick draws two: i = floor(r*3), j among the other two.
    const seq: number[] = [];
    const { picker } = setup([wl('w1'), wl('w2'), wl('w3')], { rand: () => seq.shift()! });
    const sr = routes({ loadBalancer: 'LEAST_REQUEST' });
    seq.push(0, 0); // w1 vs w2, both idle: the first drawn
    const a = picker.pick(SVC.key, 80, sr) as EndpointLease;
    expect(a.workload.uid).toBe('w1');
    seq.push(0, 0); // w1 (1 in flight) vs w2 (0): w2
    const b = picker.pick(SVC.key, 80, sr) as EndpointLease;
    expect(b.workload.uid).toBe('w2');
    seq.push(0.5, 0.9); // w2 (1) vs w3 (0): w3
    expect(uidOf(picker.pick(SVC.key, 80, sr))).toBe('w3');
    a.done(200);
    a.done(200); // a second done() changes nothing
    seq.push(0.5, 0); // w2 (1) vs w1 (0): w1
    expect(uidOf(picker.pick(SVC.key, 80, sr))).toBe('w1');
    expect(picker.pool(SVC, 80).inFlight).toBe(3);
  });

  it('a subset policy overrides the Service policy', () => {
    const seq = [0.9];
    const { picker } = setup([wl('w1'), wl('w2'), wl('w3')], { rand: () => seq.shift()! });
    const sr = routes({ loadBalancer: 'ROUND_ROBIN' }, [{ name: 'all', labels: {}, trafficPolicy: { loadBalancer: 'RANDOM' } }]);
    expect(uidOf(picker.pick(SVC.key, 80, sr, { name: 'all', labels: {} }))).toBe('w3');
    expect(uidOf(picker.pick(SVC.key, 80, sr))).toBe('w1');
  });

  it('has nothing to pick from when no endpoint qualifies', () => {
    const { picker } = setup([wl('w1', { status: 'UNHEALTHY' })]);
    expect(picker.pick(SVC.key, 80, undefined)).toBeUndefined();
  });
});

describe('outlier detection', () => {
  const od = (o: Partial<NonNullable<TrafficPolicy['outlierDetection']>> = {}): ServiceRoutes =>
    routes({ outlierDetection: { consecutive5xxErrors: 3, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 100, ...o } });

  /** Sends `n` requests to whichever endpoint comes up for `uid` with status `s`. */
  function fail(picker: EndpointPicker, sr: ServiceRoutes, uid: string, n: number, s: number | 'connect-failure' = 503): void {
    let sent = 0;
    for (let i = 0; sent < n && i < 100; i++) {
      const l = picker.pick(SVC.key, 80, sr) as EndpointLease;
      if (l.workload.uid === uid) {
        l.done(s);
        sent++;
      } else l.done(200);
    }
  }

  const live = (picker: EndpointPicker) => picker.pool(SVC, 80).endpoints.map((e) => e.workload.uid);

  it('ejects an endpoint after consecutive 5xx (connect failures count), not before, and a success resets the count', () => {
    const { picker } = setup([wl('w1'), wl('w2'), wl('w3')]);
    const sr = od();
    fail(picker, sr, 'w1', 2);
    expect(live(picker)).toEqual(['w1', 'w2', 'w3']);
    fail(picker, sr, 'w1', 1, 200);
    fail(picker, sr, 'w1', 2);
    expect(live(picker)).toEqual(['w1', 'w2', 'w3']);
    fail(picker, sr, 'w1', 1, 'connect-failure');
    expect(live(picker)).toEqual(['w2', 'w3']);
    for (let i = 0; i < 6; i++) expect(uidOf(picker.pick(SVC.key, 80, sr))).not.toBe('w1');
  });

  it('4xx is not a failure', () => {
    const { picker } = setup([wl('w1'), wl('w2')]);
    fail(picker, od(), 'w1', 5, 404);
    expect(live(picker)).toEqual(['w1', 'w2']);
  });

  it('re-admits after baseEjectionTime × times ejected, and forgives an ejection per clean interval', () => {
    const { picker, clock } = setup([wl('w1'), wl('w2')]);
    const sr = od();
    fail(picker, sr, 'w1', 3);
    expect(live(picker)).toEqual(['w2']);
    clock.t += 29_999;
    expect(live(picker)).toEqual(['w2']);
    clock.t += 1;
    expect(live(picker)).toEqual(['w1', 'w2']);
    // Ejected again at once: the second ejection lasts twice as long.
    fail(picker, sr, 'w1', 3);
    clock.t += 59_999;
    expect(live(picker)).toEqual(['w2']);
    clock.t += 1;
    expect(live(picker)).toEqual(['w1', 'w2']);
    // Two clean intervals (20 s) bring the multiplier from 2 back to 0: the next lasts 30 s.
    clock.t += 20_000;
    fail(picker, sr, 'w1', 3);
    clock.t += 30_000;
    expect(live(picker)).toEqual(['w1', 'w2']);
  });

  it('reports by endpoint key work like done()', () => {
    const { picker } = setup([wl('w1'), wl('w2')]);
    const sr = od();
    const key = picker.pool(SVC, 80, undefined, sr.trafficPolicy).endpoints[0]!.key;
    expect(key).toBe(`${SVC.key}:80@w1:8080`);
    for (let i = 0; i < 3; i++) picker.report(key, 500);
    expect(live(picker)).toEqual(['w2']);
    picker.report('no-such-endpoint', 500);
  });

  it('ejects at most maxEjectionPercent of the pool, but the first ejection whatever the percent (Envoy)', () => {
    const ws = ['w1', 'w2', 'w3', 'w4', 'w5'].map((u) => wl(u));
    const { picker } = setup(ws);
    const sr = od({ maxEjectionPercent: 10 });
    fail(picker, sr, 'w1', 3);
    expect(live(picker)).toEqual(['w2', 'w3', 'w4', 'w5']);
    fail(picker, sr, 'w2', 3);
    expect(live(picker)).toEqual(['w2', 'w3', 'w4', 'w5']);
    // 40%: 0 → 1 (0%), 2 (20%), 3 (40% is not below 40): two ejected.
    const { picker: p2 } = setup(['w1', 'w2', 'w3', 'w4', 'w5'].map((u) => wl(u)));
    const sr40 = od({ maxEjectionPercent: 40 });
    for (const u of ['w1', 'w2', 'w3']) fail(p2, sr40, u, 3);
    expect(live(p2)).toEqual(['w3', 'w4', 'w5']);
  });

  it('ejects the only endpoint (then nothing is in service: 503 UH) unless maxEjectionPercent is 0', () => {
    const { picker } = setup([wl('w1')]);
    fail(picker, od({ maxEjectionPercent: 10 }), 'w1', 3);
    expect(picker.pick(SVC.key, 80, od())).toBeUndefined();
    const { picker: p0 } = setup([wl('w1')]);
    fail(p0, od({ maxEjectionPercent: 0 }), 'w1', 3);
    expect(uidOf(p0.pick(SVC.key, 80, od({ maxEjectionPercent: 0 })))).toBe('w1');
  });

  it('does nothing without outlierDetection or with consecutive5xxErrors 0', () => {
    const { picker } = setup([wl('w1'), wl('w2')]);
    fail(picker, routes({}), 'w1', 10);
    fail(picker, od({ consecutive5xxErrors: 0 }), 'w1', 10);
    expect(live(picker)).toEqual(['w1', 'w2']);
  });

  it('keeps ejection across a rebuild of the pool', () => {
    const ws = [wl('w1'), wl('w2')];
    const { picker } = setup(ws);
    fail(picker, od(), 'w1', 3);
    ws.push(wl('w3'));
    picker.invalidate();
    expect(live(picker)).toEqual(['w2', 'w3']);
  });
});

describe('connection pool limit', () => {
  it('overflows at maxRequests in flight, and frees a slot when a request is done', () => {
    const { picker } = setup([wl('w1'), wl('w2')]);
    const sr = routes({ connectionPool: { maxRequests: 2 } });
    const a = picker.pick(SVC.key, 80, sr) as EndpointLease;
    const b = picker.pick(SVC.key, 80, sr) as EndpointLease;
    expect(picker.pick(SVC.key, 80, sr)).toBe('overflow');
    a.done();
    const c = picker.pick(SVC.key, 80, sr);
    expect(c).not.toBe('overflow');
    expect(c).toBeDefined();
    b.done();
  });

  it('counts a subset apart from the whole Service, and 0 or no limit never overflows', () => {
    const { picker } = setup([wl('w1')]);
    const sr = routes({ connectionPool: { maxRequests: 1 } });
    const sub = { name: 'v1', labels: { version: 'v1' } };
    expect(picker.pick(SVC.key, 80, sr)).not.toBe('overflow');
    expect(picker.pick(SVC.key, 80, sr, sub)).not.toBe('overflow');
    expect(picker.pick(SVC.key, 80, sr)).toBe('overflow');
    const { picker: free } = setup([wl('w1')]);
    for (let i = 0; i < 5; i++) expect(free.pick(SVC.key, 80, routes({ connectionPool: { maxRequests: 0 } }))).not.toBe('overflow');
    for (let i = 0; i < 5; i++) expect(free.pick(SVC.key, 80, undefined)).not.toBe('overflow');
  });
});

// The proxy workers' copy of the xDS state (src/agent/state-mirror.ts): a mirror fed the
// operations of every change batch holds what the source holds (workloads, services, policies,
// routes, RequestAuthentications and standing rejections), whatever the batches were, and
// authorizes the same; a mirror that misses a batch does not (so the comparison can fail).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MeshView } from '../../src/agent/mesh-view.js';
import { applyOps, changeOps, fullOps } from '../../src/agent/state-mirror.js';
import { ProxyState, type Authorization, type ProxyStateUpdater, type Service, type Workload } from '../../src/state/index.js';
import { createLogger } from '../../src/log.js';

function workload(n: number, policies: string[]): Workload {
  return {
    uid: `K//Pod/ns/w${n}`, name: `w${n}`, namespace: 'ns', addresses: [`10.0.0.${n}`], network: '', tunnelProtocol: 'HBONE',
    trustDomain: 'cluster.local', serviceAccount: 'default', identity: 'spiffe://cluster.local/ns/ns/sa/default', node: 'n1',
    canonicalName: `w${n}`, canonicalRevision: 'latest', workloadType: 'POD', workloadName: `w${n}`, authorizationPolicies: policies,
    status: 'HEALTHY', clusterId: 'Kubernetes', services: {}, labels: {},
  };
}
const service = (n: number): Service => ({ name: `s${n}`, namespace: 'ns', hostname: `s${n}.ns.svc.cluster.local`, key: `ns/s${n}.ns.svc.cluster.local`, vips: [{ network: '', address: `10.96.0.${n}` }], ports: [], subjectAltNames: [] });
const policy = (n: number, action: 'ALLOW' | 'DENY'): Authorization => ({ name: `p${n}`, namespace: 'ns', scope: 'NAMESPACE', action, rules: [{ clauses: [] }], dryRun: false });

type Step =
  | { k: 'w'; n: number; pol: number[] }
  | { k: 'rmw'; n: number }
  | { k: 's'; n: number }
  | { k: 'rms'; n: number }
  | { k: 'p'; n: number; deny: boolean }
  | { k: 'rmp'; n: number }
  | { k: 'reject'; n: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ k: fc.constant('w' as const), n: fc.integer({ min: 1, max: 4 }), pol: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }) }),
  fc.record({ k: fc.constant('rmw' as const), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ k: fc.constant('s' as const), n: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ k: fc.constant('rms' as const), n: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ k: fc.constant('p' as const), n: fc.integer({ min: 1, max: 3 }), deny: fc.boolean() }),
  fc.record({ k: fc.constant('rmp' as const), n: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ k: fc.constant('reject' as const), n: fc.integer({ min: 1, max: 3 }) }),
);

function run(u: ProxyStateUpdater, s: Step): void {
  switch (s.k) {
    case 'w': return u.insertAddress(`K//Pod/ns/w${s.n}`, { kind: 'workload', workload: workload(s.n, s.pol.map((p) => `ns/p${p}`)) });
    case 'rmw': return u.removeAddress(`K//Pod/ns/w${s.n}`);
    case 's': return u.insertAddress(service(s.n).key, { kind: 'service', service: service(s.n) });
    case 'rms': return u.removeAddress(service(s.n).key);
    case 'p': return u.insertAuthorization(policy(s.n, s.deny ? 'DENY' : 'ALLOW'));
    case 'rmp': return u.removeAuthorization(`ns/p${s.n}`);
    case 'reject': return u.reject({ kind: 'authorization', name: `ns/p${s.n}`, reason: 'bad', namespace: 'ns', scope: 'NAMESPACE' } as never);
  }
}

const facts = (s: ProxyState) => ({ ...s.snapshot(), rejected: s.rejected() });
const sortAll = (f: ReturnType<typeof facts>) => JSON.stringify(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, [...(v as unknown[])].map((x) => JSON.stringify(x)).sort()])));

describe('the proxy workers\' state mirror', () => {
  it('holds what the source holds after any sequence of batches (and a late joiner too, from fullOps)', () => {
    fc.assert(
      fc.property(fc.array(fc.array(step, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 8 }), (batches) => {
        const src = new ProxyState();
        const mirror = new ProxyState();
        src.on('change', (c) => applyOps(mirror, structuredClone(changeOps(src, c))));
        for (const b of batches) src.update((u) => b.forEach((s) => run(u, s)));
        expect(sortAll(facts(mirror))).toBe(sortAll(facts(src)));
        const late = new ProxyState();
        applyOps(late, structuredClone(fullOps(src)));
        expect(sortAll(facts(late))).toBe(sortAll(facts(src)));
      }),
      { numRuns: 300 },
    );
  });

  it('decides like the source: a deny added at the source denies in the mirror; a mirror that missed the batch would still allow', () => {
    const log = createLogger(2, 'silent');
    const src = new MeshView('round-robin', log);
    const mirror = new MeshView('round-robin', log);
    const stale = new MeshView('round-robin', log);
    src.serving = mirror.serving = stale.serving = true;
    let skip = false;
    src.state.on('change', (c) => {
      const ops = structuredClone(changeOps(src.state, c));
      applyOps(mirror.state, ops);
      if (!skip) applyOps(stale.state, ops);
    });
    src.state.update((u) => u.insertAddress('K//Pod/ns/w1', { kind: 'workload', workload: workload(1, []) }));
    const input = { srcIp: '10.0.0.9', srcPrincipal: 'spiffe://cluster.local/ns/ns/sa/x', dstIp: '10.0.0.1', dstPort: 80 };
    expect(mirror.authorize(input).allowed).toBe(true);
    skip = true;
    src.state.update((u) => u.insertAuthorization(policy(1, 'DENY')));
    expect(src.authorize(input).allowed).toBe(false);
    expect(mirror.authorize(input)).toEqual(src.authorize(input));
    expect(stale.authorize(input).allowed).toBe(true);
  });
});

// ProxyState's fail-closed bookkeeping: which named policies a workload is still missing,
// which rejected (NACKed) resources bear on it, and how a valid version or a removal lifts a
// rejection. The authorizer (agent/cp-source.ts) denies on either; these are its facts.
import { describe, expect, it } from 'vitest';
import { ProxyState, type Authorization, type RejectedResource, type StateChange, type Workload } from '../../src/state/index.js';

function workload(uid: string, ns: string, ip: string, policies: string[] = []): Workload {
  return {
    uid,
    name: uid.split('/').at(-1)!,
    namespace: ns,
    addresses: [ip],
    network: '',
    tunnelProtocol: 'HBONE',
    trustDomain: 'cluster.local',
    serviceAccount: 'default',
    identity: `spiffe://cluster.local/ns/${ns}/sa/default`,
    node: 'n1',
    canonicalName: 'x',
    canonicalRevision: 'latest',
    workloadType: 'POD',
    workloadName: 'x',
    authorizationPolicies: policies,
    status: 'HEALTHY',
    clusterId: 'Kubernetes',
    services: {},
    labels: {},
  };
}

const policy = (ns: string, name: string, scope: Authorization['scope'] = 'WORKLOAD_SELECTOR'): Authorization => ({ name, namespace: ns, scope, action: 'DENY', rules: [], dryRun: false });

describe('ProxyState: what a workload still misses', () => {
  it('lists a named policy until it arrives, and only that one', () => {
    const s = new ProxyState();
    const web = workload('K//Pod/foo/web', 'foo', '10.0.0.1', ['foo/deny-a', 'foo/deny-b']);
    s.update((u) => {
      u.insertAddress(web.uid, { kind: 'workload', workload: web });
      u.insertAuthorization(policy('foo', 'deny-a'));
    });
    expect(s.policyView(web).missing).toEqual(['foo/deny-b']);
    expect(s.policyView(web).policies.map((p) => p.name)).toEqual(['deny-a']);
    s.update((u) => u.insertAuthorization(policy('foo', 'deny-b')));
    expect(s.policyView(web).missing).toEqual([]);
    expect(s.policyView(web).policies.map((p) => p.name).sort()).toEqual(['deny-a', 'deny-b']);
    // Removed while still named: missing again (the authorizer denies, it never skips it).
    s.update((u) => u.removeAuthorization('foo/deny-a'));
    expect(s.policyView(web).missing).toEqual(['foo/deny-a']);
  });
});

describe('ProxyState: rejected resources', () => {
  const web = workload('K//Pod/foo/web', 'foo', '10.0.0.1', ['foo/sel']);
  const db = workload('K//Pod/bar/db', 'bar', '10.0.0.2');

  it('records a rejection in the change, keeps the last good version, and lifts it on a valid version', () => {
    const s = new ProxyState();
    const changes: StateChange[] = [];
    s.on('change', (c) => changes.push(c));
    s.update((u) => u.insertAuthorization(policy('foo', 'sel')));
    s.update((u) => u.reject({ kind: 'authorization', name: 'foo/sel', reason: 'action: unknown enum value 7', scope: 'WORKLOAD_SELECTOR', namespace: 'foo' }));
    expect(changes.at(-1)!.rejected.upserted).toEqual(['authorization:foo/sel']);
    expect(s.policy('foo/sel')).toBeDefined(); // the last good version stays
    expect(s.policyView(web).rejected.map((r) => r.name)).toEqual(['foo/sel']);
    expect(s.policyView(db).rejected).toEqual([]); // does not name it, other namespace
    s.update((u) => u.insertAuthorization(policy('foo', 'sel')));
    expect(changes.at(-1)!.rejected.removed).toEqual(['authorization:foo/sel']);
    expect(s.rejected()).toEqual([]);
    expect(s.policyView(web).rejected).toEqual([]);
  });

  it('lifts a rejection when the resource is removed', () => {
    const s = new ProxyState();
    s.update((u) => u.reject({ kind: 'address', name: web.uid, reason: 'bad' }));
    expect(s.policyView(web).rejected).toHaveLength(1);
    s.update((u) => u.removeAddress(web.uid));
    expect(s.rejected()).toEqual([]);
  });

  it('reaches workloads by scope: GLOBAL and unknown everywhere, NAMESPACE its own, an address its workload', () => {
    const reaches = (r: RejectedResource) => {
      const t = new ProxyState();
      t.update((u) => u.reject(r));
      return { web: t.policyView(web).rejected.length > 0, db: t.policyView(db).rejected.length > 0 };
    };
    expect(reaches({ kind: 'authorization', name: 'istio-system/g', reason: 'x', scope: 'GLOBAL', namespace: 'istio-system' })).toEqual({ web: true, db: true });
    expect(reaches({ kind: 'authorization', name: 'zzz/unknown', reason: 'cannot decode' })).toEqual({ web: true, db: true });
    expect(reaches({ kind: 'authorization', name: 'bar/ns', reason: 'x', scope: 'NAMESPACE', namespace: 'bar' })).toEqual({ web: false, db: true });
    expect(reaches({ kind: 'authorization', name: 'bar/other', reason: 'x', scope: 'WORKLOAD_SELECTOR', namespace: 'bar' })).toEqual({ web: false, db: false });
    expect(reaches({ kind: 'address', name: db.uid, reason: 'x' })).toEqual({ web: false, db: true });
  });
});

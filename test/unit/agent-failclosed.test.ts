// The agent's authorizer fails closed (docs/security.md "Fail closed"): no xDS state, an
// unknown destination, a named policy not arrived and a rejected resource each deny, with an
// allowed twin in the same state; the node's own plaintext connections (kubelet probes) pass
// under STRICT, a look-alike from the same address without a socket does not; and open
// connections are re-authorized only once the policies a change names have arrived.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { ControlPlaneSource } from '../../src/agent/cp-source.js';
import { NodeOrigin } from '../../src/agent/node-origin.js';
import type { Authorization, Workload } from '../../src/state/index.js';
import { createTestCa } from '../helpers/certs.js';

const log = pino({ level: 'silent' });

function workload(name: string, ns: string, ip: string, policies: string[] = []): Workload {
  return {
    uid: `Kubernetes//Pod/${ns}/${name}`,
    name,
    namespace: ns,
    addresses: [ip],
    network: '',
    tunnelProtocol: 'HBONE',
    trustDomain: 'cluster.local',
    serviceAccount: name,
    identity: `spiffe://cluster.local/ns/${ns}/sa/${name}`,
    node: 'n1',
    canonicalName: name,
    canonicalRevision: 'latest',
    workloadType: 'POD',
    workloadName: name,
    authorizationPolicies: policies,
    status: 'HEALTHY',
    clusterId: 'Kubernetes',
    services: {},
    labels: {},
  };
}

/** DENY the principal of `ns/sa` (WORKLOAD_SELECTOR, named by the workloads it selects). */
function denyPrincipal(ns: string, name: string, principal: string): Authorization {
  return { name, namespace: ns, scope: 'WORKLOAD_SELECTOR', action: 'DENY', dryRun: false, rules: [{ clauses: [{ matches: [emptyMatch({ principals: [{ exact: principal }] })] }] }] };
}

/** Istio's STRICT mTLS at L4: DENY any connection without a peer identity. */
const STRICT: Authorization = {
  name: 'istio_converted_static_strict',
  namespace: 'istio-system',
  scope: 'WORKLOAD_SELECTOR',
  action: 'DENY',
  dryRun: false,
  rules: [{ clauses: [{ matches: [emptyMatch({ notPrincipals: [{ presence: true }] })] }] }],
};

function emptyMatch(m: Partial<Authorization['rules'][number]['clauses'][number]['matches'][number]>): Authorization['rules'][number]['clauses'][number]['matches'][number] {
  return {
    namespaces: [], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [],
    sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [],
    ...m,
  };
}

const sources: ControlPlaneSource[] = [];
async function source(): Promise<ControlPlaneSource> {
  const ca = await createTestCa();
  // Never started: nothing connects to this address.
  const s = new ControlPlaneSource({ address: '127.0.0.1:1', rootCertPem: ca.rootPem, token: 'unused', nodeName: 'n1' }, log);
  sources.push(s);
  return s;
}

afterEach(async () => {
  for (const s of sources.splice(0)) await s.stop();
  vi.useRealTimers();
});

const CLIENT = 'spiffe://cluster.local/ns/demo/sa/client';
const OTHER = 'spiffe://cluster.local/ns/demo/sa/other';
const web = workload('web', 'demo', '10.244.0.6', ['demo/deny-client']);

describe('authorization fails closed', () => {
  it('denies everything before any xDS state, and decides by policy once it is there', async () => {
    const cp = await source();
    const before = cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 });
    expect(before).toMatchObject({ allowed: false, reason: 'no-xds-state' });
    cp.state.update((u) => {
      u.insertAddress(web.uid, { kind: 'workload', workload: web });
      u.insertAuthorization(denyPrincipal('demo', 'deny-client', 'cluster.local/ns/demo/sa/client'));
    });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 }).allowed).toBe(true);
    expect(cp.authorize({ srcPrincipal: CLIENT, srcIp: '10.244.0.8', dstIp: web.addresses[0]!, dstPort: 8080 })).toMatchObject({ allowed: false, policy: 'demo/deny-client' });
  });

  it('denies a destination the state does not know, next to one it knows', async () => {
    const cp = await source();
    cp.state.update((u) => {
      u.insertAddress(web.uid, { kind: 'workload', workload: { ...web, authorizationPolicies: [] } });
    });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: '10.244.0.99', dstPort: 8080 })).toMatchObject({ allowed: false, reason: 'no-xds-state' });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 }).allowed).toBe(true);
  });

  it('denies while a policy the destination names has not arrived, even a caller it would not match', async () => {
    const cp = await source();
    cp.state.update((u) => u.insertAddress(web.uid, { kind: 'workload', workload: web }));
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 })).toMatchObject({ allowed: false, reason: 'policy-not-arrived', policy: 'demo/deny-client' });
    cp.state.update((u) => u.insertAuthorization(denyPrincipal('demo', 'deny-client', 'cluster.local/ns/demo/sa/client')));
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 }).allowed).toBe(true);
  });

  it('denies while a rejected (NACKed) resource bears on the destination, and only there', async () => {
    const cp = await source();
    const db = workload('db', 'data', '10.244.0.9');
    cp.state.update((u) => {
      u.insertAddress(web.uid, { kind: 'workload', workload: web });
      u.insertAddress(db.uid, { kind: 'workload', workload: db });
      u.insertAuthorization(denyPrincipal('demo', 'deny-client', 'cluster.local/ns/demo/sa/client'));
      // The policy's new version did not validate: its last good version stays, but is not trusted.
      u.reject({ kind: 'authorization', name: 'demo/deny-client', reason: 'rules[0]: bad', scope: 'WORKLOAD_SELECTOR', namespace: 'demo' });
    });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 })).toMatchObject({ allowed: false, reason: 'authorization-rejected', policy: 'demo/deny-client' });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: db.addresses[0]!, dstPort: 5432 }).allowed).toBe(true);
    // A rejected workload resource: that workload denies, the other one is unaffected.
    cp.state.update((u) => {
      u.insertAuthorization(denyPrincipal('demo', 'deny-client', 'cluster.local/ns/demo/sa/client'));
      u.reject({ kind: 'address', name: db.uid, reason: 'status: unknown enum value 9' });
    });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: db.addresses[0]!, dstPort: 5432 })).toMatchObject({ allowed: false, reason: 'address-rejected' });
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 }).allowed).toBe(true);
  });
});

describe('kubelet probes: plaintext the node itself opened', () => {
  let server: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server = undefined;
  });

  it('passes under STRICT when a socket of this netns holds the exact address pair, and no look-alike', async () => {
    // A real connection from this process (the node's netns; 127.0.0.1 is one of its addresses)
    // stands for the kubelet's probe; the workload at 127.0.0.1 is under STRICT.
    server = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const probe = connect(port, '127.0.0.1');
    sockets.push(probe);
    await new Promise((r) => probe.once('connect', r));
    const cp = await source();
    const pod = workload('web', 'demo', '127.0.0.1', ['istio-system/istio_converted_static_strict']);
    cp.state.update((u) => {
      u.insertAddress(pod.uid, { kind: 'workload', workload: pod });
      u.insertAuthorization(STRICT);
    });
    const asNode = { srcIp: '127.0.0.1', srcPort: probe.localPort!, dstIp: '127.0.0.1', dstPort: port };
    expect(cp.authorize(asNode)).toMatchObject({ allowed: true, reason: 'node-probe' });
    // The same address, another port: no socket of the node holds it, so STRICT applies.
    expect(cp.authorize({ ...asNode, srcPort: probe.localPort! === 65535 ? 1 : probe.localPort! + 1 })).toMatchObject({ allowed: false, policy: 'istio-system/istio_converted_static_strict' });
    // Without the port the proxy saw, nothing can be checked: STRICT applies.
    expect(cp.authorize({ srcIp: '127.0.0.1', dstIp: '127.0.0.1', dstPort: port }).allowed).toBe(false);
    // An authenticated peer is never a probe: its principal is what policy sees.
    expect(cp.authorize({ ...asNode, srcPrincipal: CLIENT }).allowed).toBe(true);
  });

  it('reads the socket table only for the node\'s own addresses, and at a bounded rate', () => {
    let reads = 0;
    const line = (l: string, r: string) => `   0: ${l} ${r} 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 0 0 0 0 0 0\n`;
    // 10.244.1.1:40000 -> 10.244.1.5:8080, as a little-endian kernel prints it.
    const table = '  sl  local_address rem_address   st\n' + line('0101F40A:9C40', '0501F40A:1F90');
    const o = new NodeOrigin({ read: () => (reads++, table), addresses: () => ['10.244.1.1'], perSecond: 2 });
    const t = { srcIp: '10.244.1.1', srcPort: 40000, dstIp: '10.244.1.5', dstPort: 8080 };
    expect(o.opened({ ...t, srcIp: '10.244.1.7' })).toBe(false); // a pod's address: not even looked up
    expect(reads).toBe(0);
    expect(o.opened(t)).toBe(true);
    expect(o.opened({ ...t, dstPort: 8081 })).toBe(false);
    // The budget (2 per second) is spent: the answer is "no" without reading.
    const before = reads;
    expect(o.opened(t)).toBe(false);
    expect(reads).toBe(before);
  });
});

describe('re-authorizing open connections', () => {
  it('waits for a policy the new workload version names, instead of resetting in between', async () => {
    vi.useFakeTimers();
    const cp = await source();
    let calls = 0;
    cp.onPolicyChange(() => calls++);
    cp.state.update((u) => u.insertAddress(web.uid, { kind: 'workload', workload: { ...web, authorizationPolicies: [] } }));
    expect(calls).toBe(1); // nothing missing: at once
    // The control plane sends the workload naming the new policy first, then the policy.
    cp.state.update((u) => u.insertAddress(web.uid, { kind: 'workload', workload: web }));
    expect(calls).toBe(1);
    cp.state.update((u) => u.insertAuthorization(denyPrincipal('demo', 'deny-client', 'cluster.local/ns/demo/sa/client')));
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(5000);
    expect(calls).toBe(2); // the pending wait was cancelled by the arrival
    // A policy that never arrives: re-authorized after the bound, and then denied.
    cp.state.update((u) => u.insertAddress(web.uid, { kind: 'workload', workload: { ...web, authorizationPolicies: ['demo/never'] } }));
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(2500);
    expect(calls).toBe(3);
    expect(cp.authorize({ srcPrincipal: OTHER, srcIp: '10.244.0.7', dstIp: web.addresses[0]!, dstPort: 8080 }).allowed).toBe(false);
  });
});

// The small decisions that wire L7 into the proxy, each with its twin: which ports are HTTP
// (a pod IP's port from the Services that target it), which Service a Host names (for the
// destination reporter), how a try's end is judged for outlier detection, and the capture
// record of one request.
import { describe, expect, it } from 'vitest';
import { serviceForHost, workloadPortProtocol } from '../../src/agent/cp-source.js';
import { fromRequest, type RequestFacts, type RequestSide } from '../../src/capture/record.js';
import { tableRow } from '../../src/capture/table.js';
import { tryEndOf } from '../../src/l7/types.js';
import { isHttpProtocol } from '../../src/proxy/types.js';
import { ProxyState, type Service, type Workload } from '../../src/state/index.js';

const workload = (services: Workload['services']): Workload => ({
  uid: 'Kubernetes//Pod/mesh/w',
  name: 'w',
  namespace: 'mesh',
  addresses: ['10.244.0.9'],
  network: '',
  tunnelProtocol: 'HBONE',
  trustDomain: 'cluster.local',
  serviceAccount: 'default',
  identity: 'spiffe://cluster.local/ns/mesh/sa/default',
  node: 'node-a',
  canonicalName: 'w',
  canonicalRevision: 'latest',
  workloadType: 'POD',
  workloadName: 'w',
  authorizationPolicies: [],
  status: 'HEALTHY',
  clusterId: 'Kubernetes',
  services,
  labels: {},
});

describe('which ports are HTTP', () => {
  it('a pod port takes the protocol of the Service ports that target it', () => {
    const w = workload({ 'mesh/web.mesh.svc.cluster.local': [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }] });
    expect(workloadPortProtocol(w, 8080)).toBe('HTTP11');
    expect(isHttpProtocol(workloadPortProtocol(w, 8080))).toBe(true);
    // Another port of the same pod is nobody's: L4.
    expect(workloadPortProtocol(w, 9090)).toBe('UNKNOWN');
    expect(isHttpProtocol(workloadPortProtocol(w, 9090))).toBe(false);
  });

  it('Services that disagree on a port make it L4; one that has no opinion does not', () => {
    const mixed = workload({
      'mesh/web.mesh.svc.cluster.local': [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }],
      'mesh/raw.mesh.svc.cluster.local': [{ servicePort: 81, targetPort: 8080, appProtocol: 'TCP' }],
    });
    expect(workloadPortProtocol(mixed, 8080)).toBe('TCP');
    const quiet = workload({
      'mesh/web.mesh.svc.cluster.local': [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }],
      'mesh/other.mesh.svc.cluster.local': [{ servicePort: 81, targetPort: 8080, appProtocol: 'UNKNOWN' }],
    });
    expect(workloadPortProtocol(quiet, 8080)).toBe('HTTP11');
  });

  it('gRPC and HTTP/2 are HTTP; TLS and TCP are not', () => {
    expect(['HTTP11', 'HTTP2', 'GRPC'].map((p) => isHttpProtocol(p as never))).toEqual([true, true, true]);
    expect(['TCP', 'TLS', 'UNKNOWN', undefined].map((p) => isHttpProtocol(p as never))).toEqual([false, false, false, false]);
  });
});

describe('the Service a Host names', () => {
  const state = new ProxyState();
  const svc = (name: string, ns: string, vip: string): Service => ({ name, namespace: ns, hostname: `${name}.${ns}.svc.cluster.local`, key: `${ns}/${name}.${ns}.svc.cluster.local`, vips: [{ network: '', address: vip }], ports: [], subjectAltNames: [] });
  state.update((u) => {
    u.insertAddress('mesh/web.mesh.svc.cluster.local', { kind: 'service', service: svc('web', 'mesh', '10.96.0.10') });
    u.insertAddress('other/web.other.svc.cluster.local', { kind: 'service', service: svc('web', 'other', '10.96.0.11') });
  });

  it('resolves a VIP, the short name in the client namespace, name.ns, name.ns.svc and the full name', () => {
    expect(serviceForHost(state, '10.96.0.11:80', 'mesh')?.namespace).toBe('other');
    expect(serviceForHost(state, 'web', 'mesh')?.namespace).toBe('mesh');
    expect(serviceForHost(state, 'web:8080', 'other')?.namespace).toBe('other');
    expect(serviceForHost(state, 'web.other', 'mesh')?.namespace).toBe('other');
    expect(serviceForHost(state, 'web.other.svc', 'mesh')?.namespace).toBe('other');
    expect(serviceForHost(state, 'WEB.mesh.svc.cluster.local', 'other')?.namespace).toBe('mesh');
  });

  it('names nothing for an unknown name, another domain, or a pod IP', () => {
    expect(serviceForHost(state, 'api', 'mesh')).toBeUndefined();
    expect(serviceForHost(state, 'web.mesh.svc.example.org', 'mesh')).toBeUndefined();
    expect(serviceForHost(state, '10.244.0.9:8080', 'mesh')).toBeUndefined();
  });
});

describe('how a try ended, for outlier detection', () => {
  it('an app answer is its status; the proxy\'s own 503 for no upstream is a connect failure; a client that left is not judged', () => {
    expect(tryEndOf(200, '-')).toBe(200);
    expect(tryEndOf(503, '-')).toBe(503);
    expect(tryEndOf(504, 'UT')).toBe(504);
    expect(tryEndOf(503, 'UF')).toBe('connect-failure');
    expect(tryEndOf(503, 'UH')).toBe('connect-failure');
    expect(tryEndOf(503, 'UC,URX')).toBe('connect-failure');
    expect(tryEndOf(0, '-')).toBe('connect-failure');
    expect(tryEndOf(200, 'DC')).toBeUndefined();
  });
});

describe('the capture record of one HTTP request', () => {
  const side: RequestSide = {
    direction: 'inbound',
    pod: 'mesh/web',
    source: { ip: '10.244.0.3', port: 40000, workload: 'client', namespace: 'mesh', principal: 'cluster.local/ns/mesh/sa/client' },
    destination: { ip: '10.244.1.2', port: 8080, workload: 'web', namespace: 'mesh', principal: 'cluster.local/ns/mesh/sa/web' },
    originalDst: '10.244.1.2:8080',
    hbone: { peer: '10.244.0.3:40000', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  };
  const req = (o: Partial<RequestFacts>): RequestFacts => ({ protocol: 'HTTP/1.1', method: 'GET', path: '/x', authority: 'web', status: 200, requestBytes: 0, responseBytes: 5, durationMs: 1.4, responseFlags: '-', ...o });

  it('a policy refusal is denied with its policy; the same request allowed is allowed', () => {
    const denied = fromRequest(side, req({ method: 'POST', path: '/admin', status: 403, responseFlags: 'RBAC', policy: 'mesh/no-admin' }), false);
    expect(denied).toMatchObject({ protocol: 'http', direction: 'inbound', verdict: 'denied', policy: 'mesh/no-admin', l7: { method: 'POST', path: '/admin', status: 403 }, src: { pod: 'mesh/client', identity: 'spiffe://cluster.local/ns/mesh/sa/client' } });
    const ok = fromRequest(side, req({ method: 'POST', path: '/admin' }), false);
    expect(ok).toMatchObject({ verdict: 'allowed', l7: { status: 200 } });
    expect(ok.policy).toBeUndefined();
  });

  it('a 401 the proxy gave for a JWT is denied; an app\'s own 401 is allowed', () => {
    expect(fromRequest(side, req({ status: 401, policy: 'mesh/jwt' }), false).verdict).toBe('denied');
    expect(fromRequest(side, req({ status: 401 }), false).verdict).toBe('allowed');
  });

  it('the table shows the request line under the connection line', () => {
    const rec = { v: 1 as const, id: 'node-a/1', node: 'node-a', ...fromRequest(side, req({ status: 403, responseFlags: 'RBAC', policy: 'mesh/p' }), true) };
    expect(rec.direction).toBe('local');
    const row = tableRow(rec, false);
    expect(row).toContain('denied');
    expect(row).toContain('GET web/x → 403 (RBAC)');
  });
});

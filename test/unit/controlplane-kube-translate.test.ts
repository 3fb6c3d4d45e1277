// The Kubernetes source's pure parts, on plain API objects: which Pods are workloads (istiod's
// ambient rules), health from readiness, named target ports, EndpointSlices without Pods,
// validation with the directory source's validators, and the status it would write.
import { describe, expect, it } from 'vitest';
import type { Pod, Service } from '../../src/k8s/index.js';
import { fromApi, endpointSliceWorkloads } from '../../src/controlplane/kube-translate.js';
import { podSkipReason } from '../../src/kube/index.js';
import { authorizationStatusPatch, httpRouteStatusPatch, MESH_CONTROLLER_NAME } from '../../src/controlplane/kube-status.js';
import { DEFAULT_MESH, runningPods, translateWorkload } from '../../src/controlplane/translate.js';
import type { AuthorizationPolicy } from '../../src/controlplane/resources.js';
import type { ConfigObject } from '../../src/controlplane/validate.js';

type R = Record<string, unknown>;
const mesh = DEFAULT_MESH;

function apiPod(name: string, o: { ip?: string; phase?: string; ready?: boolean; hostNetwork?: boolean; deleting?: boolean; podIPs?: string[]; labels?: R } = {}): R {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'foo', uid: `uid-${name}`, labels: o.labels ?? { app: 'web' }, ...(o.deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
    // A real pod: an image and no command (the simulator's command rule does not apply).
    spec: { nodeName: 'n1', serviceAccountName: 'web', hostNetwork: o.hostNetwork ?? false, containers: [{ name: 'app', image: 'nginx', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: {
      phase: o.phase ?? 'Running',
      ...(o.ip ? { podIP: o.ip } : {}),
      ...(o.podIPs ? { podIPs: o.podIPs.map((ip) => ({ ip })) } : {}),
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

const apiService = (name: string, ports: R[], selector: R | undefined = { app: 'web' }): R => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'foo', uid: `uid-svc-${name}` },
  spec: { clusterIP: '10.96.0.10', ...(selector ? { selector } : {}), ports },
});

function object<T extends ConfigObject>(raw: R): T {
  const v = fromApi(raw);
  if (v.kind !== 'object') throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v.object as T;
}

describe('Pods from the API', () => {
  it('skips hostNetwork pods and pods that are not Running or Pending, keeps the others', () => {
    expect(podSkipReason(apiPod('a', { hostNetwork: true }))).toBe('hostNetwork');
    expect(podSkipReason(apiPod('a', { phase: 'Succeeded' }))).toBe('phase Succeeded');
    expect(podSkipReason(apiPod('a', { phase: 'Failed' }))).toBe('phase Failed');
    expect(fromApi(apiPod('a', { phase: 'Unknown' })).kind).toBe('skip');
    expect(podSkipReason(apiPod('a', { phase: 'Pending' }))).toBeUndefined();
    expect(podSkipReason(apiPod('a', { phase: 'Running' }))).toBeUndefined();
    const pending = object<Pod>(apiPod('a', { phase: 'Pending' }));
    expect(pending.requestedIp).toBeUndefined(); // no IP yet: no workload until one is known
    expect(object<Pod>(apiPod('b', { ip: '10.1.0.5' })).requestedIp).toBe('10.1.0.5');
  });

  it('takes the IPv4 address of a dual-stack pod or Service whose primary IP is IPv6', () => {
    const p = object<Pod>(apiPod('a', { ip: 'fd00::5', podIPs: ['fd00::5', '10.1.0.5'] }));
    expect(p.requestedIp).toBe('10.1.0.5');
    expect(object<Pod>(apiPod('b', { ip: 'fd00::6', podIPs: ['fd00::6'] })).requestedIp).toBeUndefined();
    const svc = { ...apiService('web', [{ port: 80 }]), spec: { clusterIP: 'fd00::a', clusterIPs: ['fd00::a', '10.96.0.10'], ports: [{ port: 80 }] } };
    expect(object<Service>(svc).spec.clusterIP).toBe('10.96.0.10');
  });

  it('reads health from the Ready condition and deletion, and resolves named target ports', () => {
    const svc = object<Service>(apiService('web', [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'admin', port: 9000, targetPort: 'nope' }]));
    const pods = [
      object<Pod>(apiPod('ready', { ip: '10.1.0.5' })),
      object<Pod>(apiPod('unready', { ip: '10.1.0.6', ready: false })),
      object<Pod>(apiPod('deleting', { ip: '10.1.0.7', deleting: true })),
      object<Pod>(apiPod('initialising', { ip: '10.1.0.8', phase: 'Pending', ready: false })),
    ];
    const inputs = { services: [svc], namespaces: [], policiesFor: () => [] };
    const wl = runningPods(pods, []).map((r) => translateWorkload(mesh, r, inputs));
    expect(wl.map((w) => [w.name, w.status, w.node])).toEqual([
      ['ready', 'HEALTHY', 'n1'],
      ['unready', 'UNHEALTHY', 'n1'],
      ['deleting', 'UNHEALTHY', 'n1'],
      ['initialising', 'UNHEALTHY', 'n1'],
    ]);
    // Named port "http" → 8080 from the container; "nope" is not defined by the pod: left out.
    expect(wl[0]!.services).toEqual({ 'foo/web.foo.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }] } });
  });
});

describe('EndpointSlices', () => {
  const slice = (name: string, endpoints: R[], labels: R = { 'kubernetes.io/service-name': 'db' }): R => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'foo', labels },
    addressType: 'IPv4',
    ports: [{ name: 'pg', port: 5433, protocol: 'TCP' }],
    endpoints,
  });

  it('makes workloads only of endpoints without a Pod targetRef, for the slice\'s Service', () => {
    const db = object<Service>(apiService('db', [{ name: 'pg', port: 5432 }], undefined));
    const slices = [
      object(slice('db-1', [
        { addresses: ['192.168.1.10'], conditions: { ready: true } },
        { addresses: ['192.168.1.11'], conditions: { ready: false } },
        { addresses: ['10.1.0.9'], targetRef: { kind: 'Pod', name: 'db-pod', namespace: 'foo' } },
      ])),
      object(slice('stray', [{ addresses: ['192.168.1.12'] }], {})), // no service-name label: not a Service's
    ];
    const wl = endpointSliceWorkloads(mesh, slices, [db], new Set());
    expect(wl.map((w) => [w.uid, w.status])).toEqual([
      ['Kubernetes/discovery.k8s.io/EndpointSlice/foo/db-1/192.168.1.10', 'HEALTHY'],
      ['Kubernetes/discovery.k8s.io/EndpointSlice/foo/db-1/192.168.1.11', 'UNHEALTHY'],
    ]);
    // The slice port named "pg" is the Service port named "pg": 5432 → 5433.
    expect(wl[0]!.services).toEqual({ 'foo/db.foo.svc.cluster.local': { ports: [{ servicePort: 5432, targetPort: 5433, appProtocol: 'UNKNOWN' }] } });
    // An address a pod already has stays the pod's.
    expect(endpointSliceWorkloads(mesh, slices, [db], new Set(['192.168.1.10'])).map((w) => w.addresses.length)).toHaveLength(1);
    // No Service of that name: nothing.
    expect(endpointSliceWorkloads(mesh, slices, [], new Set())).toEqual([]);
  });
});

describe('validation of API objects', () => {
  const policy = (action: string): R => ({
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'p1', namespace: 'foo', generation: 2 },
    spec: { action, rules: [{ from: [{ source: { namespaces: ['bar'] } }] }] },
  });

  it('uses the directory source\'s validators and names the resource, with no file line', () => {
    const bad = fromApi(policy('PERMIT'));
    expect(bad).toEqual({
      kind: 'invalid',
      problem: expect.objectContaining({ code: 'NM_ERR_CONFIG_INVALID', severity: 'error', file: 'kubernetes', line: 0, resource: 'AuthorizationPolicy foo/p1' }),
    });
    expect(bad.kind === 'invalid' && bad.problem.message).toMatch(/^AuthorizationPolicy foo\/p1: spec\.action: unknown value "PERMIT"/);
    const audit = fromApi(policy('AUDIT'));
    expect(audit.kind === 'invalid' && audit.problem.code).toBe('NM_ERR_POLICY');
    const good = fromApi(policy('DENY'));
    expect(good.kind === 'object' && (good.object as AuthorizationPolicy).policy.action).toBe('DENY');
  });
});

describe('status written back', () => {
  const now = '2026-01-01T00:00:00Z';
  const route = (status: R = {}): R => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'r1', namespace: 'foo', generation: 3 },
    spec: { parentRefs: [{ kind: 'Service', group: '', name: 'web', port: 80 }, { kind: 'Gateway', name: 'gw' }], rules: [{ backendRefs: [{ name: 'web-v2', port: 80 }] }] },
    status,
  });

  it('writes Accepted and ResolvedRefs for Service parents once, keeping other controllers\' entries', () => {
    const other = { parentRef: { kind: 'Gateway', name: 'gw' }, controllerName: 'example.com/gateway', conditions: [] };
    const raw = route({ parents: [other] });
    const services = new Set(['foo/web', 'foo/web-v2']);
    const patch = httpRouteStatusPatch({ raw, good: object(raw) }, services, now)!;
    const parents = patch.parents as R[];
    expect(parents[0]).toEqual(other);
    expect(parents[1]).toMatchObject({
      controllerName: MESH_CONTROLLER_NAME,
      parentRef: { kind: 'Service', name: 'web' },
      conditions: [
        { type: 'Accepted', status: 'True', reason: 'Accepted', observedGeneration: 3, lastTransitionTime: now },
        { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', observedGeneration: 3 },
      ],
    });
    // Once the object carries it, nothing more to write (even at a later time).
    const written = route(patch);
    expect(httpRouteStatusPatch({ raw: written, good: object(written) }, services, '2026-02-02T00:00:00Z')).toBeUndefined();
    // A backend that disappears changes ResolvedRefs, and keeps Accepted's transition time.
    const again = httpRouteStatusPatch({ raw: written, good: object(written) }, new Set(['foo/web']), '2026-02-02T00:00:00Z')!;
    const ours = (again.parents as R[])[1] as { conditions: R[] };
    expect(ours.conditions).toMatchObject([
      { type: 'Accepted', status: 'True', lastTransitionTime: now },
      { type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound', lastTransitionTime: '2026-02-02T00:00:00Z' },
    ]);
    // A missing parent Service is not accepted.
    const missing = httpRouteStatusPatch({ raw, good: object(raw) }, new Set(['foo/web-v2']), now)!;
    expect(((missing.parents as R[])[1] as { conditions: R[] }).conditions[0]).toMatchObject({ status: 'False', reason: 'NoMatchingParent' });
  });

  it('gives AuthorizationPolicies the ZtunnelAccepted condition Istio writes', () => {
    const raw = (spec: R): R => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'p1', namespace: 'foo', generation: 4 }, spec });
    const l4 = raw({ action: 'ALLOW', rules: [{ from: [{ source: { namespaces: ['bar'] } }] }] });
    const ok = authorizationStatusPatch({ raw: l4, good: object(l4) }, mesh, now)!;
    expect(ok.conditions).toEqual([{ type: 'ZtunnelAccepted', status: 'True', reason: 'Accepted', message: 'attached to the nodemesh node proxies', observedGeneration: '4', lastTransitionTime: now }]);
    expect(authorizationStatusPatch({ raw: { ...l4, status: ok }, good: object(l4) }, mesh, now)).toBeUndefined();
    const l7 = raw({ action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] });
    expect((authorizationStatusPatch({ raw: l7, good: object(l7) }, mesh, now)!.conditions as R[])[0]).toMatchObject({ status: 'True', reason: 'UnsupportedValue' });
    const bad = raw({ action: 'PERMIT' });
    const v = fromApi(bad);
    const invalid = authorizationStatusPatch({ raw: bad, good: object(l4), problem: v.kind === 'invalid' ? v.problem : undefined }, mesh, now)!;
    expect((invalid.conditions as R[])[0]).toMatchObject({ status: 'False', reason: 'Invalid', message: expect.stringMatching(/last good version \(generation 4\) is still enforced/) });
    // Waypoint policies are not ours to report on.
    const wp = raw({ targetRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' }] });
    expect(authorizationStatusPatch({ raw: wp, good: object(wp) }, mesh, now)).toBeUndefined();
  });
});

// Pods + Services (+ reported pod status) → xDS Workload and Service resources.
import { describe, expect, it } from 'vitest';
import { DEFAULT_MESH, runningPods, translateService, translateWorkload, type ReportedPod } from '../../src/controlplane/translate.js';
import { parseConfigFile } from '../../src/controlplane/validate.js';
import type { Namespace, Pod, Service } from '../../src/k8s/index.js';
import { bytesToIp } from '../../src/net/index.js';

const CONFIG = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {nodemesh.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-7f9c
  namespace: shop
  labels: {app: cart, version: v2}
spec:
  nodeName: node-1
  serviceAccountName: cart
  containers:
    - name: main
      command: [cart]
      ports: [{name: http-api, containerPort: 8080}, {name: metrics, containerPort: 9090}]
status: {podIP: 10.244.1.7}
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  namespace: shop
  labels: {app: cart, nodemesh.io/dataplane-mode: none}
spec:
  containers: [{name: main, command: [legacy], ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: default
spec:
  containers: [{name: main, command: [batch]}]
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
spec:
  clusterIP: 10.96.5.5
  selector: {app: cart}
  ports:
    - {name: http, port: 80, targetPort: http-api}
    - {name: grpc-admin, port: 9000, targetPort: 9090}
    - {name: tcp-dns, port: 53, targetPort: 53, protocol: UDP}
    - {port: 7000, targetPort: missing, appProtocol: kubernetes.io/h2c}
---
apiVersion: v1
kind: Service
metadata:
  name: headless
  namespace: shop
spec:
  clusterIP: None
  selector: {app: nothing}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: cart-other-ns
  namespace: default
spec:
  clusterIP: 10.96.5.6
  selector: {app: cart}
  ports: [{port: 80}]
`;

const parsed = parseConfigFile(CONFIG, 'c.yaml');
const pods = parsed.objects.filter((o): o is Pod => o.kind === 'Pod');
const services = parsed.objects.filter((o): o is Service => o.kind === 'Service');
const namespaces = parsed.objects.filter((o): o is Namespace => o.kind === 'Namespace');
const inputs = { services, namespaces, policiesFor: () => ['shop/p'] };

describe('workload translation', () => {
  it('has no problems in the fixture', () => {
    expect(parsed.problems).toEqual([]);
  });

  it('publishes pods with a pinned IP as-is and reported pods by uid or name; others not', () => {
    const reports: ReportedPod[] = [
      { uid: '', namespace: 'shop', name: 'legacy', ip: '10.244.2.9', phase: 'Running', node: 'node-2' },
      { uid: 'someone-else', namespace: 'default', name: 'batch', ip: '10.244.2.10', phase: 'Running', node: 'node-2' },
    ];
    const running = runningPods(pods, reports);
    expect(running.map((r) => [r.pod.metadata.name, r.ip, r.node])).toEqual([
      ['cart-7f9c', '10.244.1.7', 'node-1'],
      ['legacy', '10.244.2.9', 'node-2'],
    ]);
    // Terminal pods are not published.
    expect(runningPods(pods, [{ ...reports[0]!, phase: 'Succeeded' }]).map((r) => r.pod.metadata.name)).toEqual(['cart-7f9c']);
    // A report without an IP (Pending before CNI ran) publishes nothing.
    expect(runningPods(pods, [{ ...reports[0]!, ip: '' }]).map((r) => r.pod.metadata.name)).toEqual(['cart-7f9c']);
  });

  it('fills every Workload field the way Istio does', () => {
    const [cart] = runningPods(pods, []);
    const w = translateWorkload(DEFAULT_MESH, cart!, inputs);
    expect({ ...w, addresses: w.addresses.map(bytesToIp) }).toEqual({
      uid: 'Kubernetes//Pod/shop/cart-7f9c',
      name: 'cart-7f9c',
      namespace: 'shop',
      addresses: ['10.244.1.7'],
      network: '',
      tunnelProtocol: 'HBONE',
      trustDomain: 'cluster.local',
      serviceAccount: 'cart',
      node: 'node-1',
      canonicalName: 'cart',
      canonicalRevision: 'v2',
      workloadType: 'POD',
      workloadName: 'cart-7f9c',
      authorizationPolicies: ['shop/p'],
      status: 'HEALTHY',
      clusterId: 'Kubernetes',
      // nodemesh's extension (field 1000): subsets and RequestAuthentication selectors need them.
      labels: { app: 'cart', version: 'v2' },
      services: {
        // Named target ports resolved from the containers; UDP and unresolvable ports left out.
        'shop/cart.shop.svc.cluster.local': {
          ports: [
            { servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' },
            { servicePort: 9000, targetPort: 9090, appProtocol: 'GRPC' },
          ],
        },
      },
    });
  });

  it('uses NONE for pods opted out and the configured trust domain and cluster id', () => {
    const legacy = runningPods(pods, [{ uid: '', namespace: 'shop', name: 'legacy', ip: 'fd00::9', phase: 'Pending', node: 'n' }]).find((r) => r.pod.metadata.name === 'legacy')!;
    const w = translateWorkload({ ...DEFAULT_MESH, trustDomain: 'example.org', clusterId: 'c2' }, legacy, inputs);
    expect(w.tunnelProtocol).toBe('NONE');
    expect(w.uid).toBe('c2//Pod/shop/legacy');
    expect(w.trustDomain).toBe('example.org');
    expect(w.serviceAccount).toBe('default');
    expect(w.status).toBe('UNHEALTHY');
    expect(w.canonicalRevision).toBe('latest');
    expect(bytesToIp(w.addresses[0]!)).toBe('fd00::9');
    // The unnamed container port 8080 matches no named target port; numeric 9090 is not exposed by this pod but is still listed (Kubernetes does the same).
    expect(w.services['shop/cart.shop.svc.cluster.local']!.ports).toEqual([{ servicePort: 9000, targetPort: 9090, appProtocol: 'GRPC' }]);
  });
});

describe('service translation', () => {
  it('publishes hostname, VIP and ports (named target ports as 0, resolved per workload)', () => {
    const s = translateService(DEFAULT_MESH, services[0]!);
    expect({ ...s, addresses: s.addresses.map((a) => ({ ...a, address: bytesToIp(a.address) })) }).toEqual({
      name: 'cart',
      namespace: 'shop',
      hostname: 'cart.shop.svc.cluster.local',
      addresses: [{ network: '', address: '10.96.5.5' }],
      ports: [
        { servicePort: 80, targetPort: 0, appProtocol: 'HTTP11' },
        { servicePort: 9000, targetPort: 9090, appProtocol: 'GRPC' },
        { servicePort: 7000, targetPort: 0, appProtocol: 'HTTP2' },
      ],
      subjectAltNames: [],
    });
  });

  it('publishes a headless service without addresses', () => {
    expect(translateService(DEFAULT_MESH, services[1]!).addresses).toEqual([]);
  });
});

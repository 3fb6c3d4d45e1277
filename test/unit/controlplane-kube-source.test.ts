// The control plane's Kubernetes source end to end: a real ControlPlane reading a stand-in API
// server (test/helpers/kube-apiserver.ts: no kube-apiserver can run here, so a stand-in speaks
// its wire protocol and the real @kubernetes/client-node drives it) and a real XdsClient that
// receives what it serves. Changes through the API reach the agent; watch expiry (410) and the
// API going away are recovered from without losing a change; missing CRDs are skipped until
// they appear; status is written once; an invalid object keeps its last good version.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { controlPlaneCommand } from '../../src/cli/controlplane.js';
import { ControlPlane } from '../../src/controlplane/controlplane.js';
import { KubeSource } from '../../src/controlplane/kube-source.js';
import { ProxyState } from '../../src/state/index.js';
import { XdsClient } from '../../src/xds/index.js';
import { KUBE_RESOURCES, startKubeStandIn, type KubeStandIn, type KubeObject } from '../helpers/kube-apiserver.js';
import { crdObjectFor } from '../helpers/kube/resources.js';
import { agentToken } from '../helpers/kube-agent.js';
import { waitFor } from '../helpers/xds.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  vi.unstubAllEnvs();
});

const NS: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'foo', labels: { 'nodemesh.io/dataplane-mode': 'ambient' } } };

function pod(name: string, ip: string, opts: { ready?: boolean; labels?: Record<string, string> } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'foo', labels: opts.labels ?? { app: 'web' } },
    spec: { nodeName: 'n1', serviceAccountName: 'default', containers: [{ name: 'app', image: 'nginx', ports: [{ name: 'http', containerPort: 8080 }] }] },
    // create() keeps the status, as if the kubelet had written it.
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }] },
  };
}

const SERVICE: KubeObject = {
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'foo' },
  spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }] },
};

const policy = (action: string, name = 'p1'): KubeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'foo' },
  spec: { action, rules: [{ from: [{ source: { namespaces: ['bar'] } }] }] },
});

const ROUTE: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'r1', namespace: 'foo' },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] },
};

const SVC_KEY = 'foo/web.foo.svc.cluster.local';

interface Env {
  api: KubeStandIn;
  cp: ControlPlane;
  state: ProxyState;
  /** Node n1's agent's projected ServiceAccount token (test/helpers/kube-agent.ts). */
  token: string;
}

async function startEnv(opts: { resources?: typeof KUBE_RESOURCES } = {}, seed: (api: KubeStandIn) => void = () => undefined): Promise<Env> {
  const api = await startKubeStandIn({ bookmarkEveryMs: 200, ...(opts.resources ? { resources: opts.resources } : {}) });
  cleanups.push(() => api.close());
  seed(api);
  const token = await agentToken(api, 'n1');
  const stateDir = mkdtempSync(join(tmpdir(), 'nodemesh-cp-kube-'));
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
  const cp = await ControlPlane.start({
    kubernetes: { kubeconfig: api.kubeconfigPath, rediscoverMs: 200, backoffMs: 50, maxBackoffMs: 300, debounceMs: 10 },
    stateDir,
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
  });
  cleanups.push(() => cp.stop());
  const state = new ProxyState();
  const client = new XdsClient({ address: cp.address, rootCertPem: cp.ca.rootCertPem, token, nodeName: 'n1', state });
  cleanups.push(() => client.stop());
  client.start();
  await client.ready;
  return { api, cp, state, token };
}

function ready(cp: ControlPlane): Promise<{ status: number; body: string }> {
  const at = cp.adminAddress.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    request({ host: cp.adminAddress.slice(0, at), port: Number(cp.adminAddress.slice(at + 1)), path: '/healthz/ready' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}

const kube = (cp: ControlPlane) => cp.source as KubeSource;

describe('the Kubernetes source', () => {
  it('serves Pods, Services and AuthorizationPolicies created, changed and deleted through the API', async () => {
    const env = await startEnv({}, (api) => {
      api.create(NS);
      api.create(pod('web', '10.1.0.5'));
      api.create(SERVICE);
      api.create(policy('DENY'));
    });
    const { api, state } = env;
    // What existed before the control plane started is served on its first push.
    await waitFor(() => state.workloadByIp('10.1.0.5') !== undefined && state.policy('foo/p1') !== undefined, 'the initial objects');
    const web = state.workloadByIp('10.1.0.5')!;
    expect(web).toMatchObject({ name: 'web', namespace: 'foo', node: 'n1', status: 'HEALTHY', tunnelProtocol: 'HBONE' });
    // The named target port is resolved from the pod's container.
    expect(web.services[SVC_KEY]).toEqual([expect.objectContaining({ servicePort: 80, targetPort: 8080 })]);
    expect(state.serviceByHostname(SVC_KEY)).toBeDefined();
    expect(state.policy('foo/p1')?.action).toBe('DENY');
    // Watches ask for bookmarks (they advance the resourceVersion of quiet kinds).
    expect(api.requests.filter((r) => r.path.includes('watch=true')).every((r) => r.path.includes('allowWatchBookmarks=true'))).toBe(true);
    expect(api.requests.some((r) => r.path.includes('watch=true'))).toBe(true);

    // Created, changed and deleted through the API.
    api.create(pod('db', '10.1.0.6', { labels: { app: 'db' } }));
    api.update(policy('ALLOW'));
    api.patchStatus('v1', 'Pod', 'foo', 'web', { conditions: [{ type: 'Ready', status: 'False' }] });
    await waitFor(() => state.workloadByIp('10.1.0.6') !== undefined, 'the new pod');
    await waitFor(() => state.policy('foo/p1')?.action === 'ALLOW', 'the changed policy');
    await waitFor(() => state.workloadByIp('10.1.0.5')?.status === 'UNHEALTHY', 'web no longer ready');
    api.delete('v1', 'Pod', 'foo', 'db');
    api.delete('v1', 'Service', 'foo', 'web');
    api.delete('security.istio.io/v1', 'AuthorizationPolicy', 'foo', 'p1');
    await waitFor(() => state.workloadByIp('10.1.0.6') === undefined, 'the deleted pod gone');
    await waitFor(() => state.serviceByHostname(SVC_KEY) === undefined && state.policy('foo/p1') === undefined, 'the deleted service and policy gone');
    expect(state.workloadByIp('10.1.0.5')).toBeDefined(); // the rest stays
    // A pod that finishes is withdrawn too (not kept as a "last good" version).
    api.patchStatus('v1', 'Pod', 'foo', 'web', { phase: 'Succeeded' });
    await waitFor(() => state.workloadByIp('10.1.0.5') === undefined, 'the finished pod withdrawn');
  });

  it('recovers from a watch expiry (410 Gone) with a change made meanwhile applied', async () => {
    const { api, state, cp } = await startEnv({}, (a) => {
      a.create(NS);
      a.create(policy('DENY'));
    });
    await waitFor(() => state.policy('foo/p1')?.action === 'DENY', 'the policy');
    // A list is a GET of the collection without watch=true; the stand-in answers an expired watch
    // as the real server does: 200, then one ERROR event carrying a 410 Expired Status.
    const lists = () => api.requests.filter((r) => r.method === 'GET' && /\/authorizationpolicies\?/.test(r.path) && !r.path.includes('watch=true')).length;
    const listsBefore = lists();
    // Cut the watches, change things, and forget history: reconnecting from the old
    // resourceVersion answers 410 and the informers must relist.
    await api.stop();
    api.update(policy('ALLOW'));
    api.create(pod('web', '10.1.0.5'));
    api.compact();
    await api.start();
    await waitFor(() => state.policy('foo/p1')?.action === 'ALLOW' && state.workloadByIp('10.1.0.5') !== undefined, 'the changes made during the expiry');
    expect(lists()).toBeGreaterThan(listsBefore); // relisted, not just resumed
    await waitFor(() => cp.ready, 'ready again');
  });

  it('keeps serving the last good state while the API is down, says degraded, and catches up after', async () => {
    const { api, state, cp, token } = await startEnv({}, (a) => {
      a.create(NS);
      a.create(pod('web', '10.1.0.5'));
      a.create(policy('DENY'));
    });
    await waitFor(() => state.workloadByIp('10.1.0.5') !== undefined && state.policy('foo/p1') !== undefined, 'the initial objects');
    expect(await ready(cp)).toEqual({ status: 200, body: 'ready\n' });

    await api.stop();
    await waitFor(() => kube(cp).status().degraded, 'the source to notice the API is gone');
    const r = await ready(cp);
    expect(r.status).toBe(503);
    expect(r.body).toMatch(/^degraded: cannot watch .*; serving the last good state/);
    // Nothing was withdrawn, and the xDS server still holds it for agents that connect now
    // (with a token checked before the outage: see controlplane-kube-auth.test.ts).
    expect(state.workloadByIp('10.1.0.5')).toBeDefined();
    expect(state.policy('foo/p1')?.action).toBe('DENY');
    const late = new ProxyState();
    const client = new XdsClient({ address: cp.address, rootCertPem: cp.ca.rootCertPem, token, nodeName: 'n1', state: late });
    cleanups.push(() => client.stop());
    client.start();
    await client.ready;
    expect(late.policy('foo/p1')?.action).toBe('DENY');

    // Changed while the control plane could not see it.
    api.update(policy('ALLOW'));
    api.delete('v1', 'Pod', 'foo', 'web');
    await api.start();
    await waitFor(() => state.policy('foo/p1')?.action === 'ALLOW' && state.workloadByIp('10.1.0.5') === undefined, 'the changes made while down');
    await waitFor(() => cp.ready, 'ready again');
    expect(await ready(cp)).toEqual({ status: 200, body: 'ready\n' });
  });

  it('skips a CRD that is not installed, serves the rest, and picks the kind up once it is', async () => {
    const routeKind = KUBE_RESOURCES.find((k) => k.kind === 'HTTPRoute')!;
    const { api, state, cp } = await startEnv({ resources: KUBE_RESOURCES.filter((k) => k.kind !== 'HTTPRoute') }, (a) => {
      a.create(NS);
      a.create(pod('web', '10.1.0.5'));
      a.create(SERVICE);
    });
    await waitFor(() => state.workloadByIp('10.1.0.5') !== undefined, 'the pod, without Gateway API installed');
    expect(kube(cp).status().kinds.HTTPRoute).toBe('not served');
    expect(cp.ready).toBe(true);
    // Installing the CRD later: rediscovery finds it and its objects are read.
    api.create(crdObjectFor(routeKind));
    api.create(ROUTE);
    await waitFor(() => kube(cp).snapshot().httpRoutes.some((r) => r.metadata.name === 'r1'), 'the HTTPRoute once its CRD exists');
    expect(kube(cp).status().kinds.HTTPRoute).toBe('ok');
  });

  it('writes HTTPRoute status once and does not rewrite it when nothing changed', async () => {
    const { api, cp } = await startEnv({}, (a) => {
      a.create(NS);
      a.create(SERVICE);
      a.create(ROUTE);
    });
    const statusWrites = () => api.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/httproutes/r1/status')).length;
    await waitFor(() => ((api.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'foo', 'r1')?.status as { parents?: unknown[] })?.parents?.length ?? 0) > 0, 'the route status');
    const parents = (api.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'foo', 'r1')!.status as { parents: { controllerName: string; conditions: { type: string; status: string }[] }[] }).parents;
    expect(parents).toEqual([
      expect.objectContaining({
        controllerName: 'nodemesh.io/mesh-controller',
        conditions: [expect.objectContaining({ type: 'Accepted', status: 'True' }), expect.objectContaining({ type: 'ResolvedRefs', status: 'True' })],
      }),
    ]);
    expect(statusWrites()).toBe(1);
    // Unrelated changes and rediscovery rounds (every 200 ms here) go by: no second write.
    api.create(pod('web', '10.1.0.5'));
    await waitFor(() => kube(cp).snapshot().pods.length === 1, 'an unrelated change');
    await new Promise((r) => setTimeout(r, 600));
    expect(statusWrites()).toBe(1);
    // The positive twin: a change that matters is written (the backend goes away).
    api.delete('v1', 'Service', 'foo', 'web');
    await waitFor(() => statusWrites() === 2, 'the status after the Service is deleted');
  });

  it('keeps the last good version of an AuthorizationPolicy made invalid through the API, and reports it', async () => {
    const { api, state, cp } = await startEnv({}, (a) => {
      a.create(NS);
      a.create(policy('DENY'));
      a.create(policy('DENY', 'p2'));
    });
    await waitFor(() => state.policy('foo/p1')?.action === 'DENY' && state.policy('foo/p2') !== undefined, 'the policies');
    api.update(policy('PERMIT'));
    api.update(policy('ALLOW', 'p2')); // the positive twin: a valid change next to it is applied
    await waitFor(() => state.policy('foo/p2')?.action === 'ALLOW', 'the valid change');
    await waitFor(() => cp.problems().some((p) => p.resource === 'AuthorizationPolicy foo/p1'), 'the problem reported');
    expect(cp.configErrors().problems).toEqual([expect.objectContaining({ code: 'NM_ERR_CONFIG_INVALID', file: 'kubernetes', line: 0, resource: 'AuthorizationPolicy foo/p1' })]);
    expect(state.policy('foo/p1')?.action).toBe('DENY');
    // Its status says so, naming the version still enforced.
    await waitFor(() => {
      const c = (api.get('security.istio.io/v1', 'AuthorizationPolicy', 'foo', 'p1')?.status as { conditions?: { type: string; status: string; reason: string }[] })?.conditions;
      return c?.some((x) => x.type === 'ZtunnelAccepted' && x.status === 'False' && x.reason === 'Invalid') ?? false;
    }, 'the Invalid condition');
    // Fixing it serves the fix and clears the problem.
    api.update(policy('ALLOW'));
    await waitFor(() => state.policy('foo/p1')?.action === 'ALLOW', 'the fixed policy');
    expect(cp.problems()).toEqual([]);
  });
});

describe('nodemesh control-plane: choosing the source', () => {
  it('takes --config or --kubeconfig, not both, and needs one outside a pod', async () => {
    await expect(controlPlaneCommand.run(['--config', tmpdir(), '--kubeconfig', '/nonexistent/kubeconfig'])).rejects.toMatchObject({ code: 'NM_ERR_USAGE' });
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '');
    await expect(controlPlaneCommand.run([])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/--kubeconfig <file>/) });
    await expect(controlPlaneCommand.run(['--kubeconfig', '/nonexistent/kubeconfig'])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/cannot load kubeconfig/) });
  });

  // Only where no service account is mounted (a build machine): with one, this would dial the
  // (here fake) API address.
  it.skipIf(existsSync('/var/run/secrets/kubernetes.io/serviceaccount/token'))('uses the in-cluster config inside a pod when no source is named, and says what is missing', async () => {
    vi.stubEnv('KUBERNETES_SERVICE_HOST', '127.0.0.1');
    vi.stubEnv('KUBERNETES_SERVICE_PORT', '1');
    await expect(controlPlaneCommand.run([])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/^--in-cluster: .*serviceaccount\/token does not exist/) });
  });

  it('waits for an API server that is not up yet, and serves once it has listed everything', async () => {
    const api = await startKubeStandIn();
    cleanups.push(() => api.close());
    api.create(NS);
    api.create(policy('DENY'));
    await api.stop();
    const stateDir = mkdtempSync(join(tmpdir(), 'nodemesh-cp-kube-'));
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    let started: ControlPlane | undefined;
    const starting = ControlPlane.start({ kubernetes: { kubeconfig: api.kubeconfigPath, backoffMs: 50, maxBackoffMs: 200 }, stateDir, listen: '127.0.0.1:0', admin: '127.0.0.1:0' }).then((cp) => {
      started = cp;
      cleanups.push(() => cp.stop());
      return cp;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(started).toBeUndefined(); // nothing served before the first list
    await api.start();
    const cp = await starting;
    expect(kube(cp).snapshot().authorizationPolicies.map((p) => p.metadata.name)).toEqual(['p1']);
  });

  it('reads a stand-in API server through --kubeconfig', async () => {
    const api = await startKubeStandIn();
    cleanups.push(() => api.close());
    const stateDir = mkdtempSync(join(tmpdir(), 'nodemesh-cp-kube-'));
    cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
    const cp = await ControlPlane.start({ kubernetes: { kubeconfig: api.kubeconfigPath }, stateDir, listen: '127.0.0.1:0', admin: '127.0.0.1:0' });
    cleanups.push(() => cp.stop());
    // The seeded default/kubernetes Service is read; the directory accessor refuses.
    expect(kube(cp).snapshot().services.map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).toContain('default/kubernetes');
    expect(() => cp.config).toThrow(/reads the Kubernetes API/);
    expect(await ready(cp)).toEqual({ status: 200, body: 'ready\n' });
  });
});

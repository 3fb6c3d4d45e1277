// `nodemesh up --kubeconfig`, end to end: the embedded cluster on a Kubernetes API server.
// No real kube-apiserver can run here, so the API is the stand-in (test/helpers/kube-apiserver.ts,
// the real wire protocol, driven by the real @kubernetes/client-node) running in this test's
// process on 127.0.0.1; everything else is real and runs as the CLI starts it: the simulator's
// nodes and pods (netns, CNI chain, processes), the kubelet role, the control plane on the API,
// one agent per node proving its node with its pod's projected token (TokenReview), and in
// multi-node mode the relay that offers the API on the cluster network.
//
// Changes made through the API (policy, Pod, Service) are checked in the data path, each
// negative beside its positive twin; then the API's watch expiry (410) and the API server going
// away for a while. That the CA refuses an agent a certificate for a pod the API places on
// another node (and issues one for its own) is covered against the Kubernetes source by
// test/unit/controlplane-kube-auth.test.ts, and not repeated here.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJson } from '../../src/cluster/daemon.js';
import { ADMIN } from '../../src/cluster/host.js';
import { kubePaths, readKubeRecord } from '../../src/cluster/kube-record.js';
import { CLUSTER_NETNS_PATH, curlIn, multiNodeNodes, nodeDump } from '../../src/cluster/nodes.js';
import { down } from '../../src/cluster/up.js';
import { listPods, type SimPodInfo } from '../../src/sim/index.js';
import { startKubeStandIn, type KubeObject, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { eventually, kubeUp, readyOf, refused, reviewToken, runCli, shIn } from '../helpers/kube-cluster.js';
import { fixtureBin, leftovers, podRunner, writeConfig } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';
import { FRONTEND_SERVICE_ACCOUNT, SHOP_NAMESPACE, yamlDocs } from '../helpers/shop.js';

const server = join(fixtureBin, 'nm_server.py');
const VIP = '10.96.7.7';

const podYaml = (name: string, node: string | undefined, o: { sa?: string; server?: boolean } = {}) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: shop, labels: { app: ${name} } }
spec:
${node ? `  nodeName: ${node}\n` : ''}${o.sa ? `  serviceAccountName: ${o.sa}\n` : ''}  containers:
  - ${o.server ? `{ name: s, command: [python3, ${server}, "8080"], ports: [{ containerPort: 8080 }] }` : '{ name: c, command: [sleep, infinity] }'}
`;
const SERVICE = `apiVersion: v1
kind: Service
metadata: { name: backend, namespace: shop }
spec:
  clusterIP: ${VIP}
  selector: { app: backend }
  ports: [{ name: tcp, port: 80, targetPort: 8080 }]
`;
/** backend serves 8080 behind the VIP; frontend (its own ServiceAccount) and batch are clients. */
const config = (backendNode?: string, clientNode?: string) =>
  writeConfig(yamlDocs(SHOP_NAMESPACE, FRONTEND_SERVICE_ACCOUNT, SERVICE, podYaml('backend', backendNode, { sa: 'backend', server: true }), podYaml('frontend', clientNode, { sa: 'frontend' }), podYaml('batch', undefined)));

/** A Pod as a test creates it through the API (kubectl create). */
const apiPod = (name: string, node: string, o: { server?: boolean } = {}): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'shop', labels: { app: name } },
  spec: { nodeName: node, containers: [o.server ? { name: 's', image: 'nm-server', command: ['python3', server, '8080'], ports: [{ containerPort: 8080 }] } : { name: 'c', image: 'busybox', command: ['sleep', 'infinity'] }] },
});
const denyFrom = (sa: string): KubeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: `deny-${sa}`, namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'backend' } }, action: 'DENY', rules: [{ from: [{ source: { principals: [`cluster.local/ns/shop/sa/${sa}`] } }] }] },
});
const AP = 'security.istio.io/v1';

interface Env {
  api: KubeStandIn;
  sd: string;
  /** Pod IPs by namespace/name: the directory's, and those tests add. */
  ips: Map<string, string>;
  ip(ref: string): string;
  /** Every node agent's /config_dump. */
  dumps(): Promise<{ policies: { name: string; namespace: string }[]; pods: { name: string }[] }[]>;
}

async function simPod(sd: string, ref: string): Promise<SimPodInfo | undefined> {
  return (await listPods({ stateDir: sd })).find((p) => `${p.namespace}/${p.name}` === ref);
}

const who = (e: Env, from: string, to: string) => podRunner(e.sd).clientAsync(from, ['who', to, to === VIP ? '80' : '8080']);
const whoOk = (e: Env, r: Record<string, unknown>, server: string, from: string) => expect(r.reply, JSON.stringify(r)).toMatch(new RegExp(`^${e.ip(server).replace(/\./g, '\\.')}:8080 ${e.ip(from).replace(/\./g, '\\.')}:\\d+$`));
const podReady = (api: KubeStandIn, name: string, ms = 60_000) => eventually(`pod shop/${name} Ready through the API`, () => (readyOf(api.get('v1', 'Pod', 'shop', name)) === 'True' ? api.get('v1', 'Pod', 'shop', name) : undefined), ms);
const policyEverywhere = (e: Env, key: string, present: boolean) =>
  eventually(`policy ${key} ${present ? 'on' : 'gone from'} every node`, async () => ((await e.dumps()).every((d) => d.policies.some((p) => `${p.namespace}/${p.name}` === key) === present) ? true : undefined));

/** Brings the cluster up for a describe block and takes it down after. */
function cluster(dir: string, dumps: (sd: string) => Env['dumps']): Env {
  const e = { sd: '', ips: new Map<string, string>(), ip: (ref: string) => e.ips.get(ref) ?? `(no pod ${ref})` } as Env;
  beforeAll(async () => {
    e.api = await startKubeStandIn({ bookmarkEveryMs: 500 });
    try {
      e.sd = (await kubeUp(e.api, dir)).sd;
    } catch (err) {
      e.sd = (err as { sd?: string }).sd ?? '';
      throw err;
    }
    for (const p of await listPods({ stateDir: e.sd })) e.ips.set(`${p.namespace}/${p.name}`, p.ip);
    e.dumps = dumps(e.sd);
  });
  afterAll(async () => {
    if (e.sd && existsSync(e.sd)) await down(e.sd).catch(() => undefined);
    if (e.sd) rmSync(e.sd, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
    await e.api?.close();
  });
  return e;
}

/** The DENY policy through the API, its twin (batch) allowed meanwhile, then deleted. */
async function denyAndAllow(e: Env): Promise<void> {
  whoOk(e, await who(e, 'shop/frontend', VIP), 'shop/backend', 'shop/frontend');
  e.api.create(denyFrom('frontend'));
  await policyEverywhere(e, 'shop/deny-frontend', true);
  const [denied, allowed] = await Promise.all([who(e, 'shop/frontend', VIP), who(e, 'shop/batch', VIP)]);
  expect(refused(denied), JSON.stringify(denied)).toBe(true);
  whoOk(e, allowed, 'shop/backend', 'shop/batch');
  e.api.delete(AP, 'AuthorizationPolicy', 'shop', 'deny-frontend');
  await policyEverywhere(e, 'shop/deny-frontend', false);
  whoOk(e, await who(e, 'shop/frontend', VIP), 'shop/backend', 'shop/frontend');
}

/** `nodemesh down`: nothing left on the host, what up made gone from the API, what others made still there. */
async function downLeavesNothing(e: Env, pinRoots: string[]): Promise<void> {
  e.api.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'outsider', namespace: 'default' }, spec: { nodeName: 'elsewhere', containers: [{ name: 'c', image: 'x', command: ['sleep', 'infinity'] }] } });
  const r = await runCli(['down', '--state-dir', e.sd]);
  expect(r.code, r.stderr).toBe(0);
  expect(leftovers(...pinRoots)).toEqual([]);
  expect(existsSync(kubePaths(e.sd).dir)).toBe(false);
  expect(e.api.list('v1', 'Node')).toEqual([]);
  expect(e.api.list('v1', 'Namespace').map((n) => n.metadata.name).sort()).toEqual(['default', 'kube-node-lease', 'kube-public', 'kube-system']);
  expect(e.api.get('v1', 'Pod', 'default', 'outsider')).toBeDefined();
}

describePrivileged('nodemesh up --kubeconfig: the embedded cluster on a Kubernetes API (stand-in)', () => {
  describe('several nodes: the control plane on the cluster network reaches the API through the relay', () => {
    // frontend and batch on node-0 (batch names no node: up binds it to the default node), backend on node-1.
    const e = cluster(config('node-1', 'node-0'), (sd) => () => Promise.all(multiNodeNodes(sd).map((n) => nodeDump(n))) as ReturnType<Env['dumps']>);
    const cpReady = async () => (await curlIn(CLUSTER_NETNS_PATH, 'http://127.0.0.1:15014/healthz/ready', 2)).code === 0;
    const log = (file: string) => readFileSync(file, 'utf8');

    it('creates the directory through the API, binds the Pod naming no node, and runs each Pod Running and Ready with its IP and its token', async () => {
      const pod = (name: string) => e.api.get('v1', 'Pod', 'shop', name)!;
      expect(Object.fromEntries(['backend', 'frontend', 'batch'].map((n) => [n, (pod(n).spec as { nodeName: string }).nodeName]))).toEqual({ backend: 'node-1', frontend: 'node-0', batch: 'node-0' });
      // Only batch needed the scheduler's binding.
      expect(e.api.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/binding')).map((r) => `${r.path} ${r.status}`)).toEqual(['/api/v1/namespaces/shop/pods/batch/binding 201']);
      for (const n of ['backend', 'frontend', 'batch']) {
        expect(pod(n).status).toMatchObject({ phase: 'Running', podIP: e.ip(`shop/${n}`) });
        expect(readyOf(pod(n))).toBe('True');
      }
      expect((e.api.get('v1', 'Service', 'shop', 'backend')!.spec as { clusterIP: string }).clusterIP).toBe(VIP);
      // The ServiceAccount backend names but the directory does not declare was made for it.
      expect(e.api.get('v1', 'ServiceAccount', 'shop', 'backend')?.metadata.labels).toEqual({ 'app.kubernetes.io/managed-by': 'nodemesh-up' });
      // Nodes with their pod subnets; the agents' pods Ready on them.
      expect(e.api.list('v1', 'Node').map((n) => [n.metadata.name, (n.spec as { podCIDR: string }).podCIDR])).toEqual(multiNodeNodes(e.sd).map((n) => [n.name, n.subnet]));
      expect(e.api.list('v1', 'Pod', 'nodemesh-system').map((p) => [p.metadata.name, (p.spec as { nodeName: string }).nodeName, readyOf(p)])).toEqual([
        ['nodemesh-agent-node-0', 'node-0', 'True'],
        ['nodemesh-agent-node-1', 'node-1', 'True'],
      ]);
      // backend's token: its ServiceAccount's, bound to the pod, where its processes are told to look.
      const uid = pod('backend').metadata.uid!;
      const token = readFileSync(join(kubePaths(e.sd).podsDir, uid, 'serviceaccount', 'token'), 'utf8');
      expect(await reviewToken(e.api, token)).toMatchObject({ authenticated: true, user: { username: 'system:serviceaccount:shop:backend', extra: { 'authentication.kubernetes.io/pod-uid': [uid] } } });
      expect(await shIn(e.sd, 'shop/backend', 'cat "$NODEMESH_SERVICEACCOUNT_DIR/namespace"; echo; cmp -s "$NODEMESH_SERVICEACCOUNT_DIR/token" - && echo same', token)).toBe('shop\nsame');
      // It proves no node: refused for the agents' audience, which the agent's own token has.
      expect(await reviewToken(e.api, token, ['nodemesh'])).toMatchObject({ error: expect.stringContaining('audiences') });
      const agentToken = readFileSync(readKubeRecord(e.sd)!.agents[0]!.tokenFile, 'utf8');
      expect(await reviewToken(e.api, agentToken, ['nodemesh'])).toMatchObject({ authenticated: true, user: { username: 'system:serviceaccount:nodemesh-system:nodemesh-agent' } });
    });

    it('enforces a DENY policy created through the API across nodes, and allows again once it is deleted', () => denyAndAllow(e));

    it('runs a Pod created through the API later, captured and reached through the mesh, and reroutes the Service when its selector changes', async () => {
      e.api.create(apiPod('web', 'node-1', { server: true }));
      const webIp = ((await podReady(e.api, 'web')).status as { podIP: string }).podIP;
      expect((await simPod(e.sd, 'shop/web'))?.ip).toBe(webIp);
      e.ips.set('shop/web', webIp);
      expect((await e.dumps())[1]!.pods.map((p) => p.name)).toContain('web');
      whoOk(e, await who(e, 'shop/frontend', webIp), 'shop/web', 'shop/frontend');
      // The Service's VIP goes to backend; once its selector names web, to web; and back.
      whoOk(e, await who(e, 'shop/frontend', VIP), 'shop/backend', 'shop/frontend');
      const select = (app: string) => {
        const svc = e.api.get('v1', 'Service', 'shop', 'backend')!;
        e.api.update({ ...svc, spec: { ...(svc.spec as object), selector: { app } } });
      };
      const lands = (target: string) => eventually(`the VIP to reach ${target}`, async () => (String((await who(e, 'shop/frontend', VIP)).reply).startsWith(`${e.ip(target)}:8080 `) ? true : undefined));
      select('web');
      await lands('shop/web');
      select('backend');
      await lands('shop/backend');
    });

    it('recovers from a watch expiry (410 Gone): the control plane and the kubelet relist, and take the changes they missed', async () => {
      // Watches cut, changes made, history compacted: reconnecting from the resourceVersion
      // they last saw answers 410 Gone, and only a relist brings the changes.
      await e.api.stop();
      e.api.create(denyFrom('default')); // batch's ServiceAccount
      e.api.create(apiPod('late', 'node-0'));
      e.api.compact();
      await e.api.start();
      const expired = (file: string) => log(file).split('\n').some((l) => l.includes('"watch expired (410 Gone); relisting"'));
      await eventually('both to relist after 410', () => (expired(join(e.sd, 'control-plane', 'control-plane.log')) && expired(kubePaths(e.sd).kubeletLog) ? true : undefined), 30_000);
      await policyEverywhere(e, 'shop/deny-default', true);
      const [denied, allowed] = await Promise.all([who(e, 'shop/batch', VIP), who(e, 'shop/frontend', VIP)]);
      expect(refused(denied), JSON.stringify(denied)).toBe(true);
      whoOk(e, allowed, 'shop/backend', 'shop/frontend');
      expect((await podReady(e.api, 'late')).status).toMatchObject({ phase: 'Running', podIP: (await simPod(e.sd, 'shop/late'))?.ip });
      e.api.delete(AP, 'AuthorizationPolicy', 'shop', 'deny-default');
      await policyEverywhere(e, 'shop/deny-default', false);
      whoOk(e, await who(e, 'shop/batch', VIP), 'shop/backend', 'shop/batch');
    });

    it('keeps serving with the policy enforced while the API server is away, loses no connection, and takes the changes made once it is back', async () => {
      e.api.create(denyFrom('frontend'));
      await policyEverywhere(e, 'shop/deny-frontend', true);
      const web = e.api.get('v1', 'Pod', 'shop', 'web')!;
      const webToken = readFileSync(join(kubePaths(e.sd).podsDir, web.metadata.uid!, 'serviceaccount', 'token'), 'utf8');
      await e.api.stop();
      try {
        await eventually('the control plane to see the API gone', async () => ((await cpReady()) ? undefined : true));
        // Deleted meanwhile (the store outlives the listener): the kubelet cannot know yet, so web runs on.
        e.api.delete('v1', 'Pod', 'shop', 'web');
        const results = await Promise.all([...Array(8)].flatMap(() => [who(e, 'shop/frontend', VIP), who(e, 'shop/batch', VIP)]));
        expect(results.filter((_, i) => i % 2 === 0).map(refused)).toEqual(Array(8).fill(true));
        for (const r of results.filter((_, i) => i % 2 === 1)) whoOk(e, r, 'shop/backend', 'shop/batch');
        expect((await simPod(e.sd, 'shop/web'))?.status).toBe('Running');
      } finally {
        await e.api.start();
      }
      await eventually('the control plane to be ready again', async () => ((await cpReady()) ? true : undefined), 60_000);
      // The kubelet relists: web goes, and with it the validity of its token (backend's stays).
      await eventually('web removed by the kubelet', async () => ((await simPod(e.sd, 'shop/web')) ? undefined : true), 30_000);
      expect(await reviewToken(e.api, webToken)).toMatchObject({ error: expect.stringContaining('invalidated') });
      const backend = e.api.get('v1', 'Pod', 'shop', 'backend')!;
      expect(await reviewToken(e.api, readFileSync(join(kubePaths(e.sd).podsDir, backend.metadata.uid!, 'serviceaccount', 'token'), 'utf8'))).toMatchObject({ authenticated: true });
      e.api.delete(AP, 'AuthorizationPolicy', 'shop', 'deny-frontend');
      await policyEverywhere(e, 'shop/deny-frontend', false);
      whoOk(e, await who(e, 'shop/frontend', VIP), 'shop/backend', 'shop/frontend');
    });

    it('down removes everything it made, on the host and in the API, and leaves what others made', async () => {
      await downLeavesNothing(e, multiNodeNodes(e.sd).map((n) => n.pinRoot!));
    }, 60_000);
  });

  describe('one node: the host itself', () => {
    const e = cluster(config(), () => async () => [await getJson<Awaited<ReturnType<Env['dumps']>>[number]>(`${ADMIN}/config_dump`)]);

    it('binds every Pod to the host node and runs it Ready', () => {
      const node = e.api.list('v1', 'Node')[0]!.metadata.name;
      for (const n of ['backend', 'frontend', 'batch']) {
        const p = e.api.get('v1', 'Pod', 'shop', n)!;
        expect([(p.spec as { nodeName: string }).nodeName, (p.status as { podIP: string }).podIP, readyOf(p)]).toEqual([node, e.ip(`shop/${n}`), 'True']);
      }
    });

    it('enforces a DENY policy created through the API, and allows again once it is deleted', () => denyAndAllow(e));

    it('runs a Pod created through the API later and reaches it through the mesh', async () => {
      e.api.create(apiPod('web', e.api.list('v1', 'Node')[0]!.metadata.name, { server: true }));
      const webIp = ((await podReady(e.api, 'web')).status as { podIP: string }).podIP;
      e.ips.set('shop/web', webIp);
      whoOk(e, await who(e, 'shop/frontend', webIp), 'shop/web', 'shop/frontend');
    });

    it('down removes everything it made, on the host and in the API, and leaves what others made', async () => {
      await downLeavesNothing(e, ['/sys/fs/bpf/nodemesh']);
    }, 60_000);
  });

  it('rolls a failed first up back, in the API too: an object the API does not serve fails it, naming its file and line', async () => {
    const api = await startKubeStandIn();
    const dir = writeConfig(yamlDocs(SHOP_NAMESPACE, SERVICE, 'apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: gw, namespace: shop }\nspec: {}\n'));
    let sd = '';
    try {
      const err = await kubeUp(api, dir).then(() => undefined, (e: Error & { sd?: string }) => e);
      sd = err?.sd ?? '';
      expect(err?.message).toMatch(/pods\.yaml:\d+: Gateway shop\/gw: the API at https:\/\/127\.0\.0\.1:\d+ does not serve gateway\.networking\.k8s\.io\/v1 Gateway[^]*\(NM_ERR_KUBE_API\)/);
      // What it had made before (Nodes, the agents' identity, the namespace and Service) is gone again.
      const made = (path: string) => api.requests.some((r) => r.method === 'POST' && r.path === path && r.status === 201);
      expect([made('/api/v1/nodes'), made('/api/v1/namespaces'), made('/api/v1/namespaces/shop/services')]).toEqual([true, true, true]);
      expect(api.list('v1', 'Node')).toEqual([]);
      expect(api.list('v1', 'Namespace').map((n) => n.metadata.name).sort()).toEqual(['default', 'kube-node-lease', 'kube-public', 'kube-system']);
      expect(leftovers('/sys/fs/bpf/nodemesh')).toEqual([]);
      expect(existsSync(kubePaths(sd).dir)).toBe(false);
    } finally {
      if (sd) rmSync(sd, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
      await api.close();
    }
  });
});

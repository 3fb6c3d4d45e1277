// The Kubernetes stand-in (test/helpers/kube-apiserver.ts) driven only through the real
// @kubernetes/client-node, so the wire protocol it speaks is the one the client expects from a
// real kube-apiserver: discovery, lists, watches and informers, 410 relists, selectors, writes,
// TokenRequest and TokenReview.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ApisApi, AuthenticationV1Api, CoreApi, CoreV1Api, CustomObjectsApi, KubeConfig, ListWatch, PatchStrategy, VersionApi, Watch,
  makeInformer, setHeaderOptions, type KubernetesObject, type V1Pod,
} from '@kubernetes/client-node';
import { decodeJwt } from 'jose';
import { KUBE_ISSUER, KUBE_RESOURCES, startKubeStandIn, type KubeStandIn } from '../helpers/kube-apiserver.js';

const NS = 'demo';
const GW = { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' };
const AP = { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' };
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const strategic = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

/** Polls until `fn` holds (bounded: 5 s), so event-driven assertions wait for the event, not a clock. */
async function until(what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for: ${what}`);
}

/** The HTTP status of a rejected client call (ApiException.code, or a Watch error's statusCode). */
async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: number; statusCode?: number }).code ?? (err as { statusCode: number }).statusCode;
  }
  return 200;
}
const bodyOf = async (p: Promise<unknown>): Promise<{ reason?: string; message?: string }> => {
  try { await p; } catch (err) { return JSON.parse(String((err as { body: string }).body)) as { reason?: string; message?: string }; }
  return {};
};

const pod = (name: string, o: { labels?: Record<string, string>; nodeName?: string; sa?: string } = {}): V1Pod => ({
  metadata: { name, namespace: NS, labels: o.labels },
  spec: { containers: [{ name: 'app', image: 'app:1' }], nodeName: o.nodeName, serviceAccountName: o.sa },
});

let s: KubeStandIn;
let kc: KubeConfig;
let core: CoreV1Api;
let custom: CustomObjectsApi;

beforeEach(async () => {
  s = await startKubeStandIn({ bookmarkEveryMs: 50 });
  kc = new KubeConfig();
  kc.loadFromFile(s.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  custom = kc.makeApiClient(CustomObjectsApi);
  await core.createNamespace({ body: { metadata: { name: NS } } });
});
const stops: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of stops.splice(0)) await f();
  await s.close();
});

/** A started informer over pods in NS that restarts itself after an error, as a controller would. */
async function podInformer(extra: { labelSelector?: string; fieldSelector?: string } = {}) {
  const list = () => core.listNamespacedPod({ namespace: NS, labelSelector: extra.labelSelector, fieldSelector: extra.fieldSelector });
  const inf = extra.fieldSelector
    ? new ListWatch<V1Pod>(`/api/v1/namespaces/${NS}/pods`, new Watch(kc), list, false, extra.labelSelector, extra.fieldSelector)
    : makeInformer<V1Pod>(kc, `/api/v1/namespaces/${NS}/pods`, list, extra.labelSelector);
  const seen: string[] = [];
  let stopped = false;
  inf.on('add', (o) => seen.push(`add ${o.metadata!.name}`));
  inf.on('update', (o) => seen.push(`update ${o.metadata!.name}`));
  inf.on('delete', (o) => seen.push(`delete ${o.metadata!.name}`));
  inf.on('error', () => { if (!stopped) setTimeout(() => { if (!stopped) void inf.start(); }, 20); });
  stops.push(async () => { stopped = true; await inf.stop(); });
  await inf.start();
  const names = (): string[] => inf.list(NS).map((p) => p.metadata!.name!).sort();
  return { inf, seen, names };
}

/** A raw Watch collecting events until stopped. */
async function rawWatch(path: string, q: Record<string, string | number | boolean | undefined>) {
  const events: { type: string; obj: KubernetesObject & { code?: number; reason?: string } }[] = [];
  let done: unknown = 'open';
  const ctl = await new Watch(kc).watch(path, q, (type, obj) => events.push({ type, obj }), (err) => { done = err ?? null; });
  stops.push(() => ctl.abort());
  return { events, done: () => done };
}

describe('discovery', () => {
  it('answers /api, /api/v1, /apis, a group version and /version as the client parses them', async () => {
    expect((await kc.makeApiClient(CoreApi).getAPIVersions()).versions).toEqual(['v1']);
    const v1 = await core.getAPIResources();
    const byName = new Map(v1.resources.map((r) => [r.name, r]));
    expect(byName.get('pods')).toMatchObject({ namespaced: true, kind: 'Pod', verbs: expect.arrayContaining(['list', 'watch', 'create', 'patch']) });
    expect(byName.get('pods/status')).toMatchObject({ kind: 'Pod', verbs: ['get', 'patch', 'update'] });
    expect(byName.get('serviceaccounts/token')).toMatchObject({ kind: 'TokenRequest', group: 'authentication.k8s.io', verbs: ['create'] });
    expect(byName.get('namespaces')).toMatchObject({ namespaced: false });
    const groups = (await kc.makeApiClient(ApisApi).getAPIVersions()).groups.map((g) => g.name);
    expect(groups).toEqual(expect.arrayContaining(['discovery.k8s.io', 'security.istio.io', 'networking.istio.io', 'gateway.networking.k8s.io', 'authentication.k8s.io', 'apiextensions.k8s.io']));
    const gw = await custom.getAPIResources({ group: GW.group, version: GW.version });
    expect(gw.resources.map((r) => r.name).sort()).toEqual(['httproutes', 'httproutes/status']);
    expect((await kc.makeApiClient(VersionApi).getCode()).major).toBe('1');
  });

  it('a kind left out is 404 and absent from discovery, while the kinds served answer; creating its CRD serves it', async () => {
    const bare = await startKubeStandIn({ resources: KUBE_RESOURCES.filter((r) => r.kind !== 'HTTPRoute') });
    stops.push(() => bare.close());
    const bkc = new KubeConfig();
    bkc.loadFromFile(bare.kubeconfigPath);
    const bcustom = bkc.makeApiClient(CustomObjectsApi);
    expect((await bkc.makeApiClient(ApisApi).getAPIVersions()).groups.map((g) => g.name)).not.toContain(GW.group);
    expect(await codeOf(bcustom.listNamespacedCustomObject({ ...GW, namespace: 'default' }))).toBe(404);
    expect(await codeOf(bcustom.listNamespacedCustomObject({ ...AP, namespace: 'default' }))).toBe(200);
    const crd = s.get('apiextensions.k8s.io/v1', 'CustomResourceDefinition', undefined, 'httproutes.gateway.networking.k8s.io')!;
    bare.create({ ...crd, metadata: { name: crd.metadata.name } });
    expect(await codeOf(bcustom.listNamespacedCustomObject({ ...GW, namespace: 'default' }))).toBe(200);
  });

  it('refuses a request without the bearer token with 401, and a bad token too', async () => {
    const anon = new KubeConfig();
    const cluster = { name: 'c', server: s.url, caData: Buffer.from(s.caPem).toString('base64') };
    anon.loadFromOptions({ clusters: [cluster], users: [{ name: 'u', token: 'wrong' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
    expect(await codeOf(anon.makeApiClient(CoreV1Api).listNamespace())).toBe(401);
    expect(await codeOf(core.listNamespace())).toBe(200);
  });
});

describe('lists', () => {
  it('carries the resourceVersion, reads an exact older one, pages with limit/continue, and 410s a compacted one', async () => {
    await core.createNamespacedPod({ namespace: NS, body: pod('a') });
    const first = await core.listNamespacedPod({ namespace: NS });
    const rv1 = first.metadata!.resourceVersion!;
    expect(Number(rv1)).toBeGreaterThan(0);
    await core.createNamespacedPod({ namespace: NS, body: pod('b') });
    await core.createNamespacedPod({ namespace: NS, body: pod('c') });
    const now = await core.listNamespacedPod({ namespace: NS });
    expect(Number(now.metadata!.resourceVersion)).toBeGreaterThan(Number(rv1));
    expect(now.items.map((p) => p.metadata!.name)).toEqual(['a', 'b', 'c']);
    const old = await core.listNamespacedPod({ namespace: NS, resourceVersion: rv1, resourceVersionMatch: 'Exact' });
    expect(old.items.map((p) => p.metadata!.name)).toEqual(['a']);
    const page1 = await core.listNamespacedPod({ namespace: NS, limit: 2 });
    expect(page1.items.map((p) => p.metadata!.name)).toEqual(['a', 'b']);
    expect(page1.metadata!.remainingItemCount).toBe(1);
    const page2 = await core.listNamespacedPod({ namespace: NS, limit: 2, _continue: page1.metadata!._continue });
    expect(page2.items.map((p) => p.metadata!.name)).toEqual(['c']);
    expect(page2.metadata!._continue).toBeUndefined();
    s.compact();
    expect(await codeOf(core.listNamespacedPod({ namespace: NS, resourceVersion: rv1, resourceVersionMatch: 'Exact' }))).toBe(410);
    expect(await codeOf(core.listNamespacedPod({ namespace: NS, resourceVersion: now.metadata!.resourceVersion, resourceVersionMatch: 'Exact' }))).toBe(200);
  });
});

describe('informers and watches', () => {
  it('an informer receives add, update and delete', async () => {
    await core.createNamespacedPod({ namespace: NS, body: pod('before') });
    const { seen, names } = await podInformer();
    await until('initial list', () => seen.includes('add before'));
    await core.createNamespacedPod({ namespace: NS, body: pod('p') });
    await until('add', () => seen.includes('add p'));
    await core.patchNamespacedPod({ name: 'p', namespace: NS, body: { metadata: { labels: { v: '2' } } } }, merge);
    await until('update', () => seen.includes('update p'));
    await core.deleteNamespacedPod({ name: 'p', namespace: NS });
    await until('delete', () => seen.includes('delete p'));
    expect(names()).toEqual(['before']);
  });

  it('sends bookmarks to a watch that asks for them, not to one that does not', async () => {
    const rv = (await core.listNamespacedPod({ namespace: NS })).metadata!.resourceVersion;
    const marks = await rawWatch(`/api/v1/namespaces/${NS}/pods`, { resourceVersion: rv, allowWatchBookmarks: true });
    const plain = await rawWatch(`/api/v1/namespaces/${NS}/pods`, { resourceVersion: rv });
    await core.createNamespacedPod({ namespace: NS, body: pod('x') });
    await until('two bookmarks', () => marks.events.filter((e) => e.type === 'BOOKMARK').length >= 2);
    await until('plain watch sees the add', () => plain.events.some((e) => e.type === 'ADDED'));
    const mark = marks.events.find((e) => e.type === 'BOOKMARK')!;
    expect(mark.obj).toMatchObject({ kind: 'Pod', apiVersion: 'v1' });
    expect(Number(mark.obj.metadata!.resourceVersion)).toBeGreaterThanOrEqual(Number(rv));
    expect(plain.events.filter((e) => e.type === 'BOOKMARK')).toEqual([]);
  });

  it('ends a watch at timeoutSeconds', async () => {
    const w = await rawWatch(`/api/v1/namespaces/${NS}/pods`, { timeoutSeconds: 1 });
    await core.createNamespacedPod({ namespace: NS, body: pod('y') });
    await until('event', () => w.events.some((e) => e.type === 'ADDED'));
    await until('server ended the watch', () => w.done() === null);
  });

  it('a watch from a compacted resourceVersion gets a 410 Expired ERROR event; one from now streams', async () => {
    const old = (await core.listNamespacedPod({ namespace: NS })).metadata!.resourceVersion;
    await core.createNamespacedPod({ namespace: NS, body: pod('a') });
    s.compact();
    const now = (await core.listNamespacedPod({ namespace: NS })).metadata!.resourceVersion;
    const stale = await rawWatch(`/api/v1/namespaces/${NS}/pods`, { resourceVersion: old });
    const fresh = await rawWatch(`/api/v1/namespaces/${NS}/pods`, { resourceVersion: now });
    await until('410', () => stale.done() !== 'open');
    expect(stale.events).toEqual([{ type: 'ERROR', obj: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired' }) }]);
    await core.createNamespacedPod({ namespace: NS, body: pod('b') });
    await until('fresh watch streams', () => fresh.events.some((e) => e.type === 'ADDED' && e.obj.metadata!.name === 'b'));
    expect(fresh.events.map((e) => e.obj.metadata!.name)).toEqual(['b']);
  });

  it('after an outage without compaction the informer resumes from its resourceVersion and sees the changes made meanwhile', async () => {
    await core.createNamespacedPod({ namespace: NS, body: pod('gone') });
    const { seen, names } = await podInformer();
    await until('synced', () => seen.includes('add gone'));
    const lists = () => s.requests.filter((r) => r.method === 'GET' && r.path.startsWith(`/api/v1/namespaces/${NS}/pods`) && !r.path.includes('watch=')).length;
    const listsBefore = lists();
    await s.stop();
    s.create({ apiVersion: 'v1', kind: 'Pod', ...pod('during'), metadata: { name: 'during', namespace: NS } });
    s.delete('v1', 'Pod', NS, 'gone');
    await s.start();
    await until('replayed', () => seen.includes('add during') && seen.includes('delete gone'));
    expect(names()).toEqual(['during']);
    expect(lists()).toBe(listsBefore);
  });

  it('when the server ends its watches, the informer rewatches from its resourceVersion without relisting', async () => {
    const { seen } = await podInformer();
    await core.createNamespacedPod({ namespace: NS, body: pod('one') });
    await until('synced', () => seen.includes('add one'));
    const watchesBefore = s.requests.filter((r) => r.path.includes('watch=true')).length;
    const listsBefore = s.requests.filter((r) => r.method === 'GET' && !r.path.includes('watch=')).length;
    s.endWatches();
    await until('rewatched', () => s.requests.filter((r) => r.path.includes('watch=true')).length > watchesBefore);
    await core.createNamespacedPod({ namespace: NS, body: pod('two') });
    await until('still watching', () => seen.includes('add two'));
    expect(s.requests.filter((r) => r.method === 'GET' && !r.path.includes('watch=')).length).toBe(listsBefore);
  });

  it('after an outage with compaction the informer gets 410, relists, and ends with the right objects', async () => {
    await core.createNamespacedPod({ namespace: NS, body: pod('gone') });
    await core.createNamespacedPod({ namespace: NS, body: pod('kept') });
    const { seen, names } = await podInformer();
    await until('synced', () => seen.includes('add gone') && seen.includes('add kept'));
    await s.stop();
    s.create({ apiVersion: 'v1', kind: 'Pod', ...pod('during'), metadata: { name: 'during', namespace: NS } });
    s.delete('v1', 'Pod', NS, 'gone');
    s.compact();
    await s.start();
    await until('relisted', () => seen.includes('add during') && seen.includes('delete gone'));
    expect(names()).toEqual(['during', 'kept']);
    expect(s.requests.some((r) => r.path.includes('watch=true') && r.status === 200)).toBe(true);
    // After the relist it watches again: a later change still arrives.
    await core.createNamespacedPod({ namespace: NS, body: pod('later') });
    await until('later', () => seen.includes('add later'));
  });
});

describe('selectors', () => {
  beforeEach(async () => {
    await core.createNode({ body: { metadata: { name: 'node-1' } } });
    await core.createNamespacedPod({ namespace: NS, body: pod('a1', { labels: { app: 'a', tier: 'web' }, nodeName: 'node-1' }) });
    await core.createNamespacedPod({ namespace: NS, body: pod('a2', { labels: { app: 'a' }, nodeName: 'node-2' }) });
    await core.createNamespacedPod({ namespace: NS, body: pod('b1', { labels: { app: 'b' }, nodeName: 'node-1' }) });
    await core.createNamespacedPod({ namespace: NS, body: pod('none') });
    await core.patchNamespacedPodStatus({ name: 'b1', namespace: NS, body: { status: { phase: 'Running' } } }, merge);
  });
  const names = async (q: { labelSelector?: string; fieldSelector?: string }) =>
    (await core.listNamespacedPod({ namespace: NS, ...q })).items.map((p) => p.metadata!.name).sort();

  it('labelSelector on a list: =, ==, !=, in, notin, exists, !key, several, none matching', async () => {
    const rows: [string, string[]][] = [
      ['app=a', ['a1', 'a2']], ['app==a', ['a1', 'a2']], ['app!=a', ['b1', 'none']], ['app in (a,b)', ['a1', 'a2', 'b1']],
      ['app notin (a)', ['b1', 'none']], ['tier', ['a1']], ['!tier', ['a2', 'b1', 'none']], ['app=a,tier=web', ['a1']], ['app=c', []],
    ];
    for (const [sel, want] of rows) expect(await names({ labelSelector: sel }), sel).toEqual(want);
  });

  it('fieldSelector on a list: spec.nodeName, status.phase, metadata.name, metadata.namespace, !=, empty value', async () => {
    const rows: [string, string[]][] = [
      ['spec.nodeName=node-1', ['a1', 'b1']], ['spec.nodeName!=node-1', ['a2', 'none']], ['status.phase=Running', ['b1']],
      ['metadata.name=a2', ['a2']], ['metadata.namespace=demo,spec.nodeName=node-2', ['a2']], ['spec.nodeName=', ['none']],
    ];
    for (const [sel, want] of rows) expect(await names({ fieldSelector: sel }), sel).toEqual(want);
  });

  it('refuses a field label the kind does not index and a malformed label selector with 400, beside one that works', async () => {
    const bad = bodyOf(core.listNamespacedPod({ namespace: NS, fieldSelector: 'spec.foo=x' }));
    expect((await bad).message).toContain('field label not supported: spec.foo');
    expect(await codeOf(core.listNamespacedPod({ namespace: NS, fieldSelector: 'spec.foo=x' }))).toBe(400);
    expect(await codeOf(core.listNamespace({ fieldSelector: 'spec.nodeName=x' }))).toBe(400);
    expect(await codeOf(core.listNamespacedPod({ namespace: NS, labelSelector: 'app in (a' }))).toBe(400);
    expect(await codeOf(core.listNamespacedPod({ namespace: NS, fieldSelector: 'spec.nodeName=node-1' }))).toBe(200);
  });

  it('a field-selected watch sees pods entering and leaving its selector, and no others', async () => {
    const { seen, names: cached } = await podInformer({ fieldSelector: 'spec.nodeName=node-1', labelSelector: 'app' });
    await until('synced', () => seen.length === 2);
    expect(cached()).toEqual(['a1', 'b1']);
    await core.createNamespacedPod({ namespace: NS, body: pod('other-node', { labels: { app: 'c' }, nodeName: 'node-2' }) });
    await core.createNamespacedPod({ namespace: NS, body: pod('unlabelled', { nodeName: 'node-1' }) });
    await core.createNamespacedPod({ namespace: NS, body: pod('late', { labels: { app: 'c' } }) });
    await core.createNamespacedPodBinding({ name: 'late', namespace: NS, body: { metadata: { name: 'late' }, target: { kind: 'Node', name: 'node-1' } } });
    await until('entered', () => seen.includes('add late'));
    await core.patchNamespacedPod({ name: 'a1', namespace: NS, body: [{ op: 'remove', path: '/metadata/labels/app' }] });
    await until('left', () => seen.includes('delete a1'));
    expect(cached()).toEqual(['b1', 'late']);
    expect(seen.filter((e) => e.includes('other-node') || e.includes('unlabelled'))).toEqual([]);
  });
});

describe('writes', () => {
  it('create, AlreadyExists, generateName, missing namespace', async () => {
    const p = await core.createNamespacedPod({ namespace: NS, body: pod('w') });
    expect(p.metadata).toMatchObject({ name: 'w', namespace: NS, generation: 1 });
    expect(p.metadata!.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.metadata!.creationTimestamp).toBeInstanceOf(Date);
    expect(p.status?.phase).toBe('Pending');
    const again = bodyOf(core.createNamespacedPod({ namespace: NS, body: pod('w') }));
    expect(await again).toMatchObject({ reason: 'AlreadyExists', message: 'pods "w" already exists' });
    const gen = await core.createNamespacedPod({ namespace: NS, body: { ...pod(''), metadata: { generateName: 'gen-' } } });
    expect(gen.metadata!.name).toMatch(/^gen-[a-z0-9]{5}$/);
    expect(await codeOf(core.createNamespacedPod({ namespace: 'nowhere', body: { ...pod('x'), metadata: { name: 'x' } } }))).toBe(404);
  });

  it('update: 409 Conflict on a stale resourceVersion, accepted on the current one, generation bumps on spec changes', async () => {
    const svc = await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'web' }, spec: { selector: { app: 'web' }, ports: [{ port: 80 }] } } });
    expect(svc.spec!.clusterIP).toMatch(/^10\.96\./);
    const stale = structuredClone(svc);
    const fresh = await core.replaceNamespacedService({ name: 'web', namespace: NS, body: { ...svc, spec: { ...svc.spec, ports: [{ port: 8080 }] } } });
    expect(fresh.metadata!.generation).toBe(2);
    expect(fresh.spec!.clusterIP).toBe(svc.spec!.clusterIP);
    expect(fresh.spec!.ports![0]!.targetPort).toBe(8080);
    const conflict = bodyOf(core.replaceNamespacedService({ name: 'web', namespace: NS, body: { ...stale, metadata: { ...stale.metadata, labels: { x: 'y' } } } }));
    expect(await conflict).toMatchObject({ reason: 'Conflict' });
    const labelled = await core.replaceNamespacedService({ name: 'web', namespace: NS, body: { ...fresh, metadata: { ...fresh.metadata, labels: { x: 'y' } } } });
    expect(labelled.metadata!.labels).toEqual({ x: 'y' });
    expect(labelled.metadata!.generation).toBe(2);
  });

  it('merge, JSON and strategic merge patches; a patch with a stale resourceVersion is a 409', async () => {
    const p = await core.createNamespacedPod({ namespace: NS, body: pod('m', { labels: { a: '1', b: '2' } }) });
    const merged = await core.patchNamespacedPod({ name: 'm', namespace: NS, body: { metadata: { labels: { b: null, c: '3' } } } }, merge);
    expect(merged.metadata!.labels).toEqual({ a: '1', c: '3' });
    const jsonPatched = await core.patchNamespacedPod({ name: 'm', namespace: NS, body: [{ op: 'add', path: '/metadata/annotations', value: { k: 'v' } }] });
    expect(jsonPatched.metadata!.annotations).toEqual({ k: 'v' });
    await core.patchNamespacedPodStatus({ name: 'm', namespace: NS, body: { status: { conditions: [{ type: 'Ready', status: 'False' }, { type: 'PodScheduled', status: 'True' }] } } }, merge);
    const smp = await core.patchNamespacedPodStatus({ name: 'm', namespace: NS, body: { status: { conditions: [{ type: 'Ready', status: 'True' }] } } }, strategic);
    expect(smp.status!.conditions!.map((c) => `${c.type}=${c.status}`)).toEqual(['Ready=True', 'PodScheduled=True']);
    const stale = bodyOf(core.patchNamespacedPod({ name: 'm', namespace: NS, body: { metadata: { resourceVersion: p.metadata!.resourceVersion, labels: { d: '4' } } } }, merge));
    expect(await stale).toMatchObject({ reason: 'Conflict' });
  });

  it('the status subresource: status writes go through /status, status in a main update is ignored', async () => {
    await core.createNamespacedPod({ namespace: NS, body: { ...pod('st'), status: { phase: 'Running' } } });
    expect((await core.readNamespacedPod({ name: 'st', namespace: NS })).status!.phase).toBe('Pending');
    const running = await core.patchNamespacedPodStatus({ name: 'st', namespace: NS, body: { status: { phase: 'Running', podIP: '10.0.0.5' } } }, merge);
    expect(running.status).toMatchObject({ phase: 'Running', podIP: '10.0.0.5' });
    const cur = await core.readNamespacedPod({ name: 'st', namespace: NS });
    const main = await core.replaceNamespacedPod({ name: 'st', namespace: NS, body: { ...cur, status: { phase: 'Failed' } } });
    expect(main.status!.phase).toBe('Running');
    await custom.createNamespacedCustomObject({ ...GW, namespace: NS, body: { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r' }, spec: { parentRefs: [{ name: 'waypoint' }] } } });
    const parents = [{ parentRef: { name: 'waypoint' }, controllerName: 'nodemesh.io/controller', conditions: [{ type: 'Accepted', status: 'True' }] }];
    const route = await custom.patchNamespacedCustomObjectStatus({ ...GW, namespace: NS, name: 'r', body: { status: { parents } } }, merge);
    expect(route.status.parents).toEqual(parents);
    expect(route.metadata.generation).toBe(1);
    await custom.createNamespacedCustomObject({ ...AP, namespace: NS, body: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny' }, spec: { action: 'DENY' } } });
    const ap = await custom.replaceNamespacedCustomObjectStatus({ ...AP, namespace: NS, name: 'deny', body: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'deny' }, spec: { action: 'ALLOW' }, status: { conditions: [{ type: 'ZtunnelAccepted', status: 'True' }] } } });
    expect(ap.spec.action).toBe('DENY');
    expect(ap.status.conditions[0].type).toBe('ZtunnelAccepted');
  });

  it('delete removes the object (then 404), and deleting a namespace removes what it held', async () => {
    await core.createNamespacedPod({ namespace: NS, body: pod('d') });
    await core.createNamespacedPod({ namespace: NS, body: pod('e') });
    await core.deleteNamespacedPod({ name: 'd', namespace: NS });
    expect(await codeOf(core.readNamespacedPod({ name: 'd', namespace: NS }))).toBe(404);
    expect(await codeOf(core.readNamespacedPod({ name: 'e', namespace: NS }))).toBe(200);
    expect(await codeOf(core.deleteNamespacedPod({ name: 'd', namespace: NS }))).toBe(404);
    await core.deleteNamespace({ name: NS });
    expect(s.list('v1', 'Pod', NS)).toEqual([]);
    expect(s.list('v1', 'Pod', 'default')).toEqual([]);
    expect(s.get('v1', 'Namespace', undefined, 'default')).toBeDefined();
  });
});

describe('TokenRequest and TokenReview', () => {
  const auth = () => kc.makeApiClient(AuthenticationV1Api);
  const review = async (token: string, audiences?: string[]) => (await auth().createTokenReview({ body: { spec: { token, audiences } } })).status!;
  beforeEach(async () => {
    await core.createNode({ body: { metadata: { name: 'node-1' } } });
    await core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'agent' } } });
    await core.createNamespacedPod({ namespace: NS, body: pod('agent-x', { sa: 'agent', nodeName: 'node-1' }) });
  });
  const request = (o: { audiences?: string[]; expirationSeconds?: number; bind?: boolean } = {}) =>
    core.createNamespacedServiceAccountToken({
      name: 'agent', namespace: NS,
      body: { spec: { audiences: o.audiences ?? ['nodemesh'], expirationSeconds: o.expirationSeconds ?? 600, boundObjectRef: o.bind === false ? undefined : { kind: 'Pod', apiVersion: 'v1', name: 'agent-x' } } },
    });

  it('mints a pod-bound JWT with the real claims, which TokenReview authenticates with the pod and node in extra', async () => {
    const tr = await request();
    const token = tr.status!.token!;
    const podObj = s.get('v1', 'Pod', NS, 'agent-x')!;
    const node = s.get('v1', 'Node', undefined, 'node-1')!;
    const sa = s.get('v1', 'ServiceAccount', NS, 'agent')!;
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({
      iss: KUBE_ISSUER, aud: ['nodemesh'], sub: `system:serviceaccount:${NS}:agent`,
      'kubernetes.io': { namespace: NS, serviceaccount: { name: 'agent', uid: sa.metadata.uid }, pod: { name: 'agent-x', uid: podObj.metadata.uid }, node: { name: 'node-1', uid: node.metadata.uid } },
    });
    expect(claims.exp! - claims.iat!).toBe(600);
    expect(claims.nbf).toBe(claims.iat);
    const st = await review(token, ['nodemesh']);
    expect(st.authenticated).toBe(true);
    expect(st.audiences).toEqual(['nodemesh']);
    expect(st.user).toMatchObject({
      username: `system:serviceaccount:${NS}:agent`, uid: sa.metadata.uid,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'],
    });
    expect(st.user!.extra).toMatchObject({
      'authentication.kubernetes.io/pod-name': ['agent-x'], 'authentication.kubernetes.io/pod-uid': [podObj.metadata.uid],
      'authentication.kubernetes.io/node-name': ['node-1'], 'authentication.kubernetes.io/node-uid': [node.metadata.uid],
    });
  });

  it('rejects a token for another audience, beside the same token for its own', async () => {
    const token = (await request()).status!.token!;
    const wrong = await review(token, ['someone-else']);
    expect(wrong.authenticated).toBeFalsy();
    expect(wrong.error).toContain('audiences');
    expect((await review(token, ['nodemesh'])).authenticated).toBe(true);
    // Without audiences the API server's own is meant, which a nodemesh-audience token is not for.
    expect((await review(token)).authenticated).toBeFalsy();
  });

  it('rejects an expired token, beside a fresh one; refuses under 10 minutes through the API', async () => {
    const old = await s.requestToken(NS, 'agent', { audiences: ['nodemesh'], boundPod: 'agent-x', expirationSeconds: 600, issuedAt: new Date(Date.now() - 3_600_000) });
    const st = await review(old.token, ['nodemesh']);
    expect(st.authenticated).toBeFalsy();
    expect(st.error).toContain('expired');
    const fresh = await s.requestToken(NS, 'agent', { audiences: ['nodemesh'], boundPod: 'agent-x' });
    expect((await review(fresh.token, ['nodemesh'])).authenticated).toBe(true);
    expect(await codeOf(request({ expirationSeconds: 599 }))).toBe(422);
  });

  it('rejects a token bound to a pod deleted since, while it was accepted before', async () => {
    const token = (await request()).status!.token!;
    expect((await review(token, ['nodemesh'])).authenticated).toBe(true);
    await core.deleteNamespacedPod({ name: 'agent-x', namespace: NS });
    const st = await review(token, ['nodemesh']);
    expect(st.authenticated).toBeFalsy();
    expect(st.error).toContain('invalidated');
    // A pod of the same name made again is another pod: the old token stays dead.
    await core.createNamespacedPod({ namespace: NS, body: pod('agent-x', { sa: 'agent', nodeName: 'node-1' }) });
    expect((await review(token, ['nodemesh'])).authenticated).toBeFalsy();
  });

  it('a token for the API audience authenticates to the API itself (the in-cluster credential); one for another audience does not', async () => {
    const asUser = (token: string) => {
      const k = new KubeConfig();
      k.loadFromOptions({ clusters: [{ name: 'c', server: s.url, caData: Buffer.from(s.caPem).toString('base64') }], users: [{ name: 'u', token }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
      return k.makeApiClient(CoreV1Api);
    };
    const apiToken = (await request({ audiences: [], bind: false })).status!.token!;
    expect(await codeOf(asUser(apiToken).listNamespacedPod({ namespace: NS }))).toBe(200);
    const meshToken = (await request()).status!.token!;
    expect(await codeOf(asUser(meshToken).listNamespacedPod({ namespace: NS }))).toBe(401);
  });
});

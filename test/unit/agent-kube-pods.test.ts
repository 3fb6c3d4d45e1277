// The agent's pod watch (src/agent/kube-pods.ts) against the stand-in API server
// (test/helpers/kube-apiserver.ts: no kube-apiserver runs here, so a stand-in speaks its wire
// protocol and the real @kubernetes/client-node drives it), with the netns finder and the
// enrollment injected so no root is needed: which pods it adopts, enrolls later and unenrolls,
// that removals wait for the first lists, that a 410 relist or the API going away keeps what is
// enrolled, that bad input is named and harms no other pod, and that a pod adopted while its CNI
// ADD enrolls it is enrolled once (the real Enroller). The /proc scan has its own tests on a
// fake procfs.
import { mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { agentCommand } from '../../src/cli/agent.js';
import { cniEnrollment, enrollPod, type CniContext, type PodEnrollment, type StillRunning } from '../../src/agent/cni-handler.js';
import { Enroller, type RedirectBackend } from '../../src/agent/enrollment.js';
import { PodWatch, type PodWatchOptions } from '../../src/agent/kube-pods.js';
import { localAddresses, netnsFinder, type NetnsFinder } from '../../src/agent/netns-find.js';
import type { PodMeta } from '../../src/agent/podsource.js';
import { LocalWorkloads } from '../../src/agent/workloads.js';
import { KubeApi, loadKubeConfig } from '../../src/kube/index.js';
import type { NodeProxy } from '../../src/proxy/index.js';
import { MeshMetrics } from '../../src/telemetry/index.js';
import { startKubeStandIn, type KubeObject, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { testTempDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/xds.js';

const AMBIENT = { 'nodemesh.io/dataplane-mode': 'ambient' };
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function pod(ns: string, name: string, o: { ip?: string; node?: string; phase?: string; labels?: Record<string, string>; annotations?: Record<string, string>; hostNetwork?: boolean } = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: o.labels ?? { app: name }, ...(o.annotations ? { annotations: o.annotations } : {}) },
    spec: { nodeName: o.node ?? 'n1', serviceAccountName: name, ...(o.hostNetwork ? { hostNetwork: true } : {}), containers: [{ name: 'app', image: 'nginx' }] },
    // create() keeps the status, as if the kubelet had written it.
    status: { phase: o.phase ?? 'Running', ...(o.ip ? { podIP: o.ip, podIPs: [{ ip: o.ip }] } : {}) },
  };
}

interface Enrolled {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  enrolledAt: string;
  netnsPath: string;
}

/** Enrollment as a list: what the watch enrolled and released, in order. */
class FakeEnrollment implements PodEnrollment {
  readonly pods = new Map<string, Enrolled>();
  readonly calls: string[] = [];
  readonly released: { uid: string; stillRuns?: StillRunning }[] = [];
  /** Makes enroll() throw for a pod name, as when its netns goes between lookup and enroll. */
  failFor = new Map<string, string>();

  enrolled(): Enrolled[] {
    return [...this.pods.values()];
  }

  async enroll(p: { ip: string; netnsPath: string }, meta: PodMeta): Promise<void> {
    this.calls.push(`enroll ${meta.namespace}/${meta.name}`);
    const why = this.failFor.get(meta.name);
    if (why) throw new Error(why);
    this.pods.set(meta.uid, { uid: meta.uid, namespace: meta.namespace, name: meta.name, ip: p.ip, enrolledAt: new Date().toISOString(), netnsPath: p.netnsPath });
  }

  async release(uid: string, stillRuns?: StillRunning): Promise<void> {
    const p = this.pods.get(uid);
    this.calls.push(`release ${p ? `${p.namespace}/${p.name}` : uid}`);
    this.released.push({ uid, ...(stillRuns ? { stillRuns } : {}) });
    this.pods.delete(uid);
  }

  names(): string[] {
    return [...this.pods.values()].map((p) => `${p.namespace}/${p.name}`).sort();
  }
}

/** Finds /fake/netns/<ip> for every IP except those in `missing`; records what it was asked. */
function fakeFinder(missing = new Set<string>()): NetnsFinder & { asked: string[] } {
  const asked: string[] = [];
  const f = async (pods: readonly { uid: string; ip: string }[]) => {
    asked.push(...pods.map((p) => p.ip));
    return new Map(pods.map((p) => [p.uid, missing.has(p.ip) ? { error: `no network namespace holds ${p.ip}` } : { netnsPath: `/fake/netns/${p.ip}` }]));
  };
  return Object.assign(f, { asked });
}

function captureLog(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { logger: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

/** A stand-in API server for one test (stopped after it). */
async function standIn(...objects: KubeObject[]): Promise<KubeStandIn> {
  const api = await startKubeStandIn({ bookmarkEveryMs: 200 });
  cleanups.push(() => api.close());
  for (const o of objects) api.create(o);
  return api;
}

const MESH: KubeObject = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: AMBIENT } };

async function env(o: Partial<PodWatchOptions> & { api?: KubeStandIn } = {}) {
  const api = o.api ?? (await standIn());
  const enrollment = (o.enrollment as FakeEnrollment | undefined) ?? new FakeEnrollment();
  const finder = (o.findNetns as ReturnType<typeof fakeFinder> | undefined) ?? fakeFinder();
  const { logger, lines } = captureLog();
  const watch = new PodWatch(new KubeApi(loadKubeConfig({ kubeconfig: api.kubeconfigPath })), {
    node: 'n1', log: logger, backoffMs: 30, maxBackoffMs: 200, debounceMs: 5, retryMs: 30, maxRetryMs: 200, ...o, enrollment, findNetns: finder,
  });
  cleanups.push(() => watch.stop());
  return { api, watch, enrollment, finder, lines };
}

const labelNs = (api: KubeStandIn, name: string, labels: Record<string, string>) =>
  api.update({ ...api.get('v1', 'Namespace', undefined, name)!, metadata: { ...api.get('v1', 'Namespace', undefined, name)!.metadata, labels } });
const labelPod = (api: KubeStandIn, ns: string, name: string, labels: Record<string, string>) => {
  const p = api.get('v1', 'Pod', ns, name)!;
  api.update({ ...p, metadata: { ...p.metadata, labels } });
};
const uid = (api: KubeStandIn, ns: string, name: string) => api.get('v1', 'Pod', ns, name)!.metadata.uid as string;

describe('the agent pod watch: adopt, enroll later, unenroll', () => {
  it('adopts the running pods of its node that opted in, and no other pod, once the API has listed them', async () => {
    const api = await standIn(
      MESH,
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'plain' } },
      pod('mesh', 'a', { ip: '10.1.0.2' }),
    );
    api.create(pod('mesh', 'b', { ip: '10.1.0.3', phase: 'Pending' })); // initialising, with its IP
    api.create(pod('mesh', 'noip', { phase: 'Pending' }));
    api.create(pod('mesh', 'host', { ip: '192.168.0.10', hostNetwork: true }));
    api.create(pod('mesh', 'done', { ip: '10.1.0.4', phase: 'Succeeded' }));
    api.create(pod('mesh', 'optout', { ip: '10.1.0.5', labels: { 'nodemesh.io/dataplane-mode': 'none' } }));
    api.create(pod('plain', 'c', { ip: '10.1.0.6' }));
    api.create(pod('plain', 'optin', { ip: '10.1.0.7', labels: AMBIENT }));
    api.create(pod('mesh', 'elsewhere', { ip: '10.2.0.2', node: 'n2' }));
    const { watch, enrollment, finder } = await env({ api });
    expect(watch.synced).toBe(false);
    watch.start();
    await waitFor(() => enrollment.pods.size === 3, 'three pods adopted');
    await watch.settled();
    expect(enrollment.names()).toEqual(['mesh/a', 'mesh/b', 'plain/optin']);
    expect(enrollment.calls.sort()).toEqual(['enroll mesh/a', 'enroll mesh/b', 'enroll plain/optin']);
    expect(enrollment.pods.get(uid(api, 'mesh', 'a'))).toMatchObject({ ip: '10.1.0.2', netnsPath: '/fake/netns/10.1.0.2' });
    // The netns was looked for only for pods to adopt (not noip, host, done, optout, c, elsewhere).
    expect(finder.asked.sort()).toEqual(['10.1.0.2', '10.1.0.3', '10.1.0.7']);
    expect(watch.status()).toMatchObject({ node: 'n1', synced: true, podsSeen: 8, adopted: 3, unenrolled: 0, notAdopted: [], watch: { pods: 'ok', namespaces: 'ok' } });
    // Only this node's pods were asked for, on list and on watch.
    const podRequests = () => api.requests.filter((r) => r.path.startsWith('/api/v1/pods?'));
    await waitFor(() => podRequests().some((r) => r.path.includes('watch=true')), 'the pod watch');
    expect(podRequests().some((r) => !r.path.includes('watch=true'))).toBe(true);
    for (const r of podRequests()) expect(decodeURIComponent(r.path)).toContain('fieldSelector=spec.nodeName=n1');
  });

  it('enrolls a pod whose namespace or own label opts in later, and unenrolls pods that opt out', async () => {
    const api = await standIn(
      MESH,
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'late' } },
      pod('mesh', 'a', { ip: '10.1.0.2' }),
      pod('late', 'c', { ip: '10.1.0.6' }),
      pod('late', 'd', { ip: '10.1.0.8' }),
    );
    const { watch, enrollment } = await env({ api });
    watch.start();
    await waitFor(() => enrollment.pods.size === 1, 'mesh/a adopted');
    await watch.settled();
    expect(enrollment.names()).toEqual(['mesh/a']);

    labelNs(api, 'late', AMBIENT);
    await waitFor(() => enrollment.pods.size === 3, 'the late namespace enrolled');
    expect(enrollment.names()).toEqual(['late/c', 'late/d', 'mesh/a']);

    // A pod's own label beats its namespace's.
    labelPod(api, 'late', 'c', { 'nodemesh.io/dataplane-mode': 'none' });
    await waitFor(() => !enrollment.names().includes('late/c'), 'late/c unenrolled');
    expect(enrollment.released.at(-1)).toEqual({ uid: uid(api, 'late', 'c'), stillRuns: expect.objectContaining({ namespace: 'late', name: 'c', ip: '10.1.0.6', meta: expect.objectContaining({ ambient: false }) }) });
    // The namespace label removed: its pod without a label of its own leaves; a pod still opted in stays.
    labelNs(api, 'mesh', {});
    await waitFor(() => !enrollment.names().includes('mesh/a'), 'mesh/a unenrolled');
    await watch.settled();
    expect(enrollment.names()).toEqual(['late/d']);
    // And a pod labelled in again comes back.
    labelPod(api, 'late', 'c', AMBIENT);
    await waitFor(() => enrollment.names().includes('late/c'), 'late/c enrolled again');
    expect(watch.status()).toMatchObject({ adopted: 4, unenrolled: 2 });
  });

  it('unenrolls pods the API deleted, but only once both informers have listed, and never one newer than the list', async () => {
    const api = await standIn(
      MESH,
      pod('mesh', 'a', { ip: '10.1.0.2' }),
    );
    const enrollment = new FakeEnrollment();
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString();
    // Enrolled before the agent's first list (a record of a previous agent) and gone from the API since.
    enrollment.pods.set('u-ghost', { uid: 'u-ghost', namespace: 'mesh', name: 'ghost', ip: '10.1.0.9', enrolledAt: hourAgo, netnsPath: '/x' });
    // Enrolled by a CNI ADD after the list began: the API may simply not have shown it yet.
    enrollment.pods.set('u-new', { uid: 'u-new', namespace: 'mesh', name: 'new', ip: '10.1.0.10', enrolledAt: new Date(Date.now() + 3_600_000).toISOString(), netnsPath: '/y' });
    await api.stop();
    const { watch, lines } = await env({ api, enrollment });
    watch.start();
    await waitFor(() => watch.status().lastError !== null, 'the unreachable API noted');
    await new Promise((r) => setTimeout(r, 150)); // several retries while the API is away
    expect(enrollment.calls).toEqual([]);
    expect(watch.status()).toMatchObject({ synced: false, watch: { pods: 'failing' } });
    expect(watch.status().lastError!.message).toMatch(/^(pods|namespaces): /);
    expect(lines.some((l) => l.level === 40 && /cannot list or watch/.test(String(l.msg)))).toBe(true);

    await api.start();
    await waitFor(() => watch.synced && !enrollment.pods.has('u-ghost'), 'the ghost unenrolled after the first lists');
    await watch.settled();
    expect(enrollment.names()).toEqual(['mesh/a', 'mesh/new']);
    expect([...enrollment.calls].sort()).toEqual(['enroll mesh/a', 'release mesh/ghost']);
    expect(enrollment.released).toEqual([{ uid: 'u-ghost' }]); // gone: not kept as a running pod

    // A pod deleted through the API (a DELETE on the watch) leaves the mesh.
    api.delete('v1', 'Pod', 'mesh', 'a');
    await waitFor(() => !enrollment.names().includes('mesh/a'), 'mesh/a unenrolled after its deletion');
    await watch.settled();
    expect(enrollment.names()).toEqual(['mesh/new']);
    expect(lines.some((l) => l.pod === 'mesh/a' && /the API no longer has it/.test(String(l.msg)))).toBe(true);
  });

  it('keeps what is enrolled across a 410 relist and while the API is away, and follows changes after either', async () => {
    const api = await standIn(
      MESH,
      pod('mesh', 'a', { ip: '10.1.0.2' }),
      pod('mesh', 'b', { ip: '10.1.0.3' }),
      pod('mesh', 'z', { ip: '10.1.0.4' }),
    );
    const { watch, enrollment } = await env({ api });
    watch.start();
    await waitFor(() => enrollment.pods.size === 3, 'all three adopted');
    const lists = () => api.requests.filter((r) => r.path.startsWith('/api/v1/pods?') && !r.path.includes('watch=true')).length;
    const before = lists();

    // The watches cut, a pod deleted meanwhile, history forgotten: reconnecting from the old
    // resourceVersion answers 410 Expired and the informer relists.
    await api.stop();
    api.delete('v1', 'Pod', 'mesh', 'z');
    api.compact();
    await api.start();
    await waitFor(() => lists() > before, 'a relist after 410 Gone');
    await waitFor(() => !enrollment.names().includes('mesh/z'), 'the pod deleted during the expiry unenrolled');
    await watch.settled();
    expect(enrollment.calls.filter((c) => c.startsWith('release'))).toEqual(['release mesh/z']);
    expect(enrollment.names()).toEqual(['mesh/a', 'mesh/b']);
    labelPod(api, 'mesh', 'b', { 'nodemesh.io/dataplane-mode': 'none' });
    await waitFor(() => enrollment.names().join() === 'mesh/a', 'mesh/b unenrolled after the relist');

    // The API goes away: nothing is unenrolled, the status says so, and changes after its return are followed.
    await api.stop();
    await waitFor(() => watch.status().watch.pods === 'failing' || watch.status().watch.namespaces === 'failing', 'the informers failing');
    await new Promise((r) => setTimeout(r, 150));
    expect(enrollment.names()).toEqual(['mesh/a']);
    expect(watch.status()).toMatchObject({ synced: true, lastError: { message: expect.any(String), at: expect.any(String) } });
    await api.start();
    labelPod(api, 'mesh', 'b', AMBIENT);
    await waitFor(() => enrollment.names().join() === 'mesh/a,mesh/b', 'mesh/b enrolled again after the API returned');
    await waitFor(() => watch.status().watch.pods === 'ok' && watch.status().watch.namespaces === 'ok', 'both informers ok again');
    expect(enrollment.calls.filter((c) => c === 'release mesh/a')).toEqual([]);
  });
});

describe('the agent pod watch: bad input', () => {
  it('names a pod it cannot adopt (no netns, netns gone before enroll, a bad annotation), retries it, and adopts the others', async () => {
    const api = await standIn(
      MESH,
      pod('mesh', 'good', { ip: '10.1.0.2' }),
      pod('mesh', 'nons', { ip: '10.1.0.3' }),
      pod('mesh', 'gone', { ip: '10.1.0.4' }),
      pod('mesh', 'badann', { ip: '10.1.0.5', annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': 'eighty' } }),
    );
    const missing = new Set(['10.1.0.3']);
    const enrollment = new FakeEnrollment();
    enrollment.failFor.set('gone', 'network namespace /fake/netns/10.1.0.4 does not exist');
    const { watch, lines } = await env({ api, enrollment, findNetns: fakeFinder(missing) });
    watch.start();
    await waitFor(() => watch.status().notAdopted.length === 3, 'three pods not adopted');
    expect(enrollment.names()).toEqual(['mesh/good']);
    const warned = (pod: string) => lines.filter((l) => l.pod === pod && l.level === 40 && /cannot adopt/.test(String(l.msg)));
    expect(warned('mesh/nons')[0]).toMatchObject({ err: 'no network namespace holds 10.1.0.3' });
    expect(warned('mesh/gone')[0]).toMatchObject({ err: expect.stringContaining('does not exist') });
    expect(warned('mesh/badann')[0]).toMatchObject({ err: expect.stringContaining('excludeInboundPorts') });
    // Retried with backoff, and named once per distinct error, not once per retry.
    await waitFor(() => watch.status().notAdopted.every((f) => f.attempts >= 3), 'retries');
    expect(warned('mesh/nons')).toHaveLength(1);
    // The cause goes away: it is adopted at the next retry, without any API change.
    missing.clear();
    enrollment.failFor.clear();
    await waitFor(() => enrollment.names().length === 3, 'nons and gone adopted on retry');
    expect(enrollment.names()).toEqual(['mesh/gone', 'mesh/good', 'mesh/nons']);
    expect(watch.status().notAdopted.map((f) => f.pod)).toEqual(['mesh/badann']);
    // A pod that left the API is no longer retried.
    api.delete('v1', 'Pod', 'mesh', 'badann');
    await waitFor(() => watch.status().notAdopted.length === 0, 'badann forgotten');
  });

  it('survives a netns finder that throws, and a Pod it cannot read, without touching enrolled pods', async () => {
    const api = await standIn(
      MESH,
      pod('mesh', 'a', { ip: '10.1.0.2' }),
    );
    let broken = true;
    const finder = fakeFinder();
    const flaky: NetnsFinder = async (p) => {
      if (broken) throw new Error('EMFILE: too many open files, scandir /proc');
      return finder(p);
    };
    const { watch, enrollment, lines } = await env({ api, findNetns: flaky });
    watch.start();
    await waitFor(() => watch.status().notAdopted.length === 1, 'the failed lookup noted');
    expect(watch.status().notAdopted[0]).toMatchObject({ pod: 'mesh/a', error: expect.stringContaining('EMFILE') });
    broken = false;
    await waitFor(() => enrollment.names().join() === 'mesh/a', 'adopted once the finder works');
    // A Pod whose labels are not strings: logged with its name, the enrolled pod untouched.
    const a = api.get('v1', 'Pod', 'mesh', 'a')!;
    api.update({ ...a, metadata: { ...a.metadata, labels: { app: 7 as unknown as string } } });
    await waitFor(() => lines.some((l) => l.pod === 'mesh/a' && /not readable/.test(String(l.msg))), 'the bad pod named');
    await watch.settled();
    expect(enrollment.names()).toEqual(['mesh/a']);
    expect(enrollment.calls.filter((c) => c.startsWith('release'))).toEqual([]);
  });
});

describe('the pod watch and the CNI ADD together', () => {
  /** The real Enroller over a fake kernel side and proxy, and a CNI context around it. */
  function realEnrollment(hold: Promise<void>, podUid: string) {
    const root = testTempDir('nm-kube-pods-');
    const netns = join(root, 'netns-bind');
    mkdirSync(netns);
    // The same namespace by a second path, as /proc/<pid>/ns/net is for a /run/netns bind mount.
    symlinkSync(netns, join(root, 'proc-ns-net'));
    mkdirSync(join(root, 'kubepods', `pod${podUid}`), { recursive: true });
    const pinned = new Set<string>();
    const redirect: RedirectBackend = {
      attachPod: async (s) => void pinned.add(s.uid),
      detachPod: async (u) => void pinned.delete(u),
      listPinnedPods: () => [...pinned],
      podAttachment: (u) => (pinned.has(u) ? { links: ['connect4'] } : null),
      registerInboundListener: () => {},
    };
    let listens = 0;
    const proxy = { addPod: async () => { listens++; await hold; }, removePod: async () => {} } as unknown as NodeProxy;
    const log = pino({ level: 'silent' });
    const enroller = new Enroller({ redirect, proxy, podsDir: join(root, 'pods'), cgroupRoot: root, log });
    const ctx: CniContext = {
      enroller, workloads: new LocalWorkloads(), cp: undefined, podSource: undefined, trustDomain: undefined, workloadWaitMs: undefined,
      metrics: new MeshMetrics(), log, remember: () => {}, requestCert: () => {},
    };
    return { ctx, enroller, bind: netns, viaProc: join(root, 'proc-ns-net'), listens: () => listens };
  }

  it('enrolls a pod once when the watch adopts it while its CNI ADD is enrolling it (one netns by two paths)', async () => {
    const api = await standIn(
      MESH,
      pod('mesh', 'a', { ip: '10.1.0.2' }),
    );
    let release!: () => void;
    const e = realEnrollment(new Promise<void>((r) => (release = r)), uid(api, 'mesh', 'a'));
    expect(statSync(e.viaProc).ino).toBe(statSync(e.bind).ino);
    const meta: PodMeta = { uid: uid(api, 'mesh', 'a'), namespace: 'mesh', name: 'a', serviceAccount: 'a', labels: {}, annotations: {}, ambient: true };
    // The CNI ADD first: its listeners are held open mid-enrollment while the watch runs.
    const add = enrollPod(e.ctx, { ip: '10.1.0.2', netnsPath: e.bind, containerId: 'sandbox-1', exclusions: { excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] } }, { ...meta, labels: { app: 'a' } });
    const finder: NetnsFinder = async (pods) => new Map(pods.map((p) => [p.uid, { netnsPath: e.viaProc }]));
    const { watch } = await env({ api, enrollment: cniEnrollment(() => e.ctx), findNetns: finder });
    watch.start();
    await waitFor(() => watch.synced, 'synced');
    await new Promise((r) => setTimeout(r, 50)); // the watch's pass is now waiting behind the ADD
    release();
    await add;
    await watch.settled();
    await waitFor(() => e.enroller.inFlight() === 0, 'enrollment idle');
    expect(e.listens()).toBe(1);
    expect(e.enroller.pods().map((p) => [p.name, p.containerId, p.netnsPath])).toEqual([['a', 'sandbox-1', e.bind]]);
  });
});

describe('finding a running pod\'s netns from /proc', () => {
  const fib = (...ips: string[]) =>
    ['Main:', '  +-- 0.0.0.0/0 3 0 5', '     |-- 127.0.0.1', '        /32 host LOCAL', ...ips.flatMap((ip) => [`     |-- ${ip}`, '        /32 host LOCAL']), '     |-- 10.1.0.255', '        /32 link BROADCAST', ''].join('\n');

  /** A fake procfs: pid → (netns inode, fib_trie or null when unreadable, cgroup). */
  function procfs(procs: Record<string, { ns: string; fib: string | null; cgroup?: string }>): string {
    const root = testTempDir('nm-fakeproc-');
    for (const [pid, p] of Object.entries(procs)) {
      mkdirSync(join(root, pid, 'ns'), { recursive: true });
      mkdirSync(join(root, pid, 'net'), { recursive: true });
      symlinkSync(`net:[${p.ns}]`, join(root, pid, 'ns', 'net'));
      if (p.fib !== null) writeFileSync(join(root, pid, 'net', 'fib_trie'), p.fib);
      writeFileSync(join(root, pid, 'cgroup'), p.cgroup ?? '0::/system.slice\n');
    }
    return root;
  }

  it('reads the local addresses of a fib_trie, not broadcast or subnet entries', () => {
    expect([...localAddresses(fib('10.1.0.2'))].sort()).toEqual(['10.1.0.2', '127.0.0.1']);
    expect(localAddresses('garbage\n|-- x')).toEqual(new Set());
  });

  it('picks the one namespace that holds the pod IP, deduplicated by inode, never the host\'s or its own, by its bind mount when there is one', async () => {
    const mounts = testTempDir('nm-fakenetns-');
    writeFileSync(join(mounts, 'cni-1234'), '');
    const bindIno = String(statSync(join(mounts, 'cni-1234')).ino);
    const proc = procfs({
      self: { ns: '1', fib: fib('192.168.0.10') },
      1: { ns: '1', fib: fib('192.168.0.10') },
      77: { ns: '1', fib: fib('10.1.0.9') }, // a process in the host netns: never the pod's
      100: { ns: bindIno, fib: null }, // the pause process: its fib_trie unreadable, the next one of its netns answers
      101: { ns: bindIno, fib: fib('10.1.0.2') },
      200: { ns: '600', fib: fib('10.1.0.3') },
      300: { ns: '700', fib: fib('10.1.0.4') },
      301: { ns: '800', fib: fib('10.1.0.4'), cgroup: '0::/kubepods/besteffort/podu-tie/abc\n' },
      400: { ns: '900', fib: fib('10.1.0.5') },
      401: { ns: '901', fib: fib('10.1.0.5') },
    });
    const find = netnsFinder({ procRoot: proc, netnsDirs: [mounts, join(mounts, 'absent')] });
    const r = await find([
      { uid: 'u-bind', ip: '10.1.0.2' },
      { uid: 'u-proc', ip: '10.1.0.3' },
      { uid: 'u-host', ip: '10.1.0.9' },
      { uid: 'u-tie', ip: '10.1.0.4' },
      { uid: 'u-ambiguous', ip: '10.1.0.5' },
      { uid: 'u-none', ip: '10.1.0.66' },
    ]);
    expect(r.get('u-bind')).toEqual({ netnsPath: join(mounts, 'cni-1234') });
    expect(r.get('u-proc')).toEqual({ netnsPath: join(proc, '200', 'ns', 'net') });
    expect(r.get('u-tie')).toEqual({ netnsPath: join(proc, '301', 'ns', 'net') });
    expect(r.get('u-host')).toEqual({ error: expect.stringContaining('no network namespace') });
    expect(r.get('u-none')).toEqual({ error: expect.stringContaining('10.1.0.66') });
    expect(r.get('u-ambiguous')).toEqual({ error: expect.stringMatching(/2 network namespaces hold 10\.1\.0\.5.*not guessing/) });
    expect(await find([])).toEqual(new Map());
  });
});

describe('nodemesh agent --kubeconfig / --in-cluster', () => {
  it('refuses them without a control plane, together, or with a kubeconfig that cannot be read; names the flag', async () => {
    const usage = (msg: RegExp) => expect.objectContaining({ code: 'NM_ERR_USAGE', message: expect.stringMatching(msg) });
    const dir = testTempDir('nm-agent-cli-');
    await expect(agentCommand.run(['--config', dir, '--kubeconfig', join(dir, 'kc')])).rejects.toEqual(usage(/control-plane mode/));
    await expect(agentCommand.run(['--config', dir, '--kubeconfig', join(dir, 'kc'), '--in-cluster'])).rejects.toEqual(usage(/not both/));
    expect(() => PodWatch.connect({ kubeconfig: join(dir, 'missing') }, { node: 'n1', log: pino({ level: 'silent' }), enrollment: new FakeEnrollment() })).toThrow(usage(/cannot load kubeconfig/));
    expect(agentCommand.help).toMatch(/--kubeconfig <file>/);
    expect(agentCommand.help).toMatch(/--in-cluster/);
  });
});

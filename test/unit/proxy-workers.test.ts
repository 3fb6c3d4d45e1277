// ProxyGroup (src/agent/proxy-workers.ts), the main thread's side of the proxy workers, with
// stand-in workers (test/fixtures/fake-proxy-worker.mjs: real worker threads speaking the real
// protocol, without the sockets only root can open; test/privileged/workers.test.ts runs the
// real ones end to end). Pods reach every worker, state follows them, their flows and metrics
// join the main thread's, and a worker that dies is replaced and given every pod again.
import { afterEach, describe, expect, it } from 'vitest';
import { defaultWorkers, ProxyGroup } from '../../src/agent/proxy-workers.js';
import { newCursors, type NodeProxy, type LocalPod } from '../../src/proxy/index.js';
import { FlowLog, MeshMetrics } from '../../src/telemetry/index.js';
import { ProxyState } from '../../src/state/index.js';
import { createLogger } from '../../src/log.js';

const log = createLogger(2, 'silent');
const script = new URL('../fixtures/fake-proxy-worker.mjs', import.meta.url);

/** The main thread's proxy, as far as ProxyGroup calls it. */
function mainProxy(): NodeProxy & { added: string[] } {
  const added: string[] = [];
  return {
    added,
    addPod: async (p: LocalPod) => void added.push(p.uid),
    removePod: async () => {},
    reevaluate: () => 0,
    stopAccepting: () => {},
    openConnections: () => 1,
    inboundListeners: () => [],
    listeners: () => [],
    hboneSessions: () => [],
    drain: async () => 0,
    close: async () => {},
  } as unknown as NodeProxy & { added: string[] };
}

const pod = (n: number): LocalPod => ({ uid: `u${n}`, namespace: 'ns', name: `p${n}`, ip: `10.0.0.${n}`, netnsPath: `/run/netns/p${n}`, serviceAccount: 'default', labels: {}, trustDomain: 'cluster.local' });
const until = async (f: () => boolean, ms = 5000): Promise<void> => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

let group: ProxyGroup | undefined;
afterEach(async () => {
  await group?.stop();
  group = undefined;
});

function start(count: number, state?: ProxyState): { g: ProxyGroup; main: ReturnType<typeof mainProxy>; flows: FlowLog } {
  const main = mainProxy();
  const flows = new FlowLog(log);
  const g = new ProxyGroup({ main, count, init: { mode: 'local', trustDomain: 'cluster.local', lb: 'round-robin', lbCursors: newCursors(), maps: { origDst: -1 }, accessLog: 'off', logLevel: 'silent' }, log, flows, script, ...(state ? { state: { state, serving: () => true } } : {}) });
  group = g;
  return { g, main, flows };
}

describe('proxy workers: the main thread\'s side', () => {
  it('adds a pod to the main proxy and every worker, and counts every proxy\'s open connections', async () => {
    const { g, main } = start(3);
    expect(g.count).toBe(3);
    await g.addPod(pod(1));
    await g.addPod(pod(2));
    expect(main.added).toEqual(['u1', 'u2']);
    const pods = g.workerListeners().map((w) => w.listeners.map((l) => l.pod).filter((p) => p.startsWith('ns/')));
    expect(pods).toEqual([['ns/p1', 'ns/p2'], ['ns/p1', 'ns/p2']]);
    // 1 on the main thread, 2 in each worker.
    expect(g.openConnections()).toBe(5);
    await g.removePod('u1');
    expect(g.openConnections()).toBe(3);
  });

  it('numbers flows from one node-wide counter, names their proxy, and sums metrics by series', async () => {
    const { g, flows } = start(3);
    await g.addPod(pod(1));
    await until(() => flows.recent().length === 2);
    const recs = flows.recent();
    expect(recs.map((r) => r.id).sort()).toEqual([1, 2]);
    expect(recs.map((r) => r.proxy).sort()).toEqual([1, 2]);
    // The main thread's own record takes the next id of the same counter.
    const own = flows.start({ direction: 'outbound', pod: 'ns/p1', src: { ip: '1.1.1.1', port: 1 }, dst: { ip: '2.2.2.2', port: 2 }, originalDst: '2.2.2.2:2' });
    expect(own).toMatchObject({ id: 3, proxy: 0 });
    await g.addPod(pod(2));
    await until(() => flows.recent().length === 5);
    expect(flows.recent().map((r) => r.id).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5]);
    const m = new MeshMetrics({ defaultMetrics: false });
    m.opened.add({ reporter: 'destination' } as never, 1);
    const body = (await g.metrics(m)).body;
    // 1 (main) + 2 + 2 (the workers).
    expect(body).toMatch(/istio_tcp_connections_opened_total\{reporter="destination"\} 5/);
  });

  it('gives a worker the whole state when it starts and every change after', async () => {
    const state = new ProxyState();
    state.update((u) => u.insertAuthorization({ name: 'a', namespace: 'ns', scope: 'NAMESPACE', action: 'DENY', rules: [], dryRun: false }));
    const { g } = start(2, state);
    await g.addPod(pod(1));
    const ops = () => g.workerListeners()[0]!.listeners.find((l) => l.pod.startsWith('state:'))?.pod;
    expect(ops()).toBe('state:1');
    state.update((u) => {
      u.insertAuthorization({ name: 'b', namespace: 'ns', scope: 'NAMESPACE', action: 'DENY', rules: [], dryRun: false });
      u.removeAuthorization('ns/a');
    });
    await g.addPod(pod(2)); // a call after the change: its status reports what came before
    expect(ops()).toBe('state:3');
  });

  it('replaces a worker that dies, and gives the new one every pod', async () => {
    const { g } = start(2);
    await g.addPod(pod(1));
    await g.addPod(pod(2));
    const before = g.workerListeners()[0]!;
    g.reevaluate(); // the stand-in exits with code 3 on it
    await until(() => g.workerListeners()[0]!.listeners !== before.listeners && g.workerListeners()[0]!.listeners.filter((l) => l.pod.startsWith('ns/')).length === 2);
    expect(g.workerListeners()[0]!.listeners.filter((l) => l.pod.startsWith('ns/')).map((l) => l.pod)).toEqual(['ns/p1', 'ns/p2']);
    // The group still works after the replacement.
    await g.addPod(pod(3));
    expect(g.workerListeners()[0]!.listeners.filter((l) => l.pod.startsWith('ns/')).length).toBe(3);
  });

  it('defaults to the CPUs its own cgroup (or a parent) allows, at most 8 and at least 1', () => {
    const files = (m: Record<string, string>) => (f: string) => {
      if (f in m) return m[f]!;
      throw Object.assign(new Error(`ENOENT ${f}`), { code: 'ENOENT' });
    };
    const self = { '/proc/self/cgroup': '0::/kubepods.slice/pod1/agent\n' };
    // A limit of 1.5 CPUs on the agent's own cgroup: 2 proxies of the 16 CPUs.
    expect(defaultWorkers(files({ ...self, '/sys/fs/cgroup/kubepods.slice/pod1/agent/cpu.max': '150000 100000' }), 16)).toBe(2);
    // The tighter of its own and a parent's; the mount's root (the host's) does not count.
    expect(defaultWorkers(files({ ...self, '/sys/fs/cgroup/kubepods.slice/pod1/agent/cpu.max': 'max 100000', '/sys/fs/cgroup/kubepods.slice/pod1/cpu.max': '300000 100000' }), 16)).toBe(3);
    expect(defaultWorkers(files({ ...self, '/sys/fs/cgroup/kubepods.slice/pod1/agent/cpu.max': '50000 100000' }), 16)).toBe(1);
    // No limit anywhere: the CPU count, capped at 8.
    expect(defaultWorkers(files(self), 16)).toBe(8);
    expect(defaultWorkers(files(self), 2)).toBe(2);
    expect(defaultWorkers(files({}), 4)).toBe(4);
  });
});

describe('proxy workers: the real worker script (dist/agent/proxy-worker.js, built by make test)', () => {
  const real = new URL('../../dist/agent/proxy-worker.js', import.meta.url);

  it('starts, answers, refuses a pod it cannot listen for without dying, and is replaced after an uncaught error', async () => {
    let pods: unknown = [];
    const main = mainProxy();
    const flows = new FlowLog(log);
    const g = new ProxyGroup({ main, count: 2, init: { mode: 'local', trustDomain: 'cluster.local', lb: 'round-robin', lbCursors: newCursors(), maps: { origDst: -1 }, accessLog: 'off', logLevel: 'silent' }, log, flows, script: real, localPods: { all: () => pods as never } });
    group = g;
    await g.started();
    // No such netns: the worker's listen fails, it says so, and it keeps running.
    await g.addPod({ ...pod(1), netnsPath: '/nonexistent/netns' });
    expect(main.added).toEqual(['u1']);
    const status = async () => {
      await g.addPod(pod(9)).catch(() => {}); // any call: its answer comes after a fresh status
      return g.workerListeners()[0]!.listeners;
    };
    expect(await status()).toEqual([]);
    const m = new MeshMetrics({ defaultMetrics: false });
    expect((await g.metrics(m)).body).toContain('nodemesh_active_connections');
    // A message its handler cannot take (a bug's stand-in) is an uncaught error in the worker:
    // it exits, and the group starts another that answers again.
    expect(g.restarts).toBe(0);
    pods = null;
    g.localPodsChanged();
    await until(() => g.restarts === 1, 5000);
    pods = [];
    // The new one starts after a second and answers.
    await new Promise((r) => setTimeout(r, 1200));
    await g.started();
    expect((await g.metrics(m)).body).toContain('nodemesh_active_connections');
    await g.addPod(pod(2));
    expect(g.restarts).toBe(1);
  });
});

// An agent started after its pods exist adopts them from the Kubernetes API (issue 10): real
// pods of the node simulator (netns, cgroups, running processes) created while no agent ran and
// with no nodemesh-cni chained, so no CNI ADD ever reaches an agent; the stand-in API server on
// 127.0.0.1 (test/helpers/kube-apiserver.ts: no kube-apiserver runs here) holds matching Pods
// (the same UIDs, which name their cgroups as the kubelet's do, nodeName = this node,
// status.podIP = the simulator's IP); the control plane reads that API and the agent, with
// --kubeconfig, watches it and authenticates with its pod's ServiceAccount token. Each pod the
// watch adopts is captured (a DENY on the client's identity refuses it, an allowed identity
// passes), a namespace that opts in later is enrolled, and a pod opted out through the API is
// unenrolled (its traffic bypasses the mesh) while its neighbours stay captured.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN, CP_ADDRESS, CP_ADMIN } from '../../src/cluster/up.js';
import { getJson, httpReady, pidIn, startDaemon, stopPid } from '../../src/cluster/daemon.js';
import { agentPaths, PORTS } from '../../src/net/index.js';
import { Redirector } from '../../src/redirect/index.js';
import { listPods, nodeCniDirs, nodePodsCgroup, simDown, simUp } from '../../src/sim/index.js';
import type { FlowRecord } from '../../src/telemetry/index.js';
import { startKubeStandIn, type KubeObject, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { agentToken, ensure } from '../helpers/kube-agent.js';
import { fixtureBin, leftovers, podRunner, type PodRunner } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const AMBIENT = { 'nodemesh.io/dataplane-mode': 'ambient' };
const server = join(fixtureBin, 'nm_server.py');
/** ns/name → what it runs. */
const PODS: Record<string, 'server' | 'sleeper'> = {
  'mesh/client': 'sleeper',
  'mesh/friend': 'sleeper',
  'mesh/web': 'server',
  'mesh/web2': 'server',
  'late/lateweb': 'server',
};

/** A denied connection is reset by the proxy (ENOTCONN when the reset beats the client's first call). */
const refused = (r: Record<string, unknown>): boolean => r.outcome === 'reset' || r.outcome === 'error:107:Transport endpoint is not connected';
const answered = (r: Record<string, unknown>): boolean => String(r.reply ?? '').length > 0;

/** DENY the client's identity on every workload of `ns`. */
const denyClient = (ns: string): KubeObject => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-client', namespace: ns },
  spec: { action: 'DENY', rules: [{ from: [{ source: { principals: ['cluster.local/ns/mesh/sa/client'] } }] }] },
});

interface Dump {
  pods: { namespace: string; name: string; netns: string }[];
  kubernetes: { synced: boolean; watch: { pods: string; namespaces: string }; adopted: number; unenrolled: number; podsSeen: number; lastError: unknown; notAdopted: unknown[] };
}

describePrivileged('an agent started after pods exist adopts them from the Kubernetes API', () => {
  let api: KubeStandIn;
  let sd: string;
  let dir: string;
  let run: PodRunner;
  let cpPid: number | undefined;
  const pinRoot = `/sys/fs/bpf/nodemesh-e2e-kube-${process.pid}`;
  const node = hostname();
  const ips = new Map<string, string>();
  const ip = (pod: string) => ips.get(pod)!;
  const dump = () => getJson<Dump>(`${ADMIN}/config_dump`);
  const enrolled = async () => (await dump()).pods.map((p) => `${p.namespace}/${p.name}`).sort();
  const who = (from: string, to: string) => run.client(from, ['who', ip(to), '8080']);
  /** Polls `probe` until `ok` holds (the control plane and the agent converge on an API change). */
  const until = async <T>(what: string, probe: () => Promise<T> | T, ok: (v: T) => boolean, ms = 20_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = await probe();
      if (ok(v)) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const flowsAfter = async (id: number) => (await getJson<FlowRecord[]>(`${ADMIN}/debug/flows`)).filter((f) => f.id > id);
  const lastFlowId = async () => Math.max(0, ...(await getJson<FlowRecord[]>(`${ADMIN}/debug/flows`)).map((f) => f.id));

  beforeAll(async () => {
    sd = mkdtempSync(join(tmpdir(), 'nm-e2e-kube-adopt-'));
    api = await startKubeStandIn({ bookmarkEveryMs: 500 });
    // The API objects first: their UIDs name the pods' cgroups, as the kubelet's do.
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: AMBIENT } });
    api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'late' } });
    const uids = new Map<string, string>();
    for (const key of Object.keys(PODS)) {
      const [ns, name] = key.split('/') as [string, string];
      ensure(api, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: ns } });
      const p = api.create({
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, labels: { app: name } },
        spec: { nodeName: node, serviceAccountName: name, containers: [{ name: 'c', image: 'sim', ports: PODS[key] === 'server' ? [{ containerPort: 8080 }] : [] }] },
        status: { phase: 'Pending' },
      });
      uids.set(key, p.metadata.uid as string);
    }
    api.create(denyClient('mesh'));
    api.create(denyClient('late'));
    const tokenFile = join(sd, 'agent-token');
    writeFileSync(tokenFile, await agentToken(api, node), { mode: 0o600 });

    // The simulator runs them while no agent runs: nothing chains nodemesh-cni, so no CNI ADD.
    dir = mkdtempSync(join(tmpdir(), 'nm-e2e-kube-adopt-cfg-'));
    writeFileSync(join(dir, 'pods.yaml'), Object.keys(PODS).map((key) => {
      const [ns, name] = key.split('/') as [string, string];
      const cmd = PODS[key] === 'server' ? `[python3, ${server}, "8080"]` : '[sleep, infinity]';
      return `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: ${ns}, uid: ${uids.get(key)} }\nspec:\n  containers:\n  - { name: c, command: ${cmd} }\n`;
    }).join('---\n'));
    await simUp(dir, { stateDir: sd });
    const confDir = nodeCniDirs(sd).confDir;
    for (const f of readdirSync(confDir)) expect(readFileSync(join(confDir, f), 'utf8')).not.toContain('nodemesh-cni');
    for (const p of await listPods({ stateDir: sd })) {
      ips.set(`${p.namespace}/${p.name}`, p.ip);
      // What the kubelet writes once the sandbox is up.
      api.patchStatus('v1', 'Pod', p.namespace, p.name, { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }], hostIP: '192.168.0.10', conditions: [{ type: 'Ready', status: 'True' }] });
    }
    run = podRunner(sd);

    const cpDir = join(sd, 'control-plane');
    mkdirSync(cpDir, { recursive: true });
    cpPid = await startDaemon({
      what: 'control plane', args: ['control-plane', '--kubeconfig', api.kubeconfigPath, '--state-dir', cpDir, '--agent-service-account', 'nodemesh-system/nodemesh-agent'],
      logFile: join(cpDir, 'control-plane.log'), pidFile: join(cpDir, 'control-plane.pid'), ready: httpReady(`${CP_ADMIN}/healthz/ready`),
    });
    const paths = agentPaths(sd);
    mkdirSync(paths.dir, { recursive: true });
    await startDaemon({
      what: 'agent',
      args: ['agent', '--state-dir', sd, '--pin-root', pinRoot, '--connect-timeout', '3000', '--no-install-cni', '--observe-cgroup', nodePodsCgroup({ name: node, netnsPath: null }) ?? 'none',
        '--control-plane', CP_ADDRESS, '--node', node, '--token-file', tokenFile, '--root-cert', join(cpDir, 'root-cert.pem'), '--kubeconfig', api.kubeconfigPath],
      logFile: paths.logFile, pidFile: paths.pidFile, ready: httpReady(`${ADMIN}/healthz/ready`),
    });
  }, 120_000);

  afterAll(async () => {
    await stopPid(sd ? pidIn(agentPaths(sd).pidFile) : undefined);
    await stopPid(cpPid);
    if (sd) await simDown({ stateDir: sd });
    await Redirector.destroyAll(pinRoot);
    await api?.close();
    for (const d of [sd, dir]) if (d) rmSync(d, { recursive: true, force: true });
    expect(leftovers(pinRoot)).toEqual([]);
  }, 120_000);

  it('adopts the running pods of an ambient namespace that no CNI ADD brought: their traffic is captured and policy applies', async () => {
    const d = await until('the four mesh pods adopted', dump, (x) => x.pods.length === 4);
    expect(d.pods.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['mesh/client', 'mesh/friend', 'mesh/web', 'mesh/web2']);
    // Found by the pod IP through a process of the pod, enrolled by the runtime's bind mount.
    for (const p of d.pods) expect(p.netns).toMatch(/^\/(var\/)?run\/netns\/nm-/);
    // The agent's own pod (hostNetwork) is seen but never adopted; late/lateweb has not opted in.
    expect(d.kubernetes).toMatchObject({ synced: true, adopted: 4, unenrolled: 0, podsSeen: 6, notAdopted: [] });
    // Captured both ways: the client's identity is refused by web's DENY, another identity passes.
    await until('the DENY on the client enforced', () => who('mesh/client', 'mesh/web'), refused);
    expect(answered(who('mesh/friend', 'mesh/web'))).toBe(true);
    const before = await lastFlowId();
    expect(answered(who('mesh/friend', 'mesh/web2'))).toBe(true);
    const flows = await flowsAfter(before);
    expect(flows.some((f) => f.direction === 'outbound' && f.pod === 'mesh/friend' && f.dst.ip === ip('mesh/web2'))).toBe(true);
    expect(flows.some((f) => f.direction === 'inbound' && f.pod === 'mesh/web2' && f.src.principal === 'cluster.local/ns/mesh/sa/friend')).toBe(true);
  });

  it('enrolls the pods of a namespace labelled ambient through the API after the agent started', async () => {
    // Not in the mesh yet: the same DENY exists in its namespace, and nothing enforces it.
    expect(await enrolled()).not.toContain('late/lateweb');
    expect(answered(who('mesh/client', 'late/lateweb'))).toBe(true);
    const ns = api.get('v1', 'Namespace', undefined, 'late')!;
    api.update({ ...ns, metadata: { ...ns.metadata, labels: AMBIENT } });
    await until('late/lateweb enrolled', enrolled, (x) => x.includes('late/lateweb'));
    await until('the DENY enforced on late/lateweb', () => who('mesh/client', 'late/lateweb'), refused);
    expect(answered(who('mesh/friend', 'late/lateweb'))).toBe(true);
    expect((await dump()).kubernetes.adopted).toBe(5);
  });

  it('unenrolls a pod opted out through the API: its traffic bypasses the mesh, its neighbours stay captured', async () => {
    expect(refused(who('mesh/client', 'mesh/web2'))).toBe(true);
    const p = api.get('v1', 'Pod', 'mesh', 'web2')!;
    api.update({ ...p, metadata: { ...p.metadata, labels: { ...(p.metadata.labels as Record<string, string>), 'nodemesh.io/dataplane-mode': 'none' } } });
    await until('mesh/web2 unenrolled', enrolled, (x) => !x.includes('mesh/web2'));
    expect((await dump()).kubernetes.unenrolled).toBe(1);
    // Inbound: the DENY on the client no longer reaches web2 (nothing steers its connections)...
    await until('web2 answering the client', () => who('mesh/client', 'mesh/web2'), answered);
    // ... while web, still enrolled, still refuses it.
    expect(refused(who('mesh/client', 'mesh/web'))).toBe(true);
    // Outbound: web2's own connection leaves no flow of its pod; friend's, beside it, does.
    const before = await lastFlowId();
    expect(answered(who('mesh/web2', 'mesh/web'))).toBe(true);
    expect(answered(who('mesh/friend', 'mesh/web'))).toBe(true);
    const flows = await flowsAfter(before);
    expect(flows.some((f) => f.direction === 'outbound' && f.pod === 'mesh/friend')).toBe(true);
    expect(flows.some((f) => f.direction === 'outbound' && f.pod === 'mesh/web2')).toBe(false);
    // Opted in again, it is adopted again.
    api.update({ ...api.get('v1', 'Pod', 'mesh', 'web2')!, metadata: { ...api.get('v1', 'Pod', 'mesh', 'web2')!.metadata, labels: { app: 'web2' } } });
    await until('mesh/web2 enrolled again', enrolled, (x) => x.includes('mesh/web2'));
    await until('the DENY enforced on web2 again', () => who('mesh/client', 'mesh/web2'), refused);
  });

  it('keeps every pod enrolled and stays ready while the API is away, and follows it again after', async () => {
    const before = await enrolled();
    await api.stop();
    try {
      await until('the pod watch failing', dump, (x) => x.kubernetes.watch.pods === 'failing');
      expect((await fetch(`http://127.0.0.1:${PORTS.ready}/healthz/ready`)).status).toBe(200);
      expect(await enrolled()).toEqual(before);
      expect((await dump()).kubernetes.lastError).toMatchObject({ message: expect.stringMatching(/^(pods|namespaces): /) });
      // Still captured: the DENY still refuses the client, another identity still passes.
      expect(refused(who('mesh/client', 'mesh/web'))).toBe(true);
      expect(answered(who('mesh/friend', 'mesh/web'))).toBe(true);
    } finally {
      await api.start();
    }
    await until('the pod watch back', dump, (x) => x.kubernetes.watch.pods === 'ok' && x.kubernetes.watch.namespaces === 'ok');
    expect(await enrolled()).toEqual(before);
  });
});

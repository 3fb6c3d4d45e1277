// The control-plane benchmark's own pieces: the mesh it generates is valid and its probe
// revision survives translation, it rewrites only its own section of docs/benchmarks.md, its
// command line (--help, --quick), and its Kubernetes side against the stand-in API server
// (test/helpers/kube-apiserver.ts, which stands in for kube-apiserver): the same mesh created
// through the API is served as from the directory, the agents' tokens prove their own node only,
// and a policy update through the API reaches an agent. No figure or wall-clock time is asserted.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NODES, PODS_PER_NAMESPACE, probePolicy, SERVICES_PER_NAMESPACE, writeBenchConfig, type BenchConfig } from '../../src/bench/cp-config.js';
import { classify, KubeBenchApi, STANDIN_MAIN, type KubeRun } from '../../src/bench/cp-kube.js';
import { kubeSection, matchingRound } from '../../src/bench/cp-report-kube.js';
import { SECTION_END, SECTION_START } from '../../src/bench/cp-report.js';
import type { ChangeResult, CpRun, Credential, Round } from '../../src/bench/cp-runner.js';
import { HELP, parseSettings, type CpSettings } from '../../src/bench/cp-settings.js';
import { replaceSection } from '../../src/bench/sections.js';
import { probeSeq } from '../../src/bench/xds-agent.js';
import { buildPolicySet } from '../../src/controlplane/authz.js';
import { ControlPlane } from '../../src/controlplane/controlplane.js';
import { checkConfigDir } from '../../src/controlplane/index.js';
import { loadSnapshot } from '../../src/controlplane/sources.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { CaClient, createCsr, generateKeyPair } from '../../src/identity/index.js';
import { ProxyState } from '../../src/state/index.js';
import { authorizationFromProto, readTokenFile, TYPE_ADDRESS, TYPE_AUTHORIZATION, XdsClient } from '../../src/xds/index.js';
import { answer, parseStandInArgs, runStandIn, STANDIN_HELP } from '../helpers/kube-apiserver-main.js';
import { startKubeStandIn, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { waitFor } from '../helpers/xds.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('control-plane benchmark config', () => {
  it('generates 1,000 workloads, 100 services and 100 policies without a config problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-cfg-'));
    dirs.push(dir);
    const cfg = writeBenchConfig(dir);
    const r = checkConfigDir(dir);
    expect(r.problems).toEqual([]);
    expect(r.resources).toMatchObject({ pods: 1000, services: 100, authorizationPolicies: 100 });
    expect(cfg.policies).toMatchObject({ total: 100 });
    expect(cfg.policies.allow).toBeGreaterThan(0);
    expect(cfg.policies.deny).toBeGreaterThan(0);
  });

  it('carries the probe revision through translation to what a client decodes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-probe-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'probe.yaml'), probePolicy('probe', 42));
    const set = buildPolicySet(loadSnapshot(dir).authorizationPolicies, [], DEFAULT_MESH);
    const pb = set.authorizations.find((a) => a.name === 'probe')!;
    expect(probeSeq(authorizationFromProto(pb, `${pb.namespace}/${pb.name}`))).toBe(42);
  });
});

describe('docs/benchmarks.md section', () => {
  const block = (body: string) => `${SECTION_START}\n${body}\n${SECTION_END}`;

  it('creates the file when there is none', () => {
    expect(replaceSection(undefined, 'controlplane', 'new')).toBe(`# Benchmarks\n\n${block('new')}\n`);
  });

  it('appends the section after the other content when it has no markers', () => {
    expect(replaceSection('# Benchmarks\n\n## L4\n\ntable\n', 'controlplane', 'new')).toBe(`# Benchmarks\n\n## L4\n\ntable\n\n${block('new')}\n`);
  });

  it('replaces only what lies between the markers', () => {
    const before = `# B\n\n${block('old\nlines')}\n\n<!-- bench:l4:start -->\nl4\n<!-- bench:l4:end -->\n`;
    expect(replaceSection(before, 'controlplane', 'new')).toBe(`# B\n\n${block('new')}\n\n<!-- bench:l4:start -->\nl4\n<!-- bench:l4:end -->\n`);
  });

  it('refuses unbalanced markers rather than guess', () => {
    expect(() => replaceSection(`x\n${SECTION_END}\n${SECTION_START}\n`, 'controlplane', 'new')).toThrow(/unbalanced/);
    expect(() => replaceSection(`x\n${SECTION_START}\n`, 'controlplane', 'new')).toThrow(/unbalanced/);
  });
});

describe('the command line', () => {
  const settings = (argv: string[], env: Record<string, string> = {}): CpSettings => {
    const r = parseSettings(argv, env);
    if (!('settings' in r)) throw new Error(`no settings: ${JSON.stringify(r)}`);
    return r.settings;
  };

  it('measures both sources in full and writes the docs by default', () => {
    expect(settings([])).toMatchObject({ clients: [1, 10, 50], changes: 5, compareDebounceMs: 10, rename: true, kubeAgents: 50, write: true, quick: false });
  });

  it('runs fewer rounds and changes with --quick, and writes no docs', () => {
    const q = settings(['--quick']);
    expect(q).toMatchObject({ clients: [1, 10], changes: 2, compareDebounceMs: undefined, rename: false, write: false, quick: true });
    expect(q.kubeAgents).toBeGreaterThan(0);
  });

  it('skips the Kubernetes source with --no-kube and then leaves the docs alone', () => {
    expect(settings(['--no-kube'])).toMatchObject({ kubeAgents: 0, write: false });
    expect(settings([], { NODEMESH_BENCH_CP_KUBE_AGENTS: '0' })).toMatchObject({ kubeAgents: 0, write: false });
  });

  it('takes the environment over the defaults and --quick, and refuses bad values', () => {
    expect(settings(['--quick'], { NODEMESH_BENCH_CP_CLIENTS: '3,7', NODEMESH_BENCH_CP_KUBE_AGENTS: '4', NODEMESH_BENCH_CP_CHANGES: '1' })).toMatchObject({ clients: [3, 7], kubeAgents: 4, changes: 1 });
    expect(parseSettings([], { NODEMESH_BENCH_CP_CLIENTS: '1,x' })).toEqual({ error: expect.stringMatching(/NODEMESH_BENCH_CP_CLIENTS/) });
    expect(parseSettings([], { NODEMESH_BENCH_CP_KUBE_AGENTS: '-1' })).toEqual({ error: expect.stringMatching(/NODEMESH_BENCH_CP_KUBE_AGENTS/) });
    expect(parseSettings(['--bogus'])).toEqual({ error: expect.stringMatching(/bogus/) });
  });

  it('describes the Kubernetes part in --help', () => {
    expect(parseSettings(['--help'])).toEqual({ help: true });
    for (const words of ['--quick', '--no-kube', 'stand-in kube-apiserver', '--kubeconfig', 'TokenRequest', 'NODEMESH_BENCH_CP_KUBE_AGENTS', 'dist-test/']) expect(HELP).toContain(words);
  });
});

describe('the stand-in API server as a process', () => {
  it('is what tsconfig.standin.json builds to dist-test/', () => {
    const cfg = readFileSync(join(import.meta.dirname, '../../tsconfig.standin.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '');
    const { compilerOptions, include } = JSON.parse(cfg) as { compilerOptions: { rootDir: string; outDir: string }; include: string[] };
    expect(include).toContain('test/helpers/kube-apiserver-main.ts');
    expect(relative(join(import.meta.dirname, '../..', compilerOptions.outDir), STANDIN_MAIN)).toBe(join('test', 'helpers', 'kube-apiserver-main.js'));
  });

  it('prints its help, refuses an unknown option, and announces a kubeconfig that works', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const sink = (a: string[]) => ({ write: (x: string) => a.push(x) });
    await expect(runStandIn(['--help'], sink(out), sink(err))).resolves.toEqual({ exitCode: 0 });
    expect(out.join('')).toBe(STANDIN_HELP);
    expect(STANDIN_HELP).toMatch(/stand-in for kube-apiserver/);
    await expect(runStandIn(['--bogus'], sink(out), sink(err))).resolves.toEqual({ exitCode: 2 });
    expect(err.join('')).toMatch(/bogus/);
    expect(parseStandInArgs(['--bookmark-every-ms', '5'])).toEqual({ error: expect.stringMatching(/bookmark-every-ms/) });
    // What it answers a benchmark over IPC.
    expect(answer({ type: 'cpu' })).toEqual({ type: 'cpu', cpuMs: expect.any(Number) });
    expect(answer({ type: 'mem' })).toMatchObject({ type: 'mem', rss: expect.any(Number), heapUsed: expect.any(Number) });
    const log = { requests: [1, 2, 3].map((i) => ({ method: 'GET', path: `/api/v1/nodes/node-0${i}`, status: 200 })) };
    expect(answer({ type: 'requests', from: 2 }, log)).toEqual({ type: 'requests', total: 3, connections: expect.any(Number), requests: [log.requests[2]] });
    out.length = 0;
    const started = await runStandIn(['--bookmark-every-ms', '200'], sink(out), sink(err));
    if (!('api' in started)) throw new Error('the stand-in did not start');
    try {
      const line = JSON.parse(out.join('')) as { url: string; kubeconfig: string; pid: number };
      expect(line).toEqual({ url: started.api.url, kubeconfig: started.api.kubeconfigPath, pid: process.pid });
      // The announced kubeconfig is one the real client can use.
      const client = await KubeBenchApi.connect(line.kubeconfig);
      await expect(client.core.readNamespace({ name: 'default' })).resolves.toMatchObject({ metadata: { name: 'default' } });
    } finally {
      await started.api.close();
    }
  });
});

describe('the Kubernetes source of the benchmark', () => {
  let root: string;
  let api: KubeStandIn;
  let client: KubeBenchApi;
  let cfg: BenchConfig;
  let kube: ControlPlane;
  let dir: ControlPlane;
  let creds: Credential[];
  const KEPT = ['bench-00.yaml', 'bench-01.yaml'];
  const pods = KEPT.length * PODS_PER_NAMESPACE;
  const services = KEPT.length * SERVICES_PER_NAMESPACE;
  const stops: (() => unknown)[] = [];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'nodemesh-bench-kube-'));
    const config = join(root, 'config');
    cfg = writeBenchConfig(config);
    // Two of the twenty namespaces' workloads (100 pods, 10 Services), every namespace and policy:
    // the benchmark's client makes one request at a time per object, and a unit test stays short.
    for (const f of readdirSync(join(config, 'workloads'))) if (!KEPT.includes(f)) rmSync(join(config, 'workloads', f));
    api = await startKubeStandIn({ bookmarkEveryMs: 200 });
    client = await KubeBenchApi.connect(api.kubeconfigPath);
    await client.createConfig(config, NODES);
    creds = await client.agentCredentials(3, root);
    const opts = { listen: '127.0.0.1:0', admin: '127.0.0.1:0' };
    kube = await ControlPlane.start({ kubernetes: { kubeconfig: api.kubeconfigPath }, stateDir: join(root, 'state-kube'), ...opts });
    dir = await ControlPlane.start({ configDir: config, stateDir: join(root, 'state-dir'), ...opts });
  }, 60_000);
  afterAll(async () => {
    for (const s of stops.splice(0).reverse()) await s();
    await kube?.stop();
    await dir?.stop();
    await api?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('creates every object of the directory through the API, each Pod running with the IP its file pins', () => {
    const meshPods = api.list('v1', 'Pod').filter((p) => p.metadata.namespace?.startsWith('bench-'));
    expect(meshPods).toHaveLength(pods);
    const app = meshPods.find((p) => p.metadata.name === 'app-0-00' && p.metadata.namespace === 'bench-00')!;
    expect(app.status).toMatchObject({ phase: 'Running', podIP: '10.244.0.1', conditions: expect.arrayContaining([{ type: 'Ready', status: 'True', lastTransitionTime: expect.any(String) }]) });
    expect(api.list('v1', 'Node')).toHaveLength(NODES);
    expect(api.list('security.istio.io/v1', 'AuthorizationPolicy')).toHaveLength(cfg.policies.total);
  });

  it('serves what the directory source serves byte for byte, plus the API server\'s own Service', () => {
    expect(kube.configErrors().errors).toBe(0);
    const dirAddresses = dir.xds.versions(TYPE_ADDRESS);
    const kubeAddresses = kube.xds.versions(TYPE_ADDRESS);
    expect(dirAddresses.size).toBe(pods + services);
    for (const [name, version] of dirAddresses) expect({ name, version: kubeAddresses.get(name) }).toEqual({ name, version });
    // default/kubernetes (10.96.0.1) and its EndpointSlice's endpoint, which every cluster has.
    expect([...kubeAddresses.keys()].filter((k) => !dirAddresses.has(k)).sort()).toEqual([
      'Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/127.0.0.1',
      'default/kubernetes.default.svc.cluster.local',
    ]);
    expect(kube.xds.versions(TYPE_AUTHORIZATION)).toEqual(dir.xds.versions(TYPE_AUTHORIZATION));
    expect(kube.xds.versions(TYPE_AUTHORIZATION).size).toBe(cfg.policies.total + 1);
  });

  it("gives each agent a token bound to its own pod and node, which proves that node and no other", async () => {
    expect(creds.map((c) => c.node)).toEqual(['node-00', 'node-01', 'node-02']);
    const token = readFileSync(creds[0]!.token, 'utf8').trim();
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { aud: string[]; 'kubernetes.io': { pod: { name: string }; node: { name: string } } };
    expect(claims).toMatchObject({ aud: ['nodemesh'], 'kubernetes.io': { pod: { name: 'nodemesh-agent-node-00' }, node: { name: 'node-00' } } });
    const conn = (node: string) => ({ address: kube.address, rootCertPem: kube.ca.rootCertPem, token, nodeName: node });
    const csr = async () => createCsr(await generateKeyPair(), 'spiffe://cluster.local/ns/bench-00/sa/sa-0');
    // node-00 runs bench-00's app-0-00 (sa-0): its agent gets the certificate ...
    const own = new CaClient(conn('node-00'));
    stops.push(() => own.close());
    await expect(own.createCertificate(await csr(), 3600)).resolves.toHaveLength(2);
    // ... and the same token claiming node-01 is refused.
    const other = new CaClient(conn('node-01'));
    stops.push(() => other.close());
    await expect(other.createCertificate(await csr(), 3600)).rejects.toMatchObject({ details: { grpcCode: 7 } });
  });

  it('updates the probe policy through the API; an agent applies the revision and the control plane writes its status', async () => {
    const cred = creds[2];
    const state = new ProxyState();
    const xds = new XdsClient({ address: kube.address, rootCertPem: kube.ca.rootCertPem, token: readTokenFile(cred!.token), nodeName: cred!.node, state });
    stops.push(() => xds.stop());
    xds.start();
    await xds.ready;
    expect(kube.xds.streams().map((s) => s.node)).toContain(cred!.node);
    const seq = () => probeSeq(state.policy(cfg.probe.key)!);
    expect(seq()).toBe(0);
    const write = client.probeWriter(cfg.probe);
    await (await write(7))();
    await waitFor(() => seq() === 7, 'revision 7 of the probe policy', 10_000);
    // The status write-back catches up with the new generation (what the benchmark waits for before idle).
    const until = Date.now() + 10_000;
    while ((await client.policiesWithoutStatus()) > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(await client.policiesWithoutStatus()).toBe(0);
  });
});

describe('the Kubernetes part of the report', () => {
  const change = (p50: number, extra: Partial<ChangeResult> = {}): ChangeResult => ({
    seq: 1, latencies: [p50], p50, max: p50 * 2, writeMs: 1, toRescanMs: p50 / 2, parseMs: 0, rescanMs: 10, cpuMs: 10, pushes: 1, deliverMs: 5, bytes: [200], readBytes: [250], apiCpuMs: NaN, ...extra,
  });
  const mem = (rss: number, heapUsed: number) => ({ type: 'mem' as const, rss: rss * 2 ** 20, heapUsed: heapUsed * 2 ** 20, heapTotal: 0, external: 0, arrayBuffers: 0, streams: 0 });
  const round = (n: number, p50: number): Round => ({
    n, spawnToReady: [100], spawnToStart: [50], startToReady: [50], firstSyncedMs: 80, sync: [], syncBytes: [1000], syncReadBytes: [1100], stateHeap: [1], rssBeforeStart: [1],
    cpSyncCpuMs: 100, apiSyncCpuMs: NaN, agentMem: [], changes: [change(p50)], renames: [], cpWithClients: mem(200, 30),
  });
  const run = (source: 'dir' | 'kube', rounds: Round[]): CpRun => ({
    source, debounceMs: 100, startupMs: 1000, bootMs: 500, startToServeMs: 500, startToSyncedMs: NaN, addresses: 1100, authorizations: 101, idle: mem(100, 20), rounds, loadAvg: 1,
  });

  it('tells the TokenReviews and Node reads the control plane made from its other requests', () => {
    expect(
      classify([
        { method: 'POST', path: '/apis/authentication.k8s.io/v1/tokenreviews' },
        { method: 'GET', path: '/api/v1/nodes/node-00' },
        { method: 'GET', path: '/api/v1/nodes?limit=500' },
        { method: 'PATCH', path: '/apis/security.istio.io/v1/namespaces/bench-00/authorizationpolicies/probe/status' },
      ]),
    ).toEqual({ tokenReviews: 1, nodeReads: 1, other: 2 });
  });

  it('sets the Kubernetes round beside the directory round of the same N, with kube/dir ratios', () => {
    const dir = run('dir', [round(1, 150), round(50, 140)]);
    expect(matchingRound(dir, 50).n).toBe(50);
    expect(matchingRound(dir, 7).n).toBe(50);
    const kube: KubeRun = {
      ...run('kube', [{ ...round(50, 70), apiSyncRequests: { tokenReviews: 50, nodeReads: 50, other: 0, connections: 100 } }]), startToSyncedMs: 1200,
      populated: { objects: 1222, pods: 1000, requests: 2300, ms: 4000 }, libLoadMs: 900, credentialsMs: 300,
      standIn: { startMs: 300, rss: 120 * 2 ** 20, heapUsed: 40 * 2 ** 20, rssEnd: 130 * 2 ** 20, populateCpuMs: 3000 },
    };
    const cfgDir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-report-'));
    dirs.push(cfgDir);
    const cfg = writeBenchConfig(cfgDir);
    const settings = (parseSettings([], {}) as { settings: CpSettings }).settings;
    const text = kubeSection(cfg, settings, dir, kube);
    expect(text).toMatch(/\| \*\*p50 across agents\*\* \| 140 \| 70 \| 0\.50× \|/);
    expect(text).toMatch(/\| \*\*max across agents\*\* \| 280 \| 140 \| 0\.50× \|/);
    expect(text).toMatch(/stands in for kube-apiserver/);
    expect(text).toMatch(/\| API requests over those syncs \(TokenReviews \/ Node reads \/ other\), and the connections they came on \| \| 50 \/ 50 \/ 0, 100 \| \|/);
    expect(text).toMatch(/on 100 new connections \(a TLS handshake for every request/);
    expect(text).toMatch(/control plane, idle[^|]*\| 100\.0 \| 20\.0 \| 100\.0 \| 20\.0 \| 1\.00× \| 1\.00× \|/);
    // The prose follows the figures, whichever source is faster.
    expect(text).toMatch(/The wait before the recompute is 35 ms shorter on the API/);
    const slower = kubeSection(cfg, settings, dir, { ...kube, rounds: [round(50, 300)] });
    expect(slower).toMatch(/\| \*\*p50 across agents\*\* \| 140 \| 300 \| 2\.14× \|/);
    expect(slower).toMatch(/The wait before the recompute is 80 ms longer on the API/);
  });
});

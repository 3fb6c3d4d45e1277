// The control-plane benchmark's Kubernetes side: the stand-in kube-apiserver as a process of its
// own (dist-test/, so its CPU is not the control plane's), and what a cluster's users and
// controllers do through its API with the real client (@kubernetes/client-node): `kubectl create`
// of the generated objects, kubelet's status writes, the agent DaemonSet's Pods bound to the nodes
// and their TokenRequest tokens, and `kubectl replace` of the probe AuthorizationPolicy.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CoreV1Api, CustomObjectsApi, KubernetesObject, KubernetesObjectApi, V1Pod } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { agentPodObject, packageRoot } from '../cluster/index.js';
import { AGENT_TOKEN_AUDIENCE, DEFAULT_AGENT_SERVICE_ACCOUNT } from '../controlplane/index.js';
import { loadConfigDirStrict } from '../k8s/index.js';
import { Child, progress, sleep } from './cp-child.js';
import { nodeName, NODES, probePolicy, type BenchConfig } from './cp-config.js';
import type { ApiProbe, Bench, CpRun, Credential, ProbeWrite, RequestKinds } from './cp-runner.js';
import { nowMs } from './xds-agent.js';

/** The stand-in's entry, compiled by `make build` (tsconfig.standin.json) from test/helpers/kube-apiserver-main.ts. */
export const STANDIN_MAIN = join(packageRoot, 'dist-test', 'test', 'helpers', 'kube-apiserver-main.js');

/** What kube-apiserver-main.ts sends over IPC (its StandInReady and StandInAnswer). */
type StandInReport =
  | { type: 'ready'; url: string; kubeconfig: string; pid: number }
  | { type: 'cpu'; cpuMs: number }
  | { type: 'mem'; rss: number; heapUsed: number }
  | { type: 'requests'; total: number; connections: number; requests: { method: string; path: string; status: number }[] }
  | { type: 'error'; message: string };
type StandInQuery = { type: 'cpu' } | { type: 'mem' } | { type: 'requests'; from: number };

const POLICY = { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' } as const;
/** Requests in flight at once while creating objects. */
export const WRITERS = 8;

/** Runs `fn` over `items`, at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, fn: (t: T, i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The node agents run on and pods are bound to. Its pod CIDR is its own /24 (the agents report no pods). */
const nodeObject = (i: number): KubernetesObject & { spec: unknown } => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name: nodeName(i), labels: { 'kubernetes.io/hostname': nodeName(i) } },
  spec: { podCIDR: `10.245.${i}.0/24`, podCIDRs: [`10.245.${i}.0/24`] },
});
const hostIp = (i: number): string => `192.168.${Math.floor(i / 250)}.${(i % 250) + 1}`;

export interface Populated {
  objects: number;
  pods: number;
  /** API requests made (creates, status writes, TokenRequests). */
  requests: number;
  ms: number;
}

/** The benchmark's API client: the real @kubernetes/client-node, loaded on first use as the control plane loads it. */
export class KubeBenchApi {
  #requests = 0;

  private constructor(
    readonly objects: KubernetesObjectApi,
    readonly core: CoreV1Api,
    readonly custom: CustomObjectsApi,
    /** How long importing @kubernetes/client-node took in this process. */
    readonly libLoadMs: number,
  ) {}

  static async connect(kubeconfig: string): Promise<KubeBenchApi> {
    const t0 = nowMs();
    const lib = await import('@kubernetes/client-node');
    const libLoadMs = nowMs() - t0;
    const kc = new lib.KubeConfig();
    kc.loadFromFile(kubeconfig);
    return new KubeBenchApi(lib.KubernetesObjectApi.makeApiClient(kc), kc.makeApiClient(lib.CoreV1Api), kc.makeApiClient(lib.CustomObjectsApi), libLoadMs);
  }

  get requests(): number {
    return this.#requests;
  }

  #create<T extends KubernetesObject>(o: T): Promise<T> {
    this.#requests++;
    return this.objects.create(o);
  }

  /** Creates `o` unless it exists (409 AlreadyExists). */
  async #ensure(o: KubernetesObject): Promise<void> {
    try {
      await this.#create(o);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 409) throw err;
    }
  }

  /** What kubelet writes once the pod's containers run: phase, IPs and the Ready condition. */
  async #running(pod: V1Pod, ip: string, host: string): Promise<void> {
    const now = new Date();
    const conditions = ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastTransitionTime: now }));
    this.#requests++;
    await this.core.replaceNamespacedPodStatus({
      name: pod.metadata!.name!,
      namespace: pod.metadata!.namespace!,
      body: { ...pod, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP: host, startTime: now, conditions } },
    });
  }

  /**
   * `kubectl create -f <dir>`: every object of the generated config directory (namespaces first),
   * plus `nodes` Nodes; each Pod then gets the status kubelet writes (the IP the file pins).
   */
  async createConfig(dir: string, nodes: number): Promise<Populated> {
    const t0 = nowMs();
    const requests0 = this.#requests;
    const hosts = new Map(Array.from({ length: nodes }, (_, i) => [nodeName(i), hostIp(i)]));
    const objs = loadConfigDirStrict(dir).objects.map((o) => o.raw as unknown as KubernetesObject & { status?: { podIP?: string }; spec?: { nodeName?: string } });
    const first = [...objs.filter((o) => o.kind === 'Namespace'), ...Array.from({ length: nodes }, (_, i) => nodeObject(i))];
    await pool(first, WRITERS, (o) => this.#create(o));
    const rest = objs.filter((o) => o.kind !== 'Namespace');
    await pool(rest, WRITERS, async (o) => {
      const created = await this.#create(o);
      const ip = o.status?.podIP;
      if (o.kind === 'Pod' && ip) await this.#running(created as V1Pod, ip, hosts.get(o.spec?.nodeName ?? '') ?? '');
    });
    return { objects: first.length + rest.length, pods: objs.filter((o) => o.kind === 'Pod').length, requests: this.#requests - requests0, ms: nowMs() - t0 };
  }

  /**
   * The agent DaemonSet's side for `n` nodes: its namespace and ServiceAccount, one hostNetwork Pod
   * bound to each node (running), and each pod's projected token (audience nodemesh) from the
   * TokenRequest API, as kubelet gets it; written to `dir`/<node>.token.
   */
  async agentCredentials(n: number, dir: string): Promise<Credential[]> {
    const [namespace, sa] = DEFAULT_AGENT_SERVICE_ACCOUNT.split('/') as [string, string];
    await this.#ensure({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
    await this.#ensure({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace } });
    const creds: Credential[] = [];
    await pool(Array.from({ length: n }, (_, i) => i), WRITERS, async (i) => {
      const node = nodeName(i);
      const pod = await this.#create<V1Pod>(agentPodObject(node));
      await this.#running(pod, hostIp(i), hostIp(i));
      this.#requests++;
      const tr = await this.core.createNamespacedServiceAccountToken({
        name: sa,
        namespace,
        body: { spec: { audiences: [AGENT_TOKEN_AUDIENCE], expirationSeconds: 3600, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod.metadata!.name!, uid: pod.metadata!.uid! } } },
      });
      const token = join(dir, `${node}.token`);
      writeFileSync(token, `${tr.status!.token}\n`, { mode: 0o600 });
      creds[i] = { node, token };
    });
    return creds;
  }

  /** An update of the probe AuthorizationPolicy through the API (`kubectl replace`), its resourceVersion read first, untimed. */
  probeWriter(probe: BenchConfig['probe']): ProbeWrite {
    const [namespace, name] = probe.key.split('/') as [string, string];
    return async (seq) => {
      this.#requests++;
      const cur = (await this.custom.getNamespacedCustomObject({ ...POLICY, namespace, name })) as KubernetesObject;
      const body = parse(probePolicy(probe.name, seq)) as KubernetesObject;
      body.metadata = { ...body.metadata, resourceVersion: cur.metadata?.resourceVersion };
      return () => {
        this.#requests++;
        return this.custom.replaceNamespacedCustomObject({ ...POLICY, namespace, name, body });
      };
    };
  }

  /** AuthorizationPolicies whose status does not carry the control plane's condition for their generation yet. */
  async policiesWithoutStatus(): Promise<number> {
    this.#requests++;
    type Policy = KubernetesObject & { status?: { conditions?: { type?: string; observedGeneration?: unknown }[] } };
    const list = (await this.custom.listClusterCustomObject(POLICY)) as { items?: Policy[] };
    return (list.items ?? []).filter((p) => !(p.status?.conditions ?? []).some((c) => c.type === 'ZtunnelAccepted' && String(c.observedGeneration) === String(p.metadata?.generation))).length;
  }

  /** Waits (bounded) until the control plane has written every policy's status, so that idle is idle. */
  async settled(timeoutMs = 30_000): Promise<void> {
    const until = nowMs() + timeoutMs;
    for (;;) {
      const pending = await this.policiesWithoutStatus();
      if (pending === 0) return;
      if (nowMs() > until) return progress(`warning: ${pending} AuthorizationPolicies still have no status from the control plane after ${timeoutMs / 1000} s`);
      await sleep(200);
    }
  }
}

/** What the control plane asked of the API while agents connected: TokenReviews, Node reads, anything else. */
export function classify(requests: { method: string; path: string }[]): RequestKinds {
  const out: RequestKinds = { tokenReviews: 0, nodeReads: 0, other: 0 };
  for (const r of requests) {
    if (r.method === 'POST' && r.path.startsWith('/apis/authentication.k8s.io/v1/tokenreviews')) out.tokenReviews++;
    else if (r.method === 'GET' && r.path.startsWith('/api/v1/nodes/')) out.nodeReads++;
    else out.other++;
  }
  return out;
}

export interface KubeRun extends CpRun {
  populated: Populated;
  libLoadMs: number;
  /** The stand-in process: spawn → serving, its memory holding the objects (after a GC) and at the end, its CPU creating them. */
  standIn: { startMs: number; rss: number; heapUsed: number; rssEnd: number; populateCpuMs: number };
  /** Agent Pods, Nodes and TokenRequests, before the control plane starts. */
  credentialsMs: number;
}

/**
 * The Kubernetes source: the stand-in, the generated objects and `agents` agent credentials
 * created through its API, then the control plane started with --kubeconfig, one round of
 * `agents` clients, policy updates through the API.
 */
export async function runKube(bench: Bench, agents: number): Promise<KubeRun> {
  if (!existsSync(STANDIN_MAIN)) throw new Error(`${STANDIN_MAIN} is missing: the stand-in kube-apiserver is built by \`make build\` (tsc -p tsconfig.standin.json)`);
  progress(`kube: the stand-in kube-apiserver (${STANDIN_MAIN})`);
  const log = bench.log('kube-apiserver');
  const api = new Child<StandInReport>('stand-in kube-apiserver', STANDIN_MAIN, [], log.fd, log.file);
  bench.children.add(api);
  const query = async <T extends StandInQuery['type']>(q: Extract<StandInQuery, { type: T }>): Promise<Extract<StandInReport, { type: T }>> => {
    api.send(q);
    return api.take((m): m is Extract<StandInReport, { type: T }> => m.type === q.type, `a ${q.type} report`, 10_000);
  };
  const probe: ApiProbe = {
    cpuMs: async () => (await query({ type: 'cpu' })).cpuMs,
    requests: async (from) => {
      const r = await query({ type: 'requests', from: Number.isFinite(from) ? from : 2 ** 31 });
      return { total: r.total, connections: r.connections, kinds: classify(r.requests) };
    },
  };
  try {
    const ready = await api.take((m): m is Extract<StandInReport, { type: 'ready' }> => m.type === 'ready', 'the stand-in to serve', 60_000);
    const startMs = nowMs() - api.spawnedMs;
    const client = await KubeBenchApi.connect(ready.kubeconfig);
    const cpu0 = await probe.cpuMs();
    const populated = await client.createConfig(bench.configDir, Math.max(NODES, agents));
    const populateCpuMs = (await probe.cpuMs()) - cpu0;
    progress(`kube: created ${populated.objects} objects (${populated.pods} pods running) with ${populated.requests} requests in ${(populated.ms / 1000).toFixed(1)} s`);
    const t0 = nowMs();
    const creds = await client.agentCredentials(agents, bench.root);
    const credentialsMs = nowMs() - t0;
    progress(`kube: ${agents} agent pods bound to their nodes, tokens from TokenRequest, in ${credentialsMs.toFixed(0)} ms`);
    const held = await query({ type: 'mem' });
    const run = await bench.run('kube', {
      source: ['--kubeconfig', ready.kubeconfig],
      kind: 'kube',
      settle: () => client.settled(),
      plans: () => [
        {
          n: agents,
          credential: (i) => creds[i]!,
          probe: { key: bench.config.probe.key, write: client.probeWriter(bench.config.probe), how: 'API update' },
          cpMemory: true,
          api: probe,
        },
      ],
    });
    const end = await query({ type: 'mem' });
    return { ...run, populated, libLoadMs: client.libLoadMs, standIn: { startMs, rss: held.rss, heapUsed: held.heapUsed, rssEnd: end.rss, populateCpuMs }, credentialsMs };
  } finally {
    await api.stop();
    bench.children.delete(api);
  }
}

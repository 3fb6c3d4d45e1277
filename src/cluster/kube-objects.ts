// The objects `nodemesh up --kubeconfig` writes through the API: the directory's resources (as
// `kubectl create -f` would make them, in dependency order, leaving ones that exist already as
// they are), the ServiceAccounts its Pods name but it does not declare, the Node of every
// simulated node, and the agents' identity (namespace, ServiceAccount, one hostNetwork Pod per
// node with a projected token for audience nodemesh). Each object made is recorded by uid, and
// `down` deletes exactly those (a uid precondition spares one someone made again since).
import { ConfigError } from '../errors.js';
import { AGENT_TOKEN_AUDIENCE, DEFAULT_AGENT_SERVICE_ACCOUNT } from '../controlplane/index.js';
import type { K8sObject, LoadedConfig } from '../k8s/index.js';
import { statusOf, type KubeApi } from '../kube/index.js';
import { readCreated, recordCreated, type KubeNode } from './kube-record.js';

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
const [AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT] = DEFAULT_AGENT_SERVICE_ACCOUNT.split('/') as [string, string];
/** The agent pod's projected token volume, as the chart's DaemonSet has it (/var/run/secrets/tokens/nodemesh-token). */
export const AGENT_TOKEN_VOLUME = { name: 'nodemesh-token', path: 'nodemesh-token', mountPath: '/var/run/secrets/tokens' };
/** Creation order: what others live in or refer to first, Pods last (kubectl applies in file order; this never trips on it). */
const FIRST = ['Namespace', 'CustomResourceDefinition', 'ServiceAccount'];

interface Resource {
  plural: string;
  namespaced: boolean;
}

const describe = (kind: string, ns: string | undefined, name: string): string => `${kind} ${ns ? `${ns}/` : ''}${name}`;

/** Creates objects through the API, recording each one it makes under the state dir. */
export class ApiWriter {
  readonly api: KubeApi;
  readonly #sd: string;
  readonly #progress: (line: string) => void;
  readonly #discovered = new Map<string, Map<string, Resource>>();

  constructor(api: KubeApi, sd: string, progress: (line: string) => void) {
    this.api = api;
    this.#sd = sd;
    this.#progress = progress;
  }

  /** The resource of a kind (discovery); undefined when the server does not serve it. */
  async resource(apiVersion: string, kind: string): Promise<Resource | undefined> {
    let kinds = this.#discovered.get(apiVersion);
    if (!kinds) {
      kinds = new Map();
      try {
        const list = rec(await this.api.get(apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`));
        for (const r of Array.isArray(list.resources) ? list.resources.map(rec) : []) {
          if (typeof r.name === 'string' && !r.name.includes('/') && typeof r.kind === 'string') kinds.set(r.kind, { plural: r.name, namespaced: r.namespaced === true });
        }
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
      this.#discovered.set(apiVersion, kinds);
    }
    return kinds.get(kind);
  }

  /** The URL path of an object (or of its collection, without `name`). */
  async path(apiVersion: string, kind: string, ns: string | undefined, name?: string): Promise<string> {
    const r = await this.resource(apiVersion, kind);
    if (!r) throw new ConfigError('NM_ERR_KUBE_API', `the API at ${this.api.server} does not serve ${apiVersion} ${kind} (is its CustomResourceDefinition installed?)`);
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return `${base}${r.namespaced ? `/namespaces/${encodeURIComponent(ns ?? 'default')}` : ''}/${r.plural}${name === undefined ? '' : `/${encodeURIComponent(name)}`}`;
  }

  /**
   * Creates `obj`; one that exists already is left as it is and returned as the server has it
   * (`existed`). Made objects are recorded for `down`.
   */
  async create(obj: Raw): Promise<{ obj: Raw; existed: boolean }> {
    const m = rec(obj.metadata);
    const apiVersion = String(obj.apiVersion);
    const kind = String(obj.kind);
    const name = String(m.name);
    const r = await this.resource(apiVersion, kind);
    const ns = r?.namespaced ? (typeof m.namespace === 'string' && m.namespace ? m.namespace : 'default') : undefined;
    const what = describe(kind, ns, name);
    const path = await this.path(apiVersion, kind, ns, name);
    try {
      const made = rec(await this.api.request('POST', await this.path(apiVersion, kind, ns), obj, 'application/json'));
      recordCreated(this.#sd, { path, what, uid: String(rec(made.metadata).uid) });
      return { obj: made, existed: false };
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      this.#progress(`${what} exists already; left as it is`);
      return { obj: rec(await this.api.get(path)), existed: true };
    }
  }
}

/** An object of the directory as a create request: no uid, resourceVersion or status (the server's to set). */
function createBody(o: K8sObject): Raw {
  const { status: _s, ...raw } = o.raw;
  const { uid: _u, resourceVersion: _r, creationTimestamp: _c, generation: _g, managedFields: _m, ...meta } = rec(raw.metadata);
  return { ...raw, metadata: meta };
}

/**
 * Creates the directory's objects (Pods only with `pods`, and only them), the ServiceAccounts
 * its Pods name that it does not declare (the directory mode takes a Pod's serviceAccountName
 * as its identity without one), and binds each Pod that names no node to `defaultNode` through
 * pods/binding, as the scheduler would. Every failure is collected: one error names them all.
 */
export async function createDirObjects(w: ApiWriter, cfg: LoadedConfig, o: { pods: boolean; defaultNode: string }): Promise<void> {
  const problems: string[] = [];
  const attempt = async (obj: K8sObject, body: Raw): Promise<Raw | undefined> => {
    try {
      return (await w.create(body)).obj;
    } catch (err) {
      problems.push(`${obj.source.file}:${obj.source.line}: ${describe(obj.kind, obj.metadata.namespace, obj.metadata.name)}: ${(err as Error).message}`);
      return undefined;
    }
  };
  if (!o.pods) {
    const rank = (x: K8sObject): number => (FIRST.includes(x.kind) ? FIRST.indexOf(x.kind) : FIRST.length);
    const others = cfg.objects.filter((x) => x.kind !== 'Pod').sort((a, b) => rank(a) - rank(b));
    for (const obj of others.filter((x) => rank(x) < 2)) await attempt(obj, createBody(obj));
    const declared = new Set(cfg.serviceAccounts.map((s) => `${s.metadata.namespace}/${s.metadata.name}`));
    for (const p of cfg.pods) {
      const sa = `${p.metadata.namespace}/${p.spec.serviceAccountName}`;
      if (p.spec.serviceAccountName === 'default' || declared.has(sa)) continue;
      declared.add(sa);
      const body = { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: p.spec.serviceAccountName, namespace: p.metadata.namespace, labels: { 'app.kubernetes.io/managed-by': 'nodemesh-up' } } };
      await attempt({ ...p, kind: 'ServiceAccount', metadata: { ...p.metadata, name: p.spec.serviceAccountName } }, body);
    }
    for (const obj of others.filter((x) => rank(x) >= 2)) await attempt(obj, createBody(obj));
  } else {
    for (const pod of cfg.pods) {
      const made = await attempt(pod, createBody(pod));
      if (!made || rec(made.spec).nodeName) continue;
      try {
        await bindPod(w.api, pod.metadata.namespace, pod.metadata.name, o.defaultNode);
      } catch (err) {
        problems.push(`${pod.source.file}:${pod.source.line}: Pod ${pod.metadata.namespace}/${pod.metadata.name}: binding it to node ${o.defaultNode}: ${(err as Error).message}`);
      }
    }
  }
  if (problems.length > 0) {
    throw new ConfigError('NM_ERR_KUBE_API', `${problems.length} object(s) of ${cfg.dir} could not be created through the API at ${w.api.server}:\n${problems.join('\n')}`, { problems });
  }
}

/** pods/binding: puts an unscheduled pod on `node`, as the scheduler does. */
export async function bindPod(api: KubeApi, ns: string, name: string, node: string): Promise<void> {
  const body = { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace: ns }, target: { apiVersion: 'v1', kind: 'Node', name: node } };
  await api.request('POST', `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}/binding`, body, 'application/json');
}

/** A Node's status as a ready kubelet reports it. */
function nodeStatus(n: KubeNode): Raw {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return {
    conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'the nodemesh simulator is the kubelet of this node', lastHeartbeatTime: now, lastTransitionTime: now }],
    addresses: [...(n.ip ? [{ type: 'InternalIP', address: n.ip }] : []), { type: 'Hostname', address: n.name }],
  };
}

/**
 * The Node of every simulated node (spec.podCIDR: its pod subnet, which bounds the IPs its
 * agent may report), and the agents' namespace, ServiceAccount and one Pod per node, bound
 * to it, with the projected token the agent authenticates with. Returns each agent pod's uid.
 */
export async function createClusterObjects(w: ApiWriter, nodes: KubeNode[]): Promise<Map<string, { pod: string; uid: string }>> {
  for (const n of nodes) {
    const made = await w.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'nodemesh.io/simulated': 'true' } }, spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] } });
    if (!made.existed) await w.api.request('PATCH', `/api/v1/nodes/${encodeURIComponent(n.name)}/status`, { status: nodeStatus(n) });
  }
  await w.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: AGENT_NAMESPACE } });
  await w.create({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT_SERVICE_ACCOUNT, namespace: AGENT_NAMESPACE } });
  const agents = new Map<string, { pod: string; uid: string }>();
  for (const n of nodes) {
    const pod = agentPodObject(n.name);
    const { obj } = await w.create(pod);
    agents.set(n.name, { pod: pod.metadata.name, uid: String(rec(obj.metadata).uid) });
  }
  return agents;
}

/**
 * The agent DaemonSet's Pod on `node`, as the DaemonSet controller makes it: hostNetwork, bound
 * to the node, the agents' ServiceAccount, its token projected with audience nodemesh.
 */
export function agentPodObject(node: string) {
  return {
    apiVersion: 'v1' as const,
    kind: 'Pod' as const,
    metadata: { name: `nodemesh-agent-${node}`, namespace: AGENT_NAMESPACE, labels: { app: 'nodemesh-agent' } },
    spec: {
      nodeName: node,
      hostNetwork: true,
      serviceAccountName: AGENT_SERVICE_ACCOUNT,
      automountServiceAccountToken: false,
      containers: [{ name: 'agent', image: 'nodemesh', command: ['nodemesh', 'agent'], volumeMounts: [{ name: AGENT_TOKEN_VOLUME.name, mountPath: AGENT_TOKEN_VOLUME.mountPath, readOnly: true }] }],
      volumes: [{ name: AGENT_TOKEN_VOLUME.name, projected: { sources: [{ serviceAccountToken: { audience: AGENT_TOKEN_AUDIENCE, expirationSeconds: 3600, path: AGENT_TOKEN_VOLUME.path } }] } }],
    },
  };
}

/** Marks an agent's Pod Running and Ready (its process is the agent `up` started and found ready). */
export async function markAgentReady(api: KubeApi, pod: string, node: KubeNode): Promise<void> {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const ip = node.ip ? { podIP: node.ip, podIPs: [{ ip: node.ip }], hostIP: node.ip, hostIPs: [{ ip: node.ip }] } : {};
  const cond = (type: string) => ({ type, status: 'True', lastTransitionTime: now });
  const status = { phase: 'Running', startTime: now, ...ip, conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map(cond) };
  await api.request('PATCH', `/api/v1/namespaces/${AGENT_NAMESPACE}/pods/${encodeURIComponent(pod)}/status`, { status });
}

/**
 * Deletes what `up` created, newest first, each only if it still has the uid `up` saw. Returns
 * what could not be deleted (empty when all went, or were gone already).
 */
export async function deleteCreated(api: KubeApi, sd: string, progress: (line: string) => void): Promise<string[]> {
  const failed: string[] = [];
  const objs = readCreated(sd).reverse();
  if (objs.length) progress(`deleting the ${objs.length} object(s) up created through the API at ${api.server}`);
  for (const o of objs) {
    try {
      await api.request('DELETE', o.path, { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: o.uid } }, 'application/json', 10_000);
    } catch (err) {
      const status = statusOf(err);
      if (status === 404) continue; // gone already (a namespace deleted took it along)
      if (status === 409) {
        progress(`${o.what} was made again since (another uid); left as it is`);
        continue;
      }
      failed.push(`${o.what}: ${(err as Error).message}`);
    }
  }
  return failed;
}

// What `nodemesh up --kubeconfig` keeps under <state-dir>/kube: the cluster record the kubelet
// role and `down` read (the kubeconfig, the mode, the nodes and their agents' pods), the list
// of objects it created through the API (so `down` deletes exactly those), and the kubelet's
// pid, log, readiness mark and per-pod files (its /var/lib/kubelet/pods).
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SimError } from '../errors.js';
import { writeFileAtomic } from '../files.js';

/** A simulated node as the API knows it. */
export interface KubeNode {
  name: string;
  /** Its pod subnet: the Node's spec.podCIDR. */
  podCidr: string;
  /** Its address on the cluster network; null for the host node of host mode. */
  ip: string | null;
}

/** A node's agent: its Pod (hostNetwork, in nodemesh-system) and where its projected token is. */
export interface KubeAgent {
  node: string;
  pod: string;
  uid: string;
  tokenFile: string;
}

export interface KubeRecord {
  version: 1;
  /** The kubeconfig `up` was given (absolute): the kubelet role and `down` use it as it is. */
  kubeconfig: string;
  server: string;
  /** The directory `up` was given: its Pods' processes start there. */
  configDir: string;
  mode: 'host' | 'nodes';
  /** Where the directory's Pods that name no node were bound. */
  defaultNode: string;
  nodes: KubeNode[];
  agents: KubeAgent[];
  /** Multi-node mode: the API on the cluster network (the relay's address) and the kubeconfig pointing there. */
  relay?: { listen: string; kubeconfig: string; tlsServerName: string };
}

/** An object `up` created through the API, by its uid, so `down` deletes that one and no other. */
export interface CreatedObject {
  /** Its URL path (`/api/v1/namespaces/shop/pods/web`). */
  path: string;
  what: string;
  uid: string;
}

export interface KubePaths {
  dir: string;
  record: string;
  created: string;
  kubeletPid: string;
  kubeletLog: string;
  /** Written by the kubelet once it has listed its pods, written their tokens and opened the relay. */
  kubeletReady: string;
  /** Per pod (by uid): its ServiceAccount token and projected volumes. */
  podsDir: string;
  /** Multi-node mode: the kubeconfig of the cluster network's processes (the relay's address; 0600). */
  clusterKubeconfig: string;
}

export function kubePaths(sd: string): KubePaths {
  const dir = join(sd, 'kube');
  return {
    dir,
    record: join(dir, 'cluster.json'),
    created: join(dir, 'created.jsonl'),
    kubeletPid: join(dir, 'kubelet.pid'),
    kubeletLog: join(dir, 'kubelet.log'),
    kubeletReady: join(dir, 'kubelet.ready'),
    podsDir: join(dir, 'pods'),
    clusterKubeconfig: join(dir, 'cluster-kubeconfig'),
  };
}

/** A pod's own files (tokens, projected volumes), as kubelet keeps them under /var/lib/kubelet/pods/<uid>. */
export function podFilesDir(sd: string, uid: string): string {
  return join(kubePaths(sd).podsDir, uid);
}

/** The record, or undefined when `up --kubeconfig` never ran on this state dir. */
export function readKubeRecord(sd: string): KubeRecord | undefined {
  const file = kubePaths(sd).record;
  if (!existsSync(file)) return undefined;
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as KubeRecord;
    if (r.version !== 1 || typeof r.kubeconfig !== 'string' || !Array.isArray(r.nodes) || !Array.isArray(r.agents)) throw new Error('unknown shape');
    return r;
  } catch (e) {
    throw new SimError('NM_ERR_SIM_STATE', `the embedded cluster's record is unreadable (${(e as Error).message}); \`nodemesh down\` removes what it can find`, { where: file });
  }
}

export function writeKubeRecord(sd: string, r: KubeRecord): void {
  writeFileAtomic(kubePaths(sd).record, JSON.stringify(r, null, 2) + '\n', { mode: 0o600 });
}

/** Appends one created object (a line each, so a crash mid-way loses none written before). */
export function recordCreated(sd: string, o: CreatedObject): void {
  const p = kubePaths(sd);
  mkdirSync(p.dir, { recursive: true });
  appendFileSync(p.created, JSON.stringify(o) + '\n', { mode: 0o600 });
}

export function readCreated(sd: string): CreatedObject[] {
  let text: string;
  try {
    text = readFileSync(kubePaths(sd).created, 'utf8');
  } catch {
    return [];
  }
  const out: CreatedObject[] = [];
  for (const line of text.split('\n')) {
    try {
      const o = JSON.parse(line) as CreatedObject;
      if (typeof o.path === 'string' && typeof o.uid === 'string') out.push(o);
    } catch {
      /* a line cut by a crash */
    }
  }
  return out;
}

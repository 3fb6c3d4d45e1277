// Brings up a real multi-node mesh for privileged end-to-end tests, exactly as `nodemesh up`
// does: the simulator's nodes (one netns each, joined by the cluster network), the control
// plane on the cluster network and one agent per node, all as processes. Agents' admin
// endpoints live inside the node namespaces, so they are read with curl run there.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curlIn, curlJsonIn, CLUSTER_NETNS_PATH, multiNodeNodes, nodeDump } from '../../src/cluster/nodes.js';
import { controlPlaneDir } from '../../src/cluster/daemon.js';
import { down, up } from '../../src/cluster/index.js';
import { listPods, type SimNodeInfo, type SimPodInfo } from '../../src/sim/index.js';
import type { FlowRecord } from '../../src/telemetry/index.js';
import { podRunner, type PodRunner } from './mesh.js';

export interface Cluster extends PodRunner {
  sd: string;
  dir: string;
  nodes: SimNodeInfo[];
  pinRoots: string[];
  pods(): Promise<SimPodInfo[]>;
  ip(pod: string): string;
  node(name: string): SimNodeInfo;
  dump(node: string): Promise<Record<string, unknown>>;
  flows(node: string): Promise<FlowRecord[]>;
  metrics(node: string): Promise<string>;
  /** Writes a file into the config dir the control plane watches. */
  write(file: string, yaml: string): void;
  /** Waits until every node's agent has (or no longer has) a policy `ns/name`. */
  waitPolicy(key: string, present: boolean, timeoutMs?: number): Promise<number>;
  /** The control plane's admin, from inside the cluster network. */
  controlPlane(path: string): Promise<{ code: number; body: string }>;
  down(): Promise<void>;
}

export async function clusterUp(dir: string): Promise<Cluster> {
  const sd = mkdtempSync(join(tmpdir(), 'nm-e2e-cluster-'));
  await up(dir, sd);
  const nodes = multiNodeNodes(sd);
  const ips = new Map((await listPods({ stateDir: sd })).map((p) => [`${p.namespace}/${p.name}`, p.ip]));
  const node = (name: string): SimNodeInfo => {
    const n = nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}; have ${nodes.map((x) => x.name).join(', ')}`);
    return n;
  };
  const dump = (name: string) => nodeDump(node(name));
  return {
    sd,
    dir,
    nodes,
    pinRoots: nodes.map((n) => n.pinRoot!),
    ...podRunner(sd),
    pods: async () => listPods({ stateDir: sd }),
    ip: (pod) => {
      const ip = ips.get(pod);
      if (!ip) throw new Error(`no pod ${pod}; have ${[...ips.keys()].join(', ')}`);
      return ip;
    },
    node,
    dump,
    flows: (name) => curlJsonIn<FlowRecord[]>(node(name).netnsPath!, 'http://127.0.0.1:15000/debug/flows'),
    metrics: async (name) => (await curlIn(node(name).netnsPath!, 'http://127.0.0.1:15020/metrics')).body,
    write: (file, yaml) => writeFileSync(join(dir, file), yaml),
    waitPolicy: async (key, present, timeoutMs = 5000) => {
      const t0 = Date.now();
      while (Date.now() - t0 < timeoutMs) {
        const all = await Promise.all(nodes.map((n) => dump(n.name)));
        const has = all.map((d) => (d.policies as { name: string; namespace: string }[]).some((p) => `${p.namespace}/${p.name}` === key));
        if (has.every((h) => h === present)) return Date.now() - t0;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`policy ${key} ${present ? 'never reached' : 'never left'} every node`);
    },
    controlPlane: (path) => curlIn(CLUSTER_NETNS_PATH, `http://127.0.0.1:15014${path}`),
    down: async () => {
      await down(sd);
      rmSync(sd, { recursive: true, force: true });
    },
  };
}

/** The control plane's log, for failure messages. */
export function controlPlaneLog(sd: string): string {
  return readFileSync(join(controlPlaneDir(sd), 'control-plane.log'), 'utf8');
}

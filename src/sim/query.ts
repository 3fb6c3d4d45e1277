// Reading the simulator: the pod list as commands print it, finding one pod, and running a
// command inside one (`sim exec`).
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { NativeError, SimError, UsageError } from '../errors.js';
import { cgroupPids } from './cgroup.js';
import { NODE_PIN_ROOT_PREFIX, nodePaths, simPaths, type SimPaths } from './paths.js';
import { podEnv, runInPod, spawnInPod as spawnInSandbox, type SpawnInPodOptions } from './process.js';
import { readSimState, stateMode, type SimNode, type SimPod, type SimState } from './state.js';

export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new NativeError('NM_ERR_NOT_ROOT', `${what} needs root: it creates network namespaces, cgroups and links`);
  }
}

export type SimPodStatus = 'Running' | 'Exited' | 'Creating';

/** One pod as `sim pods --json` prints it. */
export interface SimPodInfo {
  namespace: string;
  name: string;
  /** '' while the pod is still being created. */
  ip: string;
  node: string;
  uid: string;
  netns: string;
  netnsPath: string;
  cgroup: string;
  pids: number[];
  status: SimPodStatus;
  containerId: string;
  log: string;
}

export function podStatus(p: SimPod): SimPodStatus {
  if (p.phase !== 'Running') return 'Creating';
  const live = new Set(cgroupPids(p.cgroup));
  return p.containers.some((c) => live.has(c.pid)) ? 'Running' : 'Exited';
}

export function toPodInfo(p: SimPod): SimPodInfo {
  return {
    namespace: p.namespace,
    name: p.name,
    ip: p.ip ?? '',
    node: p.node,
    uid: p.uid,
    netns: p.netns,
    netnsPath: p.netnsPath,
    cgroup: p.cgroup,
    pids: p.pids,
    status: podStatus(p),
    containerId: p.containerId,
    log: p.log,
  };
}

export interface SimQueryOptions {
  stateDir?: string;
}

/** The simulator's state, or undefined when it is down. */
export function readState(opts: SimQueryOptions = {}): SimState | undefined {
  return readSimState(simPaths(opts.stateDir));
}

/** Every simulated pod, sorted by namespace and name. Needs no root. */
export function listPods(opts: SimQueryOptions = {}): SimPodInfo[] {
  const st = readState(opts);
  if (!st) return [];
  return st.pods.map(toPodInfo).sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
}

/** One node as `sim nodes --json` prints it. */
export interface SimNodeInfo {
  name: string;
  /** The node's address on the cluster network; null for the host node of host mode. */
  ip: string | null;
  /** The node's netns name (`ip netns exec <netns> …`); null for the host node of host mode. */
  netns: string | null;
  netnsPath: string | null;
  /** The node's pod subnet. */
  subnet: string;
  /** The pod bridge (inside the node netns in multi-node mode). */
  bridge: string;
  /** The node's CNI config dir. */
  netDir: string;
  /** How many simulated pods run on it. */
  pods: number;
  /** The --state-dir `sim agent` gives this node's agent (its files go to `<agentStateDir>/agent/`). */
  agentStateDir: string;
  /** The --pin-root `sim agent` gives this node's agent; null: the agent's own default. */
  pinRoot: string | null;
}

/** The host node of host mode (`ip`/`netns` null: it is the host itself). */
export function hostNodeInfo(name: string, netDir: string, subnet: string, bridge: string, pods: number, agentStateDir = ''): SimNodeInfo {
  return { name, ip: null, netns: null, netnsPath: null, subnet, bridge, netDir, pods, agentStateDir, pinRoot: null };
}

export function toNodeInfo(state: SimState, paths: SimPaths, n: SimNode): SimNodeInfo {
  const pods = state.pods.filter((p) => p.hostNode === n.name).length;
  if (stateMode(state) !== 'nodes' || !n.netns) return hostNodeInfo(n.name, n.netDir, n.subnet, n.bridge, pods, paths.stateDir);
  return {
    name: n.name,
    ip: n.ip ?? null,
    netns: n.netns,
    netnsPath: n.netnsPath ?? null,
    subnet: n.subnet,
    bridge: n.bridge,
    netDir: n.netDir,
    pods,
    agentStateDir: nodePaths(paths, n.name).dir,
    pinRoot: `${NODE_PIN_ROOT_PREFIX}${n.name}`,
  };
}

/** Every node of a state, in slot order (host mode: the one host node). */
export function nodeInfos(state: SimState, paths: SimPaths): SimNodeInfo[] {
  return [...state.nodes]
    .filter((n) => n.phase !== 'Creating')
    .sort((a, b) => (a.index ?? 0) - (b.index ?? 0))
    .map((n) => toNodeInfo(state, paths, n));
}

/** The simulated nodes (empty when the simulator is down). Needs no root. */
export function listNodes(opts: SimQueryOptions = {}): SimNodeInfo[] {
  const paths = simPaths(opts.stateDir);
  const st = readSimState(paths);
  return st ? nodeInfos(st, paths) : [];
}

/** Finds a node by name; NM_ERR_SIM_NODE when the simulator has no such node. */
export function getNode(name: string, opts: SimQueryOptions = {}): SimNodeInfo {
  const list = listNodes(opts);
  const n = list.find((x) => x.name === name);
  if (!n) {
    throw new SimError('NM_ERR_SIM_NODE', `no simulated node ${name} (${list.length ? `nodes: ${list.map((x) => x.name).join(', ')}` : 'the simulator is down; run `nodemesh sim up <dir>`, or `sim up --nodes-only <dir>` to create only the nodes'})`);
  }
  return n;
}

/**
 * `/run/netns/nm-node.<node>`: the netns a node's processes (its agent) run in. Throws
 * NM_ERR_SIM_NODE for an unknown node, and for the host node of host mode, which is the
 * root netns and has no such path.
 */
export function nodeNetnsPath(node: string, opts: SimQueryOptions = {}): string {
  const n = getNode(node, opts);
  if (!n.netnsPath) throw new SimError('NM_ERR_SIM_NODE', `node ${node} is the host itself (host mode): it has no netns of its own`);
  return n.netnsPath;
}

/** Finds a pod by `namespace/name` (or `name` in namespace default). */
export function getPod(ref: string, opts: SimQueryOptions = {}): SimPod {
  const slash = ref.indexOf('/');
  const [ns, name] = slash >= 0 ? [ref.slice(0, slash), ref.slice(slash + 1)] : ['default', ref];
  if (!ns || !name) throw new UsageError(`pod ${JSON.stringify(ref)} is not <namespace>/<name>`);
  const st = readState(opts);
  const pod = st?.pods.find((p) => p.namespace === ns && p.name === name);
  if (!pod) {
    const known = st?.pods.map((p) => `${p.namespace}/${p.name}`).join(', ');
    throw new SimError('NM_ERR_SIM_POD', `pod ${ns}/${name} is not in the simulator (${known ? `pods: ${known}` : 'no pods; run `nodemesh sim up <dir>`'})`);
  }
  if (pod.phase !== 'Running') throw new SimError('NM_ERR_SIM_POD', `pod ${ns}/${name} is still being created (or a crashed run left it); run \`nodemesh sim up\` again`);
  return pod;
}

/**
 * Starts `argv` in a pod's netns and cgroup, with the pod's first container's environment
 * and working directory unless `opts` says otherwise. Returns the ChildProcess.
 */
export function spawnInPod(pod: SimPod | string, argv: string[], opts: SpawnInPodOptions & SimQueryOptions = {}): ChildProcess {
  const p = typeof pod === 'string' ? getPod(pod, opts) : pod;
  const first = p.containers[0];
  return spawnInSandbox(p, argv, {
    ...opts,
    env: opts.env ?? podEnv(p, first?.env),
    cwd: opts.cwd ?? podCwd(p),
  });
}

/** The first container's working dir, or / when that dir is gone (a removed temp config dir). */
function podCwd(p: SimPod): string {
  const d = p.containers[0]?.cwd ?? p.workingDir;
  return existsSync(d) ? d : '/';
}

/** `sim exec`: runs `argv` in the pod, stdio inherited by default; resolves with the exit status (128+n for signal n). */
export function execInPod(ref: string | SimPod, argv: string[], opts: SpawnInPodOptions & SimQueryOptions = {}): Promise<number> {
  requireRoot('sim exec');
  const p = typeof ref === 'string' ? getPod(ref, opts) : ref;
  const first = p.containers[0];
  return runInPod(p, argv, {
    stdio: opts.stdio ?? 'inherit',
    env: opts.env ?? podEnv(p, first?.env),
    cwd: opts.cwd ?? podCwd(p),
  });
}

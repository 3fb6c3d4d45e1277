// `sim up`'s plan: from the config dir's Pods, the options and the simulator's state, the mode
// (host, or one netns per node), the nodes pods go to (and which of them to create), and one
// action per pod. Nothing on the host changes here except the host node's conflist, written
// when absent. Problems a run reports together are collected for the check step (up-check.ts);
// those that make looking further pointless are thrown at once.
import { hostname } from 'node:os';
import { CniError, ConfigError, errorFor, SimError, UsageError } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import { findCgroup2Root, listPodCgroups } from './cgroup.js';
import { buildCniArgs } from './cni.js';
import { conflistBridge, conflistSubnet, ensureConflist, generateConflist, nodeConflistOptions, readNetConf, type CniConfList } from './conflist.js';
import { isLinkName, linkExists, listSimNetns, netnsExists } from './host.js';
import { newNodeRecord } from './node.js';
import { allocateNodeSlots, nodeNameProblem, nodesNamedBy } from './nodes.js';
import { cniSearchPath, DEFAULT_NODE, DEFAULT_SUBNET, SIM_BRIDGE, SIM_CONFLIST_NAME, type SimPaths } from './paths.js';
import { podAlive, podSpecHash, type Progress } from './pod.js';
import { hostNodeInfo, type SimNodeInfo, type SimPodInfo } from './query.js';
import { readSimState, stateMode, type SimMode, type SimNode, type SimPod, type SimState } from './state.js';
import { parseSubnet } from './subnet.js';

export interface SimUpOptions {
  stateDir?: string;
  /** Host mode: the pod subnet for a new node config (default 10.244.0.0/24). Refused in multi-node mode. */
  subnet?: string;
  /** Directories searched after /usr/lib/cni and the node's plugin dir (default <repo>/native/build). */
  cniBinDirs?: string[];
  /** Per pod: processes started and declared ports accepting (default 30 s). */
  readyTimeoutMs?: number;
  /** Host mode: the node's name (default os.hostname()). */
  nodeName?: string;
  /** Multi-node mode even when no pod names a node. */
  multiNode?: boolean;
  /** Multi-node mode: the node of pods without spec.nodeName (default node-0). Implies multiNode. */
  defaultNode?: string;
  /**
   * Create the nodes the config dir needs (multi-node mode) but no pods, so that each node's
   * agent can start in its node before the pods are created. In host mode nothing is created.
   */
  nodesOnly?: boolean;
  /** Receives one line per long step; the CLI prints them on stderr. */
  onProgress?: Progress;
}

export interface SimUpResult {
  mode: SimMode;
  created: SimPodInfo[];
  restarted: SimPodInfo[];
  unchanged: SimPodInfo[];
  /** Every pod of the simulator after this run, including ones from earlier runs. */
  pods: SimPodInfo[];
  /** Nodes this run created (multi-node mode). */
  createdNodes: string[];
  /** Every node after this run. */
  nodes: SimNodeInfo[];
}

type ProblemCode = 'NM_ERR_CONFIG_CONFLICT' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CNI' | 'NM_ERR_USAGE';

/** Every problem of a run, in the order found; the first one's code becomes the error's. */
export class Problems {
  readonly list: string[] = [];
  #first: ProblemCode | undefined;

  add(code: ProblemCode, message: string): void {
    this.#first ??= code;
    this.list.push(message);
  }

  /** Throws them all as one error, "N problem(s); nothing was changed". */
  throwIfAny(): void {
    if (this.list.length === 0) return;
    throw errorFor(this.#first!, `${this.list.length} problem(s); nothing was changed:\n${this.list.join('\n')}`, { problems: this.list });
  }
}

export type PodAction = 'create' | 'recreate' | 'unchanged' | 'restart';

/** What `sim up` does with one Pod of the config dir, on which node. */
export interface PodPlan {
  pod: Pod;
  hash: string;
  /** The node the pod reports (spec.nodeName, else the default node). */
  node: string;
  /** The node it is wired on. */
  target: SimNode;
  action: PodAction;
  existing?: SimPod;
}

/** A node's CNI config as the runtime will read it, for the check step. */
export interface NodeConf {
  list: CniConfList;
  confFile: string;
}

export interface UpPlan {
  paths: SimPaths;
  configDir: string;
  opts: SimUpOptions;
  prior: SimState | undefined;
  cgroupRoot: string;
  mode: SimMode;
  /** Every node a pod may go to: those up already and those to create. */
  nodes: SimNode[];
  /** Multi-node mode: nodes to create (including ones a crashed run left half-made). */
  freshNodes: SimNode[];
  confs: Map<SimNode, NodeConf>;
  pods: PodPlan[];
  problems: Problems;
}

export function problem(pod: Pod, message: string): string {
  return `${pod.source.file}:${pod.source.line}: Pod ${pod.metadata.namespace}/${pod.metadata.name}: ${message}`;
}

/** Simulator objects on the host that no state records (another state dir's, or a crash's) are refused. */
function refuseStrayObjects(paths: SimPaths, root: string): void {
  const stray = [
    ...listSimNetns().map((n) => `netns ${n}`),
    ...(linkExists(SIM_BRIDGE) ? [`bridge ${SIM_BRIDGE}`] : []),
    ...listPodCgroups(root).map((c) => `cgroup ${c}`),
  ];
  if (stray.length > 0) {
    throw new SimError('NM_ERR_SIM_STATE', `simulator objects exist that ${paths.stateFile} does not record: ${stray.join(', ')}. Another simulator (a different --state-dir) is running, or a crashed run left them; if it is a leftover, \`nodemesh sim down --state-dir ${paths.stateDir}\` removes them`);
  }
}

/** The mode: host (one node, the host) or nodes (every node a netns); fixed at the first run. */
function chooseMode(allPods: Pod[], prior: SimState | undefined, opts: SimUpOptions): SimMode {
  const naming = allPods.filter((p) => p.spec.nodeName !== undefined);
  const wantNodes = opts.multiNode === true || opts.defaultNode !== undefined || naming.length > 0;
  const priorMode = stateMode(prior);
  if (priorMode === 'host' && wantNodes) {
    const why = naming.length > 0 ? `${naming[0]!.source.file}:${naming[0]!.source.line}: Pod ${naming[0]!.metadata.namespace}/${naming[0]!.metadata.name} names node ${naming[0]!.spec.nodeName}` : 'multi-node mode was asked for';
    throw new ConfigError('NM_ERR_CONFIG_CONFLICT', `${why}, but the simulator runs in host mode (its pods were created with no node named, on the host itself); run \`nodemesh sim down\` first, then sim up again to start over with one netns per node`);
  }
  const mode: SimMode = priorMode ?? (wantNodes ? 'nodes' : 'host');
  if (mode === 'nodes' && opts.subnet !== undefined) {
    throw new UsageError('--subnet applies to host mode only; in multi-node mode node i gets 10.244.<i>.0/24');
  }
  return mode;
}

/** The host node (host mode): the node's CNI config, written if absent, decides bridge and subnet. */
function hostNode(prior: SimState | undefined, paths: SimPaths, opts: SimUpOptions): { node: SimNode; conf: NodeConf } {
  const confFile = ensureConflist(paths.netDir, { subnet: opts.subnet ?? DEFAULT_SUBNET, ipamDir: paths.ipamDir });
  const { list } = readNetConf(paths.netDir);
  const subnetText = conflistSubnet(list) ?? prior?.nodes[0]?.subnet ?? DEFAULT_SUBNET;
  if (opts.subnet !== undefined && opts.subnet !== subnetText) {
    throw new UsageError(`--subnet ${opts.subnet} differs from the node's CNI config ${confFile}, which uses ${subnetText}; run \`nodemesh sim down --purge\` to start over with a new subnet`);
  }
  parseSubnet(subnetText);
  const bridge = conflistBridge(list) ?? SIM_BRIDGE;
  if (!isLinkName(bridge)) throw new CniError(`bridge name ${JSON.stringify(bridge)} is not a valid interface name`, { where: confFile });
  const node: SimNode = {
    name: prior?.nodes[0]?.name ?? opts.nodeName ?? hostname(),
    bridge,
    subnet: subnetText,
    netDir: paths.netDir,
    ipamDir: paths.ipamDir,
    cniPath: opts.cniBinDirs || !prior?.nodes[0] ? cniSearchPath(paths.binDir, opts.cniBinDirs) : prior.nodes[0].cniPath,
  };
  return { node, conf: { list, confFile } };
}

type NodesPlan = Pick<UpPlan, 'nodes' | 'freshNodes' | 'confs'>;

/**
 * Multi-node mode: the nodes up already (their netns must exist) and the nodes to make for the
 * Pods of `pods` (with --nodes-only, of `allPods`), each new one in the lowest free slot.
 */
function planNodes(allPods: Pod[], pods: Pod[], prior: SimState | undefined, paths: SimPaths, opts: SimUpOptions, cgroupRoot: string, problems: Problems): NodesPlan {
  const defaultNode = opts.defaultNode ?? DEFAULT_NODE;
  const why = nodeNameProblem(defaultNode);
  if (why) throw new UsageError(`--default-node: ${why}`);
  for (const p of allPods.filter((x) => x.spec.nodeName !== undefined)) {
    const bad = nodeNameProblem(p.spec.nodeName!);
    if (bad) problems.add('NM_ERR_CONFIG_INVALID', problem(p, `spec.nodeName: ${bad}`));
  }
  const ready = (prior?.nodes ?? []).filter((n) => n.phase !== 'Creating');
  for (const n of ready) {
    if (!n.netns || !netnsExists(n.netns)) {
      throw new SimError('NM_ERR_SIM_STATE', `node ${n.name}'s netns ${n.netns ?? '(none)'} is gone; run \`nodemesh sim down\` and start over`, { where: paths.stateFile });
    }
  }
  const wanted = pods.length > 0 ? nodesNamedBy(pods, defaultNode) : opts.nodesOnly ? nodesNamedBy(allPods, defaultNode) : [];
  if (wanted.length === 0 && ready.length === 0) wanted.push(defaultNode);
  const valid = wanted.filter((n) => !nodeNameProblem(n));
  // A node left half-made by a crash keeps its slot and is made again.
  const slots = new Map(ready.map((n) => [n.name, n.index!] as const));
  const redo = (prior?.nodes ?? []).filter((n) => n.phase === 'Creating' && valid.includes(n.name));
  const alloc = allocateNodeSlots(new Map([...slots, ...redo.map((n) => [n.name, n.index!] as const)]), valid, defaultNode);
  const freshNodes = [
    ...redo.map((n) => newNodeRecord(paths, n.name, n.index!, opts.cniBinDirs, cgroupRoot)),
    ...[...alloc].map(([name, index]) => newNodeRecord(paths, name, index, opts.cniBinDirs, cgroupRoot)),
  ];
  const confs = new Map<SimNode, NodeConf>();
  for (const n of ready) {
    try {
      const { file, list } = readNetConf(n.netDir);
      confs.set(n, { list, confFile: file });
    } catch (e) {
      problems.add('NM_ERR_CNI', `node ${n.name}: ${(e as Error).message}`);
    }
  }
  for (const n of freshNodes) confs.set(n, { list: generateConflist(nodeConflistOptions(n)), confFile: `${n.netDir}/${SIM_CONFLIST_NAME}` });
  return { nodes: [...ready, ...freshNodes], freshNodes, confs };
}

/** The action for one Pod against what the state has; a problem (and no plan) when it cannot go on. */
function planPod(pod: Pod, nodeName: string, target: SimNode, prior: SimState | undefined, problems: Problems): PodPlan | undefined {
  const hash = podSpecHash(pod, nodeName);
  const existing = prior?.pods.find((p) => p.namespace === pod.metadata.namespace && p.name === pod.metadata.name);
  let action: PodAction = 'create';
  if (existing && existing.phase === 'Running') {
    if (existing.specHash !== hash) {
      problems.add('NM_ERR_CONFIG_CONFLICT', problem(pod, `is already up with a different spec${existing.node !== nodeName ? ` (on node ${existing.node}, now ${nodeName})` : ''} (pods are immutable); run \`nodemesh sim down\` first to recreate it`));
      return undefined;
    }
    // Dead processes are restarted, as the kubelet does for restartPolicy Always (the
    // default); with Never or OnFailure the pod is left as it is.
    const policy = (pod.raw.spec as { restartPolicy?: unknown } | undefined)?.restartPolicy;
    action = podAlive(existing) || policy === 'Never' || policy === 'OnFailure' ? 'unchanged' : 'restart';
  } else if (existing) {
    action = 'recreate'; // a crashed run left it half-created
  }
  try {
    buildCniArgs({ namespace: pod.metadata.namespace, name: pod.metadata.name, uid: pod.metadata.uid, containerId: 'x' });
    if (!/^[A-Za-z0-9-]+$/.test(pod.metadata.uid)) throw new Error(`metadata.uid ${JSON.stringify(pod.metadata.uid)} cannot name a cgroup (letters, digits and - only)`);
  } catch (e) {
    problems.add('NM_ERR_CONFIG_INVALID', problem(pod, (e as Error).message));
    return undefined;
  }
  return { pod, hash, node: nodeName, target, action, ...(existing ? { existing } : {}) };
}

/**
 * The plan of one `sim up`, or the finished result when there is nothing to do (host mode
 * with --nodes-only before any pod: the host is the node, reported as sim up would make it).
 */
export function planUp(allPods: Pod[], configDir: string, paths: SimPaths, opts: SimUpOptions): UpPlan | { done: SimUpResult } {
  const prior = readSimState(paths);
  const cgroupRoot = prior?.cgroupRoot ?? findCgroup2Root();
  if (!prior) refuseStrayObjects(paths, cgroupRoot);
  const mode = chooseMode(allPods, prior, opts);
  const pods = opts.nodesOnly ? [] : allPods;
  const problems = new Problems();
  let nodes: NodesPlan;
  if (mode === 'host') {
    if (opts.nodesOnly && !prior) {
      const name = opts.nodeName ?? hostname();
      return { done: { mode, created: [], restarted: [], unchanged: [], pods: [], createdNodes: [], nodes: [hostNodeInfo(name, paths.netDir, DEFAULT_SUBNET, SIM_BRIDGE, 0)] } };
    }
    const h = hostNode(prior, paths, opts);
    nodes = { nodes: [h.node], freshNodes: [], confs: new Map([[h.node, h.conf]]) };
  } else {
    nodes = planNodes(allPods, pods, prior, paths, opts, cgroupRoot, problems);
  }
  const defaultNode = opts.defaultNode ?? DEFAULT_NODE;
  const plans: PodPlan[] = [];
  for (const pod of pods) {
    const nodeName = mode === 'host' ? (pod.spec.nodeName ?? nodes.nodes[0]!.name) : (pod.spec.nodeName ?? defaultNode);
    const target = mode === 'host' ? nodes.nodes[0]! : nodes.nodes.find((n) => n.name === nodeName);
    if (!target) continue; // a bad nodeName, reported above
    const pl = planPod(pod, nodeName, target, prior, problems);
    if (pl) plans.push(pl);
  }
  return { paths, configDir, opts, prior, cgroupRoot, mode, ...nodes, pods: plans, problems };
}

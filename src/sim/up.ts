// `sim up`: validate a config dir against the current state, then create the nodes and pods
// that are not up yet. All checks run before anything is created; a failure part-way removes
// what this run created, so a bad input never leaves half a pod or half a node.
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { CniError, ConfigError, errorFor, SimError, UsageError } from '../errors.js';
import { loadConfigDirStrict, type Pod } from '../k8s/index.js';
import { findCgroup2Root, listPodCgroups, simCgroupParent } from './cgroup.js';
import { buildCniArgs } from './cni.js';
import { conflistBridge, conflistSubnet, ensureConflist, generateConflist, loopbackConflist, nodeConflistOptions, readNetConf, type CniConfList } from './conflist.js';
import { isLinkName, linkExists, listSimNetns, netnsExists, readIpForward } from './host.js';
import { createNodes, newNodeRecord, teardownNode } from './node.js';
import { allocateNodeSlots, nodeNameProblem, nodesNamedBy } from './nodes.js';
import { cniSearchPath, DEFAULT_NODE, DEFAULT_SUBNET, findPlugin, SIM_BRIDGE, SIM_CONFLIST_NAME, simPaths, type SimPaths } from './paths.js';
import { containerPlans, createPod, podAlive, podSpecHash, restartPod, teardownPod, type Progress } from './pod.js';
import { finalizeIfEmpty } from './down.js';
import { lockSim, readSimState, STATE_VERSION, stateMode, writeSimState, type SimMode, type SimNode, type SimPod, type SimState } from './state.js';
import { parseSubnet, unassignableReason } from './subnet.js';
import { hostNodeInfo, nodeInfos, requireRoot, toPodInfo, type SimNodeInfo, type SimPodInfo } from './query.js';

export interface SimUpOptions {
  stateDir?: string;
  /** Host mode: the pod subnet for a new node config (default 10.244.0.0/24). Refused in multi-node mode. */
  subnet?: string;
  /** Directories searched after /usr/lib/cni (default <repo>/native/build). */
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

type Plan = { pod: Pod; hash: string; node: string; target: SimNode; action: 'create' | 'recreate' | 'unchanged' | 'restart'; existing?: SimPod };

function problem(pod: Pod, message: string): string {
  return `${pod.source.file}:${pod.source.line}: Pod ${pod.metadata.namespace}/${pod.metadata.name}: ${message}`;
}

/** Simulator objects on the host that no state records: another state dir's, or a crash's. */
function unrecordedObjects(root: string): string[] {
  return [
    ...listSimNetns().map((n) => `netns ${n}`),
    ...(linkExists(SIM_BRIDGE) ? [`bridge ${SIM_BRIDGE}`] : []),
    ...listPodCgroups(root).map((c) => `cgroup ${c}`),
  ];
}

export async function simUp(dir: string, opts: SimUpOptions = {}): Promise<SimUpResult> {
  requireRoot('sim up');
  const progress = opts.onProgress ?? (() => undefined);
  const configDir = resolve(dir);
  const cfg = loadConfigDirStrict(dir); // file:line errors, before anything else
  const paths = simPaths(opts.stateDir);
  const release = await lockSim(paths);
  try {
    return await upLocked(cfg.pods, configDir, paths, opts, progress);
  } finally {
    release();
  }
}

/** The host node (host mode): the node's CNI config, written if absent, decides bridge and subnet. */
function hostNode(prior: SimState | undefined, paths: SimPaths, opts: SimUpOptions): { node: SimNode; list: CniConfList; confFile: string } {
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
    cniPath: opts.cniBinDirs || !prior?.nodes[0] ? cniSearchPath(opts.cniBinDirs) : prior.nodes[0].cniPath,
  };
  return { node, list, confFile };
}

async function upLocked(allPods: Pod[], configDir: string, paths: SimPaths, opts: SimUpOptions, progress: Progress): Promise<SimUpResult> {
  const prior = readSimState(paths);
  const cgroupRoot = prior?.cgroupRoot ?? findCgroup2Root();
  if (!prior) {
    const stray = unrecordedObjects(cgroupRoot);
    if (stray.length > 0) {
      throw new SimError('NM_ERR_SIM_STATE', `simulator objects exist that ${paths.stateFile} does not record: ${stray.join(', ')}. Another simulator (a different --state-dir) is running, or a crashed run left them; if it is a leftover, \`nodemesh sim down --state-dir ${paths.stateDir}\` removes them`,
      );
    }
  }

  // ---- the mode: host (one node, the host) or nodes (every node a netns) ----
  const naming = allPods.filter((p) => p.spec.nodeName !== undefined);
  const wantNodes = opts.multiNode === true || opts.defaultNode !== undefined || naming.length > 0;
  const priorMode = stateMode(prior);
  if (priorMode === 'host' && wantNodes) {
    const why = naming.length > 0 ? `${naming[0]!.source.file}:${naming[0]!.source.line}: Pod ${naming[0]!.metadata.namespace}/${naming[0]!.metadata.name} names node ${naming[0]!.spec.nodeName}` : 'multi-node mode was asked for';
    throw new ConfigError('NM_ERR_CONFIG_CONFLICT', `${why}, but the simulator runs in host mode (its pods were created with no node named, on the host itself); run \`nodemesh sim down\` first, then sim up again to start over with one netns per node`,
    );
  }
  const mode: SimMode = priorMode ?? (wantNodes ? 'nodes' : 'host');
  if (mode === 'nodes' && opts.subnet !== undefined) {
    throw new UsageError('--subnet applies to host mode only; in multi-node mode node i gets 10.244.<i>.0/24');
  }
  const pods = opts.nodesOnly ? [] : allPods;

  // ---- plan and validate: nothing on the host changes in this block (but the host node's conflist) ----
  const problems: string[] = [];
  let firstCode: 'NM_ERR_CONFIG_CONFLICT' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CNI' | 'NM_ERR_USAGE' | undefined;
  const fail = (code: NonNullable<typeof firstCode>, msg: string) => {
    firstCode ??= code;
    problems.push(msg);
  };

  let nodes: SimNode[];
  let freshNodes: SimNode[] = [];
  const lists = new Map<SimNode, { list: CniConfList; confFile: string }>();
  const defaultNode = opts.defaultNode ?? DEFAULT_NODE;
  if (mode === 'host') {
    if (opts.nodesOnly && !prior) {
      // Nothing to create: the host is the node. Report it as sim up would make it.
      const name = opts.nodeName ?? hostname();
      return { mode, created: [], restarted: [], unchanged: [], pods: [], createdNodes: [], nodes: [hostNodeInfo(name, paths.netDir, DEFAULT_SUBNET, SIM_BRIDGE, 0)] };
    }
    const h = hostNode(prior, paths, opts);
    nodes = [h.node];
    lists.set(h.node, { list: h.list, confFile: h.confFile });
  } else {
    const why = nodeNameProblem(defaultNode);
    if (why) throw new UsageError(`--default-node: ${why}`);
    for (const p of naming) {
      const bad = nodeNameProblem(p.spec.nodeName!);
      if (bad) fail('NM_ERR_CONFIG_INVALID', problem(p, `spec.nodeName: ${bad}`));
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
    const redo = (prior?.nodes ?? []).filter((n) => n.phase === 'Creating');
    const alloc = allocateNodeSlots(new Map([...slots, ...redo.filter((n) => valid.includes(n.name)).map((n) => [n.name, n.index!] as const)]), valid, defaultNode);
    const cniPath = cniSearchPath(opts.cniBinDirs);
    freshNodes = [
      ...redo.filter((n) => valid.includes(n.name)).map((n) => newNodeRecord(paths, n.name, n.index!, cniPath, cgroupRoot)),
      ...[...alloc].map(([name, index]) => newNodeRecord(paths, name, index, cniPath, cgroupRoot)),
    ];
    nodes = [...ready, ...freshNodes];
    for (const n of ready) {
      try {
        const { file, list } = readNetConf(n.netDir);
        lists.set(n, { list, confFile: file });
      } catch (e) {
        fail('NM_ERR_CNI', `node ${n.name}: ${(e as Error).message}`);
      }
    }
    for (const n of freshNodes) lists.set(n, { list: generateConflist(nodeConflistOptions(n)), confFile: `${n.netDir}/${SIM_CONFLIST_NAME}` });
  }

  const plans: Plan[] = [];
  for (const pod of pods) {
    const nodeName = mode === 'host' ? (pod.spec.nodeName ?? nodes[0]!.name) : (pod.spec.nodeName ?? defaultNode);
    const target = mode === 'host' ? nodes[0]! : nodes.find((n) => n.name === nodeName);
    if (!target) continue; // a bad nodeName, reported above
    const hash = podSpecHash(pod, nodeName);
    const existing = prior?.pods.find((p) => p.namespace === pod.metadata.namespace && p.name === pod.metadata.name);
    let action: Plan['action'] = 'create';
    if (existing && existing.phase === 'Running') {
      if (existing.specHash !== hash) {
        fail('NM_ERR_CONFIG_CONFLICT', problem(pod, `is already up with a different spec${existing.node !== nodeName ? ` (on node ${existing.node}, now ${nodeName})` : ''} (pods are immutable); run \`nodemesh sim down\` first to recreate it`));
        continue;
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
      fail('NM_ERR_CONFIG_INVALID', problem(pod, (e as Error).message));
      continue;
    }
    plans.push({ pod, hash, node: nodeName, target, action, ...(existing ? { existing } : {}) });
  }
  // Identity and address conflicts, against running pods and within this dir.
  const keep = (prior?.pods ?? []).filter((p) => !plans.some((pl) => pl.existing === p && pl.action === 'recreate'));
  const ipOwner = new Map<string, string>();
  const uidOwner = new Map<string, string>();
  for (const p of keep) {
    if (p.ip) ipOwner.set(p.ip, `${p.namespace}/${p.name}`);
    uidOwner.set(p.uid, `${p.namespace}/${p.name}`);
  }
  for (const pl of plans) {
    if (pl.action !== 'create' && pl.action !== 'recreate') continue;
    const id = `${pl.pod.metadata.namespace}/${pl.pod.metadata.name}`;
    const uidHolder = uidOwner.get(pl.pod.metadata.uid);
    if (uidHolder && uidHolder !== id) fail('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `metadata.uid ${pl.pod.metadata.uid} is already used by pod ${uidHolder}`));
    uidOwner.set(pl.pod.metadata.uid, id);
    const ip = pl.pod.requestedIp;
    if (ip === undefined) continue;
    const why = unassignableReason(parseSubnet(pl.target.subnet), ip);
    if (why) {
      fail('NM_ERR_CONFIG_INVALID', problem(pl.pod, `status.podIP ${why}${mode === 'nodes' ? ` of node ${pl.target.name}` : ''}`));
      continue;
    }
    const holder = ipOwner.get(ip);
    if (holder && holder !== id) fail('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `status.podIP ${ip} is already taken by pod ${holder}`));
    ipOwner.set(ip, id);
  }
  const toCreate = plans.filter((p) => p.action === 'create' || p.action === 'recreate');
  for (const node of nodes) {
    const mine = toCreate.filter((p) => p.target === node);
    const conf = lists.get(node);
    if (mine.length === 0 || !conf) continue;
    if (mine.some((p) => p.pod.requestedIp) && !conf.list.plugins.some((p) => p.capabilities?.ips === true)) {
      fail('NM_ERR_CNI', `${conf.confFile}: a pod pins status.podIP but no plugin of the conflist declares the "ips" capability`);
    }
    for (const type of [...loopbackConflist().plugins, ...conf.list.plugins].map((p) => p.type)) {
      if (!findPlugin(type, node.cniPath)) {
        const msg = `${conf.confFile}: CNI plugin "${type}" not found in CNI_PATH ${node.cniPath.join(':')}${type === 'nodemesh-cni' ? ' (build it: make cni)' : ''}`;
        if (!problems.includes(msg)) fail('NM_ERR_CNI', msg);
      }
    }
  }
  if (problems.length > 0) {
    throw errorFor(firstCode!, `${problems.length} problem(s); nothing was changed:\n${problems.join('\n')}`, { problems });
  }

  // ---- act ----
  const state: SimState = prior ?? {
    version: STATE_VERSION,
    createdAt: new Date().toISOString(),
    updatedAt: '',
    ipForwardBefore: readIpForward(),
    cgroupRoot,
    cgroupParent: simCgroupParent(cgroupRoot),
    mode,
    nodes: [],
    pods: [],
  };
  state.mode = mode;
  if (mode === 'host') {
    state.nodes = [{ ...state.nodes[0], ...nodes[0]! }, ...state.nodes.slice(1)];
    // With no state nothing can hold an address: host-local data left by a crash would only
    // make pinned IPs look taken.
    if (!prior) rmSync(paths.ipamDir, { recursive: true, force: true });
  }
  writeSimState(paths, state);

  const created: SimPod[] = [];
  const restarted: SimPod[] = [];
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  // Pinned addresses first, so a dynamically allocated pod cannot take one of them.
  const ordered = [...toCreate.filter((p) => p.pod.requestedIp), ...toCreate.filter((p) => !p.pod.requestedIp)];
  const createdNodes: SimNode[] = [];
  try {
    if (mode === 'nodes') {
      // Half-made nodes of a crashed run go first; they hold no pods.
      for (const n of (prior?.nodes ?? []).filter((x) => x.phase === 'Creating')) {
        progress(`node ${n.name}: left half-created by an earlier run; recreating`);
        await teardownNode(state, paths, n, 0, progress);
      }
      await createNodes(state, paths, freshNodes, progress);
      createdNodes.push(...freshNodes);
    }
    for (const pl of ordered) {
      if (pl.action === 'recreate' && pl.existing) {
        progress(`pod ${pl.existing.namespace}/${pl.existing.name}: left half-created by an earlier run; recreating`);
        await teardownPod(state, paths, pl.existing, progress);
      }
      const node = state.nodes.find((n) => n.name === pl.target.name) ?? pl.target;
      const rec = await createPod(state, paths, { pod: pl.pod, plans: containerPlans(pl.pod, configDir), node, reportedNode: pl.node, specHash: pl.hash, readyTimeoutMs }, progress);
      created.push(rec);
      progress(`pod ${rec.namespace}/${rec.name}: ready (${rec.ip}${mode === 'nodes' ? ` on ${node.name}` : ''})`);
    }
    for (const pl of plans.filter((p) => p.action === 'restart')) {
      await restartPod(state, paths, pl.existing!, containerPlans(pl.pod, configDir), readyTimeoutMs, progress);
      restarted.push(pl.existing!);
    }
  } catch (e) {
    // Nothing half-created: undo this run's pods and nodes, and the rest if nothing is left.
    for (const rec of created.reverse()) await teardownPod(state, paths, rec, progress).catch(() => undefined);
    for (const n of createdNodes.reverse()) {
      if (!state.pods.some((p) => p.hostNode === n.name)) await teardownNode(state, paths, n, 0, progress).catch(() => undefined);
    }
    await finalizeIfEmpty(state, paths, progress).catch(() => undefined);
    throw e;
  }
  const unchanged = plans.filter((p) => p.action === 'unchanged').map((p) => p.existing!);
  for (const u of unchanged) progress(`pod ${u.namespace}/${u.name}: already up, unchanged`);
  // Host mode: no pod, no node. Multi-node nodes stay until `sim down` (their agents run there).
  await finalizeIfEmpty(state, paths, progress);
  return {
    mode,
    created: created.map(toPodInfo),
    restarted: restarted.map(toPodInfo),
    unchanged: unchanged.map(toPodInfo),
    pods: state.pods.map(toPodInfo).sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name)),
    createdNodes: createdNodes.map((n) => n.name),
    nodes: nodeInfos(state, paths),
  };
}

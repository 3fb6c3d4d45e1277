// `sim down`: remove every pod, node and host object the simulator created, from state.json,
// or without it by scanning for the simulator's own names (netns prefix, bridge, cgroup parent).
import { existsSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { SimError } from '../errors.js';
import { findCgroup2Root, killCgroup, pruneEmptyCgroups, removeCgroupTree, simCgroupParent, terminateCgroups } from './cgroup.js';
import { cniDel, type CniRuntime } from './cni.js';
import { conflistBridge, findNetConfFile, loopbackConflist, readNetConf, type CniConfList } from './conflist.js';
import { bridgePorts, deleteLink, deleteNetns, linkExists, listSimNetns, netnsExists, netnsPath, restoreIpForward } from './host.js';
import { linkedNetns, removeClusterNetwork, stopNetnsProcesses } from './network.js';
import { teardownNode } from './node.js';
import { netnsKind, nodeNameProblem, nodeOfNetns } from './nodes.js';
import { cniSearchPath, nodePaths, SIM_BRIDGE, simPaths, type SimPaths } from './paths.js';
import { containerIdFor, teardownPod, type Progress } from './pod.js';
import { lockSim, readSimState, removeSimState, stateMode, type SimState } from './state.js';
import { requireRoot } from './query.js';

export interface SimDownOptions {
  stateDir?: string;
  /** Also delete pod logs and the node's CNI config dir (all of `<stateDir>/sim`). */
  purge?: boolean;
  /** How long pods get to exit after SIGTERM before cgroup.kill (default 3000 ms). */
  gracePeriodMs?: number;
  /** Extra plugin dirs for the stateless path (default <repo>/native/build). */
  cniBinDirs?: string[];
  onProgress?: Progress;
}

export const DEFAULT_GRACE_MS = 3000;

export interface SimDownResult {
  /** Whether state.json was there, or the host was scanned instead. */
  mode: 'state' | 'scan';
  removedPods: string[];
  /** Steps that failed but did not stop the teardown. */
  warnings: string[];
}

/**
 * Once no pod is left. Host mode: remove the bridge (the bridge plugin never does), host-local's
 * data, the cgroup parent, restore ip_forward and delete state.json. Multi-node mode: only once
 * no node is left either (nodes outlive their pods until `sim down`): remove the cluster
 * network, the cgroup parent and state.json.
 */
export async function finalizeIfEmpty(state: SimState, paths: SimPaths, progress: Progress): Promise<string[]> {
  if (state.pods.length > 0) return [];
  const warnings: string[] = [];
  if (stateMode(state) === 'nodes') {
    if (state.nodes.length > 0) return [];
    if (state.clusterNetns && netnsExists(state.clusterNetns)) {
      progress(`removing the cluster network (netns ${state.clusterNetns})`);
      await stopNetnsProcesses([netnsPath(state.clusterNetns)], 0).catch((e: Error) => warnings.push(`cluster network: ${e.message}`));
      await removeClusterNetwork().catch((e: Error) => warnings.push(`cluster network: ${e.message}`));
    }
  }
  for (const node of state.nodes) {
    // Only a bridge the simulator made: an operator's conflist may name one of the host's.
    if ((node.bridge === SIM_BRIDGE || node.bridgeCreated) && linkExists(node.bridge)) {
      const ports = bridgePorts(node.bridge);
      if (ports.length > 0) {
        warnings.push(`bridge ${node.bridge} still has ports ${ports.join(', ')} that this simulator did not create; left in place`);
      } else {
        progress(`removing bridge ${node.bridge}`);
        await deleteLink(node.bridge);
      }
    }
    rmSync(node.ipamDir, { recursive: true, force: true });
  }
  pruneEmptyCgroups([`${state.cgroupParent}/kubepods/besteffort`, `${state.cgroupParent}/kubepods`, state.cgroupParent]);
  if (restoreIpForward(state.ipForwardBefore)) progress(`restored net.ipv4.ip_forward=${state.ipForwardBefore}`);
  removeSimState(paths);
  return warnings;
}

export async function simDown(opts: SimDownOptions = {}): Promise<SimDownResult> {
  requireRoot('sim down');
  const progress = opts.onProgress ?? (() => undefined);
  const paths = simPaths(opts.stateDir);
  const release = await lockSim(paths);
  try {
    let state: SimState | undefined;
    const warnings: string[] = [];
    try {
      state = readSimState(paths);
    } catch (e) {
      warnings.push(`${(e as Error).message}; scanning for the simulator's objects instead`);
    }
    const grace = opts.gracePeriodMs ?? DEFAULT_GRACE_MS;
    const result = state ? await downFromState(state, paths, grace, progress) : await downByScan(paths, opts, grace, progress);
    result.warnings.unshift(...warnings);
    if (opts.purge) {
      progress(`removing ${paths.simDir}`);
      rmSync(paths.simDir, { recursive: true, force: true });
    }
    return result;
  } finally {
    release();
    try {
      rmdirSync(paths.simDir); // only when empty: do not leave a dir behind that down made
    } catch {
      /* not empty, or gone */
    }
  }
}

async function downFromState(state: SimState, paths: SimPaths, graceMs: number, progress: Progress): Promise<SimDownResult> {
  const removedPods: string[] = [];
  const warnings: string[] = [];
  const recs = [...state.pods].reverse();
  if (recs.length) progress(`stopping ${recs.length} pod(s): SIGTERM, up to ${graceMs} ms, then cgroup.kill`);
  await terminateCgroups(recs.map((r) => r.cgroup), graceMs);
  for (const rec of recs) {
    warnings.push(...(await teardownPod(state, paths, rec, progress)));
    removedPods.push(`${rec.namespace}/${rec.name}`);
  }
  // Pods first, so their DEL still reaches each node's agent; then the nodes, with whatever
  // runs in them (the agents), all given one grace period together.
  const nodes = stateMode(state) === 'nodes' ? [...state.nodes].reverse() : [];
  const nodeFiles = nodes.filter((n) => n.netns && netnsExists(n.netns)).map((n) => n.netnsPath ?? netnsPath(n.netns!));
  if (nodeFiles.length) {
    const pids = await stopNetnsProcesses(nodeFiles, graceMs).catch((e: Error) => {
      warnings.push(e.message);
      return [];
    });
    if (pids.length) progress(`stopped ${pids.length} process(es) running in the nodes (pid ${pids.join(', ')})`);
  }
  for (const node of nodes) warnings.push(...(await teardownNode(state, paths, node, graceMs, progress)));
  warnings.push(...(await finalizeIfEmpty(state, paths, progress)));
  const left = [
    ...recs.flatMap((r) => [...(netnsExists(r.netns) ? [`netns ${r.netns}`] : []), ...(existsSync(r.cgroup) ? [`cgroup ${r.cgroup}`] : [])]),
    ...nodes.flatMap((n) => [...(n.netns && netnsExists(n.netns) ? [`netns ${n.netns}`] : []), ...(n.cgroupParent && existsSync(n.cgroupParent) ? [`cgroup ${n.cgroupParent}`] : [])]),
    ...(state.clusterNetns && netnsExists(state.clusterNetns) ? [`netns ${state.clusterNetns}`] : []),
  ];
  if (left.length) throw new SimError('NM_ERR_SIM_STATE', `sim down could not remove: ${left.join(', ')}\n${warnings.join('\n')}`, { warnings });
  return { mode: 'state', removedPods, warnings };
}

/** The CNI config dirs a stateless `sim down` may find: the host node's and each node's. */
function nodeDirsOnDisk(paths: SimPaths): string[] {
  try {
    return readdirSync(paths.nodesDir).filter((n) => !nodeNameProblem(n));
  } catch {
    return [];
  }
}

function readConfIn(netDir: string): CniConfList | undefined {
  try {
    return findNetConfFile(netDir) ? readNetConf(netDir).list : undefined;
  } catch {
    return undefined;
  }
}

/**
 * No state: kill everything under the simulator's cgroup parent; DEL and delete each pod netns
 * (in multi-node mode through the config of the node its eth0 is linked to, run inside that
 * node); stop what runs in the nodes and delete the node and cluster netns; remove the host
 * bridge and IPAM data. ip_forward is left as it is: its value before the simulator started
 * was only in the lost state (multi-node mode never changes the host's).
 */
async function downByScan(paths: SimPaths, opts: SimDownOptions, graceMs: number, progress: Progress): Promise<SimDownResult> {
  const warnings: string[] = [];
  const removedPods: string[] = [];
  let root: string | undefined;
  try {
    root = findCgroup2Root();
  } catch (e) {
    warnings.push((e as Error).message);
  }
  const parent = root ? simCgroupParent(root) : undefined;
  if (parent && existsSync(parent)) {
    progress(`no state at ${paths.stateFile}: stopping every process under ${parent}`);
    await terminateCgroups([parent], graceMs);
    await killCgroup(parent);
  }
  const conf = readConfIn(paths.netDir);
  const all = listSimNetns();
  const nodeNetns = all.filter((n) => netnsKind(n) === 'node');
  const clusterNetns = all.filter((n) => netnsKind(n) === 'cluster');
  let hostPods = 0;
  for (const name of all.filter((n) => netnsKind(n) === 'pod')) {
    progress(`removing netns ${name}`);
    const linked = await linkedNetns(name);
    const node = linked && netnsKind(linked) === 'node' ? nodeOfNetns(linked) : undefined;
    const list = node ? readConfIn(nodePaths(paths, node).netDir) : conf;
    if (!node) hostPods++;
    const rt = (ifName: string): CniRuntime => ({
      containerId: containerIdFor(name),
      netnsPath: netnsPath(name),
      ifName,
      // The pod's name is gone with the state; DEL needs only the sandbox id and netns.
      args: 'IgnoreUnknown=1',
      cniPath: cniSearchPath(node ? nodePaths(paths, node).binDir : paths.binDir, opts.cniBinDirs),
      ...(linked && node ? { hostNetnsPath: netnsPath(linked) } : {}),
      label: name,
    });
    if (list) await cniDel(list, rt('eth0')).catch((e: Error) => warnings.push(`netns ${name}: CNI DEL: ${e.message}`));
    await cniDel(loopbackConflist(), rt('lo')).catch((e: Error) => warnings.push(`netns ${name}: CNI DEL loopback: ${e.message}`));
    await deleteNetns(name).catch((e: Error) => warnings.push(e.message));
    if (!netnsExists(name)) removedPods.push(name);
  }
  const infra = [...nodeNetns, ...clusterNetns];
  if (infra.length) {
    const pids = await stopNetnsProcesses(infra.map(netnsPath), graceMs).catch((e: Error) => {
      warnings.push(e.message);
      return [];
    });
    if (pids.length) progress(`stopped ${pids.length} process(es) running in the nodes (pid ${pids.join(', ')})`);
    for (const name of infra) {
      progress(`removing netns ${name}`);
      await deleteNetns(name).catch((e: Error) => warnings.push(e.message));
    }
  }
  if (parent && existsSync(parent)) {
    try {
      removeCgroupTree(parent);
    } catch (e) {
      warnings.push(`cgroup ${parent}: ${(e as Error).message}`);
    }
  }
  // nm-br0, or an nm-* bridge the conflist names; never a bridge of the host's own.
  const bridges = new Set([SIM_BRIDGE, ...(conf ? [conflistBridge(conf)].filter((b): b is string => !!b && b.startsWith('nm-')) : [])]);
  for (const b of bridges) {
    if (!linkExists(b)) continue;
    const ports = bridgePorts(b);
    if (ports.length > 0) warnings.push(`bridge ${b} still has ports ${ports.join(', ')}; left in place`);
    else {
      progress(`removing bridge ${b}`);
      await deleteLink(b).catch((e: Error) => warnings.push(e.message));
    }
  }
  rmSync(paths.ipamDir, { recursive: true, force: true });
  for (const n of nodeDirsOnDisk(paths)) rmSync(nodePaths(paths, n).ipamDir, { recursive: true, force: true });
  if (hostPods > 0) warnings.push('no state: net.ipv4.ip_forward was left as it is (its value before `sim up` was only recorded in the state)');
  const left = [...listSimNetns().map((n) => `netns ${n}`), ...(parent && existsSync(parent) ? [`cgroup ${parent}`] : [])];
  if (left.length) throw new SimError('NM_ERR_SIM_STATE', `sim down could not remove: ${left.join(', ')}\n${warnings.join('\n')}`, { warnings });
  return { mode: 'scan', removedPods, warnings };
}

// One simulated node's lifecycle in multi-node mode: create (state record, cluster network,
// node netns with uplink and routes, a fresh CNI config) and teardown (stop what runs in it,
// routes to it, its netns, IPAM data and cgroups). Each step is recorded first, so a crash
// leaves a trail that `sim up` or `sim down` can follow.
import { mkdirSync, rmSync } from 'node:fs';
import { CLUSTER_NETNS, cniSearchPath, nodePaths, SIM_BRIDGE, SIM_CONFLIST_NAME, type SimPaths } from './paths.js';
import { generateConflist, nodeConflistOptions } from './conflist.js';
import { killCgroup, nodeCgroupParent, removeCgroupTree } from './cgroup.js';
import { netnsExists, netnsPath } from './host.js';
import { createNodeNetwork, dropNodeRoutes, ensureClusterNetwork, removeNodeNetwork, stopNetnsProcesses, syncNodeRoutes } from './network.js';
import { clusterLinkName, nodeIp, nodeNetnsName, nodeSubnet } from './nodes.js';
import type { Progress } from './pod.js';
import { writeFileAtomic } from '../files.js';
import { writeSimState, type SimNode, type SimState } from './state.js';

/**
 * The record of a new node in slot `index`: every name and address follows from the slot. Its
 * CNI_PATH has the node's own plugin dir; `extraBinDirs` replace the default dirs after it.
 */
export function newNodeRecord(paths: SimPaths, name: string, index: number, extraBinDirs: string[] | undefined, cgroupRoot: string): SimNode {
  const np = nodePaths(paths, name);
  const netns = nodeNetnsName(name);
  return {
    name,
    index,
    bridge: SIM_BRIDGE, // inside the node netns: every node has its own nm-br0
    subnet: nodeSubnet(index),
    netDir: np.netDir,
    ipamDir: np.ipamDir,
    cniPath: cniSearchPath(np.binDir, extraBinDirs),
    netns,
    netnsPath: netnsPath(netns),
    ip: nodeIp(index),
    clusterLink: clusterLinkName(index),
    cgroupParent: nodeCgroupParent(cgroupRoot, name),
    phase: 'Creating',
  };
}

/**
 * The node's CNI config, written anew when the node is created: whatever an earlier run left
 * in its dir (a chained plugin of an agent long gone) would otherwise decide this run's ADDs.
 */
function writeNodeConflist(node: SimNode): void {
  rmSync(node.netDir, { recursive: true, force: true });
  rmSync(node.ipamDir, { recursive: true, force: true });
  mkdirSync(node.netDir, { recursive: true });
  writeFileAtomic(`${node.netDir}/${SIM_CONFLIST_NAME}`, JSON.stringify(generateConflist(nodeConflistOptions(node)), null, 2) + '\n');
}

/**
 * Creates the nodes `fresh` (records made by newNodeRecord), then routes between all nodes.
 * On failure the nodes of this call are removed again and the error rethrown.
 */
export async function createNodes(state: SimState, paths: SimPaths, fresh: SimNode[], progress: Progress): Promise<void> {
  if (fresh.length === 0) return;
  const made: SimNode[] = [];
  try {
    if (!state.clusterNetns) {
      state.clusterNetns = CLUSTER_NETNS;
      writeSimState(paths, state);
    }
    progress(`cluster network: netns ${CLUSTER_NETNS}`);
    await ensureClusterNetwork();
    for (const node of fresh) {
      state.nodes.push(node);
      made.push(node);
      writeSimState(paths, state);
      progress(`node ${node.name}: netns ${node.netns}, ${node.ip}, pods ${node.subnet}`);
      await createNodeNetwork(node);
      writeNodeConflist(node);
      node.phase = 'Ready';
      writeSimState(paths, state);
    }
    await syncNodeRoutes(state.nodes.filter((n) => n.phase === 'Ready'));
  } catch (e) {
    for (const node of made.reverse()) await teardownNode(state, paths, node, 0, () => undefined).catch(() => undefined);
    throw e;
  }
}

/**
 * Removes one node whose pods are gone: stops every process still in its netns (its agent),
 * drops the other nodes' routes to it, deletes its netns (the pod bridge, uplink and the
 * cluster end of the veth go with it), its IPAM data and its cgroups. Every step runs even
 * when an earlier one failed; failures come back as warnings. The record leaves the state last.
 */
export async function teardownNode(state: SimState, paths: SimPaths, node: SimNode, graceMs: number, progress: Progress): Promise<string[]> {
  const warnings: string[] = [];
  const step = async (what: string, f: () => Promise<unknown> | unknown): Promise<void> => {
    try {
      await f();
    } catch (e) {
      warnings.push(`node ${node.name}: ${what}: ${(e as Error).message}`);
    }
  };
  progress(`node ${node.name}: removing netns ${node.netns}`);
  if (node.netnsPath && netnsExists(node.netns!)) {
    await step('stop processes in the node', async () => {
      const pids = await stopNetnsProcesses([node.netnsPath!], graceMs);
      if (pids.length) progress(`node ${node.name}: stopped ${pids.length} process(es) (pid ${pids.join(', ')})`);
    });
  }
  await step('drop routes to it', () => dropNodeRoutes(state.nodes, node));
  await step('delete netns', () => removeNodeNetwork(node));
  await step('remove IPAM data', () => rmSync(node.ipamDir, { recursive: true, force: true }));
  if (node.cgroupParent) {
    const parent = node.cgroupParent;
    await step('remove cgroups', async () => {
      await killCgroup(parent);
      removeCgroupTree(parent);
    });
  }
  const i = state.nodes.indexOf(node);
  if (i >= 0) state.nodes.splice(i, 1);
  writeSimState(paths, state);
  return warnings;
}

// The node simulator: pods as network namespaces wired by the real CNI plugins, each with its
// own cgroup and real processes. Used by `nodemesh sim`, the agent, `up`, demo, bench and tests.
export { simUp } from './up.js';
export type { SimUpOptions, SimUpResult } from './up.js';
export { simDown } from './down.js';
export type { SimDownOptions, SimDownResult } from './down.js';
export { execInPod, getNode, getPod, listNodes, listPods, nodeNetnsPath, readState, spawnInPod, toPodInfo } from './query.js';
export type { SimNodeInfo, SimPodInfo, SimPodStatus, SimQueryOptions } from './query.js';
export type { SpawnInPodOptions } from './process.js';
export { nsenter } from './process.js';
export { nodeAgentCommand, runAgentInNode, SIM_STATE_DIR_ENV, spawnAgentInNode, spawnInNode } from './agent.js';
export type { InNodeOptions, NodeAgentCommand, NodeAgentOptions } from './agent.js';
export { readSimState, stateMode } from './state.js';
export type { SimContainer, SimMode, SimNode, SimPod, SimState } from './state.js';
export { allocateNodeSlots, clusterLinkName, MAX_NODES, netnsKind, nodeIp, nodeNameProblem, nodeNetnsName, nodeSubnet, withAgentDefaults } from './nodes.js';
export {
  chainPlugin,
  findNetConfFile,
  generateConflist,
  installChainedPlugin,
  parseConflist,
  pluginInvocationConfig,
  readNetConf,
  uninstallChainedPlugin,
  unchainPlugin,
} from './conflist.js';
export type { CniConfList, CniPluginConf } from './conflist.js';
export { buildCniArgs, cniAdd, cniCheck, cniDel, parseCniArgs, resultIPv4 } from './cni.js';
export type { CniRuntime } from './cni.js';
export { cgroupPids, findCgroup2Root, nodeCgroupParent, podCgroupPath } from './cgroup.js';
export {
  CLUSTER_NETNS,
  CLUSTER_POD_CIDR,
  CLUSTER_SERVICE_IP,
  cniSearchPath,
  DEFAULT_NODE,
  DEFAULT_STATE_DIR,
  DEFAULT_SUBNET,
  NODE_NETNS_PREFIX,
  NODE_NETWORK,
  NODE_PIN_ROOT_PREFIX,
  nodePaths,
  resolveStateDir,
  SIM_BRIDGE,
  SIM_CGROUP_PARENT,
  SIM_NETNS_PREFIX,
  simPaths,
} from './paths.js';
export type { NodePaths, SimPaths } from './paths.js';

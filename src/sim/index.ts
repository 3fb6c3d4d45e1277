// The node simulator: pods as network namespaces wired by the real CNI plugins, each with its
// own cgroup and real processes. Used by `nodemesh sim`, the agent, `up`, demo, bench and tests.
export { simUp } from './up.js';
export type { SimUpOptions, SimUpResult } from './up.js';
export { simDown } from './down.js';
export type { SimDownOptions, SimDownResult } from './down.js';
export { execInPod, getPod, listPods, readState, spawnInPod, toPodInfo } from './query.js';
export type { SimPodInfo, SimPodStatus, SimQueryOptions } from './query.js';
export type { SpawnInPodOptions } from './process.js';
export { readSimState } from './state.js';
export type { SimContainer, SimNode, SimPod, SimState } from './state.js';
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
export { cgroupPids, findCgroup2Root, podCgroupPath } from './cgroup.js';
export { cniSearchPath, DEFAULT_STATE_DIR, DEFAULT_SUBNET, resolveStateDir, SIM_BRIDGE, SIM_CGROUP_PARENT, SIM_NETNS_PREFIX, simPaths } from './paths.js';
export type { SimPaths } from './paths.js';

// The embedded cluster as a library: up/down, the control plane and agents as background
// daemons, multi-node helpers (entering node namespaces), and the package's own paths.
export { agentPid, ADMIN, CP_ADDRESS, CP_ADMIN, down, printTable, progress, startAgent, startAgentWithControlPlane, startControlPlane, stopAgent, stopControlPlane, up } from './up.js';
export { controlPlaneDir, getJson, httpGet } from './daemon.js';
export {
  captureClusterTcp,
  CLUSTER_CP_ADDRESS,
  CLUSTER_NETNS_PATH,
  curlIn,
  curlJsonIn,
  multiNodeNodes,
  nodeAgentPid,
  nodeDump,
  startNodeAgent,
  stopNodeAgent,
} from './nodes.js';
export { cliPath, cniPluginPath, packageRoot } from './paths.js';

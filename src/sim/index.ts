// The node simulator: pods as network namespaces wired by the real CNI plugins, each with its
// own cgroup and real processes. What other folders use: `nodemesh sim`, the embedded cluster
// (`up`, `down`, node agents, the kubelet role of `up --kubeconfig`), the demo and the
// benchmarks. Tests deep-import the rest.
export { simUp } from './up.js';
export { simDown } from './down.js';
export { execInPod, listNodes, listPods } from './query.js';
export type { SimNodeInfo, SimPodInfo } from './query.js';
export { nsenter } from './process.js';
export { nodeAgentCommand, nodePodsCgroup, runAgentInNode } from './agent.js';
export { allNodeCniDirs, nodeCniDirs } from './node-cni.js';
export type { NodeCniDirs } from './node-cni.js';
export { CLUSTER_NETNS, CLUSTER_SERVICE_IP, DEFAULT_NODE } from './paths.js';
export { removeApiPod, runApiPod, simPodsByUid } from './kubelet.js';

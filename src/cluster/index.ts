// The embedded cluster as a library: up/down, the control plane and agents as background
// daemons, multi-node helpers (entering node namespaces), the kubelet role on the Kubernetes
// API (`up --kubeconfig`), and the package's own paths.
export { ADMIN, CP_ADDRESS, down, printTable, progress, up } from './up.js';
export { getJson, httpGet } from './daemon.js';
export { captureClusterTcp, CLUSTER_CP_ADDRESS, curlIn, curlJsonIn, multiNodeNodes, nodeAgentPid, nodeDump, startNodeAgent, stopNodeAgent } from './nodes.js';
export { cliPath, packageRoot } from './paths.js';
export { Kubelet } from './kubelet.js';
export { CLUSTER_KUBE_API } from './kube-relay.js';
export { agentPodObject } from './kube-objects.js';

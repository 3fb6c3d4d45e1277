// The node agent: enrollment, CNI relay, lifecycle, and install-cni (chaining nodemesh-cni into
// a node's conflist, as the DaemonSet's init container does). Exports what other folders use.
export { Agent } from './agent.js';
export { ConfigDirPodSource } from './podsource.js';
export { parseEndpoint } from './admin.js';
export { installCni, uninstallCni, type InstallCniResult } from './install-cni.js';
export { watchCni } from './install-cni-watch.js';
export { defaultWorkers } from './proxy-workers.js';

// Public surface of in-pod redirection for other folders: the Redirector, sockets made inside
// a pod's network namespace, the cgroup v2 root, and the pod spec the agent builds.
export { Redirector } from './redirector.js';
export { listenInNetns, socketsInNetns } from './netns.js';
export { findCgroup2Root } from './mounts.js';
export type { OrigDstStats, PodRedirectSpec } from './types.js';

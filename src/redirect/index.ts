// Public surface of in-pod redirection for other folders: the Redirector, sockets made inside
// a pod's network namespace (and the cookies that join them with kernel events), the cgroup
// v2 root, the pod spec the agent builds, and the kernel events the programs emit.
export { Redirector, workerKernel, type WorkerMaps } from './redirector.js';
export { listenInNetns, netnsCookie, socketsInNetns } from './netns.js';
export type { KernelEvent, KernelEventBatch } from './events.js';
export { findCgroup2Root } from './mounts.js';
export type { KernelSplice } from './splice.js';
export type { OrigDstStats, PodRedirectSpec } from './types.js';

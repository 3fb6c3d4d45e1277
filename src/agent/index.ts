// The node agent: enrollment, CNI relay, lifecycle.
export { Agent, type AgentOptions } from './agent.js';
export { ConfigDirPodSource, type PodMeta, type PodSource } from './podsource.js';
export { parseEndpoint, type Endpoint } from './admin.js';
export { ANNOTATIONS } from './enrollment.js';
export { findPodCgroup } from './cgroups.js';

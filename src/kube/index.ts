// The Kubernetes API client the control plane and the agent share: the connection (kubeconfig or
// in-cluster), resilient list+watch informers, and which Pods are mesh workloads.
export { KubeApi, loadKubeConfig, statusOf, type KubeConnectOptions } from './client.js';
export { groupVersion, KindInformer, objectPath, type InformerOptions, type KubeKind, type Raw } from './informer.js';
export { podIpv4, podSkipReason } from './pods.js';

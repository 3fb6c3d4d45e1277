// @kubernetes/client-node, loaded on first use: it takes about a second to load, and every
// `nodemesh` command (sim exec, install-cni, the agent) would pay it at start otherwise, though
// only the control plane's Kubernetes source needs it.
import { createRequire } from 'node:module';

type KubeLib = typeof import('@kubernetes/client-node');

let lib: KubeLib | undefined;

export function kubeLib(): KubeLib {
  lib ??= createRequire(import.meta.url)('@kubernetes/client-node') as KubeLib;
  return lib;
}

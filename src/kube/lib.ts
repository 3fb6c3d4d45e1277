// @kubernetes/client-node, loaded on first use: it takes about a second to load, and every
// `nodemesh` command (sim exec, install-cni, an agent without --kubeconfig) would pay it at
// start otherwise, though only the Kubernetes API's users (the control plane's source, the
// agent's pod watch) need it.
import { createRequire } from 'node:module';

type KubeLib = typeof import('@kubernetes/client-node');

let lib: KubeLib | undefined;

export function kubeLib(): KubeLib {
  lib ??= createRequire(import.meta.url)('@kubernetes/client-node') as KubeLib;
  return lib;
}

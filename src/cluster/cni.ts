// nodemesh-cni on the simulated nodes, installed the way a node's init container does it before
// the agent starts: the simulator says where a node's CNI config and plugin dirs are, and the
// agent's installer (install-cni) chains the plugin into that config and copies the binary.
import { installCni, uninstallCni, type InstallCniResult } from '../agent/index.js';
import type { CniPluginConf } from '../cni/index.js';
import { CniError } from '../errors.js';
import { CNI_PLUGIN_NAME } from '../net/index.js';
import { allNodeCniDirs, nodeCniDirs, type NodeCniDirs } from '../sim/index.js';

/** Runs install-cni on a node's dirs, our entry relaying to `agentSocket`. */
export function installNodeCni(dirs: NodeCniDirs, agentSocket: string): InstallCniResult {
  return installCni({ confDir: dirs.confDir, binDir: dirs.binDir, plugin: { agentSocket } });
}

/**
 * install-cni for a simulated node: `plugin` (type nodemesh-cni, its agentSocket and any other
 * field) chained as the last plugin of the node's conflist, the binary copied into the node's
 * plugin dir. The node is the host node in host mode (`node` ignored) and `node` in multi-node
 * mode; the simulator's conflist is written first if the node's config dir has none.
 */
export function installChainedPlugin(sd: string | undefined, plugin: CniPluginConf, node?: string): InstallCniResult {
  const { type, ...fields } = plugin;
  if (type !== CNI_PLUGIN_NAME) throw new CniError(`install-cni chains ${CNI_PLUGIN_NAME}, not ${JSON.stringify(type)}`);
  return installCni({ ...nodeCniDirs(sd, node), plugin: fields });
}

/**
 * Removes nodemesh-cni from every simulated node (install-cni --uninstall): from the host node's
 * CNI config and plugin dir and from each node's under `<simDir>/nodes/`, found on disk, so it
 * works after `sim down` too.
 */
export function uninstallChainedPlugin(sd: string | undefined): void {
  for (const dirs of allNodeCniDirs(sd)) uninstallCni(dirs);
}

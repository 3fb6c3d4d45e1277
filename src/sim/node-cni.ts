// Where install-cni works on a simulated node: the node's CNI config dir, holding the
// simulator's conflist (written first if absent, as a node's primary CNI writes its config
// before any installer runs), and the node's plugin dir, on that node's CNI_PATH. The
// installer itself is the agent's (`nodemesh install-cni`); the simulator runs it as a command,
// the way a node's init container does before the agent starts, and never imports it.
import { readdirSync } from 'node:fs';
import { SimError } from '../errors.js';
import { ensureConflist, nodeConflistOptions } from './conflist.js';
import { nodeNameProblem } from './nodes.js';
import { nodePaths, simPaths } from './paths.js';
import { readSimState, stateMode, type SimState } from './state.js';

/** A node's CNI config dir (its /etc/cni/net.d) and plugin dir (its /opt/cni/bin). */
export interface NodeCniDirs {
  confDir: string;
  binDir: string;
}

/**
 * The CNI dirs of a simulated node: the host node's (`<simDir>/net.d`, `<simDir>/bin`), or in
 * multi-node mode the named node's (`<simDir>/nodes/<node>/…`). In host mode (or with no
 * simulator state) `node` is ignored: the host is the only node, whatever its agent calls it.
 * Writes the simulator's conflist into the config dir when it has none.
 *
 * NM_ERR_SIM_NODE in multi-node mode without `node`, or for a node the simulator does not have.
 */
export function nodeCniDirs(stateDir: string | undefined, node?: string): NodeCniDirs {
  const paths = simPaths(stateDir);
  let state: SimState | undefined;
  try {
    state = readSimState(paths);
  } catch {
    state = undefined; // corrupt state: behave as before multi-node mode, on the host's config
  }
  if (stateMode(state) !== 'nodes') {
    ensureConflist(paths.netDir, { ipamDir: paths.ipamDir });
    return { confDir: paths.netDir, binDir: paths.binDir };
  }
  const names = state!.nodes.map((n) => n.name);
  if (node === undefined) {
    throw new SimError('NM_ERR_SIM_NODE', `the simulator runs ${names.length} nodes (${names.join(', ')}): say which node's CNI config to chain into (the agent's --node)`, { where: paths.stateFile });
  }
  const rec = state!.nodes.find((n) => n.name === node);
  if (!rec) {
    throw new SimError('NM_ERR_SIM_NODE', `no simulated node ${node} (nodes: ${names.join(', ') || 'none'}); create it first with \`nodemesh sim up --nodes-only <dir>\``, { where: paths.stateFile });
  }
  ensureConflist(rec.netDir, nodeConflistOptions(rec));
  return { confDir: rec.netDir, binDir: nodePaths(paths, rec.name).binDir };
}

/**
 * Every node's CNI dirs found on disk, for removing nodemesh-cni at `down`: the host node's
 * and each under `<simDir>/nodes/`, whatever the state says (so it works after `sim down`).
 */
export function allNodeCniDirs(stateDir: string | undefined): NodeCniDirs[] {
  const paths = simPaths(stateDir);
  let nodes: string[];
  try {
    nodes = readdirSync(paths.nodesDir).filter((n) => !nodeNameProblem(n));
  } catch {
    nodes = [];
  }
  return [{ confDir: paths.netDir, binDir: paths.binDir }, ...nodes.map((n) => nodePaths(paths, n)).map((np) => ({ confDir: np.netDir, binDir: np.binDir }))];
}

/** The command a node's init container runs: `<cli> install-cni` on the node's dirs. */
export function installCniArgv(cli: string, dirs: NodeCniDirs, agentSocket: string): string[] {
  return [cli, 'install-cni', '--cni-conf-dir', dirs.confDir, '--cni-bin-dir', dirs.binDir, '--agent-socket', agentSocket];
}

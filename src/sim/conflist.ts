// The node's CNI network configuration: generating the simulator's conflist, reading the
// config dir as a runtime reads /etc/cni/net.d, chaining a plugin into it the way an
// install-cni DaemonSet does, and the per-plugin config libcni builds for each invocation.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, SimError, UsageError } from '../errors.js';
import { CLUSTER_POD_CIDR, DEFAULT_SUBNET, nodePaths, SIM_BRIDGE, SIM_CONFLIST_NAME, SIM_NETWORK_NAME, simPaths, type SimPaths } from './paths.js';
import { nodeNameProblem } from './nodes.js';
import { readSimState, stateMode, writeFileAtomic, type SimNode, type SimState } from './state.js';

/** One plugin's entry in a conflist: `type` plus whatever that plugin reads. */
export interface CniPluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface CniConfList {
  cniVersion: string;
  name: string;
  plugins: CniPluginConf[];
  [key: string]: unknown;
}

export const SIM_CNI_VERSION = '1.0.0';

export interface ConflistOptions {
  subnet?: string;
  bridge?: string;
  /** host-local's dataDir. */
  ipamDir: string;
  /**
   * Multi-node mode: the pod bridge is the pods' gateway (this address, `isGateway: true`)
   * and pods route `routeTo` (the pod cluster CIDR) through it, and nothing else.
   */
  gateway?: { address: string; routeTo: string };
}

/**
 * The simulator's conflist: `bridge` with `host-local`. `capabilities.ips` lets the runtime
 * pin `status.podIP` through `runtimeConfig.ips`. No masquerading and no default route:
 * nothing may leave the simulated cluster.
 * - Host mode: no gateway IP on the bridge; pods only need L2 to each other.
 * - Multi-node mode: the bridge holds the gateway address and pods route the pod cluster CIDR
 *   to it, so other nodes' pods are reached through the node. The plugin runs inside the
 *   node netns, so the ip_forward it turns on is the node's, never the host's.
 */
export function generateConflist(opts: ConflistOptions): CniConfList {
  const range: Record<string, string> = { subnet: opts.subnet ?? DEFAULT_SUBNET };
  if (opts.gateway) range.gateway = opts.gateway.address;
  return {
    cniVersion: SIM_CNI_VERSION,
    name: SIM_NETWORK_NAME,
    plugins: [
      {
        type: 'bridge',
        bridge: opts.bridge ?? SIM_BRIDGE,
        isGateway: opts.gateway !== undefined,
        ipMasq: false,
        capabilities: { ips: true },
        ipam: {
          type: 'host-local',
          dataDir: opts.ipamDir,
          ranges: [[range]],
          ...(opts.gateway ? { routes: [{ dst: opts.gateway.routeTo }] } : {}),
        },
      },
    ],
  };
}

/** The loopback network containerd runs for every sandbox before the conflist (ifname lo). */
export function loopbackConflist(): CniConfList {
  return { cniVersion: SIM_CNI_VERSION, name: 'cni-loopback', plugins: [{ type: 'loopback' }] };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a parsed conflist (or single-plugin .conf, which libcni wraps into a list). */
export function parseConflist(text: string, file: string): CniConfList {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(`CNI config is not valid JSON: ${(e as Error).message}`, { where: file, cause: e });
  }
  if (!isRecord(raw)) throw new CniError('CNI config must be a JSON object', { where: file });
  let list: Record<string, unknown>;
  if (Array.isArray(raw.plugins)) {
    list = raw;
  } else if (typeof raw.type === 'string') {
    const { name, cniVersion, ...plugin } = raw;
    list = { name, cniVersion, plugins: [plugin] };
  } else {
    throw new CniError('CNI config has neither "plugins" (a conflist) nor "type" (a single plugin)', { where: file });
  }
  if (typeof list.name !== 'string' || list.name === '') throw new CniError('CNI config needs a "name"', { where: file });
  if (typeof list.cniVersion !== 'string') throw new CniError('CNI config needs a "cniVersion"', { where: file });
  const plugins = list.plugins as unknown[];
  if (plugins.length === 0) throw new CniError('CNI config lists no plugins', { where: file });
  plugins.forEach((p, i) => {
    if (!isRecord(p) || typeof p.type !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p.type)) {
      throw new CniError(`plugins[${i}] needs a "type" naming a plugin binary`, { where: file });
    }
  });
  return list as CniConfList;
}

const CONF_EXT = /\.(conflist|conf|json)$/;

/** The file a runtime would use: the first *.conflist/*.conf/*.json of the dir, by name. */
export function findNetConfFile(netDir: string): string | undefined {
  let names: string[];
  try {
    names = readdirSync(netDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const first = names.filter((n) => CONF_EXT.test(n) && !n.startsWith('.')).sort()[0];
  return first === undefined ? undefined : join(netDir, first);
}

/** Reads the node's network config anew, as a runtime does before every ADD and DEL. */
export function readNetConf(netDir: string): { file: string; list: CniConfList } {
  const file = findNetConfFile(netDir);
  if (!file) throw new CniError(`no CNI network config in ${netDir}; run \`nodemesh sim up\` to create one`, { where: netDir });
  return { file, list: parseConflist(readFileSync(file, 'utf8'), file) };
}

/** Writes the simulator's conflist when the dir has no network config yet. Returns its path. */
export function ensureConflist(netDir: string, opts: ConflistOptions): string {
  const existing = findNetConfFile(netDir);
  if (existing) return existing;
  const file = join(netDir, SIM_CONFLIST_NAME);
  writeFileAtomic(file, JSON.stringify(generateConflist(opts), null, 2) + '\n');
  return file;
}

/** The pod subnet a conflist's host-local hands out from, when it says (ranges or subnet). */
export function conflistSubnet(list: CniConfList): string | undefined {
  for (const p of list.plugins) {
    const ipam = p.ipam;
    if (!isRecord(ipam)) continue;
    const ranges = ipam.ranges;
    if (Array.isArray(ranges) && Array.isArray(ranges[0]) && isRecord(ranges[0][0]) && typeof ranges[0][0].subnet === 'string') {
      return ranges[0][0].subnet;
    }
    if (typeof ipam.subnet === 'string') return ipam.subnet;
  }
  return undefined;
}

/** The bridge a conflist's `bridge` plugin uses (the plugin's own default is cni0). */
export function conflistBridge(list: CniConfList): string | undefined {
  const b = list.plugins.find((p) => p.type === 'bridge');
  if (!b) return undefined;
  return typeof b.bridge === 'string' ? b.bridge : 'cni0';
}

/** Appends `plugin` as the last plugin of a list, replacing any earlier entry of its type. */
export function chainPlugin(list: CniConfList, plugin: CniPluginConf): CniConfList {
  return { ...list, plugins: [...list.plugins.filter((p) => p.type !== plugin.type), plugin] };
}

export function unchainPlugin(list: CniConfList, type: string): CniConfList {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== type) };
}

/**
 * The CNI config dir a chained plugin goes into: the host node's (`<simDir>/net.d`), or in
 * multi-node mode the named node's (`<simDir>/nodes/<node>/net.d`). In host mode (or with no
 * simulator state) `node` is ignored: the host is the only node, whatever the agent calls it.
 */
function chainTarget(paths: SimPaths, node: string | undefined): { netDir: string; ensure: () => string } {
  let state: SimState | undefined;
  try {
    state = readSimState(paths);
  } catch {
    state = undefined; // corrupt state: behave as before multi-node mode, on the host's config
  }
  if (stateMode(state) !== 'nodes') {
    return { netDir: paths.netDir, ensure: () => ensureConflist(paths.netDir, { ipamDir: paths.ipamDir }) };
  }
  const names = state!.nodes.map((n) => n.name);
  if (node === undefined) {
    throw new SimError('NM_ERR_SIM_NODE', `the simulator runs ${names.length} nodes (${names.join(', ')}): say which node's CNI config to chain into (the agent's --node)`, { where: paths.stateFile });
  }
  const rec = state!.nodes.find((n) => n.name === node);
  if (!rec) {
    throw new SimError('NM_ERR_SIM_NODE', `no simulated node ${node} (nodes: ${names.join(', ') || 'none'}); create it first with \`nodemesh sim up --nodes-only <dir>\``, { where: paths.stateFile });
  }
  return { netDir: rec.netDir, ensure: () => ensureConflist(rec.netDir, nodeConflistOptions(rec)) };
}

/** The conflist options of a multi-node node (its subnet, gateway and IPAM dir). */
export function nodeConflistOptions(node: SimNode): ConflistOptions {
  const [net] = node.subnet.split('/');
  const o = net!.split('.').map(Number);
  return {
    subnet: node.subnet,
    bridge: node.bridge,
    ipamDir: node.ipamDir,
    gateway: { address: `${o[0]}.${o[1]}.${o[2]}.${o[3]! + 1}`, routeTo: CLUSTER_POD_CIDR },
  };
}

/**
 * install-cni for a simulated node: adds `pluginConf` as the LAST plugin of the node's
 * conflist (creating the simulator's conflist first if the dir has none), replacing an
 * earlier entry of the same type. Atomic (temp file + rename), so a concurrent ADD sees
 * either the old or the new chain.
 *
 * `node` picks the node in multi-node mode (required there: NM_ERR_SIM_NODE without it, or
 * for a node the simulator does not have); in host mode it is ignored.
 */
export function installChainedPlugin(stateDir: string | undefined, pluginConf: CniPluginConf, node?: string): void {
  if (!isRecord(pluginConf) || typeof pluginConf.type !== 'string' || pluginConf.type === '') {
    throw new CniError('a chained plugin config needs a "type"');
  }
  const file = chainTarget(simPaths(stateDir), node).ensure();
  const list = parseConflist(readFileSync(file, 'utf8'), file);
  writeFileAtomic(file, JSON.stringify(chainPlugin(list, pluginConf), null, 2) + '\n');
}

function unchainIn(netDir: string, type: string): void {
  const file = findNetConfFile(netDir);
  if (!file) return;
  const list = parseConflist(readFileSync(file, 'utf8'), file);
  if (!list.plugins.some((p) => p.type === type)) return;
  writeFileAtomic(file, JSON.stringify(unchainPlugin(list, type), null, 2) + '\n');
}

/**
 * Removes every plugin of `type` (default nodemesh-cni) from the simulator's CNI configs.
 * Without `node`: from the host node's and every node's under `<simDir>/nodes/` (found on
 * disk, so it works after `sim down` too). With `node`: from that node's, and from the host
 * node's unless the simulator is in multi-node mode.
 */
export function uninstallChainedPlugin(stateDir: string | undefined, type = 'nodemesh-cni', node?: string): void {
  const paths = simPaths(stateDir);
  let nodes: string[];
  if (node !== undefined) {
    const why = nodeNameProblem(node);
    if (why) throw new UsageError(why);
    nodes = [node];
  } else {
    try {
      nodes = readdirSync(paths.nodesDir);
    } catch {
      nodes = [];
    }
  }
  let multi = false;
  try {
    multi = stateMode(readSimState(paths)) === 'nodes';
  } catch {
    /* corrupt state: clean everything we can find */
  }
  if (node === undefined || !multi) unchainIn(paths.netDir, type);
  for (const n of nodes) unchainIn(nodePaths(paths, n).netDir, type);
}

/**
 * The stdin config for plugin `index` of `list`, as libcni builds it: the list's `name` and
 * `cniVersion` injected, `prevResult` when there is one, and `runtimeConfig` holding those
 * capability args the plugin declares in `capabilities`.
 */
export function pluginInvocationConfig(
  list: CniConfList,
  index: number,
  prevResult: Record<string, unknown> | undefined,
  capabilityArgs: Record<string, unknown> = {},
): Record<string, unknown> {
  const plugin = list.plugins[index];
  if (!plugin) throw new RangeError(`plugin index ${index} out of range`);
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  const rc: Record<string, unknown> = {};
  for (const [cap, on] of Object.entries(plugin.capabilities ?? {})) {
    if (on === true && capabilityArgs[cap] !== undefined) rc[cap] = capabilityArgs[cap];
  }
  if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

// The node's CNI network configuration as the simulator's runtime sees it: the simulator's own
// bridge + host-local conflist (the node's primary CNI config), reading the config dir as a
// runtime reads /etc/cni/net.d, and the per-plugin config libcni builds for each invocation.
// Chaining nodemesh-cni into it is install-cni's job (src/agent/install-cni.ts), which the
// simulator runs as a command (node-cni.ts), never imports.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CniError } from '../errors.js';
import { CLUSTER_POD_CIDR, DEFAULT_SUBNET, SIM_BRIDGE, SIM_CONFLIST_NAME, SIM_NETWORK_NAME } from './paths.js';
import { writeFileAtomic, type SimNode } from './state.js';

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

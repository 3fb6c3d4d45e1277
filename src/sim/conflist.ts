// The node's CNI network configuration as the simulator's runtime sees it: the simulator's own
// bridge + host-local conflist (the node's primary CNI config), reading the config dir as a
// runtime reads /etc/cni/net.d, and the per-plugin config libcni builds for each invocation.
// Chaining nodemesh-cni into it is install-cni's job (src/agent/install-cni.ts), which the
// simulator runs as a command (node-cni.ts), never imports.
import { findPrimaryConfFile, readConfFile, type CniConfList, type CniPluginConf } from '../cni/index.js';
import { CniError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { join } from 'node:path';
import { CLUSTER_POD_CIDR, DEFAULT_SUBNET, SIM_BRIDGE, SIM_CONFLIST_NAME, SIM_NETWORK_NAME } from './paths.js';
import type { SimNode } from './state.js';

export const SIM_CNI_VERSION = '1.0.0';

export type { CniConfList, CniPluginConf };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

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

/** The file a runtime would use: the first *.conflist/*.conf/*.json of the dir, by name. */
export function findNetConfFile(netDir: string): string | undefined {
  return findPrimaryConfFile(netDir);
}

/** Reads the node's network config anew, as a runtime does before every ADD and DEL. */
export function readNetConf(netDir: string): { file: string; list: CniConfList } {
  const file = findNetConfFile(netDir);
  if (!file) throw new CniError(`no CNI network config in ${netDir}; run \`nodemesh sim up\` to create one`, { where: netDir });
  return { file, list: readConfFile(file) };
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

// Where the simulator keeps things: the state-dir layout, the fixed host object names and the
// CNI plugin search path. Every other file in src/sim asks here instead of joining paths.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export { DEFAULT_STATE_DIR } from '../net/index.js';
import { DEFAULT_STATE_DIR, STATE_DIR_ENV } from '../net/index.js';

/** Names of host objects the simulator owns; `sim down` without state scans for these. */
export const SIM_BRIDGE = 'nm-br0';
export const SIM_NETNS_PREFIX = 'nm-';
export const SIM_CGROUP_PARENT = 'nodemesh-sim';
export const SIM_NETWORK_NAME = 'nodemesh-sim';
export const SIM_CONFLIST_NAME = '10-nodemesh-sim.conflist';
export const DEFAULT_SUBNET = '10.244.0.0/24';

/*
 * Multi-node mode (docs/simulator.md, "More than one node"). Every name below lives inside a
 * namespace the simulator creates, except the netns names themselves (under /run/netns).
 */
/** The netns holding the simulated cluster network (a bridge and one veth per node). */
export const CLUSTER_NETNS = 'nm-cluster';
/** The L2 switch of the cluster network, inside CLUSTER_NETNS. */
export const CLUSTER_BRIDGE = 'nm-cbr0';
/**
 * A node's netns is `nm-node.<node>`. A pod's is `nm-<namespace>-<name>` and a namespace
 * never holds a '.', so the two can never be confused (a stateless `sim down` relies on it).
 */
export const NODE_NETNS_PREFIX = 'nm-node.';
/** The node network: node i has 10.240.0.<i+1>. */
export const NODE_NETWORK = '10.240.0.0/24';
/** An address on the cluster bridge for cluster-wide services (run the control plane there). */
export const CLUSTER_SERVICE_IP = '10.240.0.254';
/** Every node's pod subnet is a /24 of this: node i has 10.244.<i>.0/24. */
export const CLUSTER_POD_CIDR = '10.244.0.0/16';
/** The node's uplink to the cluster network, inside the node netns. */
export const NODE_UPLINK = 'eth0';
/** Where pods without spec.nodeName go in multi-node mode. */
export const DEFAULT_NODE = 'node-0';
/** bpffs pin root `sim agent` gives a node's agent: `<prefix><node>`. */
export const NODE_PIN_ROOT_PREFIX = '/sys/fs/bpf/nodemesh-';
/** Debian's containernetworking-plugins. */
export const SYSTEM_CNI_DIR = '/usr/lib/cni';

/** The state dir: the option, else $NODEMESH_STATE_DIR, else /run/nodemesh. */
export function resolveStateDir(stateDir?: string): string {
  return resolve(stateDir ?? process.env[STATE_DIR_ENV] ?? DEFAULT_STATE_DIR);
}

/** The layout under `<stateDir>/sim/`. */
export interface SimPaths {
  stateDir: string;
  simDir: string;
  stateFile: string;
  lockFile: string;
  /** The node's CNI config dir, read the way a runtime reads /etc/cni/net.d. */
  netDir: string;
  /** The node's CNI plugin dir (its /opt/cni/bin), where install-cni copies nodemesh-cni. */
  binDir: string;
  /** host-local's dataDir. */
  ipamDir: string;
  podsDir: string;
  /** Per-node dirs in multi-node mode: `<simDir>/nodes/<node>/`. */
  nodesDir: string;
}

export function simPaths(stateDir?: string): SimPaths {
  const sd = resolveStateDir(stateDir);
  const simDir = join(sd, 'sim');
  return {
    stateDir: sd,
    simDir,
    stateFile: join(simDir, 'state.json'),
    lockFile: join(simDir, 'lock'),
    netDir: join(simDir, 'net.d'),
    binDir: join(simDir, 'bin'),
    ipamDir: join(simDir, 'ipam'),
    podsDir: join(simDir, 'pods'),
    nodesDir: join(simDir, 'nodes'),
  };
}

/** One node's files in multi-node mode. */
export interface NodePaths {
  /** `<simDir>/nodes/<node>`; also the `--state-dir` of that node's agent (its files go to `agent/`). */
  dir: string;
  /** The node's CNI config dir (its /etc/cni/net.d). */
  netDir: string;
  /** The node's CNI plugin dir (its /opt/cni/bin). */
  binDir: string;
  /** host-local's dataDir for the node. */
  ipamDir: string;
}

export function nodePaths(paths: SimPaths, node: string): NodePaths {
  const dir = join(paths.nodesDir, node);
  return { dir, netDir: join(dir, 'net.d'), binDir: join(dir, 'bin'), ipamDir: join(dir, 'ipam') };
}

/** `<stateDir>/sim/pods/<ns>_<name>.log`. */
export function podLogPath(paths: SimPaths, namespace: string, name: string): string {
  return join(paths.podsDir, `${namespace}_${name}.log`);
}

/** The repository root: this file is src/sim/paths.ts or dist/sim/paths.js. */
export function repoRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/**
 * A node's CNI_PATH: Debian's plugins, the node's own plugin dir (`binDir`, where install-cni
 * puts nodemesh-cni, so the installed copy is the one that runs), then ours. `extra` replaces
 * the default last part (`<repo>/native/build`, or $NODEMESH_CNI_BIN_DIR).
 */
export function cniSearchPath(binDir: string, extra?: string[]): string[] {
  const ours = extra ?? (process.env.NODEMESH_CNI_BIN_DIR ? process.env.NODEMESH_CNI_BIN_DIR.split(':') : [join(repoRoot(), 'native', 'build')]);
  return [SYSTEM_CNI_DIR, resolve(binDir), ...ours.filter((d) => d !== '').map((d) => resolve(d))];
}

/** Finds a plugin binary the way libcni does: the first CNI_PATH dir holding that name. */
export function findPlugin(type: string, searchPath: string[]): string | undefined {
  for (const dir of searchPath) {
    const p = join(dir, type);
    if (existsSync(p)) return p;
  }
  return undefined;
}

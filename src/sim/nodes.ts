// Multi-node naming and allocation, without touching the host: node names, netns names,
// per-node subnets and addresses, which netns of the simulator is what, and which nodes a
// config dir needs.
import { ConfigError, UsageError } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import { CLUSTER_NETNS, CLUSTER_SERVICE_IP, DEFAULT_NODE, NODE_NETNS_PREFIX, SIM_NETNS_PREFIX } from './paths.js';
import { intToIpv4, ipv4ToInt } from '../net/index.js';

/**
 * Node slots: node i gets 10.244.<i>.0/24 and 10.240.0.<i+1>. 250 keeps every node address
 * below CLUSTER_SERVICE_IP (10.240.0.254) and is far more than one machine can run.
 */
export const MAX_NODES = 250;

const NODE_NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;

/**
 * Why `name` cannot name a simulated node, or undefined when it can: a Kubernetes node name
 * (lowercase DNS subdomain) kept to 63 characters, since it also names a netns, a cgroup dir
 * and a bpffs dir.
 */
export function nodeNameProblem(name: string): string | undefined {
  if (!NODE_NAME.test(name)) return `node name ${JSON.stringify(name)} is not a lowercase DNS name of at most 63 characters (a-z, 0-9, '-', '.'; starting and ending with a letter or digit)`;
  if (name.includes('..')) return `node name ${JSON.stringify(name)} has an empty label ('..')`;
  return undefined;
}

/** `nm-node.<node>`: the node's netns. */
export function nodeNetnsName(node: string): string {
  const why = nodeNameProblem(node);
  if (why) throw new UsageError(why);
  return `${NODE_NETNS_PREFIX}${node}`;
}

/** `10.244.<index>.0/24`. */
export function nodeSubnet(index: number): string {
  checkIndex(index);
  return `10.244.${index}.0/24`;
}

/** The node's pod gateway: the first address of its subnet, on its pod bridge. */
export function nodeGateway(index: number): string {
  checkIndex(index);
  return `10.244.${index}.1`;
}

/** The node's address on the cluster network, `10.240.0.<index+1>`. */
export function nodeIp(index: number): string {
  checkIndex(index);
  const ip = intToIpv4(ipv4ToInt('10.240.0.1') + index);
  if (ip === CLUSTER_SERVICE_IP) throw new RangeError(`node slot ${index} collides with ${CLUSTER_SERVICE_IP}`);
  return ip;
}

/** The node's veth end in the cluster netns: `nm-n<index>` (at most 15 bytes, as Linux wants). */
export function clusterLinkName(index: number): string {
  checkIndex(index);
  return `nm-n${index}`;
}

function checkIndex(index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_NODES) throw new RangeError(`node slot ${index} is outside 0..${MAX_NODES - 1}`);
}

export type SimNetnsKind = 'pod' | 'node' | 'cluster';

/** What a netns named by the simulator is (see NODE_NETNS_PREFIX for why this is unambiguous). */
export function netnsKind(name: string): SimNetnsKind | undefined {
  if (name === CLUSTER_NETNS) return 'cluster';
  if (name.startsWith(NODE_NETNS_PREFIX)) return 'node';
  if (name.startsWith(SIM_NETNS_PREFIX)) return 'pod';
  return undefined;
}

/** The node name of a node netns name, or undefined. */
export function nodeOfNetns(name: string): string | undefined {
  return name.startsWith(NODE_NETNS_PREFIX) ? name.slice(NODE_NETNS_PREFIX.length) : undefined;
}

/** The nodes a set of pods needs: every spec.nodeName, and the default node for pods naming none. */
export function nodesNamedBy(pods: Pod[], defaultNode = DEFAULT_NODE): string[] {
  const out = new Set<string>();
  for (const p of pods) out.add(p.spec.nodeName ?? defaultNode);
  return [...out];
}

/**
 * Gives each wanted node that is not already allocated the lowest free slot. New nodes are
 * allocated in a fixed order (the default node first, then by name), so the same config dir
 * always gives the same addresses; existing nodes keep theirs.
 */
export function allocateNodeSlots(existing: ReadonlyMap<string, number>, wanted: Iterable<string>, defaultNode = DEFAULT_NODE): Map<string, number> {
  const fresh = [...new Set(wanted)].filter((n) => !existing.has(n)).sort((a, b) => (a === defaultNode ? -1 : b === defaultNode ? 1 : a < b ? -1 : a > b ? 1 : 0));
  const used = new Set(existing.values());
  const out = new Map<string, number>();
  let next = 0;
  for (const name of fresh) {
    while (used.has(next)) next++;
    if (next >= MAX_NODES) throw new ConfigError('NM_ERR_CONFIG_INVALID', `the simulator runs at most ${MAX_NODES} nodes; ${name} would be one more`);
    out.set(name, next);
    used.add(next);
  }
  return out;
}

/** The flags `sim agent` gives a node's agent unless the caller already gave them. */
export interface NodeAgentDefaults {
  /** The node's agent state dir (`<simDir>/nodes/<node>`, or the state dir itself in host mode). */
  stateDir: string;
  node: string;
  /** Omitted in host mode: the agent's own default applies. */
  pinRoot?: string;
  /** The node's pod cgroup parent (`<sim cgroup parent>/kubepods`), observed for capture. */
  observeCgroup?: string;
}

/**
 * `args` with `--state-dir`, `--node`, `--pin-root` and `--observe-cgroup` added in front for each that `args`
 * does not already set (as `--flag value` or `--flag=value`, before any `--`).
 */
export function withAgentDefaults(args: string[], d: NodeAgentDefaults): string[] {
  const has = (flag: string) => agentFlagValue(args, flag) !== undefined;
  const added: string[] = [];
  if (!has('--state-dir')) added.push('--state-dir', d.stateDir);
  if (!has('--node')) added.push('--node', d.node);
  if (d.pinRoot !== undefined && !has('--pin-root')) added.push('--pin-root', d.pinRoot);
  if (d.observeCgroup !== undefined && !has('--observe-cgroup')) added.push('--observe-cgroup', d.observeCgroup);
  return [...added, ...args];
}

/**
 * The value of `flag` in agent args (`--flag value` or `--flag=value`, the last one winning,
 * before any `--`); '' for a flag without a value (a boolean, or one at the end); undefined
 * when absent.
 */
export function agentFlagValue(args: string[], flag: string): string | undefined {
  const end = args.indexOf('--');
  const own = end < 0 ? args : args.slice(0, end);
  let value: string | undefined;
  own.forEach((a, i) => {
    if (a.startsWith(`${flag}=`)) value = a.slice(flag.length + 1);
    else if (a === flag) value = own[i + 1] !== undefined && !own[i + 1]!.startsWith('-') ? own[i + 1]! : '';
  });
  return value;
}

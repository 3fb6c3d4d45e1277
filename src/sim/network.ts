// The simulated cluster network of multi-node mode: the `nm-cluster` netns with its bridge,
// each node's netns with its uplink veth, address, sysctls and routes to the other nodes' pod
// subnets, and stopping what runs inside a node before it goes. Nothing here touches the
// root netns: every link is created inside a namespace the simulator made.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { SimError, TimeoutError } from '../errors.js';
import { addNetns, deleteNetns, netnsExists, netnsPath, run } from './host.js';
import { CLUSTER_BRIDGE, CLUSTER_NETNS, CLUSTER_SERVICE_IP, NODE_UPLINK } from './paths.js';
import { nsenter } from './process.js';
import type { SimNode } from './state.js';

const NODE_PREFIX_LEN = 24; // the node network is a /24

/** `ip -n <netns> <args…>`. */
export function ipIn(netns: string, args: string[]): Promise<string> {
  return run('ip', ['-n', netns, ...args], 30_000, 'NM_ERR_SIM_NODE');
}

/** Runs a shell script inside a netns (nsenter --net only: /sys and the cgroup view stay the host's). */
function shIn(netnsFile: string, script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(nsenter(), [`--net=${netnsFile}`, '--', '/bin/sh', '-c', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new SimError('NM_ERR_SIM_NODE', `setting sysctls in ${netnsFile} failed (exit ${code}): ${err.trim()}`));
    });
  });
}

/**
 * Writes sysctls of one netns (/proc/sys/net is per netns). `optional` ones may be missing
 * (a kernel without IPv6).
 */
export async function setNetnsSysctls(netnsFile: string, writes: { key: string; value: string; optional?: boolean }[]): Promise<void> {
  const script = writes
    .map(({ key, value, optional }) => {
      const file = `/proc/sys/${key.replace(/\./g, '/')}`;
      if (!/^[a-z0-9_/]+$/.test(file) || !/^[0-9]+$/.test(value)) throw new RangeError(`bad sysctl ${key}=${value}`);
      return optional ? `{ echo ${value} > ${file}; } 2>/dev/null || true` : `echo ${value} > ${file}`;
    })
    .join(' && ');
  await shIn(netnsFile, script);
}

const NO_IPV6 = [
  { key: 'net.ipv6.conf.all.disable_ipv6', value: '1', optional: true },
  { key: 'net.ipv6.conf.default.disable_ipv6', value: '1', optional: true },
];

/**
 * The cluster network: netns `nm-cluster` holding bridge `nm-cbr0`, which every node's uplink
 * joins. The bridge carries CLUSTER_SERVICE_IP, so a cluster-wide service (the control plane)
 * started inside `nm-cluster` is reachable from every node and from nothing else. No IPv6, no
 * forwarding: it is a switch. Idempotent.
 */
export async function ensureClusterNetwork(): Promise<void> {
  if (!netnsExists(CLUSTER_NETNS)) await addNetns(CLUSTER_NETNS);
  const file = netnsPath(CLUSTER_NETNS);
  await setNetnsSysctls(file, [...NO_IPV6, { key: 'net.ipv4.ip_forward', value: '0' }]);
  await ipIn(CLUSTER_NETNS, ['link', 'set', 'lo', 'up']);
  const links = await ipIn(CLUSTER_NETNS, ['-o', 'link', 'show']);
  if (!new RegExp(`^\\d+: ${CLUSTER_BRIDGE}[:@]`, 'm').test(links)) {
    await ipIn(CLUSTER_NETNS, ['link', 'add', CLUSTER_BRIDGE, 'type', 'bridge']);
  }
  await ipIn(CLUSTER_NETNS, ['addr', 'replace', `${CLUSTER_SERVICE_IP}/${NODE_PREFIX_LEN}`, 'dev', CLUSTER_BRIDGE]);
  await ipIn(CLUSTER_NETNS, ['link', 'set', CLUSTER_BRIDGE, 'up']);
}

/** Deletes the cluster netns; the node uplinks' cluster ends (and so the veth pairs) go with it. */
export async function removeClusterNetwork(): Promise<void> {
  await deleteNetns(CLUSTER_NETNS);
}

function nodeNetns(node: SimNode): { netns: string; ip: string; clusterLink: string; file: string } {
  if (!node.netns || !node.ip || !node.clusterLink) throw new SimError('NM_ERR_SIM_STATE', `node ${node.name} has no netns, address or cluster link in the state`);
  return { netns: node.netns, ip: node.ip, clusterLink: node.clusterLink, file: node.netnsPath ?? netnsPath(node.netns) };
}

/**
 * A node: its netns with lo up, no IPv6, ip_forward=1 (per netns: the root netns's value is
 * never touched), and the uplink `eth0` (peer of `nm-n<i>` on the cluster bridge) with the
 * node IP. The pod bridge is made by the CNI bridge plugin at the first pod ADD, which runs
 * inside this netns.
 */
export async function createNodeNetwork(node: SimNode): Promise<void> {
  const n = nodeNetns(node);
  await addNetns(n.netns);
  await setNetnsSysctls(n.file, [...NO_IPV6, { key: 'net.ipv4.ip_forward', value: '1' }]);
  await ipIn(n.netns, ['link', 'set', 'lo', 'up']);
  // Both ends are made from inside the cluster netns, the peer straight into the node's:
  // no link ever exists in the root netns, not even for a moment.
  await ipIn(CLUSTER_NETNS, ['link', 'add', n.clusterLink, 'type', 'veth', 'peer', 'name', NODE_UPLINK, 'netns', n.netns]);
  await ipIn(CLUSTER_NETNS, ['link', 'set', n.clusterLink, 'master', CLUSTER_BRIDGE]);
  await ipIn(CLUSTER_NETNS, ['link', 'set', n.clusterLink, 'up']);
  await ipIn(n.netns, ['addr', 'add', `${n.ip}/${NODE_PREFIX_LEN}`, 'dev', NODE_UPLINK]);
  await ipIn(n.netns, ['link', 'set', NODE_UPLINK, 'up']);
}

/**
 * In every node, a route to each other node's pod subnet via that node's IP. Nothing else: no
 * default route, so an address outside the simulated cluster is unreachable from a node.
 */
export async function syncNodeRoutes(nodes: SimNode[]): Promise<void> {
  for (const a of nodes) {
    const na = nodeNetns(a);
    for (const b of nodes) {
      if (a === b) continue;
      await ipIn(na.netns, ['route', 'replace', b.subnet, 'via', nodeNetns(b).ip, 'dev', NODE_UPLINK]);
    }
  }
}

/** Removes the routes other nodes have to `gone`'s subnet (they would point at a dead address). */
export async function dropNodeRoutes(nodes: SimNode[], gone: SimNode): Promise<void> {
  for (const a of nodes) {
    if (a === gone || !a.netns || !netnsExists(a.netns)) continue;
    await ipIn(a.netns, ['route', 'del', gone.subnet]).catch(() => undefined);
  }
}

/** Pids whose (main thread's) network namespace is the one bound at `netnsFile`. */
export function netnsPids(netnsFile: string): number[] {
  let ino: number;
  let dev: number;
  try {
    const st = statSync(netnsFile);
    ino = st.ino;
    dev = st.dev;
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      const st = statSync(`/proc/${e}/ns/net`);
      if (st.ino === ino && st.dev === dev) out.push(pid);
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/**
 * Stops every process running in the given netns (a node's agent, a command an operator
 * started there): SIGTERM, up to `graceMs` to exit, then SIGKILL. A netns deleted by name
 * lives on while a process is in it, so this comes before deleting a node. Returns the pids
 * that were found.
 */
export async function stopNetnsProcesses(netnsFiles: string[], graceMs: number, timeoutMs = 10_000): Promise<number[]> {
  const found = netnsFiles.flatMap(netnsPids);
  if (found.length === 0) return [];
  for (const pid of found) signal(pid, 'SIGTERM');
  const graceEnd = Date.now() + graceMs;
  while (Date.now() < graceEnd && netnsFiles.some((f) => netnsPids(f).length > 0)) await sleep(20);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = netnsFiles.flatMap(netnsPids);
    if (left.length === 0) return found;
    if (Date.now() >= deadline) throw new TimeoutError(`processes ${left.join(', ')} are still in ${netnsFiles.join(', ')} ${timeoutMs} ms after SIGKILL`);
    for (const pid of left) signal(pid, 'SIGKILL');
    await sleep(20);
  }
}

/** Deletes a node's netns: its pod bridge, uplink (and so its cluster veth) and routes go with it. */
export async function removeNodeNetwork(node: SimNode): Promise<void> {
  if (node.netns) await deleteNetns(node.netns);
}

/**
 * The node netns a pod's eth0 is linked to (its veth peer's netns), read from iproute2's
 * `link-netns <name>`; undefined when it cannot tell. Used by a stateless `sim down`.
 */
export async function linkedNetns(podNetns: string, ifName = 'eth0'): Promise<string | undefined> {
  try {
    const out = await ipIn(podNetns, ['-o', 'link', 'show', ifName]);
    return / link-netns (\S+)/.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

// The host objects around the pods: network namespaces (via iproute2, as `ip netns` names
// them under /run/netns), the bridge, and the ip_forward sysctl.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errorFor, SimError } from '../errors.js';
import { SIM_NETNS_PREFIX } from './paths.js';

export const NETNS_RUN_DIR = '/run/netns';
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/** Runs a host tool; rejects with its stderr. */
export function run(cmd: string, args: string[], timeoutMs = 30_000, code: 'NM_ERR_SIM_POD' | 'NM_ERR_SIM_NODE' = 'NM_ERR_SIM_POD'): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        reject(errorFor(code, `${cmd} ${args.join(' ')} failed: ${(stderr || err.message).trim()}`, { cause: err }));
        return;
      }
      resolve(stdout);
    });
  });
}

export function readIpForward(): string {
  return readFileSync(IP_FORWARD, 'utf8').trim();
}

/** Restores ip_forward; writes only when it differs, so an unchanged host sees no write. */
export function restoreIpForward(value: string): boolean {
  if (readIpForward() === value) return false;
  writeFileSync(IP_FORWARD, `${value}\n`);
  return true;
}

export function netnsPath(name: string): string {
  return join(NETNS_RUN_DIR, name);
}

/**
 * The netns name for a pod: `nm-<ns>-<pod>` when that is short and free, else a truncated
 * form with a hash of the pod's identity, so two pods never share one.
 */
export function netnsNameFor(namespace: string, name: string, taken: (n: string) => boolean): string {
  const plain = `${SIM_NETNS_PREFIX}${namespace}-${name}`;
  if (plain.length <= 48 && /^[a-z0-9.-]+$/.test(plain) && !taken(plain)) return plain;
  const h = createHash('sha256').update(`${namespace}/${name}`).digest('hex');
  for (let i = 8; i <= 64; i += 8) {
    const hashed = `${SIM_NETNS_PREFIX}${`${namespace}-${name}`.replace(/[^a-z0-9.-]/g, '-').slice(0, 30)}-${h.slice(0, i)}`;
    if (!taken(hashed)) return hashed;
  }
  throw new SimError('NM_ERR_SIM_POD', `no free netns name for pod ${namespace}/${name}`);
}

export function netnsExists(name: string): boolean {
  return existsSync(netnsPath(name));
}

export async function addNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
}

/** Deletes a named netns; a missing one is fine (teardown is idempotent). */
export async function deleteNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  await run('ip', ['netns', 'delete', name]);
}

/** Names under /run/netns with the simulator's prefix. */
export function listSimNetns(): string[] {
  try {
    return readdirSync(NETNS_RUN_DIR).filter((n) => n.startsWith(SIM_NETNS_PREFIX));
  } catch {
    return [];
  }
}

/** The inode identifying a netns (what /proc/<pid>/ns/net points to). */
export function netnsInode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/** A Linux interface name: 1-15 bytes, no '/', not '.' or '..'. */
export function isLinkName(name: string): boolean {
  return /^[A-Za-z0-9_.-]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

export function linkExists(name: string): boolean {
  if (!isLinkName(name)) return false;
  return existsSync(`/sys/class/net/${name}`);
}

/** Interfaces enslaved to a bridge (its ports). */
export function bridgePorts(bridge: string): string[] {
  if (!isLinkName(bridge)) return [];
  try {
    return readdirSync(`/sys/class/net/${bridge}/brif`);
  } catch {
    return [];
  }
}

/**
 * Keeps the bridge private to the simulated pods: no IPv6 address for the host on it or on
 * `ports` (the host ends of the pods' veths), and bridged frames kept out of the host's
 * iptables (br_netfilter would otherwise run pod-to-pod traffic through the FORWARD chain,
 * which Docker hosts set to DROP). The bridge still forwards IPv6 between the pods, whose eth0
 * keeps its link-local address as on a real node: disable_ipv6 only takes the host's own IPv6
 * off these links. The per-link settings go with the links.
 */
export function hardenBridge(bridge: string, ports: string[] = []): void {
  if (!isLinkName(bridge)) return;
  const writes: [string, string][] = [
    [`/proc/sys/net/ipv6/conf/${bridge}/disable_ipv6`, '1'],
    ...ports.filter(isLinkName).map((port): [string, string] => [`/proc/sys/net/ipv6/conf/${port}/disable_ipv6`, '1']),
    [`/sys/class/net/${bridge}/bridge/nf_call_iptables`, '0'],
    [`/sys/class/net/${bridge}/bridge/nf_call_ip6tables`, '0'],
    [`/sys/class/net/${bridge}/bridge/nf_call_arptables`, '0'],
  ];
  for (const [file, value] of writes) {
    try {
      if (readFileSync(file, 'utf8').trim() !== value) writeFileSync(file, value);
    } catch {
      /* the knob does not exist on this kernel (no IPv6, no br_netfilter) */
    }
  }
}

export async function deleteLink(name: string): Promise<void> {
  if (!linkExists(name)) return;
  await run('ip', ['link', 'delete', name]);
}

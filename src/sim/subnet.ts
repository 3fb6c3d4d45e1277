// The pod subnet as host-local sees it: which addresses it never hands out (network, gateway,
// broadcast). Parsing and arithmetic come from net/.
import { UsageError } from '../errors.js';
import { ipv4CidrContains, ipv4ToInt, parseIpv4Cidr, type Ipv4Cidr } from '../net/index.js';

export type Subnet = Ipv4Cidr;

/** Parses `a.b.c.d/n`; the host bits must be zero, and /8../30 leaves room for pods. */
export function parseSubnet(cidr: string): Subnet {
  try {
    return parseIpv4Cidr(cidr, 'pod subnet', { min: 8, max: 30 });
  } catch (err) {
    throw new UsageError(`${(err as Error).message} (a pod subnet is an IPv4 CIDR from /8 to /30, e.g. 10.244.0.0/24)`);
  }
}

function size(s: Subnet): number {
  return 2 ** (32 - s.prefix);
}

/** Why host-local would refuse to assign `ip` in `s`, or undefined if it is assignable. */
export function unassignableReason(s: Subnet, ip: string): string | undefined {
  if (!ipv4CidrContains(s, ip)) return `${ip} is outside the pod subnet ${s.cidr}`;
  const n = ipv4ToInt(ip);
  if (n === s.network) return `${ip} is the network address of ${s.cidr}`;
  if (n === s.network + size(s) - 1) return `${ip} is the broadcast address of ${s.cidr}`;
  // host-local reserves the first address as the (unconfigured) gateway.
  if (n === s.network + 1) return `${ip} is the gateway address host-local reserves in ${s.cidr}`;
  return undefined;
}

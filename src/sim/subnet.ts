// IPv4 CIDR arithmetic for the pod subnet: parsing, membership, and which addresses
// host-local never hands out (network, gateway, broadcast).
import { isIPv4 } from '../k8s/index.js';
import { NodemeshError } from '../errors.js';

export interface Subnet {
  cidr: string;
  network: number;
  prefix: number;
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/n`; the host bits must be zero, and /8../30 leaves room for pods. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(cidr);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || !isIPv4(m[1]!) || !(prefix >= 8 && prefix <= 30)) {
    throw new NodemeshError('NM_ERR_USAGE', `pod subnet ${JSON.stringify(cidr)} is not an IPv4 CIDR from /8 to /30, e.g. 10.244.0.0/24`);
  }
  const network = ipToInt(m[1]!);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  if ((network & mask) >>> 0 !== network) {
    throw new NodemeshError('NM_ERR_USAGE', `pod subnet ${cidr} has host bits set; did you mean ${intToIp((network & mask) >>> 0)}/${prefix}?`);
  }
  return { cidr, network, prefix };
}

function size(s: Subnet): number {
  return 2 ** (32 - s.prefix);
}

export function subnetContains(s: Subnet, ip: string): boolean {
  const n = ipToInt(ip);
  return n >= s.network && n < s.network + size(s);
}

/** Why host-local would refuse to assign `ip` in `s`, or undefined if it is assignable. */
export function unassignableReason(s: Subnet, ip: string): string | undefined {
  if (!subnetContains(s, ip)) return `${ip} is outside the pod subnet ${s.cidr}`;
  const n = ipToInt(ip);
  if (n === s.network) return `${ip} is the network address of ${s.cidr}`;
  if (n === s.network + size(s) - 1) return `${ip} is the broadcast address of ${s.cidr}`;
  // host-local reserves the first address as the (unconfigured) gateway.
  if (n === s.network + 1) return `${ip} is the gateway address host-local reserves in ${s.cidr}`;
  return undefined;
}

// The one IP/CIDR module: addresses as strings, as raw bytes (how xDS carries them) and as
// 32-bit integers (IPv4 subnet arithmetic), and CIDRs with one host-bits rule and message.
import { isIPv4 as nodeIsIPv4, isIP as nodeIsIP } from 'node:net';

/** Whether a string is a dotted-quad IPv4 address. */
export function isIPv4(s: string): boolean {
  return nodeIsIPv4(s);
}

/** 4 or 16 bytes for an IP string; throws TypeError on a malformed address. */
export function ipToBytes(ip: string): Buffer {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p) => p > 255)) throw new TypeError(`invalid IPv4 address ${JSON.stringify(ip)}`);
    return Buffer.from(parts);
  }
  if (ip.includes(':')) {
    let s = ip;
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
    const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
    if (tail) {
      const b = ipToBytes(tail[1]!);
      s = s.slice(0, -tail[1]!.length) + `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
    }
    const halves = s.split('::');
    if (halves.length > 2) throw new TypeError(`invalid IPv6 address ${JSON.stringify(ip)}`);
    const head = halves[0] ? halves[0].split(':') : [];
    const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
    const fill = 8 - head.length - rest.length;
    if ((halves.length === 1 && fill !== 0) || fill < 0) throw new TypeError(`invalid IPv6 address ${JSON.stringify(ip)}`);
    const words = [...head, ...Array<string>(halves.length === 2 ? fill : 0).fill('0'), ...rest];
    const out = Buffer.alloc(16);
    words.forEach((w, i) => {
      if (!/^[0-9a-f]{1,4}$/i.test(w)) throw new TypeError(`invalid IPv6 address ${JSON.stringify(ip)}`);
      out.writeUInt16BE(parseInt(w, 16), i * 2);
    });
    return out;
  }
  throw new TypeError(`invalid IP address ${JSON.stringify(ip)}`);
}

/** The IP string for 4 or 16 bytes; throws TypeError for any other length. */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length === 16) {
    const words: string[] = [];
    for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    // Compress the longest run of zero words (RFC 5952).
    let best = -1;
    let bestLen = 0;
    for (let i = 0; i < 8; ) {
      if (words[i] !== '0') {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && words[j] === '0') j++;
      if (j - i > bestLen && j - i > 1) {
        best = i;
        bestLen = j - i;
      }
      i = j;
    }
    if (best < 0) return words.join(':');
    return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
  }
  throw new TypeError(`an IP address has 4 or 16 bytes, got ${b.length}`);
}

/** Whether a string is an IPv4 or IPv6 address. */
export function isIp(s: string): boolean {
  return nodeIsIP(s) !== 0;
}

export interface Cidr {
  /** 4 or 16 bytes, host bits cleared. */
  bytes: Buffer;
  prefixLen: number;
}

/** "10.0.0.0/8", "10.1.2.3" (a /32) or an IPv6 form; throws TypeError when malformed. */
export function parseCidr(s: string): Cidr {
  const slash = s.indexOf('/');
  const bytes = ipToBytes(slash < 0 ? s : s.slice(0, slash));
  const max = bytes.length * 8;
  let prefixLen = max;
  if (slash >= 0) {
    const t = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(t) || Number(t) > max) throw new TypeError(`invalid CIDR ${JSON.stringify(s)}: prefix length must be 0-${max}`);
    prefixLen = Number(t);
  }
  return cidr(bytes, prefixLen);
}

/** A CIDR from raw bytes and a prefix length (as xDS carries it); host bits are cleared. */
export function cidr(bytes: Uint8Array, prefixLen: number): Cidr {
  if (bytes.length !== 4 && bytes.length !== 16) throw new TypeError(`an IP address has 4 or 16 bytes, got ${bytes.length}`);
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > bytes.length * 8) {
    throw new TypeError(`prefix length ${prefixLen} out of range for a ${bytes.length * 8}-bit address`);
  }
  const out = Buffer.from(bytes);
  for (let bit = prefixLen; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { bytes: out, prefixLen };
}

export function formatCidr(c: Cidr): string {
  return `${bytesToIp(c.bytes)}/${c.prefixLen}`;
}

/** The bytes of an IP, with an IPv4-mapped IPv6 address (::ffff:a.b.c.d) turned into IPv4. */
/** Parsed addresses, bounded: authorization asks for the same few per connection and per HTTP request. */
const normalized = new Map<string, Buffer>();

/** The address's bytes, an IPv4-mapped IPv6 address as IPv4. Read-only: the buffer is shared. */
export function normalizedIpBytes(ip: string): Buffer {
  const hit = normalized.get(ip);
  if (hit) return hit;
  const b = ipToBytes(ip);
  const out = b.length === 16 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff ? b.subarray(12) : b;
  if (normalized.size >= 4096) normalized.clear();
  normalized.set(ip, out);
  return out;
}

export function cidrContains(c: Cidr, ipBytes: Uint8Array): boolean {
  if (ipBytes.length !== c.bytes.length) return false;
  const full = c.prefixLen >> 3;
  for (let i = 0; i < full; i++) if (ipBytes[i] !== c.bytes[i]) return false;
  const rem = c.prefixLen & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (ipBytes[full]! & mask) === c.bytes[full];
}

/** An IPv4 address as an unsigned 32-bit integer (no validation: check with isIPv4 first). */
export function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, octet) => ((acc << 8) | Number(octet)) >>> 0, 0);
}

export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 0xff).join('.');
}

/** The netmask of an IPv4 prefix length as an unsigned 32-bit integer. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export interface Ipv4Cidr {
  /** The CIDR as written, e.g. "10.244.0.0/24". */
  cidr: string;
  /** The network address, e.g. "10.244.0.0". */
  addr: string;
  /** The network address as an unsigned 32-bit integer. */
  network: number;
  prefix: number;
}

/**
 * Parses "a.b.c.d/n" whose host bits are zero. Throws TypeError (RangeError for a prefix
 * out of range) whose message starts with `what`, so callers name the field; a set host bit
 * gets the one "did you mean" message every caller shows.
 */
export function parseIpv4Cidr(value: string, what = 'CIDR', range: { min: number; max: number } = { min: 0, max: 32 }): Ipv4Cidr {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(value);
  if (!m || !isIPv4(m[1]!)) throw new TypeError(`${what} must be an IPv4 CIDR like "10.96.0.0/12", got ${JSON.stringify(value)}`);
  const prefix = Number(m[2]);
  if (prefix < range.min || prefix > range.max) {
    throw new RangeError(`${what} ${JSON.stringify(value)} has prefix length ${prefix}; it must be ${range.min}..${range.max}`);
  }
  const addr = ipv4ToInt(m[1]!);
  const network = (addr & prefixMask(prefix)) >>> 0;
  if (network !== addr) {
    throw new TypeError(`${what} ${JSON.stringify(value)} has host bits set; did you mean "${intToIpv4(network)}/${prefix}"?`);
  }
  return { cidr: value, addr: m[1]!, network, prefix };
}

/** Whether an IPv4 address string is inside an IPv4 CIDR. */
export function ipv4CidrContains(c: Pick<Ipv4Cidr, 'network' | 'prefix'>, ip: string): boolean {
  return isIPv4(ip) && ((ipv4ToInt(ip) & prefixMask(c.prefix)) >>> 0) === c.network;
}

// Whether a connection was opened by the node itself: a socket of the node's network namespace
// (the agent's) holds exactly that address pair. This is how kubelet probes look when they
// reach a pod, and Istio ambient exempts them from policy the same way: its host-side rule
// matches only locally created sockets (`-m owner --socket-exists`), never forwarded traffic.
import { readFileSync } from 'node:fs';
import { endianness, networkInterfaces } from 'node:os';
import { isIPv4 } from '../net/index.js';

const LE = endianness() === 'LE';

/** An IPv4 address as /proc/net/tcp prints it: the raw __be32 read as a host u32, %08X. */
function hex4(ip: string): string {
  const b = ip.split('.').map((x) => Number(x).toString(16).toUpperCase().padStart(2, '0'));
  return (LE ? b.reverse() : b).join('');
}

const hexPort = (p: number): string => p.toString(16).toUpperCase().padStart(4, '0');

/** The same address as /proc/net/tcp6 prints a v4-mapped one (::ffff:a.b.c.d), word by word. */
function hex6Mapped(ip: string): string {
  return `0000000000000000${LE ? 'FFFF0000' : '0000FFFF'}${hex4(ip)}`;
}

export interface Tuple {
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

export interface NodeOriginOptions {
  /** Reads a /proc file (default: the agent's own netns, /proc/net/tcp and tcp6). */
  read?: (file: string) => string;
  /** The node's addresses (default: every interface of this netns), re-read every 5 s. */
  addresses?: () => string[];
  /** Socket-table lookups per second (default 200); beyond, the answer is "no". */
  perSecond?: number;
}

export class NodeOrigin {
  readonly #read: (file: string) => string;
  readonly #addresses: () => string[];
  readonly #perSecond: number;
  #tokens: number;
  #at = performance.now();
  #own = new Set<string>();
  #ownAt = -Infinity;

  /**
   * Only a source that is one of the node's own addresses is looked up in the socket table,
   * and lookups are rate limited, so a flood from a node address (NodePort traffic the node
   * masquerades, say) costs no more than that; a probe refused then is retried by the kubelet.
   */
  constructor(o: NodeOriginOptions = {}) {
    this.#read = o.read ?? ((f) => readFileSync(f, 'latin1'));
    this.#addresses = o.addresses ?? (() => Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address)));
    this.#perSecond = o.perSecond ?? 200;
    this.#tokens = this.#perSecond;
  }

  /** Whether a socket of this netns is bound to src and connected to dst: the node opened it. */
  opened(t: Tuple): boolean {
    if (!isIPv4(t.srcIp) || !isIPv4(t.dstIp) || !(t.srcPort > 0) || !(t.dstPort > 0)) return false;
    if (!this.#isOwn(t.srcIp) || !this.#take()) return false;
    const v4 = `${hex4(t.srcIp)}:${hexPort(t.srcPort)} ${hex4(t.dstIp)}:${hexPort(t.dstPort)} `;
    const v6 = `${hex6Mapped(t.srcIp)}:${hexPort(t.srcPort)} ${hex6Mapped(t.dstIp)}:${hexPort(t.dstPort)} `;
    return this.#has('/proc/net/tcp', v4) || this.#has('/proc/net/tcp6', v6);
  }

  #isOwn(ip: string): boolean {
    const now = performance.now();
    if (now - this.#ownAt > 5000) {
      try {
        this.#own = new Set(this.#addresses());
      } catch {
        this.#own = new Set();
      }
      this.#ownAt = now;
    }
    return this.#own.has(ip);
  }

  #has(file: string, needle: string): boolean {
    try {
      return this.#read(file).includes(needle);
    } catch {
      return false; // unreadable: not the node's, fail closed
    }
  }

  #take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#perSecond, this.#tokens + ((now - this.#at) / 1000) * this.#perSecond);
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }
}

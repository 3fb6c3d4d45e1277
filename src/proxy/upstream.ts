// Upstream connections that leave from a pod's own network namespace: plain sockets (the peer
// sees the pod's IP as the source), and delivery sockets that reach the app at the pod's IP
// from the client's own address. Both are made by the addon in the namespace and kept warm
// in small per-namespace pools, so a new connection does not wait for a thread to setns().
import { Socket, isIPv4 } from 'node:net';
import { closeSync } from 'node:fs';
import type { SocketAddress, UpstreamConnector } from './types.js';

/** What a pooled socket is for: `plain` upstream, or `transparent` inbound delivery. */
export type NetnsSocketKind = 'plain' | 'transparent';

/**
 * Makes `count` unconnected sockets inside a namespace (one visit to it for the batch). With
 * `transparent`, delivery sockets: IP_TRANSPARENT, the delivery mark, bound to lo, and free
 * to bind the client's address at connect time (src/redirect socketsInNetns).
 */
export type NetnsSocketMaker = (netnsPath: string, count: number, options: { transparent: boolean }) => Promise<number[]>;

class Pool {
  readonly fds: number[] = [];
  refilling = false;
}

export class NetnsConnector implements UpstreamConnector {
  readonly #make: NetnsSocketMaker;
  readonly #size: number;
  readonly #pools = new Map<string, Pool>();

  /**
   * Keeps up to `poolSize` sockets of each kind ready per namespace and refills in one batch
   * once half are used: entering a namespace costs about half a millisecond, a socket a few
   * microseconds. A namespace gets a delivery pool only once something is delivered into it.
   */
  constructor(make: NetnsSocketMaker, poolSize = 64) {
    this.#make = make;
    this.#size = poolSize;
  }

  async #take(netnsPath: string, kind: NetnsSocketKind): Promise<number> {
    const key = `${kind} ${netnsPath}`;
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = new Pool();
      this.#pools.set(key, pool);
    }
    const fd = pool.fds.pop();
    if (pool.fds.length <= this.#size / 2) this.#refill(netnsPath, kind, key, pool);
    return fd ?? (await this.#make(netnsPath, 1, { transparent: kind === 'transparent' }))[0]!;
  }

  #refill(netnsPath: string, kind: NetnsSocketKind, key: string, pool: Pool): void {
    if (pool.refilling || pool.fds.length >= this.#size) return;
    pool.refilling = true;
    void (async () => {
      try {
        while (pool.fds.length < this.#size && this.#pools.get(key) === pool) {
          pool.fds.push(...(await this.#make(netnsPath, this.#size - pool.fds.length, { transparent: kind === 'transparent' })));
        }
      } catch {
        // The namespace may be going away; the next take() creates on demand and reports.
      } finally {
        pool.refilling = false;
        if (this.#pools.get(key) !== pool) for (const fd of pool.fds.splice(0)) closeSync(fd);
      }
    })();
  }

  async connect(netnsPath: string, to: SocketAddress, timeoutMs: number): Promise<Socket> {
    const fd = await this.#take(netnsPath, 'plain');
    return connectFd(new Socket({ fd, allowHalfOpen: true, readable: true, writable: true }), to, timeoutMs);
  }

  /**
   * A delivery socket bound to `fromIp` (any port) connected to the app. The pod calling its
   * own IP needs no transparency: a plain socket already has that source, and its replies
   * arrive through the pod's own interface, where a socket bound to lo would not see them.
   */
  async deliver(netnsPath: string, to: SocketAddress, fromIp: string, timeoutMs: number): Promise<Socket> {
    if (!isIPv4(fromIp)) {
      throw Object.assign(new Error(`cannot deliver from ${JSON.stringify(fromIp)}: the client's address must be IPv4`), { code: 'EINVAL' });
    }
    if (fromIp === to.ip) return this.connect(netnsPath, to, timeoutMs);
    const fd = await this.#take(netnsPath, 'transparent');
    return connectFd(new Socket({ fd, allowHalfOpen: true, readable: true, writable: true }), to, timeoutMs, fromIp);
  }

  forget(netnsPath: string): void {
    for (const kind of ['plain', 'transparent'] as const) {
      const key = `${kind} ${netnsPath}`;
      const pool = this.#pools.get(key);
      if (!pool) continue;
      this.#pools.delete(key);
      for (const fd of pool.fds.splice(0)) closeSync(fd);
    }
  }
}

/**
 * Connects a socket, failing with ETIMEDOUT if the peer does not answer in time. With
 * `localAddress`, binds that address first (port 0: the kernel picks one at connect).
 */
export function connectFd(sock: Socket, to: SocketAddress, timeoutMs: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`connect ETIMEDOUT ${to.ip}:${to.port} (no answer in ${timeoutMs} ms)`), { code: 'ETIMEDOUT' });
      sock.destroy(err);
    }, timeoutMs);
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(err);
    };
    sock.once('error', onError);
    sock.connect({ port: to.port, host: to.ip, ...(localAddress ? { localAddress } : {}) }, () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

/**
 * A connector for tests and for the root namespace: plain sockets, no namespace. `deliver`
 * binds `fromIp` like the real one, so it works only where that address is local.
 */
export class PlainConnector implements UpstreamConnector {
  connect(_netnsPath: string, to: SocketAddress, timeoutMs: number): Promise<Socket> {
    return connectFd(new Socket({ allowHalfOpen: true }), to, timeoutMs);
  }
  deliver(_netnsPath: string, to: SocketAddress, fromIp: string, timeoutMs: number): Promise<Socket> {
    return connectFd(new Socket({ allowHalfOpen: true }), to, timeoutMs, fromIp);
  }
  forget(): void {}
}

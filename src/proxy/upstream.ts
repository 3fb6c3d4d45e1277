// Upstream connections that leave from a pod's own network namespace, so the peer sees the
// pod's IP as the source. Sockets are made by the addon in the namespace and kept warm in a
// small per-namespace pool, so a new connection does not wait for a thread to setns().
import { Socket } from 'node:net';
import { closeSync } from 'node:fs';
import type { SocketAddress, UpstreamConnector } from './types.js';

/** Makes `count` unconnected sockets inside a namespace (one visit to it for the batch). */
export type NetnsSocketMaker = (netnsPath: string, count: number) => Promise<number[]>;

class Pool {
  readonly fds: number[] = [];
  refilling = false;
}

export class NetnsConnector implements UpstreamConnector {
  readonly #make: NetnsSocketMaker;
  readonly #size: number;
  readonly #pools = new Map<string, Pool>();

  /**
   * Keeps up to `poolSize` sockets ready per namespace and refills in one batch once half are
   * used: entering a namespace costs about half a millisecond, a socket a few microseconds.
   */
  constructor(make: NetnsSocketMaker, poolSize = 64) {
    this.#make = make;
    this.#size = poolSize;
  }

  async #take(netnsPath: string): Promise<number> {
    let pool = this.#pools.get(netnsPath);
    if (!pool) {
      pool = new Pool();
      this.#pools.set(netnsPath, pool);
    }
    const fd = pool.fds.pop();
    if (pool.fds.length <= this.#size / 2) this.#refill(netnsPath, pool);
    return fd ?? (await this.#make(netnsPath, 1))[0]!;
  }

  #refill(netnsPath: string, pool: Pool): void {
    if (pool.refilling || pool.fds.length >= this.#size) return;
    pool.refilling = true;
    void (async () => {
      try {
        while (pool.fds.length < this.#size && this.#pools.get(netnsPath) === pool) {
          pool.fds.push(...(await this.#make(netnsPath, this.#size - pool.fds.length)));
        }
      } catch {
        // The namespace may be going away; the next take() creates on demand and reports.
      } finally {
        pool.refilling = false;
        if (this.#pools.get(netnsPath) !== pool) for (const fd of pool.fds.splice(0)) closeSync(fd);
      }
    })();
  }

  async connect(netnsPath: string, to: SocketAddress, timeoutMs: number): Promise<Socket> {
    const fd = await this.#take(netnsPath);
    return connectFd(new Socket({ fd, allowHalfOpen: true, readable: true, writable: true }), to, timeoutMs);
  }

  forget(netnsPath: string): void {
    const pool = this.#pools.get(netnsPath);
    if (!pool) return;
    this.#pools.delete(netnsPath);
    for (const fd of pool.fds.splice(0)) closeSync(fd);
  }
}

/** Connects a socket, failing with ETIMEDOUT if the peer does not answer in time. */
export function connectFd(sock: Socket, to: SocketAddress, timeoutMs: number): Promise<Socket> {
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
    sock.connect({ port: to.port, host: to.ip }, () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

/** A connector for tests and for the root namespace: plain sockets, no namespace. */
export class PlainConnector implements UpstreamConnector {
  connect(_netnsPath: string, to: SocketAddress, timeoutMs: number): Promise<Socket> {
    return connectFd(new Socket({ allowHalfOpen: true }), to, timeoutMs);
  }
  forget(): void {}
}

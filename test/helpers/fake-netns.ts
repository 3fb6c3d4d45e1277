// Fakes of what the addon gives NodeProxy, for unit tests without root or pod namespaces:
// listening fds (the addon makes them inside a pod's netns; here a bound socket on 127.0.0.1)
// and an upstream connector (the addon's sockets leave from the pod's netns; here plain
// loopback sockets to one test app, whatever address the proxy asked for).
import { connect, type Socket } from 'node:net';
import type { NetnsListen } from '../../src/proxy/proxy.js';
import type { SocketAddress, UpstreamConnector } from '../../src/proxy/types.js';

interface RawTcp {
  bind(host: string, port: number): number;
  getsockname(out: { port?: number }): number;
  readonly fd: number;
}
type TcpWrap = { TCP: new (kind: number) => RawTcp; constants: { SERVER: number } };

/**
 * Raw handles whose fds were handed to a proxy. They are kept referenced and never closed:
 * the proxy's server owns (and closes) the fd, as it owns the addon's.
 */
const keep: RawTcp[] = [];

/**
 * A bound TCP socket on 127.0.0.1 (port 0) as a bare fd, which is what the addon returns and
 * what `net.Server.listen({ fd })` takes. Node makes one only inside a handle, so this borrows
 * the internal tcp_wrap binding, as net.Server itself does.
 */
export function boundFd(): { fd: number; port: number } {
  const { TCP, constants } = (process as unknown as { binding(name: 'tcp_wrap'): TcpWrap }).binding('tcp_wrap');
  const h = new TCP(constants.SERVER);
  const rc = h.bind('127.0.0.1', 0);
  if (rc !== 0) throw new Error(`bind failed: ${rc}`);
  const out: { port?: number } = {};
  h.getsockname(out);
  keep.push(h);
  return { fd: h.fd, port: out.port! };
}

/** A NetnsListen that hands out loopback fds and remembers which port stands for which listener. */
export function fakeListen(): { listen: NetnsListen; port(netnsPath: string, meshPort: number): number } {
  const ports = new Map<string, number>();
  return {
    listen: async (netnsPath, opts) => {
      const { fd, port } = boundFd();
      ports.set(`${netnsPath}|${opts.port}`, port);
      return fd;
    },
    port: (netnsPath, meshPort) => {
      const p = ports.get(`${netnsPath}|${meshPort}`);
      if (p === undefined) throw new Error(`no listener ${meshPort} for ${netnsPath}`);
      return p;
    },
  };
}

/**
 * An upstream connector that always dials 127.0.0.1:<appPort> and records what the proxy
 * asked for; `fail` makes the next connects reject (or hang) instead.
 */
export class FakeConnector implements UpstreamConnector {
  readonly asked: { netnsPath: string; to: SocketAddress }[] = [];
  fail: ((to: SocketAddress) => Promise<never>) | undefined;

  constructor(public appPort: number) {}

  connect(netnsPath: string, to: SocketAddress): Promise<Socket> {
    this.asked.push({ netnsPath, to });
    if (this.fail) return this.fail(to);
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: this.appPort, allowHalfOpen: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
    });
  }

  /** Inbound delivery: the real one binds the client's address; here the source stays loopback. */
  deliver(netnsPath: string, to: SocketAddress): Promise<Socket> {
    return this.connect(netnsPath, to);
  }

  forget(): void {}
}

// The node's shared L4 proxy: per enrolled pod, an outbound listener (15001) and an inbound
// listener (15006) created inside the pod's network namespace, and the connection handlers.
import { closeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { ConnectionTracker, type Telemetry } from './connection.js';
import { MESH_PORTS, peerOf, type Authorizer, type LocalPod, type OriginalDstResolver, type UpstreamConnector, type WorkloadIndex } from './types.js';

export const OUTBOUND_PORT = 15001;
export const INBOUND_PORT = 15006;

/** Opens a listening socket inside a namespace and returns its fd. */
export type NetnsListen = (netnsPath: string, opts: { host: string; port: number; backlog?: number }) => Promise<number>;

export interface ProxyOptions {
  listen: NetnsListen;
  upstream: UpstreamConnector;
  originalDst: OriginalDstResolver;
  workloads: WorkloadIndex;
  telemetry: Telemetry;
  /** Called with the inbound listener's fd before Node takes it (to steer SYNs to it). */
  onInboundListener?: (pod: LocalPod, fd: number) => void;
  connectTimeoutMs?: number;
  /** Decides every inbound connection; absent means allow all (local mode without policy). */
  authorize?: Authorizer;
}

interface PodListeners {
  pod: LocalPod;
  outbound: Server;
  inbound: Server;
  outboundFd: number;
  inboundFd: number;
}

/** Node's private handle fd; present on Linux for TCP sockets. */
function fdOf(sock: Socket): number {
  const h = (sock as unknown as { _handle?: { fd?: number } })._handle;
  return h?.fd ?? -1;
}

function serve(fd: number, onConn: (s: Socket) => void): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer({ allowHalfOpen: true, noDelay: true }, onConn);
    srv.once('error', reject);
    srv.listen({ fd }, () => {
      srv.off('error', reject);
      resolve(srv);
    });
  });
}

export class NodeProxy {
  readonly tracker: ConnectionTracker;
  readonly #o: ProxyOptions;
  readonly #pods = new Map<string, PodListeners>();
  readonly #log: Logger;
  readonly #timeout: number;
  /**
   * Upstream sockets this proxy opened for its own pods, by local `ip:port`. A connection
   * arriving inbound from one of them comes from that pod for certain (the socket is ours),
   * so its identity needs no certificate on the same node.
   */
  readonly #origins = new Map<string, LocalPod>();

  constructor(o: ProxyOptions) {
    this.#o = o;
    this.#log = o.telemetry.log.child({ component: 'proxy' });
    this.tracker = new ConnectionTracker(o.telemetry);
    this.#timeout = o.connectTimeoutMs ?? 5000;
  }

  /** Opens the pod's listeners inside its namespace. Idempotent per pod UID. */
  async addPod(pod: LocalPod): Promise<void> {
    if (this.#pods.has(pod.uid)) return;
    const outboundFd = await this.#o.listen(pod.netnsPath, { host: '127.0.0.1', port: OUTBOUND_PORT, backlog: 1024 });
    let inboundFd = -1;
    let outbound: Server | undefined;
    try {
      inboundFd = await this.#o.listen(pod.netnsPath, { host: '0.0.0.0', port: INBOUND_PORT, backlog: 1024 });
      outbound = await serve(outboundFd, (s) => this.#outbound(pod, s));
      this.#o.onInboundListener?.(pod, inboundFd);
      const inbound = await serve(inboundFd, (s) => this.#inbound(pod, s));
      this.#pods.set(pod.uid, { pod, outbound, inbound, outboundFd, inboundFd });
      this.#log.info({ pod: `${pod.namespace}/${pod.name}`, ip: pod.ip }, 'listeners open (15001 outbound, 15006 inbound)');
    } catch (err) {
      outbound?.close();
      if (!outbound) closeQuiet(outboundFd);
      if (inboundFd >= 0) closeQuiet(inboundFd);
      throw err;
    }
  }

  /** Closes the pod's listeners and resets its connections. */
  async removePod(uid: string): Promise<void> {
    const l = this.#pods.get(uid);
    if (!l) return;
    this.#pods.delete(uid);
    await Promise.all([new Promise((r) => l.outbound.close(r)), new Promise((r) => l.inbound.close(r))]);
    for (const c of this.tracker.active) {
      if (c.record.pod === `${l.pod.namespace}/${l.pod.name}`) {
        c.client.resetAndDestroy();
        c.upstream?.resetAndDestroy();
      }
    }
    this.#o.upstream.forget(l.pod.netnsPath);
  }

  pods(): LocalPod[] {
    return [...this.#pods.values()].map((l) => l.pod);
  }

  listeners(): { pod: string; outbound: string; inbound: string }[] {
    return [...this.#pods.values()].map((l) => ({
      pod: `${l.pod.namespace}/${l.pod.name}`,
      outbound: `127.0.0.1:${OUTBOUND_PORT} (netns ${l.pod.netnsPath}, fd ${l.outboundFd})`,
      inbound: `0.0.0.0:${INBOUND_PORT} (netns ${l.pod.netnsPath}, fd ${l.inboundFd}, sk_lookup for ${l.pod.ip})`,
    }));
  }

  async close(): Promise<void> {
    this.tracker.stop();
    await Promise.all([...this.#pods.keys()].map((uid) => this.removePod(uid)));
  }

  #outbound(pod: LocalPod, client: Socket): void {
    const orig = this.#o.originalDst.originalDst(fdOf(client));
    const src = { ...peerOf(pod), ip: pod.ip, port: client.remotePort ?? 0 };
    if (!orig) {
      this.#log.warn({ pod: `${pod.namespace}/${pod.name}`, peer: `${client.remoteAddress}:${client.remotePort}`, code: 'NM_ERR_ORIGINAL_DST' },
        'original destination unknown; resetting the connection');
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const dstPeer = this.#o.workloads.byIp(orig.ip) ?? {};
    const target = `${orig.ip}:${orig.port}`;
    void this.tracker.run(client, {
      reporter: 'source',
      direction: 'outbound',
      pod: `${pod.namespace}/${pod.name}`,
      source: src,
      destination: { ...dstPeer, ip: orig.ip, port: orig.port },
      originalDst: target,
      securityPolicy: 'none',
      upstreamLabel: target,
      open: async () => {
        const up = await this.#o.upstream.connect(pod.netnsPath, orig, this.#timeout);
        const key = `${up.localAddress}:${up.localPort}`;
        this.#origins.set(key, pod);
        up.once('close', () => this.#origins.delete(key));
        return up;
      },
    });
  }

  /**
   * The local pod a connection came from, if it is one of our own upstream sockets. The
   * outbound side learns its socket's address when its connect completes, which can be
   * handled in the same event-loop turn just after the inbound accept: look again after
   * the current I/O phase before concluding the source is foreign.
   */
  async #originOf(ip: string, port: number, isLocalPodIp: boolean): Promise<LocalPod | undefined> {
    const key = `${ip}:${port}`;
    for (let i = 0; i < 3; i++) {
      const p = this.#origins.get(key);
      if (p || !isLocalPodIp) return p;
      await new Promise((r) => setImmediate(r));
    }
    return this.#origins.get(key);
  }

  #inbound(pod: LocalPod, client: Socket): void {
    // sk_lookup steered the SYN here untouched, so our local address is what the peer dialed.
    const dstIp = client.localAddress ?? pod.ip;
    const dstPort = client.localPort ?? 0;
    const srcIp = client.remoteAddress ?? '';
    const srcPeer = this.#o.workloads.byIp(srcIp) ?? {};
    const target = `${dstIp}:${dstPort}`;
    if (MESH_PORTS.has(dstPort)) {
      // Relaying to our own port inside the pod would loop back into this listener.
      this.#log.warn({ pod: `${pod.namespace}/${pod.name}`, port: dstPort }, 'inbound connection to a mesh port; resetting');
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    const srcPort = client.remotePort ?? 0;
    const localSrc = [...this.#pods.values()].some((l) => l.pod.ip === srcIp);
    // Hold reads until the decision: a denied client must get nothing through. An error in
    // that window must not crash the agent; the relay installs its own handler after.
    client.pause();
    client.on('error', () => {});
    void this.#originOf(srcIp, srcPort, localSrc).then((origin) => {
      const source = origin ? { ...peerOf(origin), ip: srcIp, port: srcPort } : { ...srcPeer, principal: undefined, ip: srcIp, port: srcPort };
      const base = {
        reporter: 'destination' as const,
        direction: 'inbound' as const,
        pod: `${pod.namespace}/${pod.name}`,
        source,
        destination: { ...peerOf(pod), ip: dstIp, port: dstPort },
        originalDst: target,
        securityPolicy: 'none' as const,
        upstreamLabel: `127.0.0.1:${dstPort}`,
      };
      let policy: { allowed: boolean; name?: string } | undefined;
      if (this.#o.authorize) {
        const d = this.#o.authorize({ ...(origin ? { srcPrincipal: `spiffe://${source.principal}` } : {}), srcIp, dstIp, dstPort });
        policy = { allowed: d.allowed, ...(d.policy ? { name: d.policy } : {}) };
        if (!d.allowed) {
          this.#log.info({ pod: base.pod, src: `${srcIp}:${srcPort}`, principal: source.principal, dst: target, policy: d.policy, reason: d.reason }, 'connection denied');
          this.tracker.deny(client, base, { ...(d.policy ? { name: d.policy } : {}), reason: d.reason });
          return;
        }
      }
      // Stay paused: the relay's pipe() resumes once the upstream exists. Resuming here would
      // put the socket in flowing mode with no reader, and its first bytes would be lost.
      void this.tracker.run(client, {
        ...base,
        ...(policy ? { policy } : {}),
        open: () => this.#o.upstream.connect(pod.netnsPath, { ip: '127.0.0.1', port: dstPort }, this.#timeout),
      });
    });
  }
}

function closeQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

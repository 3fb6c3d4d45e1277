// The node's shared proxy: per enrolled pod, listeners created inside the pod's network
// namespace (15001 outbound, 15006 inbound plaintext, 15008 HBONE when enabled), the state
// the handlers share, and policy re-evaluation of open connections.
import { closeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { Boundary, resetQuietly } from './boundary.js';
import { ConnectionTracker, type Telemetry } from './connection.js';
import { podName, type ProxyContext } from './context.js';
import type { HboneSessionInfo, HboneTuning } from './hbone/index.js';
import { HboneOutbound, serveHbone } from './hbone-wiring.js';
import { HttpLayer, type HttpLayerOptions } from './http-layer.js';
import { handleInbound } from './inbound.js';
import { handleOutbound } from './outbound.js';
import type { RelayEnd, RelayOptions } from './relay.js';
import { HBONE_PORT, INBOUND_PORT, OUTBOUND_PORT, type Authorizer, type LocalPod, type MeshRouter, type OriginalDstResolver, type PlaintextTap, type SocketSplicer, type UpstreamConnector, type WorkloadCredentials, type WorkloadIndex } from './types.js';

/** Opens a listening socket inside a namespace and returns its fd. */
export type NetnsListen = (netnsPath: string, opts: { host: string; port: number; backlog?: number; reusePort?: boolean }) => Promise<number>;

/** HBONE settings: where pod certificates come from, the trust domain, pool and window tuning. */
export interface HboneOptions {
  credentials: WorkloadCredentials;
  trustDomain: string;
  /** Streams per pooled session before another is opened (default 100). */
  maxStreamsPerSession?: number;
  /** Idle pooled sessions are closed after this long (default 60 s). */
  idleTimeoutMs?: number;
  tuning?: Partial<HboneTuning>;
}

export interface ProxyOptions {
  listen: NetnsListen;
  upstream: UpstreamConnector;
  originalDst: OriginalDstResolver;
  workloads: WorkloadIndex;
  telemetry: Telemetry;
  /** Resolves Service VIPs and workloads; default: every destination is plain TCP. */
  router?: MeshRouter;
  /** Called with a listener's fd before Node takes it (to steer SYNs to it). */
  onInboundListener?: (pod: LocalPod, fd: number, kind: 'plaintext' | 'hbone') => void;
  connectTimeoutMs?: number;
  /** Decides every inbound connection; absent means allow all (local mode without policy). */
  authorize?: Authorizer;
  /** HBONE to and from other nodes; absent means no 15008 listener and no tunnels. */
  hbone?: HboneOptions;
  /** Hand same-node connections from outbound to inbound in process (default true). */
  fastPath?: boolean;
  /**
   * A relayed connection with no byte either way for this long is closed (default 1 h, as
   * Envoy's tcp_proxy idle_timeout); 0 disables. Not the HBONE pool's session idle timeout.
   */
  idleTimeoutMs?: number;
  /** TCP keepalive idle time on both sockets of every relay (default 180 s); 0 disables. */
  keepAliveMs?: number;
  /** Plaintext capture of relayed connections (docs/capture.md); absent, relays carry no tap. */
  tap?: PlaintextTap;
  /**
   * The same-node kernel splice (src/redirect/splice.ts): connections whose both ends are TCP
   * sockets of this proxy have their bytes moved by the kernel; absent, every byte is relayed here.
   */
  splice?: SocketSplicer;
  /** The L7 path for HTTP ports (needs `router` to know them); absent, every port is L4. */
  http?: HttpLayerOptions;
}

interface PodListeners {
  pod: LocalPod;
  servers: Server[];
  fds: Record<string, number>;
  hbone?: { close(): Promise<void>; stopAccepting(): void };
  /** False once stopAccepting closed the listeners (a drain); connections keep running. */
  listening: boolean;
  /** Client sockets accepted on this pod's 15001 and 15006, until they close. */
  sockets: Set<Socket>;
}

/** Serves a listening fd; `onError` takes the listener's later errors (accept failing: EMFILE). */
function serve(fd: number, onConn: (s: Socket) => void, onError: (err: Error) => void): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer({ allowHalfOpen: true, noDelay: true }, onConn);
    srv.once('error', reject);
    srv.listen({ fd }, () => {
      srv.off('error', reject);
      srv.on('error', onError);
      resolve(srv);
    });
  });
}

function closeQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

export class NodeProxy {
  readonly tracker: ConnectionTracker;
  readonly #boundary: Boundary;
  readonly #o: ProxyOptions;
  readonly #pods = new Map<string, PodListeners>();
  readonly #byIp = new Map<string, LocalPod>();
  readonly #log: Logger;
  readonly #ctx: ProxyContext;
  readonly #hbone: HboneOutbound | undefined;
  readonly #http: HttpLayer | undefined;
  /**
   * Upstream sockets this proxy opened for its own pods, by local `ip:port`. A connection
   * arriving inbound from one of them comes from that pod for certain (the socket is ours),
   * so its identity needs no certificate on the same node.
   */
  readonly #origins = new Map<string, LocalPod>();

  constructor(o: ProxyOptions) {
    this.#o = o;
    this.#log = o.telemetry.log.child({ component: 'proxy' });
    this.#boundary = new Boundary({ log: this.#log, metrics: o.telemetry.metrics });
    const relay: RelayOptions = {
      ...(o.idleTimeoutMs !== undefined ? { idleTimeoutMs: o.idleTimeoutMs } : {}),
      ...(o.keepAliveMs !== undefined ? { keepAliveMs: o.keepAliveMs } : {}),
    };
    this.tracker = new ConnectionTracker(o.telemetry, 5000, { relay, boundary: this.#boundary, ...(o.tap ? { tap: o.tap } : {}), ...(o.splice ? { splice: o.splice } : {}) });
    const timeoutMs = o.connectTimeoutMs ?? 5000;
    this.#hbone = o.hbone
      ? new HboneOutbound({ ...o.hbone, upstream: o.upstream, localPod: (ip) => this.#byIp.get(ip), hbonePort: HBONE_PORT, connectTimeoutMs: timeoutMs, log: o.telemetry.log })
      : undefined;
    this.#http = o.http ? new HttpLayer({ ...o.http, engine: { log: this.#log, connectTimeoutMs: timeoutMs, ...o.http.engine } }) : undefined;
    this.#ctx = {
      log: this.#log,
      tracker: this.tracker,
      boundary: this.#boundary,
      relay,
      upstream: o.upstream,
      originalDst: o.originalDst,
      workloads: o.workloads,
      ...(o.router ? { router: o.router } : {}),
      ...(o.authorize ? { authorize: o.authorize } : {}),
      ...(this.#hbone ? { hbone: this.#hbone } : {}),
      ...(this.#http ? { http: this.#http } : {}),
      fastPath: o.fastPath ?? true,
      timeoutMs,
      localPod: (ip) => this.#byIp.get(ip),
      registerOrigin: (sock, pod) => this.#registerOrigin(sock, pod),
      originOf: (ip, port, local) => this.#originOf(ip, port, local),
    };
  }

  #registerOrigin(sock: RelayEnd & { localAddress?: string; localPort?: number }, pod: LocalPod): void {
    const key = `${sock.localAddress}:${sock.localPort}`;
    this.#origins.set(key, pod);
    sock.once('close', () => this.#origins.delete(key));
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

  /** Opens the pod's listeners inside its namespace. Idempotent per pod UID. */
  async addPod(pod: LocalPod): Promise<void> {
    if (this.#pods.has(pod.uid)) return;
    const l: PodListeners = { pod, servers: [], fds: {}, sockets: new Set(), listening: true };
    const name = podName(pod);
    // Each accepted connection runs inside the boundary: its failures reset it and nothing else.
    const accept = (direction: 'outbound' | 'inbound', handle: (s: Socket) => Promise<void>) =>
      this.#boundary.accept(direction, { pod: name }, (s) => {
        l.sockets.add(s);
        s.once('close', () => l.sockets.delete(s));
        return handle(s);
      });
    const listenerError = (direction: 'outbound' | 'inbound') => (err: Error) => this.#boundary.record(direction, err, { pod: name }, { reason: 'accept', flags: '-', ...((err as { code?: string }).code ? { code: (err as { code?: string }).code! } : {}) });
    // fds handed to a server (or to the HBONE server) are closed with it; the rest by us.
    const owned = new Set<number>();
    // Every listener joins its address's SO_REUSEPORT group, so a new agent binds beside this
    // one during an upgrade and the two share the pod's connections until this one closes
    // (docs/architecture.md "Failure behaviour").
    const open = async (kind: string, host: string, port: number) => (l.fds[kind] = await this.#o.listen(pod.netnsPath, { host, port, backlog: 1024, reusePort: true }));
    try {
      const out = await open('outbound', '127.0.0.1', OUTBOUND_PORT);
      l.servers.push(await serve(out, accept('outbound', (s) => handleOutbound(this.#ctx, pod, s)), listenerError('outbound')));
      owned.add(out);
      const inb = await open('inbound', '0.0.0.0', INBOUND_PORT);
      this.#o.onInboundListener?.(pod, inb, 'plaintext');
      l.servers.push(await serve(inb, accept('inbound', (s) => handleInbound(this.#ctx, pod, s)), listenerError('inbound')));
      owned.add(inb);
      if (this.#o.hbone) {
        const hb = await open('hbone', '0.0.0.0', HBONE_PORT);
        this.#o.onInboundListener?.(pod, hb, 'hbone');
        l.hbone = serveHbone(this.#ctx, pod, hb, this.#o.hbone);
        owned.add(hb);
      }
    } catch (err) {
      for (const s of l.servers) s.close();
      await l.hbone?.close();
      for (const fd of Object.values(l.fds)) if (!owned.has(fd)) closeQuiet(fd);
      throw err;
    }
    this.#pods.set(pod.uid, l);
    this.#byIp.set(pod.ip, pod);
    this.#log.info({ pod: name, ip: pod.ip, hbone: !!this.#o.hbone }, 'listeners open');
  }

  /**
   * Closes the pod's listeners and resets its open connections (those it accepted and those
   * delivered to it). Never waits for a connection to end: a pod going away is not held up by
   * a client that keeps its connection open, and its netns can go at once.
   */
  async removePod(uid: string, why?: string): Promise<void> {
    const l = this.#pods.get(uid);
    if (!l) return;
    this.#pods.delete(uid);
    if (this.#byIp.get(l.pod.ip)?.uid === uid) this.#byIp.delete(l.pod.ip);
    // Stop accepting first (server.close() closes the listening fd now; its callback would
    // wait for the connections, which is exactly what must not be waited on).
    for (const s of l.servers) s.close();
    const hbone = l.hbone?.close();
    const name = podName(l.pod);
    for (const c of [...this.tracker.active]) {
      if (c.records.some((r) => r.pod === name)) this.tracker.abort(c, why ?? `closed: pod ${name} left the mesh`);
    }
    // Accepted but not (or no longer) tracked: still deciding, or connecting upstream.
    for (const s of l.sockets) resetQuietly(s);
    l.sockets.clear();
    await hbone;
    this.#o.upstream.forget(l.pod.netnsPath);
  }

  /**
   * Authorizes every open connection again under the current policy and resets those it now
   * denies. Istio's ztunnel keeps them open; an operator who revokes access expects it gone.
   */
  reevaluate(): number {
    const authorize = this.#o.authorize;
    if (!authorize) return 0;
    let closed = 0;
    for (const c of [...this.tracker.active]) {
      if (!c.authz) continue;
      const d = authorize(c.authz.input);
      if (d.allowed) continue;
      this.#log.info({ pod: podName(c.authz.destination), src: c.authz.input.srcIp, principal: c.authz.input.srcPrincipal, policy: d.policy }, 'closing an open connection the new policy denies');
      this.tracker.revoke(c, d.policy, d.reason);
      closed++;
    }
    return closed;
  }

  /**
   * Stops accepting on every pod's listeners (the start of a drain): the listening sockets
   * close, which takes each one out of its SO_REUSEPORT group and its nm_listeners entry (the
   * kernel removes only that socket's own entry), so new connections go to the other agent.
   * Connections already accepted keep running; HBONE sessions get a GOAWAY and finish their
   * streams.
   */
  stopAccepting(): void {
    for (const l of this.#pods.values()) {
      if (!l.listening) continue;
      l.listening = false;
      for (const s of l.servers) s.close();
      l.hbone?.stopAccepting();
    }
  }

  /** Connections still open: tracked ones, and those accepted and still being set up. */
  openConnections(): number {
    const tracked = new Set<unknown>([...this.tracker.active].map((c) => c.client));
    let n = this.tracker.active.size;
    for (const l of this.#pods.values()) for (const s of l.sockets) if (!tracked.has(s)) n++;
    return n;
  }

  /** The inbound listening fds still open, per pod: what nm_listeners should hold for it. */
  inboundListeners(): { pod: LocalPod; kind: 'plaintext' | 'hbone'; fd: number }[] {
    const out: { pod: LocalPod; kind: 'plaintext' | 'hbone'; fd: number }[] = [];
    for (const l of this.#pods.values()) {
      if (!l.listening) continue;
      if (l.fds.inbound !== undefined) out.push({ pod: l.pod, kind: 'plaintext', fd: l.fds.inbound });
      if (l.hbone && l.fds.hbone !== undefined) out.push({ pod: l.pod, kind: 'hbone', fd: l.fds.hbone });
    }
    return out;
  }

  pods(): LocalPod[] {
    return [...this.#pods.values()].map((l) => l.pod);
  }

  listeners(): { pod: string; netns: string; fds: Record<string, number>; ports: string[] }[] {
    return [...this.#pods.values()].map((l) => ({
      pod: podName(l.pod),
      netns: l.pod.netnsPath,
      fds: l.fds,
      ports: [`127.0.0.1:${OUTBOUND_PORT} outbound`, `0.0.0.0:${INBOUND_PORT} inbound (sk_lookup for ${l.pod.ip})`, ...(l.hbone ? [`0.0.0.0:${HBONE_PORT} HBONE`] : [])],
    }));
  }

  /** The pooled outbound HBONE sessions, for /config_dump. */
  hboneSessions(): HboneSessionInfo[] {
    return this.#hbone?.pool.stats().sessions ?? [];
  }

  /**
   * A drain: stopAccepting(), then the open connections run until they end, `ms` has passed
   * or `signal` aborts, and close() resets what is left. `onOpen` hears how many were open
   * when it began; the answer is how many were still open at the end.
   */
  async drain(ms: number, signal: AbortSignal, onOpen?: (open: number) => void): Promise<number> {
    this.stopAccepting();
    const deadline = Date.now() + ms;
    if (this.openConnections() > 0) onOpen?.(this.openConnections());
    while (this.openConnections() > 0 && !signal.aborted && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, Math.min(100, Math.max(0, deadline - Date.now())));
        signal.addEventListener('abort', done, { once: true });
      });
    }
    const left = this.openConnections();
    await this.close(signal.aborted ? 'closed: the agent stopped before its drain period was over' : 'closed: the agent\'s drain period was over');
    return left;
  }

  /** Closes every listener and resets every connection; `why` goes into their flow records. */
  async close(why?: string): Promise<void> {
    this.tracker.stop();
    await Promise.all([...this.#pods.keys()].map((uid) => this.removePod(uid, why)));
    this.#http?.close();
    await this.#hbone?.close();
  }
}

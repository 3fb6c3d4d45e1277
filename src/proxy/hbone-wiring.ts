// Binds the HBONE protocol (hbone/) to this node's pods. Inbound: per enrolled pod, the 15008
// server inside the pod's netns, started once the pod's certificate is at hand, authorizing each
// CONNECT with the pod's policy and reporting through the connection tracker. Outbound: the
// dialer outbound.ts uses, presenting the source pod's certificate over sessions made from
// inside the source pod's netns. The protocol itself (mTLS, CONNECT checks, relay) is in hbone/.
import { closeSync } from 'node:fs';
import { principalOf } from '../identity/index.js';
import type { Logger } from '../log.js';
import { flagFor, type ConnectionView } from './connection.js';
import { podName, type HboneDialer, type ProxyContext } from './context.js';
import { formatAuthority, HbonePool, HboneServer, type HboneCredentials, type HboneTuning, type InboundDecision, type InboundRejection, type InboundRequest } from './hbone/index.js';
import type { RelayEnd } from './relay.js';
import { peerOf, podIdentity, type LocalPod, type RouteTarget, type SocketAddress, type UpstreamConnector, type WorkloadCredentials } from './types.js';

export interface HboneInboundOptions {
  credentials: WorkloadCredentials;
  /** Clients must hold a SPIFFE ID of this trust domain. */
  trustDomain: string;
  tuning?: Partial<HboneTuning>;
}

/** Envoy-style response flags for a refused CONNECT: a bad request is NR, the rest as upstream failures. */
function flagsFor(r: InboundRejection): string {
  if (r.status === 400) return 'NR';
  return flagFor({ status: r.status, ...(r.error as { code?: string } | undefined) });
}

/**
 * Serves HBONE on a listening fd made in the pod's netns. Returns at once: the TLS server starts
 * when the pod's certificate is at hand. Until then SYNs steered to the fd wait in its backlog,
 * so a pod enrolled while the CA is slow is not refused, only delayed.
 */
export function serveHbone(ctx: ProxyContext, pod: LocalPod, fd: number, o: HboneInboundOptions): { close(): Promise<void>; stopAccepting(): void } {
  const identity = podIdentity(pod);
  const log = ctx.log.child({ pod: podName(pod), listener: 'hbone' });
  let current: HboneCredentials | undefined;
  let server: HboneServer | undefined;
  let closed = false;
  const refresh = (): void => {
    o.credentials.get(identity).then(
      (c) => (current = c),
      (err: unknown) => log.warn({ err, identity }, 'cannot get the pod certificate; HBONE keeps serving the previous one'),
    );
  };

  const view = (r: InboundRequest): ConnectionView => {
    const known = ctx.workloads.byIp(r.clientAddr.ip) ?? {};
    return {
      reporter: 'destination',
      direction: 'inbound',
      pod: podName(pod),
      // The principal is the verified certificate's, whatever workload owns the source IP.
      source: { ...known, principal: principalOf(r.peerIdentity), ip: r.clientAddr.ip, port: r.clientAddr.port },
      destination: { ...peerOf(pod), ip: r.target.ip, port: r.target.port },
      originalDst: formatAuthority(r.target),
      securityPolicy: 'mutual_tls',
      upstreamLabel: `${pod.ip}:${r.target.port}`,
      hbone: { peer: `${r.clientAddr.ip}:${r.clientAddr.port}`, traceparent: r.traceparent, ...(r.forwardedFor ? { forwardedFor: r.forwardedFor } : {}) },
    };
  };
  const input = (r: InboundRequest) => ({ srcPrincipal: r.peerIdentity, srcIp: r.clientAddr.ip, dstIp: r.target.ip, dstPort: r.target.port });
  // The decision taken for a request, for its telemetry once the tunnel is up.
  const decided = new WeakMap<InboundRequest, { allowed: boolean; name?: string }>();
  // Whether a CONNECT's port is HTTP, asked by authorize and again by serveTunnel: looked up once.
  const httpPort = new WeakMap<InboundRequest, boolean>();
  const isHttp = (r: InboundRequest): boolean => {
    let v = httpPort.get(r);
    if (v === undefined) httpPort.set(r, (v = ctx.http?.inboundIsHttp(ctx, pod, r.target.port) ?? false));
    return v;
  };

  const start = (cert: HboneCredentials): void => {
    current = cert;
    const s = new HboneServer({
      credentials: () => {
        refresh();
        return current ?? cert;
      },
      trustDomain: o.trustDomain,
      localAddresses: [pod.ip],
      ...(o.tuning ? { tuning: o.tuning } : {}),
      log: ctx.log,
      boundary: ctx.boundary,
      relay: ctx.relay,
      authorize: (r): InboundDecision => {
        if (!ctx.authorize) return { allow: true };
        // HTTP ports are decided per request, with the request's attributes (http-layer.ts).
        if (isHttp(r)) return { allow: true };
        const d = ctx.authorize(input(r));
        decided.set(r, { allowed: d.allowed, ...(d.policy ? { name: d.policy } : {}) });
        return d.allowed ? { allow: true } : { allow: false, reason: d.reason, ...(d.policy ? { policy: d.policy } : {}) };
      },
      // To the pod's IP from the tunnel's TCP peer: the source pod's IP, as HBONE leaves from its netns.
      connectUpstream: (r) => ctx.upstream.deliver(pod.netnsPath, { ip: pod.ip, port: r.target.port }, r.clientAddr.ip, ctx.timeoutMs),
      serveTunnel: (r) => {
        const http = ctx.http;
        if (!http || !isHttp(r)) return undefined;
        return (tunnel) => http.inbound(ctx, pod, tunnel, view(r), input(r));
      },
      // The server awaits this inside the tunnel's failure boundary: telemetry that fails resets the tunnel.
      onStream: (r, stream, upstream, relay) => {
        const policy = decided.get(r);
        return ctx.tracker.observe(stream, upstream, relay, { ...view(r), ...(policy ? { policy } : {}), authz: { destination: pod, input: input(r) } });
      },
      onReject: (r) => {
        if (!r.request) return; // refused before a request existed (bad method or authority): logged by the server
        const policy = r.status === 401 ? { allowed: false, ...(r.policy ? { name: r.policy } : {}) } : undefined;
        ctx.tracker.refused([view(r.request)], { flags: flagsFor(r), error: `HBONE ${r.status}: ${r.reason}`, ...(policy ? { policy } : {}) });
      },
    });
    s.attach(fd).then(
      () => log.info({ identity }, 'HBONE listener serving'),
      (err: unknown) => log.error({ err }, 'HBONE listener failed to start'),
    );
    server = s;
  };

  // Retried with backoff: the CA may be slow or briefly away when a pod is enrolled.
  void (async () => {
    for (let delay = 500; !closed; delay = Math.min(delay * 2, 30_000)) {
      try {
        const cert = await o.credentials.get(identity);
        if (!closed) start(cert);
        return;
      } catch (err) {
        log.warn({ err, identity, retryMs: delay }, 'no certificate for the pod yet; its HBONE listener waits for one');
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  })();
  // The listening fd is closed by the server once it took it, else by us, exactly once (a
  // second close could hit an fd number the process reused meanwhile).
  let fdClosed = false;
  const stopWaiting = (): void => {
    closed = true;
    if (server || fdClosed) return;
    fdClosed = true;
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  };
  return {
    // A drain: no new connections; open sessions get a GOAWAY and finish their tunnels.
    stopAccepting: () => {
      if (server) server.drain();
      else stopWaiting();
    },
    close: async () => {
      stopWaiting();
      if (server) await server.close();
    },
  };
}

export interface HboneOutboundOptions {
  credentials: WorkloadCredentials;
  upstream: UpstreamConnector;
  /** The pod with this IP on this node: HBONE sockets leave from its netns. */
  localPod: (ip: string) => LocalPod | undefined;
  hbonePort: number;
  connectTimeoutMs: number;
  maxStreamsPerSession?: number;
  idleTimeoutMs?: number;
  tuning?: Partial<HboneTuning>;
  log: Logger;
}

/**
 * Outbound HBONE for outbound.ts: a tunnel from a pod of this node to a mesh pod on another
 * node, with the source pod's certificate, over sessions pooled per (source identity,
 * destination identity, destination address) and made from inside the source pod's netns.
 */
export class HboneOutbound implements HboneDialer {
  readonly pool: HbonePool;
  readonly #o: HboneOutboundOptions;

  constructor(o: HboneOutboundOptions) {
    this.#o = o;
    this.pool = new HbonePool({
      connectTimeoutMs: o.connectTimeoutMs,
      maxStreamsPerSession: o.maxStreamsPerSession,
      idleTimeoutMs: o.idleTimeoutMs,
      tuning: o.tuning,
      log: o.log,
      // From the source pod's own netns: the destination sees the pod's IP, as with plain TCP.
      connectSocket: (addr: SocketAddress, source: { identity: string; ip?: string }) => {
        const pod = source.ip ? o.localPod(source.ip) : undefined;
        if (!pod) return Promise.reject(Object.assign(new Error(`no enrolled pod with IP ${source.ip ?? '(none)'} on this node to open HBONE from`), { code: 'ENOENT' }));
        return o.upstream.connect(pod.netnsPath, addr, o.connectTimeoutMs);
      },
    });
  }

  async dial(src: LocalPod, target: RouteTarget & { identity: string }, forwardedFor: string, traceparent: string): Promise<RelayEnd> {
    const identity = podIdentity(src);
    const cert = await this.#o.credentials.get(identity);
    return this.pool.connect({
      source: { identity, ip: src.ip, ...cert },
      destIdentity: target.identity,
      destAddr: { ip: target.addr.ip, port: this.#o.hbonePort },
      target: target.addr,
      forwardedFor,
      traceparent,
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

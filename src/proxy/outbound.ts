// Outbound: a connection the pod's app made, captured on 15001. The original destination is
// resolved through the mesh (workload, or a Service VIP load-balanced over its endpoints),
// then sent by the cheapest path that keeps identity and policy: handed to inbound in the
// process when the destination pod is on this node, over HBONE to another node's mesh pod,
// or as plain TCP from the pod's own IP to anything outside the mesh.
import type { Socket } from 'node:net';
import { AgentError } from '../errors.js';
import type { ConnectionView } from './connection.js';
import { podName, type ProxyContext } from './context.js';
import { newTraceparent } from './hbone/index.js';
import { deliver } from './inbound.js';
import { serveOutbound } from './http-outbound.js';
import { fdOf } from './splice.js';
import { HBONE_PORT, isHttpProtocol, peerOf, type LocalPod, type RouteTarget } from './types.js';

/**
 * Handles one connection accepted on the pod's 15001. Runs inside the accept boundary
 * (boundary.ts): whatever it throws, or the promise it returns rejects with, resets this
 * connection only. A lookup that finds the peer already gone (ENOTCONN) is dropped quietly.
 */
export function handleOutbound(ctx: ProxyContext, pod: LocalPod, client: Socket): Promise<void> {
  const orig = ctx.originalDst.originalDst(fdOf(client));
  if (!orig) throw new AgentError('NM_ERR_ORIGINAL_DST', `no original destination recorded for ${client.remoteAddress}:${client.remotePort} on the outbound listener of ${podName(pod)}; was the connection captured by this agent's programs?`);
  const route: RouteTarget = ctx.router?.route(orig) ?? { addr: orig, ...(ctx.workloads.byIp(orig.ip) ? { peer: ctx.workloads.byIp(orig.ip)! } : {}), hbone: false };
  const target = `${route.addr.ip}:${route.addr.port}`;
  const source = { ...peerOf(pod), ip: pod.ip, port: client.remotePort ?? 0 };
  const base: ConnectionView = {
    reporter: 'source',
    direction: 'outbound',
    pod: podName(pod),
    source,
    destination: { ...(route.peer ?? {}), ip: route.addr.ip, port: route.addr.port },
    originalDst: `${orig.ip}:${orig.port}`,
    securityPolicy: 'none',
    upstreamLabel: target,
    ...(route.service ? { service: route.service } : {}),
  };
  // HTTP ports: routed per request by the L7 path (http-outbound.ts).
  if (ctx.http && isHttpProtocol(route.appProtocol)) return serveOutbound(ctx.http, ctx, pod, client, base, route, orig);
  const local = ctx.fastPath ? ctx.localPod(route.addr.ip) : undefined;
  if (local) {
    // Same node: hand the connection to the destination's inbound side in this process. No
    // TLS and no second socket pair; identity comes from the listener it arrived on, and
    // authorization and telemetry are those of the cross-node path.
    const dest = { ...peerOf(local), ip: local.ip, port: route.addr.port };
    const out: ConnectionView = { ...base, destination: dest, securityPolicy: 'mutual_tls', upstreamLabel: `${target} (same node, in process)` };
    const inn: ConnectionView = {
      ...out,
      reporter: 'destination',
      direction: 'inbound',
      pod: podName(local),
      originalDst: target,
      upstreamLabel: `${local.ip}:${route.addr.port}`,
    };
    return deliver(ctx, local, client, [out, inn], { srcPrincipal: `spiffe://${source.principal}`, srcIp: pod.ip, dstIp: local.ip, dstPort: route.addr.port }, route.release);
  }
  if (route.hbone && route.identity && ctx.hbone) {
    const dialer = ctx.hbone;
    const withId = { ...route, identity: route.identity };
    const traceparent = newTraceparent();
    return ctx.tracker.run(client, {
      ...base,
      securityPolicy: 'mutual_tls',
      upstreamLabel: `${target} via HBONE ${route.addr.ip}:${HBONE_PORT}`,
      hbone: { peer: `${route.addr.ip}:${HBONE_PORT}`, traceparent },
      open: () => dialer.dial(pod, withId, pod.ip, traceparent),
      ...(route.release ? { onEnd: route.release } : {}),
    });
  }
  return ctx.tracker.run(client, {
    ...base,
    open: async () => {
      const up = await ctx.upstream.connect(pod.netnsPath, route.addr, ctx.timeoutMs);
      ctx.registerOrigin(up, pod);
      return up;
    },
    ...(route.release ? { onEnd: route.release } : {}),
  });
}

// Inbound: connections steered to a pod's 15006 listener by sk_lookup, and the in-process
// hand-off from outbound on the same node. Both authorize against the destination pod's
// policy and then connect to the app at the pod's own IP (never its loopback, so services
// bound to 127.0.0.1 stay private), from the client's address (docs/redirect.md).
import type { Socket } from 'node:net';
import { stage } from './boundary.js';
import type { ConnectionView } from './connection.js';
import { podName, type ProxyContext } from './context.js';
import type { RelayEnd } from './relay.js';
import { MESH_PORTS, peerOf, type AuthorizeInput, type LocalPod } from './types.js';

/**
 * Connects to the app inside the destination pod at the pod's IP, with `srcIp` (the client's
 * address) as the source, so the app sees who is calling and 127.0.0.1 stays the pod's own.
 */
export function openLocalApp(ctx: ProxyContext, pod: LocalPod, port: number, srcIp: string): () => Promise<RelayEnd> {
  return () => ctx.upstream.deliver(pod.netnsPath, { ip: pod.ip, port }, srcIp, ctx.timeoutMs);
}

/**
 * Authorizes and relays one connection to an app in `pod`. `views` are the telemetry views
 * (one per reporter); the last is the destination's and carries the decision. An authorizer
 * that throws denies (booked as `authorize` by the accept boundary, which resets the client).
 */
export function deliver(ctx: ProxyContext, pod: LocalPod, client: RelayEnd, views: ConnectionView[], input: AuthorizeInput, onEnd?: () => void): Promise<void> {
  const dst = views[views.length - 1]!;
  if (MESH_PORTS.has(input.dstPort)) {
    // Relaying to our own port inside the pod would loop back into the mesh listeners.
    ctx.log.warn({ pod: podName(pod), port: input.dstPort }, 'connection to a mesh port; resetting');
    client.on('error', () => {});
    client.resetAndDestroy();
    onEnd?.();
    return Promise.resolve();
  }
  // HTTP ports are authorized per request, with the request's attributes (http-layer.ts).
  if (ctx.http?.inboundIsHttp(ctx, pod, input.dstPort)) return ctx.http.inbound(ctx, pod, client, dst, input, onEnd);
  if (ctx.authorize) {
    const authorize = ctx.authorize;
    let d;
    try {
      d = stage('authorize', 'DENY', () => authorize(input));
    } catch (err) {
      onEnd?.();
      throw err;
    }
    const policy = { allowed: d.allowed, ...(d.policy ? { name: d.policy } : {}) };
    dst.policy = policy;
    if (!d.allowed) {
      ctx.log.info({ pod: podName(pod), src: `${input.srcIp}`, principal: input.srcPrincipal, dst: dst.originalDst, policy: d.policy, reason: d.reason }, 'connection denied');
      ctx.tracker.deny(client, views, { ...(d.policy ? { name: d.policy } : {}), reason: d.reason });
      onEnd?.();
      return Promise.resolve();
    }
  }
  const [first, mirror] = views.length === 2 ? [views[0]!, views[1]!] : [views[0]!, undefined];
  return ctx.tracker.run(client, {
    ...first,
    ...(mirror ? { mirror } : {}),
    authz: { destination: pod, input },
    open: openLocalApp(ctx, pod, input.dstPort, input.srcIp),
    ...(onEnd ? { onEnd } : {}),
  });
}

/**
 * A connection sk_lookup steered to the pod's plaintext inbound listener (15006). Runs inside
 * the accept boundary, which has already dropped a peer that reset before the accept.
 */
export function handleInbound(ctx: ProxyContext, pod: LocalPod, client: Socket): Promise<void> {
  // sk_lookup steered the SYN here untouched, so our local address is what the peer dialed.
  const dstIp = client.localAddress ?? pod.ip;
  const dstPort = client.localPort ?? 0;
  const srcIp = client.remoteAddress ?? '';
  const srcPort = client.remotePort ?? 0;
  // Hold reads until the decision (pipe() resumes later): a denied client gets nothing
  // through. An error in that window must not crash the agent.
  client.pause();
  client.on('error', () => {});
  return ctx.originOf(srcIp, srcPort, ctx.localPod(srcIp) !== undefined).then((origin) => {
    const known = ctx.workloads.byIp(srcIp) ?? {};
    // Only our own upstream socket proves who is calling; otherwise the source is plaintext
    // and has no principal, whatever workload owns its IP.
    const source = origin ? { ...peerOf(origin), ip: srcIp, port: srcPort } : { ...known, principal: undefined, ip: srcIp, port: srcPort };
    const view: ConnectionView = {
      reporter: 'destination',
      direction: 'inbound',
      pod: podName(pod),
      source,
      destination: { ...peerOf(pod), ip: dstIp, port: dstPort },
      originalDst: `${dstIp}:${dstPort}`,
      securityPolicy: 'none',
      upstreamLabel: `${pod.ip}:${dstPort}`,
    };
    return deliver(ctx, pod, client, [view], { ...(origin ? { srcPrincipal: `spiffe://${source.principal}` } : {}), srcIp, srcPort, dstIp, dstPort });
  });
}

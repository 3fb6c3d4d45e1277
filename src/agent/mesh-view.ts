// The mesh as the proxy reads it from xDS state: where a destination goes (Services, endpoints,
// the balancer), what a port speaks, who an address is, the L7 path's view, and authorization
// that fails closed. Pure reads of a ProxyState, so a proxy worker (proxy-worker.ts) builds the
// same view over its mirror of the main thread's state.
import type { Logger } from '../log.js';
import { Balancer, type LbPolicy, type RouteTarget, type SocketAddress, type WorkloadIndex, type MeshRouter } from '../proxy/index.js';
import { evaluate, JwtVerifier, jwtRulesOf, requestAuthnFor } from '../rbac/index.js';
import { EndpointPicker, type HttpLayerOptions, type RequestAuthenticator } from '../proxy/index.js';
import { ProxyState, type AppProtocol, type Service, type Workload } from '../state/index.js';
import type { PeerInfo } from '../telemetry/index.js';
import type { AuthorizeInput, AuthorizeResult } from '../proxy/index.js';
import { NodeOrigin } from './node-origin.js';

export function peerOfWorkload(w: Workload): PeerInfo {
  return {
    workload: w.workloadName || w.name,
    namespace: w.namespace,
    // Only captured workloads carry their identity on the wire.
    ...(w.tunnelProtocol === 'HBONE' ? { principal: w.identity.replace(/^spiffe:\/\//, '') } : {}),
    ...(w.canonicalName ? { app: w.canonicalName, canonicalService: w.canonicalName } : {}),
    ...(w.canonicalRevision ? { canonicalRevision: w.canonicalRevision } : {}),
    cluster: w.clusterId,
  };
}

/**
 * What a workload's port speaks, from the Services it backs: a pod IP addressed directly gets
 * the protocol of the service port that targets it. Services that disagree make it L4 (TCP
 * wins over HTTP: parsing bytes that are not HTTP would break the app); one that names no
 * protocol has no say.
 */
export function workloadPortProtocol(w: Workload, port: number): AppProtocol {
  let found: AppProtocol = 'UNKNOWN';
  for (const ports of Object.values(w.services)) {
    for (const p of ports) {
      if ((p.targetPort || p.servicePort) !== port || p.appProtocol === 'UNKNOWN') continue;
      if (found === 'UNKNOWN') found = p.appProtocol;
      else if (found !== p.appProtocol) return 'TCP';
    }
  }
  return found;
}

/**
 * The Service a Host header names: a VIP (port dropped), or `name`, `name.ns`, `name.ns.svc` and
 * the full hostname, as cluster DNS resolves them from a pod in `ns`.
 */
export function serviceForHost(state: ProxyState, authority: string, ns: string): Service | undefined {
  const host = authority.startsWith('[') ? authority.slice(1, authority.indexOf(']')) : authority.replace(/:\d+$/, '');
  const byVip = state.serviceByVip(host);
  if (byVip) return byVip;
  const parts = host.toLowerCase().split('.');
  const name = parts[0]!;
  const svcNs = parts[1] ?? ns;
  for (const s of state.services()) if (s.name === name && s.namespace === svcNs && (parts.length <= 3 || s.hostname === host.toLowerCase())) return s;
  return undefined;
}

export class MeshView implements WorkloadIndex, MeshRouter {
  readonly state = new ProxyState();
  readonly balancer: Balancer;
  protected readonly log: Logger;
  readonly #origin = new NodeOrigin();
  #serving = false;

  /** `cursors` (newCursors): round-robin shared with the node's other proxies (the workers). */
  constructor(lb: LbPolicy, log: Logger, cursors?: Uint32Array) {
    this.log = log;
    this.balancer = new Balancer(lb, cursors);
    // A service that left the state takes its round-robin cursor along.
    this.state.on('change', (c) => c.services.removed.forEach((k) => this.balancer.forget(k)));
  }

  /** Whether there is state to decide on (synced, or restored); a mirror is told by its source. */
  get serving(): boolean {
    return this.#serving;
  }

  set serving(v: boolean) {
    this.#serving = v;
  }

  /**
   * A Service VIP goes to one of its healthy endpoints (the balancer's pick, at the port the
   * endpoint serves the service port on); a workload IP to that workload; anything else is
   * outside the mesh.
   */
  route(dst: SocketAddress): RouteTarget | undefined {
    const svc = this.state.serviceByVip(dst.ip);
    if (svc) {
      const sp = svc.ports.find((p) => p.servicePort === dst.port);
      if (!sp) return undefined;
      const eps = this.state.endpointsOf(svc.key).filter((w) => w.status === 'HEALTHY' && w.addresses.length > 0);
      const ports = eps.map((w) => w.services[svc.key]?.find((p) => p.servicePort === dst.port)?.targetPort || sp.targetPort || dst.port);
      const pick = this.balancer.pick(svc.key, eps.map((w, i) => `${w.uid}:${ports[i]}`));
      const service = { hostname: svc.hostname, name: svc.name, namespace: svc.namespace };
      if (!pick) return { addr: dst, hbone: false, service, appProtocol: sp.appProtocol };
      const w = eps[pick.index]!;
      return {
        addr: { ip: w.addresses[0]!, port: ports[pick.index]! },
        peer: peerOfWorkload(w),
        identity: w.identity,
        hbone: w.tunnelProtocol === 'HBONE',
        service,
        release: pick.release,
        appProtocol: sp.appProtocol,
      };
    }
    const w = this.state.workloadByIp(dst.ip);
    if (!w) return undefined;
    return { addr: dst, peer: peerOfWorkload(w), identity: w.identity, hbone: w.tunnelProtocol === 'HBONE', appProtocol: workloadPortProtocol(w, dst.port) };
  }

  portProtocol(ip: string, port: number): AppProtocol {
    const w = this.state.workloadByIp(ip);
    return w ? workloadPortProtocol(w, port) : 'UNKNOWN';
  }

  byIp(ip: string): PeerInfo | undefined {
    const w = this.state.workloadByIp(ip);
    return w ? peerOfWorkload(w) : undefined;
  }

  /** What the L7 path reads of the state (proxy/http-outbound.ts), and its per-request endpoint picker. */
  httpOptions(): HttpLayerOptions {
    const state = this.state;
    const mesh = {
      service: (k: string) => state.serviceByHostname(k),
      routesOf: (k: string) => state.routesOf(k),
      endpointsOf: (k: string) => state.endpointsOf(k),
      workloadByIp: (ip: string) => state.workloadByIp(ip),
      serviceForHost: (host: string, ns: string) => serviceForHost(state, host, ns),
    };
    const endpoints = new EndpointPicker(mesh);
    state.on('change', (c) => {
      endpoints.invalidate();
      c.services.removed.forEach((k) => endpoints.forget(k));
    });
    const jwt = new JwtVerifier();
    const authn: RequestAuthenticator = {
      verify: (pod, req) => {
        const w = state.workloadByIp(pod.ip);
        const authns = requestAuthnFor(state.requestAuthentications(), { namespace: pod.namespace, labels: w?.labels ?? pod.labels });
        const rules = jwtRulesOf(authns);
        if (rules.length === 0) return undefined;
        return jwt.verify(rules, { header: (n) => req.header(n), path: req.path }).then((o) => ('error' in o ? { ...o, policy: authns.map((a) => `${a.namespace}/${a.name}`).join(',') } : o));
      },
    };
    return { mesh, endpoints, authn };
  }

  /**
   * Istio's evaluation for a connection to a workload on this node, allowed only on positive
   * knowledge (docs/security.md, "Fail closed"): a plaintext connection the node itself
   * opened (kubelet probes) passes; otherwise the destination must be a known workload, every
   * policy it names must have arrived, nothing that bears on it may stand rejected, and the
   * policies must allow it.
   */
  authorize(i: AuthorizeInput): AuthorizeResult {
    if (!i.srcPrincipal && i.srcPort !== undefined && this.#origin.opened({ srcIp: i.srcIp, srcPort: i.srcPort, dstIp: i.dstIp, dstPort: i.dstPort })) {
      return { allowed: true, reason: 'node-probe' };
    }
    const dst = this.state.workloadByIp(i.dstIp);
    if (!dst) return { allowed: false, reason: this.serving ? 'destination-unknown' : 'no-xds-state' };
    const view = this.state.policyView(dst);
    if (view.missing.length) return { allowed: false, reason: 'policy-not-arrived', policy: view.missing[0]! };
    const rejected = view.rejected[0];
    if (rejected) return { allowed: false, reason: `${rejected.kind}-rejected`, policy: rejected.name };
    const policies = view.policies;
    const d = evaluate(policies, {
      ...(i.srcPrincipal ? { srcPrincipal: i.srcPrincipal } : {}),
      srcIp: i.srcIp,
      dstIp: i.dstIp,
      dstPort: i.dstPort,
      ...(i.http ? { http: i.http } : {}),
    });
    for (const hit of d.dryRun) this.log.info({ policy: hit.policy, action: hit.action, src: i.srcIp, dst: `${i.dstIp}:${i.dstPort}` }, 'dry-run policy matched');
    return { allowed: d.allowed, reason: d.reason, ...(d.policy ? { policy: d.policy } : {}) };
  }

}

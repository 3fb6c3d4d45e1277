// The agent's view of the mesh when a control plane drives it: xDS state (workloads,
// services, policies), pod status reports (how the control plane learns pod IPs, the way
// the kubelet reports pod status), and workload certificates from the control plane's CA.
import type { Logger } from '../log.js';
import { CaClient, SecretManager } from '../identity/index.js';
import { Balancer, type LbPolicy, type MeshRouter, type RouteTarget, type SocketAddress, type WorkloadIndex } from '../proxy/index.js';
import { evaluate } from '../rbac/index.js';
import { ProxyState, selectPolicies, type Workload } from '../state/index.js';
import type { PeerInfo } from '../telemetry/index.js';
import { PodStatusClient, XdsClient, type ControlPlaneConnection, type PodStatus } from '../xds/index.js';
import type { AuthorizeInput, AuthorizeResult } from '../proxy/index.js';

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

export class ControlPlaneSource implements WorkloadIndex, MeshRouter {
  readonly state = new ProxyState();
  readonly balancer: Balancer;
  readonly xds: XdsClient;
  readonly secrets: SecretManager;
  readonly #status: PodStatusClient;
  readonly #log: Logger;
  #reporting: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #pods: () => PodStatus[] | undefined = () => undefined;

  constructor(conn: ControlPlaneConnection, log: Logger, lb: LbPolicy = 'round-robin') {
    this.#log = log.child({ component: 'cp-source' });
    this.balancer = new Balancer(lb);
    this.xds = new XdsClient({ ...conn, state: this.state, logger: log });
    this.#status = new PodStatusClient(conn);
    this.secrets = new SecretManager({ ca: new CaClient(conn), rootsPem: String(conn.rootCertPem), logger: log });
  }

  /**
   * Starts xDS; `pods` lists this node's pods for every status report, or returns undefined
   * while the agent does not know them yet (before it has adopted the pods a previous agent
   * enrolled): a report then would tell the control plane the node has no pods, and it would
   * withdraw them from every other node.
   */
  start(pods: () => PodStatus[] | undefined): void {
    this.#pods = pods;
    this.xds.start();
    // Re-report periodically and on every reconnect, so a restarted control plane relearns
    // this node's pods without waiting for a pod to change.
    this.xds.on('connected', () => void this.reportPods());
    this.#timer = setInterval(() => void this.reportPods(), 30_000);
    this.#timer.unref();
  }

  /** Sends this node's full pod list; reports are serialized, the newest list wins. */
  reportPods(): Promise<void> {
    const next = this.#reporting.then(async () => {
      const pods = this.#pods();
      if (!pods) return;
      try {
        await this.#status.report(pods);
      } catch (err) {
        this.#log.warn({ err }, 'pod status report failed; will retry');
        throw err;
      }
    });
    this.#reporting = next.catch(() => {});
    return next;
  }

  /** Waits until the control plane publishes a workload for this pod at this IP. */
  awaitWorkload(namespace: string, name: string, ip: string, timeoutMs: number): Promise<Workload | undefined> {
    const find = (): Workload | undefined => {
      const w = this.state.workloadByIp(ip);
      return w && w.namespace === namespace && w.name === name ? w : undefined;
    };
    const now = find();
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => {
      const onChange = (): void => {
        const w = find();
        if (w) done(w);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (w: Workload | undefined): void => {
        clearTimeout(timer);
        this.state.off('change', onChange);
        resolve(w);
      };
      this.state.on('change', onChange);
    });
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
      if (!pick) return { addr: dst, hbone: false, service: { hostname: svc.hostname, name: svc.name, namespace: svc.namespace } };
      const w = eps[pick.index]!;
      return {
        addr: { ip: w.addresses[0]!, port: ports[pick.index]! },
        peer: peerOfWorkload(w),
        identity: w.identity,
        hbone: w.tunnelProtocol === 'HBONE',
        service: { hostname: svc.hostname, name: svc.name, namespace: svc.namespace },
        release: pick.release,
      };
    }
    const w = this.state.workloadByIp(dst.ip);
    if (!w) return undefined;
    return { addr: dst, peer: peerOfWorkload(w), identity: w.identity, hbone: w.tunnelProtocol === 'HBONE' };
  }

  byIp(ip: string): PeerInfo | undefined {
    const w = this.state.workloadByIp(ip);
    return w ? peerOfWorkload(w) : undefined;
  }

  /** Istio's evaluation for a connection to a workload on this node. */
  authorize(i: AuthorizeInput): AuthorizeResult {
    const dst = this.state.workloadByIp(i.dstIp);
    if (!dst) return { allowed: true, reason: 'destination not in mesh state' };
    const policies = selectPolicies(this.state.policies(), dst);
    const d = evaluate(policies, {
      ...(i.srcPrincipal ? { srcPrincipal: i.srcPrincipal } : {}),
      srcIp: i.srcIp,
      dstIp: i.dstIp,
      dstPort: i.dstPort,
    });
    for (const hit of d.dryRun) this.#log.info({ policy: hit.policy, action: hit.action, src: i.srcIp, dst: `${i.dstIp}:${i.dstPort}` }, 'dry-run policy matched');
    return { allowed: d.allowed, reason: d.reason, ...(d.policy ? { policy: d.policy } : {}) };
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.xds.stop();
    this.#status.close();
    this.secrets.close();
  }
}

// The agent's view of the mesh when a control plane drives it: xDS state (workloads,
// services, policies), pod status reports (how the control plane learns pod IPs, the way
// the kubelet reports pod status), and workload certificates from the control plane's CA;
// the last good state of both kept on disk, and authorization that fails closed.
import { join } from 'node:path';
import { isNodemeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { CaClient, SecretManager, SecretStore } from '../identity/index.js';
import { Balancer, type LbPolicy, type MeshRouter, type RouteTarget, type SocketAddress, type WorkloadIndex } from '../proxy/index.js';
import { evaluate, JwtVerifier, jwtRulesOf, requestAuthnFor } from '../rbac/index.js';
import { EndpointPicker, type HttpLayerOptions, type RequestAuthenticator } from '../proxy/index.js';
import { ProxyState, type AppProtocol, type Service, type StateChange, type Workload } from '../state/index.js';
import type { PeerInfo } from '../telemetry/index.js';
import { PodStatusClient, XdsClient, type ControlPlaneConnection, type PodStatus } from '../xds/index.js';
import type { AuthorizeInput, AuthorizeResult } from '../proxy/index.js';
import { NodeOrigin } from './node-origin.js';
import { encodeSnapshot, readSnapshot, SnapshotWriter } from './persist.js';

/** How long policy re-evaluation of open connections waits for named policies to arrive. */
const POLICY_SETTLE_MS = 2000;

/** What the agent restored from its state directory at start. */
export interface Restored {
  /** Resources of the xDS snapshot now in the state (0: none, or it was unusable). */
  resources: number;
  /** Identities whose certificate was restored. */
  certificates: string[];
}

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
  readonly #node: string;
  readonly #snapshotPath: string | undefined;
  readonly #writer: SnapshotWriter | undefined;
  readonly #origin = new NodeOrigin();
  #restored = false;

  /** With `stateDir` (the agent's directory), the last good xDS state and certificates persist there. */
  constructor(conn: ControlPlaneConnection, log: Logger, lb: LbPolicy = 'round-robin', stateDir?: string) {
    this.#log = log.child({ component: 'cp-source' });
    this.#node = conn.nodeName;
    this.balancer = new Balancer(lb);
    this.xds = new XdsClient({ ...conn, state: this.state, logger: log });
    this.#status = new PodStatusClient(conn);
    // A service that left the state takes its round-robin cursor along.
    this.state.on('change', (c) => c.services.removed.forEach((k) => this.balancer.forget(k)));
    const store = stateDir ? new SecretStore(join(stateDir, 'secrets')) : undefined;
    this.secrets = new SecretManager({ ca: new CaClient(conn), rootsPem: String(conn.rootCertPem), logger: log, ...(store ? { store } : {}) });
    if (stateDir) {
      const path = join(stateDir, 'xds-snapshot.json');
      this.#snapshotPath = path;
      this.#writer = new SnapshotWriter({ path, take: () => encodeSnapshot(this.xds.snapshot(), this.#node), log: this.#log });
    }
  }

  /** Serving policy: synced with the control plane, or restored from the last good snapshot. */
  get serving(): boolean {
    return this.xds.isReady || this.#restored;
  }

  /**
   * Loads the last good xDS snapshot and the workload certificates from the state dir. Call
   * before start() and before any listener opens. A file that cannot be used is logged with
   * its path and skipped: the agent then starts as if it had none (fail closed: connections
   * to its pods are denied until xDS arrives), and never crashes.
   */
  restore(): Restored {
    let certificates: string[] = [];
    try {
      certificates = this.secrets.restore();
    } catch (err) {
      this.#log.error({ err }, 'stored certificates not used; requesting new ones from the CA');
    }
    let resources = 0;
    if (this.#snapshotPath) {
      try {
        const snap = readSnapshot(this.#snapshotPath, this.#node);
        if (snap) {
          const r = this.xds.restore(snap);
          resources = r.resources;
          this.#restored = resources > 0;
          if (r.rejected.length) this.#log.warn({ file: this.#snapshotPath, rejected: r.rejected }, 'xDS snapshot: some resources were rejected on restore');
        }
      } catch (err) {
        // A bad file is NM_ERR_STATE_FILE; anything else is a bug, and still must not stop the agent.
        this.#log.error({ err, ...(isNodemeshError(err, 'NM_ERR_STATE_FILE') ? {} : { file: this.#snapshotPath }) }, 'xDS snapshot not used; denying connections to this node\'s pods until the control plane syncs');
      }
    }
    if (resources || certificates.length) this.#log.info({ resources, certificates: certificates.length, file: this.#snapshotPath }, 'restored the last good state from disk');
    return { resources, certificates };
  }

  /**
   * Starts xDS; `pods` lists this node's pods for every status report, or returns undefined
   * while the agent does not know them yet (before it has adopted the pods a previous agent
   * enrolled): a report then would tell the control plane the node has no pods, and it would
   * withdraw them from every other node.
   */
  start(pods: () => PodStatus[] | undefined): void {
    this.#pods = pods;
    // Every applied response (ACKed, or NACKed with the rest applied) is saved, debounced.
    if (this.#writer) this.xds.on('applied', () => this.#writer!.schedule());
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
    for (const hit of d.dryRun) this.#log.info({ policy: hit.policy, action: hit.action, src: i.srcIp, dst: `${i.dstIp}:${i.dstPort}` }, 'dry-run policy matched');
    return { allowed: d.allowed, reason: d.reason, ...(d.policy ? { policy: d.policy } : {}) };
  }

  /**
   * Calls `fn` after each state change that may change a verdict (policies, workload
   * updates, rejections), so open connections are re-authorized. While a workload names a policy that
   * has not arrived (the control plane sends a workload's new policy list just before the
   * policy), the call waits for it, up to POLICY_SETTLE_MS, instead of resetting every
   * connection to that workload for the moment in between.
   */
  onPolicyChange(fn: () => void): void {
    let timer: NodeJS.Timeout | undefined;
    const fire = (): void => {
      clearTimeout(timer);
      timer = undefined;
      fn();
    };
    this.state.on('change', (c: StateChange) => {
      // A workload that left the state is not a reason to reset its connections (a deleted
      // pod ends them itself; a control plane that lost track must not cut the node off).
      if (c.policies.upserted.length + c.policies.removed.length + c.workloads.upserted.length + c.rejected.upserted.length + c.rejected.removed.length === 0) return;
      const settled = [...this.state.workloads()].every((w) => w.authorizationPolicies.every((k) => this.state.policy(k) !== undefined));
      if (settled) return fire();
      timer ??= setTimeout(fire, POLICY_SETTLE_MS);
      timer.unref();
    });
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    // The last word on disk is the state we stop with.
    this.#writer?.flush();
    await this.xds.stop();
    this.#status.close();
    this.secrets.close();
  }
}

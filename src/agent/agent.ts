// The node agent: loads the redirection programs, serves the CNI relay, enrolls pods, runs
// the shared proxy and the admin, metrics and readiness endpoints.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import { CniError, NativeError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { NetnsConnector, NodeProxy, type LbPolicy } from '../proxy/index.js';
import { Redirector, findCgroup2Root, listenInNetns, socketsInNetns } from '../redirect/index.js';
import { FlowLog, MeshMetrics } from '../telemetry/index.js';
import { serveRoutes, type Endpoint } from './admin.js';
import { CniServer, podAddressOf, type CniRequest } from './cni-server.js';
import { Enroller, exclusionsFrom } from './enrollment.js';
import { agentPaths, DEFAULT_PIN_ROOT, PORTS, type AgentPaths } from '../net/index.js';
import type { PodMeta, PodSource } from './podsource.js';
import { LocalWorkloads } from './workloads.js';
import { ControlPlaneSource } from './cp-source.js';
import type { ControlPlaneConnection } from '../xds/index.js';

export interface AgentOptions {
  stateDir: string;
  pinRoot?: string;
  nodeName?: string;
  trustDomain?: string;
  /** Local mode: pod metadata from a config directory, no policy. */
  podSource?: PodSource;
  /** Control-plane mode: workloads, policy and certificates over xDS and the CA. */
  controlPlane?: ControlPlaneConnection;
  /** How a Service VIP picks an endpoint (default round-robin). */
  lb?: LbPolicy;
  /** Close open connections that a policy change denies (default true). */
  closeDeniedConnections?: boolean;
  /** How long a CNI ADD waits for the control plane to publish the new pod (default 10 s). */
  workloadWaitMs?: number;
  admin?: Endpoint;
  metrics?: Endpoint;
  ready?: Endpoint;
  connectTimeoutMs?: number;
  log: Logger;
  /** Runs after the CNI socket is up, e.g. to chain our plugin into the node's conflist. */
  onCniReady?: (socketPath: string) => void | Promise<void>;
}

export class Agent {
  readonly paths: AgentPaths;
  readonly node: string;
  readonly metrics = new MeshMetrics();
  readonly flows: FlowLog;
  readonly workloads: LocalWorkloads;
  readonly #o: AgentOptions;
  readonly #log: Logger;
  #redirect?: Redirector;
  #proxy?: NodeProxy;
  #enroller?: Enroller;
  #cni?: CniServer;
  #servers: Server[] = [];
  #cp?: ControlPlaneSource;
  #ready = false;
  /** Pods of a previous agent adopted: only from then on does a pod status report tell the truth. */
  #adopted = false;
  readonly #startedAt = new Date().toISOString();

  constructor(o: AgentOptions) {
    this.#o = o;
    this.paths = agentPaths(o.stateDir);
    this.node = o.nodeName ?? hostname();
    this.#log = o.log.child({ component: 'agent', node: this.node });
    this.flows = new FlowLog(o.log);
    this.workloads = new LocalWorkloads(o.trustDomain);
  }

  get ready(): boolean {
    return this.#ready && (!this.#cp || this.#cp.xds.isReady);
  }

  async start(): Promise<void> {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new NativeError('NM_ERR_NOT_ROOT', 'the node agent loads eBPF programs and enters pod namespaces: run it as root');
    }
    if (!this.#o.podSource === !this.#o.controlPlane) {
      throw new UsageError('the agent needs exactly one source: a config directory (local mode) or a control plane');
    }
    mkdirSync(this.paths.dir, { recursive: true });
    if (this.#o.controlPlane) {
      this.#cp = new ControlPlaneSource(this.#o.controlPlane, this.#o.log, this.#o.lb ?? 'round-robin');
      this.#cp.start(() => (this.#adopted ? this.workloads.all().map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, ip: p.ip, phase: 'Running' as const })) : undefined));
      this.#cp.xds.once('ready', () => this.#log.info('first xDS sync complete'));
      // Open connections that a policy change now denies are closed, not left running.
      this.#cp.state.on('change', (c) => {
        if (this.#o.closeDeniedConnections === false) return;
        // Policies, or a workload's policy bindings, changed.
        if (c.policies.upserted.length + c.policies.removed.length + c.workloads.upserted.length === 0) return;
        const n = this.#proxy?.reevaluate() ?? 0;
        if (n) this.#log.info({ closed: n }, 'closed connections denied by the new policy');
      });
    }
    const cp = this.#cp;
    const cgroupRoot = findCgroup2Root();
    const redirect = await Redirector.open({ pinRoot: this.#o.pinRoot ?? DEFAULT_PIN_ROOT });
    this.#redirect = redirect;
    const proxy = new NodeProxy({
      listen: (ns, opts) => listenInNetns(ns, opts),
      upstream: new NetnsConnector((ns, n) => socketsInNetns(ns, n)),
      originalDst: redirect,
      workloads: cp ?? this.workloads,
      ...(cp ? { authorize: (i) => cp.authorize(i) } : {}),
      telemetry: { metrics: this.metrics, flows: this.flows, log: this.#o.log },
      onInboundListener: (pod, fd, kind) => redirect.registerInboundListener(pod.ip, kind, fd),
      ...(cp ? { router: cp } : {}),
      // With a control plane every enrolled pod has a certificate: traffic between nodes goes
      // over HBONE (mTLS on 15008). Local mode has no CA, so it stays plain TCP.
      ...(cp ? { hbone: { credentials: cp.secrets, trustDomain: this.#o.trustDomain ?? 'cluster.local' } } : {}),
      ...(this.#o.connectTimeoutMs ? { connectTimeoutMs: this.#o.connectTimeoutMs } : {}),
    });
    this.#proxy = proxy;
    this.#enroller = new Enroller({ redirect, proxy, podsDir: this.paths.podsDir, cgroupRoot, log: this.#o.log });

    const { adopted, removed } = await this.#enroller.adopt();
    for (const p of this.#enroller.pods()) this.#remember(p.uid, p.namespace, p.name, p.ip, true);
    this.#adopted = true;
    if (adopted.length || removed.length) this.#log.info({ adopted, removed: removed.length }, 'adopted pods enrolled by a previous agent');
    this.metrics.enrolledPods.set(this.#enroller.pods().length);

    await this.#serveHttp();
    this.#cni = await CniServer.listen(this.paths.cniSocket, (req) => this.#onCni(req), this.#o.log);
    await this.#o.onCniReady?.(this.paths.cniSocket);
    writeFileSync(this.paths.pidFile, `${process.pid}\n`);
    this.#ready = true;
    if (cp) void cp.reportPods().catch(() => {});
    for (const p of this.#enroller.pods()) this.#requestCert(p.trustDomain, p.namespace, p.serviceAccount);
    this.#log.info({ cniSocket: this.paths.cniSocket, pods: this.#enroller.pods().length }, 'agent ready');
  }

  #remember(uid: string, namespace: string, name: string, ip: string, enrolled: boolean, meta?: PodMeta): void {
    const m = meta ?? this.#o.podSource?.lookup(namespace, name);
    this.workloads.set({ uid, namespace, name, ip, enrolled, serviceAccount: m?.serviceAccount ?? 'default', labels: m?.labels ?? {} });
  }

  /** Asks the CA for a pod identity's certificate ahead of need (HBONE), and keeps it rotated. */
  #requestCert(trustDomain: string, namespace: string, sa: string): void {
    const cp = this.#cp;
    if (!cp) return;
    const id = `spiffe://${trustDomain}/ns/${namespace}/sa/${sa}`;
    cp.secrets.get(id).catch((err: unknown) => this.#log.warn({ err, identity: id }, 'certificate request failed; will retry'));
  }

  /** Pod metadata: from the config dir in local mode; from the published workload otherwise. */
  async #podMeta(uid: string, ns: string, name: string, ip: string, runtimeAnnotations: Record<string, string> | undefined): Promise<PodMeta | undefined> {
    if (this.#o.podSource) {
      const m = this.#o.podSource.lookup(ns, name);
      return m && runtimeAnnotations ? { ...m, annotations: { ...m.annotations, ...runtimeAnnotations } } : m;
    }
    const cp = this.#cp!;
    // Tell the control plane the pod runs here with this IP, as the kubelet would, then wait
    // for it to publish the workload: its tunnel protocol says whether the mesh captures it.
    this.workloads.set({ uid, namespace: ns, name, ip, enrolled: false, serviceAccount: 'default', labels: {} });
    await cp.reportPods().catch(() => {});
    const w = await cp.awaitWorkload(ns, name, ip, this.#o.workloadWaitMs ?? 10_000);
    if (!w) {
      this.workloads.deleteUid(uid);
      throw new CniError(`nodemesh agent: the control plane has not published pod ${ns}/${name} (${ip}) within ${(this.#o.workloadWaitMs ?? 10_000) / 1000} s; is it running and does it know this pod?`, { cniCode: 11 });
    }
    return {
      uid,
      namespace: ns,
      name,
      serviceAccount: w.serviceAccount,
      labels: w.canonicalName ? { app: w.canonicalName } : {},
      annotations: runtimeAnnotations ?? {},
      ambient: w.tunnelProtocol === 'HBONE',
    };
  }

  async #onCni(req: CniRequest): Promise<void> {
    const enroller = this.#enroller!;
    const ns = req.args.K8S_POD_NAMESPACE;
    const name = req.args.K8S_POD_NAME;
    const uid = req.args.K8S_POD_UID;
    if (req.command === 'DEL') {
      // DEL must always succeed so the runtime can clean the pod up.
      const known = uid ? uid : enroller.pods().find((p) => p.containerId === req.containerId)?.uid;
      if (known) {
        await enroller.unenroll(known).catch((err: unknown) => this.#log.error({ err, uid: known }, 'detach failed during DEL'));
        this.workloads.deleteUid(known);
        void this.#cp?.reportPods().catch(() => {});
      }
      this.metrics.enrolledPods.set(enroller.pods().length);
      return;
    }
    if (!ns || !name || !uid) throw new CniError('nodemesh agent: CNI_ARGS must carry K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID', { cniCode: 4 });
    if (req.command === 'CHECK') {
      const known = this.workloads.all().find((p) => p.uid === uid);
      if (known?.enrolled && !enroller.get(uid)) throw new CniError(`nodemesh agent: pod ${ns}/${name} should be enrolled but is not`, { cniCode: 100 });
      return;
    }
    if (!req.netns) throw new CniError('nodemesh agent: CNI_NETNS is empty', { cniCode: 4 });
    if (!existsSync(req.netns)) throw new CniError(`nodemesh agent: network namespace ${req.netns} does not exist`, { cniCode: 4 });
    const addr = podAddressOf(req.config);
    if (!addr) throw new CniError(`nodemesh agent: no IPv4 address in prevResult for ${ns}/${name}; nodemesh-cni must be chained after an IPAM-assigning plugin`, { cniCode: 7 });
    const rc = req.config.runtimeConfig as Record<string, unknown> | undefined;
    const annotations = rc?.['io.kubernetes.cri.pod-annotations'] as Record<string, string> | undefined;
    const meta = await this.#podMeta(uid, ns, name, addr.ip, annotations);
    if (!meta?.ambient) {
      this.#remember(uid, ns, name, addr.ip, false, meta);
      this.#log.info({ pod: `${ns}/${name}`, ip: addr.ip }, meta ? 'pod not enrolled: no nodemesh.io/dataplane-mode=ambient label on it or its namespace' : 'pod not enrolled: unknown to the pod source');
      return;
    }
    let exclusions;
    try {
      exclusions = exclusionsFrom(meta.annotations);
    } catch (e) {
      throw new CniError(`nodemesh agent: ${(e as Error).message}`, { cniCode: 7 });
    }
    await enroller.enroll({
      uid,
      namespace: ns,
      name,
      ip: addr.ip,
      netnsPath: req.netns,
      containerId: req.containerId,
      serviceAccount: meta.serviceAccount,
      labels: meta.labels,
      trustDomain: this.#o.trustDomain ?? 'cluster.local',
      exclusions,
    });
    this.#remember(uid, ns, name, addr.ip, true, meta);
    this.metrics.enrolledPods.set(enroller.pods().length);
    this.#requestCert(this.#o.trustDomain ?? 'cluster.local', ns, meta.serviceAccount);
  }

  configDump(): object {
    return {
      node: this.node,
      mode: this.#cp ? 'control-plane' : 'local',
      ...(this.#cp
        ? {
            controlPlane: { address: this.#o.controlPlane!.address, connected: this.#cp.xds.connected, synced: this.#cp.xds.isReady },
            services: [...this.#cp.state.services()],
            policies: [...this.#cp.state.policies()],
            certificates: this.#cp.secrets.list(),
          }
        : {}),
      startedAt: this.#startedAt,
      ready: this.#ready,
      pods: this.#enroller?.pods().map((p) => ({
        uid: p.uid,
        namespace: p.namespace,
        name: p.name,
        ip: p.ip,
        serviceAccount: p.serviceAccount,
        identity: `spiffe://${p.trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}`,
        netns: p.netnsPath,
        cgroup: p.cgroupPath,
        exclusions: p.exclusions,
        enrolledAt: p.enrolledAt,
      })) ?? [],
      listeners: this.#proxy?.listeners() ?? [],
      hbonePool: this.#proxy?.hboneSessions() ?? [],
      workloads: this.#cp ? [...this.#cp.state.workloads()] : this.workloads.all(),
      connections: this.flows.open(),
    };
  }

  async #serveHttp(): Promise<void> {
    const log = this.#o.log.child({ component: 'admin' });
    const readiness = () => (this.ready ? { body: 'ready\n' } : { status: 503, body: this.#cp && !this.#cp.xds.isReady ? 'not ready: waiting for the first xDS sync\n' : 'not ready\n' });
    const metrics = async () => {
      const r = await this.metrics.render();
      return { type: r.contentType, body: r.body };
    };
    this.#servers.push(
      await serveRoutes(this.#o.admin ?? { host: '127.0.0.1', port: PORTS.admin }, {
        '/config_dump': () => ({ body: this.configDump() }),
        '/debug/flows': (_req, url) => ({ body: this.flows.recent(Number(url.searchParams.get('limit') ?? 1000)) }),
        '/healthz/ready': readiness,
        '/metrics': metrics,
      }, log),
      await serveRoutes(this.#o.metrics ?? { host: '0.0.0.0', port: PORTS.metrics }, { '/metrics': metrics, '/stats/prometheus': metrics }, log),
      await serveRoutes(this.#o.ready ?? { host: '0.0.0.0', port: PORTS.ready }, { '/healthz/ready': readiness }, log),
    );
  }

  /** Stops serving. Pinned programs stay, so pods keep failing closed until an agent adopts them. */
  async stop(): Promise<void> {
    this.#ready = false;
    await this.#cni?.close();
    await Promise.all(this.#servers.map((s) => new Promise((r) => s.close(r))));
    this.#servers = [];
    await this.#proxy?.close();
    await this.#cp?.stop();
    this.#redirect?.close();
    rmSync(this.paths.pidFile, { force: true });
    this.#log.info('agent stopped');
  }
}
